package event

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestExitStatusDecoding(t *testing.T) {
	tests := []struct {
		raw      ExitStatus
		signaled bool
		signal   unix.Signal
		core     bool
		code     int
		text     string
	}{
		{0, false, 0, false, 0, "exit 0"},
		{1 << 8, false, 0, false, 1, "exit 1"},
		{3 << 8, false, 0, false, 3, "exit 3"},
		{255 << 8, false, 0, false, 255, "exit 255"},
		{13, true, unix.SIGPIPE, false, 0, "killed by SIGPIPE"},
		{15, true, unix.SIGTERM, false, 0, "killed by SIGTERM"},
		{9, true, unix.SIGKILL, false, 0, "killed by SIGKILL"},
		{0x80 | 11, true, unix.SIGSEGV, true, 0, "killed by SIGSEGV (core dumped)"},
		{0x80 | 6, true, unix.SIGABRT, true, 0, "killed by SIGABRT (core dumped)"},
	}
	for _, tt := range tests {
		if got := tt.raw.Signaled(); got != tt.signaled {
			t.Errorf("%#x Signaled = %v", uint32(tt.raw), got)
		}
		if got := tt.raw.Signal(); got != tt.signal {
			t.Errorf("%#x Signal = %v, want %v", uint32(tt.raw), got, tt.signal)
		}
		if got := tt.raw.CoreDumped(); got != tt.core {
			t.Errorf("%#x CoreDumped = %v", uint32(tt.raw), got)
		}
		if !tt.signaled && tt.raw.Code() != tt.code {
			t.Errorf("%#x Code = %d, want %d", uint32(tt.raw), tt.raw.Code(), tt.code)
		}
		if got := tt.raw.String(); got != tt.text {
			t.Errorf("%#x String = %q, want %q", uint32(tt.raw), got, tt.text)
		}
	}
}

func TestSignalNames(t *testing.T) {
	for sig, want := range map[unix.Signal]string{0: "", unix.SIGPIPE: "SIGPIPE", unix.SIGQUIT: "SIGQUIT", 34: "SIGRTMIN+0", 40: "SIGRTMIN+6"} {
		if got := SignalName(sig); got != want {
			t.Errorf("SignalName(%d) = %q, want %q", sig, got, want)
		}
	}
}

func TestStartTicksMatchProc(t *testing.T) {
	// /proc/<pid>/stat starttime = start_boottime / (NSEC_PER_SEC / USER_HZ).
	if got := StartTicks(123_456_789_012); got != 12345 {
		t.Errorf("StartTicks = %d, want 12345", got)
	}
	task := Task{PID: 7, Start: 99_990_000_000}
	if k := task.Key(); k != (ProcessKey{PID: 7, StartTicks: 9999}) {
		t.Errorf("Key = %+v", k)
	}
}

func TestBirthArgv(t *testing.T) {
	var b Birth
	n := copy(b.Args[:], "psql\x00-c\x00select 1\x00")
	b.ArgsLen = uint16(n)
	got := b.Argv()
	if len(got) != 3 || got[0] != "psql" || got[2] != "select 1" {
		t.Errorf("Argv = %q", got)
	}
	b.ArgsLen = 9999 // a corrupt length never reads past the buffer
	if len(b.Argv()) != 3 {
		t.Errorf("Argv with a corrupt length = %q", b.Argv())
	}
}
