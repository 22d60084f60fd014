package event

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// ExitStatus is a process's status as wait(2) reports it to its parent:
// bits 0-6 the killing signal, bit 7 core dumped, bits 8-15 the exit code.
type ExitStatus uint32

// Signaled reports whether a signal killed the process.
func (s ExitStatus) Signaled() bool { return s&0x7f != 0 }

// Signal is the killing signal, 0 if it exited.
func (s ExitStatus) Signal() unix.Signal { return unix.Signal(s & 0x7f) }

// CoreDumped reports whether the dying process dumped core.
func (s ExitStatus) CoreDumped() bool { return s&0x80 != 0 }

// Code is the exit code, meaningful when not Signaled.
func (s ExitStatus) Code() int { return int(s>>8) & 0xff }

func (s ExitStatus) String() string {
	if s.Signaled() {
		str := "killed by " + SignalName(s.Signal())
		if s.CoreDumped() {
			str += " (core dumped)"
		}
		return str
	}
	return fmt.Sprintf("exit %d", s.Code())
}

// SignalName is the conventional name, "SIGPIPE"; real-time signals are
// "SIGRTMIN+n" counted from signal 34, the first one glibc leaves to programs.
func SignalName(sig unix.Signal) string {
	if sig == 0 {
		return ""
	}
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	if sig >= 34 && sig <= 64 {
		return fmt.Sprintf("SIGRTMIN+%d", sig-34)
	}
	return fmt.Sprintf("SIG%d", int(sig))
}
