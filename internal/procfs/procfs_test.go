package procfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

func TestParseStatCommWithSpacesAndParens(t *testing.T) {
	line := "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	s, err := ParseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if s.PID != 4242 || s.Comm != "my (odd) prog" || s.State != 'S' || s.PPID != 1 || s.StartTicks != 987654 {
		t.Errorf("ParseStat = %+v", s)
	}
}

func TestParseStatRejectsDamage(t *testing.T) {
	for _, bad := range []string{
		"", "4242", "4242 (x", "x (comm) S 1", "4242 (comm) S 1 2 3", // truncated
		"4242 (comm) SS 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
		"4242 (comm) S one 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
		"4242 (comm) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 notanumber 20",
		"-1 (comm) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
	} {
		if _, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("ParseStat(%q) succeeded", bad)
		}
	}
}

func TestParseStatus(t *testing.T) {
	s, err := ParseStatus([]byte("Name:\tpostgres\nUid:\t999\t999\t999\t999\nNSpid:\t8900\t1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.UID != 999 || s.NSPid() != 1 || len(s.NSpid) != 2 {
		t.Errorf("ParseStatus = %+v", s)
	}
	if _, err := ParseStatus([]byte("Name:\tx\n")); err == nil {
		t.Error("status without Uid accepted")
	}
	if _, err := ParseStatus([]byte("Uid:\t0\nNSpid:\t1 x\n")); err == nil {
		t.Error("bad NSpid accepted")
	}
}

func TestParseCmdline(t *testing.T) {
	if got := ParseCmdline([]byte("psql\x00-c\x00select 1\x00")); len(got) != 3 || got[2] != "select 1" {
		t.Errorf("got %q", got)
	}
	if got := ParseCmdline([]byte("postgres: checkpointer   ")); len(got) != 1 {
		t.Errorf("rewritten argv: %q", got)
	}
	if got := ParseCmdline(nil); got != nil {
		t.Errorf("kernel thread: %q", got)
	}
}

func TestVanishedProcessIsNotExist(t *testing.T) {
	fsys := FS{Root: t.TempDir()}
	if _, err := fsys.ReadStat(12345); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadStat of a missing pid: %v", err)
	}
	if _, err := fsys.Cmdline(12345); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Cmdline of a missing pid: %v", err)
	}
}

// A process reaped between open and read gives ESRCH, not ENOENT: callers
// must see it as gone all the same, with the error's text kept.
func TestReapedProcessIsNotExist(t *testing.T) {
	fake := &fs.PathError{Op: "read", Path: "/proc/4242/stat", Err: syscall.ESRCH}
	err := vanished(fake)
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, syscall.ESRCH) {
		t.Errorf("vanished(%v) = %v: not both fs.ErrNotExist and ESRCH", fake, err)
	}
	if err.Error() != fake.Error() {
		t.Errorf("text changed: %q, want %q", err, fake)
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Path != fake.Path {
		t.Errorf("the *fs.PathError is lost: %v", err)
	}
	for _, other := range []error{nil, fs.ErrPermission, &fs.PathError{Op: "open", Path: "x", Err: syscall.ENOENT}} {
		if got := vanished(other); got != other {
			t.Errorf("vanished(%v) = %v, want it unchanged", other, got)
		}
	}
}

// The kernel fact behind TestReapedProcessIsNotExist: files of /proc/<pid>
// opened before the process is reaped fail with ESRCH when read after.
func TestReapedProcessRealProc(t *testing.T) {
	// No skip: /proc and sleep(1) are part of every machine this runs on.
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start a child: %v", err)
	}
	pid := cmd.Process.Pid
	var files []*os.File
	for _, name := range []string{"stat", "status", "cmdline", "oom_score_adj"} {
		f, err := os.Open(Default.path(pid, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait() // reaped: the task is gone, the open files stay
	for _, f := range files {
		_, err := io.ReadAll(f)
		if !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("reading %s after the reap: %v, want ESRCH", f.Name(), err)
		}
		if err := vanished(err); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("vanished(%v) is not fs.ErrNotExist", err)
		}
	}
	if _, err := Default.ReadStat(pid); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadStat of a reaped pid: %v", err) // unless the pid was reused already
	}
}

func TestNamespaceLinkAndCgroups(t *testing.T) {
	if n, err := parseNSLink("pid:[4026531836]"); err != nil || n != 4026531836 {
		t.Errorf("parseNSLink = %d, %v", n, err)
	}
	if _, err := parseNSLink("pid:4026531836"); err == nil {
		t.Error("malformed link accepted")
	}
	cg := ParseCgroups([]byte("4:memory:/docker/abc\n0::/system.slice/x.scope\ngarbage\n"))
	if cg["memory"] != "/docker/abc" || cg[""] != "/system.slice/x.scope" {
		t.Errorf("ParseCgroups = %v", cg)
	}
}

func TestRealProcSelf(t *testing.T) {
	pid := os.Getpid()
	st, err := Default.ReadStat(pid)
	if err != nil || st.PID != pid || st.StartTicks == 0 {
		t.Fatalf("ReadStat(self) = %+v, %v", st, err)
	}
	exe, err := Default.Exe(pid)
	if err != nil || filepath.Base(exe) == "" {
		t.Errorf("Exe(self) = %q, %v", exe, err)
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10\n"))
	f.Add([]byte("1 ()) S"))
	f.Add([]byte(")("))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseStat(data)
		if err == nil && (s.PID <= 0 || len(s.Comm) > len(data) || s.State == 0) {
			t.Fatalf("accepted %q as %+v", data, s)
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	f.Add([]byte("Name:\tpostgres\nUid:\t999\t999\t999\t999\nNSpid:\t8900\t1\n"))
	f.Add([]byte("Uid:\nNSpid:\t\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseStatus(data)
		if err == nil {
			_ = s.NSPid()
		}
	})
}

func FuzzParseCmdline(f *testing.F) {
	f.Add([]byte("psql\x00-c\x00select 1\x00"))
	f.Add([]byte("\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		argv := ParseCmdline(data)
		n := 0
		for _, a := range argv {
			n += len(a) + 1
		}
		if n > len(data)+1 {
			t.Fatalf("argv %q longer than its %d bytes", argv, len(data))
		}
	})
}

func TestParseTasks(t *testing.T) {
	stat := []byte("cpu  1 2 3 4\nintr 5\nctxt 6\nbtime 7\nprocesses 123456\nprocs_running 2\n")
	got, err := ParseTasks(stat, []byte("0.50 0.40 0.30 3/789 12345\n"))
	if err != nil || got != (Tasks{Forked: 123456, Alive: 789}) {
		t.Errorf("ParseTasks = %+v, %v; want 123456 forked, 789 alive", got, err)
	}
	for _, bad := range []struct{ stat, loadavg string }{
		{"cpu 1\n", "0.5 0.4 0.3 3/789 1\n"},         // no processes line
		{"processes x\n", "0.5 0.4 0.3 3/789 1\n"},   // not a number
		{"processes 1\n", "0.5 0.4 0.3\n"},           // no running/total
		{"processes 1\n", "0.5 0.4 0.3 789 1\n"},     // no slash
		{"processes 1\n", "0.5 0.4 0.3 3/seven 1\n"}, // not a number
	} {
		if got, err := ParseTasks([]byte(bad.stat), []byte(bad.loadavg)); err == nil {
			t.Errorf("ParseTasks(%q, %q) = %+v, want an error", bad.stat, bad.loadavg, got)
		}
	}
	// The host's own files parse, and count this test's process.
	tasks, err := Default.ReadTasks()
	if err != nil || tasks.Forked == 0 || tasks.Alive == 0 {
		t.Errorf("ReadTasks = %+v, %v", tasks, err)
	}
}
