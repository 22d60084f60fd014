package oracle

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Proc is a process a round started inside the namespace, as the round's
// scripts recorded it (ow-run writes role, pid and start time before it
// execs the real command).
type Proc struct {
	Role       string
	NSPid      uint32
	StartTicks uint64    // /proc/<pid>/stat starttime, the same in every namespace
	Seen       time.Time // when the harness read the record
	HostPID    int       // 0 when it had exited before the harness looked
	pidfd      int       // -1 when HostPID is 0
}

func (p *Proc) String() string {
	host := "gone"
	if p.HostPID != 0 {
		host = strconv.Itoa(p.HostPID)
	}
	return fmt.Sprintf("%s ns:%d host:%s", p.Role, p.NSPid, host)
}

// procStat is what the harness reads of /proc/<pid>: the pid namespace
// inode, the pid in the innermost namespace, the start time and the
// scheduler state (R, S, D, T, Z...).
type procStat struct {
	pidNS      uint64
	nsPid      uint32
	startTicks uint64
	ppid       int
	pgid       int
	state      string
}

func readProcStat(pid int) (procStat, error) {
	var s procStat
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/pid", pid), &st); err != nil {
		return s, err
	}
	s.pidNS = st.Ino
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseUint(f[len(f)-1], 10, 32)
				s.nsPid = uint32(n)
			}
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The comm field may hold spaces and parentheses: fields count from
	// the last ')'.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	s.state = f[0]
	s.ppid, _ = strconv.Atoi(f[1])
	s.pgid, _ = strconv.Atoi(f[2])
	s.startTicks, _ = strconv.ParseUint(f[19], 10, 64)
	return s, nil
}

// pidNamespace is the inode of a process's PID namespace.
func pidNamespace(pid int) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/pid", pid), &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// hostPIDs maps the pids of a namespace to host pids, from one walk of
// /proc (ns pids are reused: identity is the pid with its start time).
func hostPIDs(pidNS uint64) map[uint32][]int {
	out := map[uint32][]int{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		s, err := readProcStat(pid)
		if err != nil || s.pidNS != pidNS {
			continue
		}
		out[s.nsPid] = append(out[s.nsPid], pid)
	}
	return out
}

// attach finds p's host pid among candidates and holds a pidfd on it, so
// that a later signal cannot reach a process that reused the pid.
func (p *Proc) attach(candidates []int) {
	p.pidfd = -1
	for _, pid := range candidates {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue
		}
		// Checked after opening: the pidfd now pins this very process.
		if s, err := readProcStat(pid); err == nil && s.startTicks == p.StartTicks && s.nsPid == p.NSPid {
			p.HostPID, p.pidfd = pid, fd
			return
		}
		unix.Close(fd)
	}
}

// Signal sends sig to the process, if it still lives; it reports whether
// the signal was sent.
func (p *Proc) Signal(sig syscall.Signal) bool {
	if p.pidfd < 0 {
		return false
	}
	return unix.PidfdSendSignal(p.pidfd, sig, nil, 0) == nil
}

// SignalGroup sends sig to p's process group, p being its leader.
func (p *Proc) SignalGroup(sig syscall.Signal) bool {
	if !p.Alive() {
		return false
	}
	return syscall.Kill(-p.HostPID, sig) == nil
}

// Alive reports whether the process has not exited yet.
func (p *Proc) Alive() bool {
	if p.pidfd < 0 {
		return false
	}
	return !exited(p.pidfd)
}

// exited reports whether the process a pidfd refers to has exited (the
// whole thread group: a leader that called pthread_exit is not an exit).
func exited(pidfd int) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue // a signal (Go's preemption, a child's SIGCHLD), not an answer
		}
		return err == nil && n > 0
	}
}

func (p *Proc) release() {
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
}
