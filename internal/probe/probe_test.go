package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/procfs"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// collector runs a probe and keeps copies of its events.
type collector struct {
	probe  *Probe
	mu     sync.Mutex
	events []event.Event
	cancel context.CancelFunc
	done   chan error
}

func startProbe(t *testing.T, cfg Config) *collector {
	t.Helper()
	testenv.RequireRoot(t)
	p, err := Load(cfg)
	if err != nil {
		t.Fatalf("loading the probe: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{probe: p, cancel: cancel, done: make(chan error, 1)}
	go func() {
		c.done <- p.Read(ctx, func(ev *event.Event) {
			c.mu.Lock()
			c.events = append(c.events, *ev)
			c.mu.Unlock()
		}, nil)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-c.done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Read: %v", err)
		}
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// waitFor returns the first event matching, waiting up to 5 s.
func (c *collector) waitFor(t *testing.T, what string, match func(*event.Event) bool) event.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		for i := range c.events {
			if match(&c.events[i]) {
				ev := c.events[i]
				c.mu.Unlock()
				return ev
			}
		}
		c.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s event within 5s", what)
	return event.Event{}
}

func (c *collector) count(match func(*event.Event) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for i := range c.events {
		if match(&c.events[i]) {
			n++
		}
	}
	return n
}

func exitOf(pid int) func(*event.Event) bool {
	return func(ev *event.Event) bool { return ev.Kind == event.KindExit && ev.Task.PID == uint32(pid) }
}

func exitOfComm(parent int, comm string) func(*event.Event) bool {
	return func(ev *event.Event) bool {
		return ev.Kind == event.KindExit && ev.Parent.PID == uint32(parent) && ev.Task.Comm.Is(comm)
	}
}

func run(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	return cmd
}

func TestKernelSIGPIPEFromABrokenPipe(t *testing.T) {
	c := startProbe(t, Config{StreamAll: true})
	sh := run(t, "sh", "-c", "yes | head -c 1 >/dev/null")
	ev := c.waitFor(t, "yes exit", exitOfComm(sh.Process.Pid, "yes"))

	if !ev.Status.Signaled() || ev.Status.Signal() != unix.SIGPIPE {
		t.Errorf("status = %v, want killed by SIGPIPE", ev.Status)
	}
	if ev.Flags&event.HasSignal == 0 || ev.Signal.Signo != uint32(unix.SIGPIPE) {
		t.Fatalf("no SIGPIPE signal record joined to the exit: flags %#x signal %+v", ev.Flags, ev.Signal)
	}
	if ev.Signal.SenderPID != ev.Task.PID || ev.Signal.Flags&event.SignalFromSelf == 0 || ev.Signal.Flags&event.SignalNoInfo == 0 {
		t.Errorf("sender = %d flags %#x, want the writer itself via pipe_write (self, no siginfo)", ev.Signal.SenderPID, ev.Signal.Flags)
	}
	if ev.Signal.Flags&event.SignalDefaultAction == 0 || ev.Signal.Delivered < ev.Signal.Generated {
		t.Errorf("signal not marked delivered with the default action: %+v", ev.Signal)
	}
	if ev.Flags&event.HasBirth == 0 || ev.Birth.Ancestry[0].PID != uint32(sh.Process.Pid) || !ev.Birth.Ancestry[0].Comm.Is("sh") {
		t.Errorf("birth record = %+v, want parent sh %d", ev.Birth.Ancestry[0], sh.Process.Pid)
	}
	if got := ev.Birth.Argv(); len(got) != 1 || got[0] != "yes" || ev.Birth.ExePath() != "/usr/bin/yes" {
		t.Errorf("exec record = %q %q, want /usr/bin/yes [yes]", ev.Birth.ExePath(), got)
	}
}

func TestKernelSIGTERMNamesItsSender(t *testing.T) {
	c := startProbe(t, Config{StreamAll: true})
	victim := exec.Command("sleep", "30")
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	killer := run(t, "sh", "-c", fmt.Sprintf("kill -TERM %d", victim.Process.Pid))
	victim.Wait()
	ev := c.waitFor(t, "sleep exit", exitOf(victim.Process.Pid))

	if ev.Status.Signal() != unix.SIGTERM {
		t.Errorf("status = %v, want SIGTERM", ev.Status)
	}
	if ev.Signal.SenderPID != uint32(killer.Process.Pid) || !ev.Signal.SenderComm.Is("sh") {
		t.Errorf("sender = %d %q, want the killing shell %d", ev.Signal.SenderPID, ev.Signal.SenderComm, killer.Process.Pid)
	}
	if ev.Signal.Flags&(event.SignalFromSelf|event.SignalFromKernel) != 0 || ev.Signal.Code != 0 /* SI_USER */ {
		t.Errorf("signal flags %#x code %d, want kill(2) from another process", ev.Signal.Flags, ev.Signal.Code)
	}
}

func TestKernelExitCode3(t *testing.T) {
	c := startProbe(t, Config{StreamAll: true})
	sh := run(t, "sh", "-c", "exit 3")
	ev := c.waitFor(t, "sh exit", exitOf(sh.Process.Pid))
	if ev.Status.Signaled() || ev.Status.Code() != 3 {
		t.Errorf("status = %v, want exit 3", ev.Status)
	}
	if ev.Task.Start == 0 || ev.Time <= ev.Task.Start {
		t.Errorf("start %d, exit time %d: want start before exit", ev.Task.Start, ev.Time)
	}
}

// A thread that ends while its process lives on is not a process exit.
func TestKernelThreadExitIsNoEvent(t *testing.T) {
	c := startProbe(t, Config{StreamAll: true})
	tids := make(chan int)
	onWorkerThread(func() { tids <- unix.Gettid() })
	tid := <-tids
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d did not exit", tid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A thread that exits with a child of its own hands it to a live thread
	// of its process (find_new_reaper): no adoption.
	children := make(chan *exec.Cmd)
	onWorkerThread(func() {
		cmd := exec.Command("sleep", "0.3")
		if err := cmd.Start(); err != nil {
			t.Error(err)
		}
		children <- cmd
	})
	child := <-children
	child.Wait() // reaped by whichever thread took it over
	// A later process exit proves the probe was reading meanwhile.
	sh := run(t, "true")
	c.waitFor(t, "true exit", exitOf(sh.Process.Pid))
	if n := c.count(func(ev *event.Event) bool { return ev.Task.PID == uint32(os.Getpid()) || ev.Task.PID == uint32(tid) }); n != 0 {
		t.Errorf("%d events for the test process after one of its threads exited, want 0", n)
	}
	if n := c.count(func(ev *event.Event) bool {
		return ev.Kind == event.KindAdoption && ev.Task.PID == uint32(child.Process.Pid)
	}); n != 0 {
		t.Errorf("%d adoption events for the child of a thread that exited while its process lives on, want 0", n)
	}
}

// All threads of a process killed by a signal exit at once; only the last
// one is the process's exit.
func TestKernelMultiThreadedKillIsOneExit(t *testing.T) {
	c := startProbe(t, Config{StreamAll: true})
	for range 5 {
		helper, _ := startHelper(t, "threads")
		helper.Process.Signal(unix.SIGKILL)
		helper.Wait()
		pid := helper.Process.Pid
		ev := c.waitFor(t, "helper exit", exitOf(pid))
		if ev.Status.Signal() != unix.SIGKILL {
			t.Errorf("status = %v, want SIGKILL", ev.Status)
		}
		time.Sleep(100 * time.Millisecond)
		if n := c.count(exitOf(pid)); n != 1 {
			t.Fatalf("%d exit events for a process of 9 threads killed by SIGKILL, want 1", n)
		}
	}
}

// A child forked by a worker thread is on that thread's list; when the
// process exits, every thread is exiting and the kernel hands it out of the
// process. Orphans of the host's init are sent with StreamAll only.
func TestKernelOrphanOfAWorkerThreadIsAdopted(t *testing.T) {
	all := startProbe(t, Config{StreamAll: true})
	filtered := startProbe(t, Config{})
	for range 5 {
		helper, line := startHelper(t, "fork-from-thread")
		var tid, child int
		if _, err := fmt.Sscan(line, &tid, &child); err != nil || tid == helper.Process.Pid {
			t.Fatalf("helper said %q", line)
		}
		t.Cleanup(func() { unix.Kill(child, unix.SIGKILL) })
		helper.Wait()
		adopted := func(ev *event.Event) bool { return ev.Kind == event.KindAdoption && ev.Task.PID == uint32(child) }
		ev := all.waitFor(t, "adoption", adopted)
		if ev.Previous.PID != uint32(helper.Process.Pid) || ev.Parent.PID == uint32(helper.Process.Pid) {
			t.Errorf("adoption from %d to %d, want from the helper %d to another process", ev.Previous.PID, ev.Parent.PID, helper.Process.Pid)
		}
		time.Sleep(100 * time.Millisecond)
		if n := all.count(adopted); n != 1 {
			t.Errorf("%d adoption events for one orphan, want 1", n)
		}
		hostInit := ev.Parent.NSLevel == 0 && ev.Parent.Flags&event.TaskNSReaper != 0
		if n := filtered.count(adopted); hostInit && n != 0 {
			t.Errorf("an adoption by the host's init reached user space without StreamAll")
		}
	}
}

// startNamespace runs script in a new PID namespace once released, and
// returns the host pid of the namespace's PID 1 (the script's shell) and
// the function that releases it.
func startNamespace(t *testing.T, script string) (init int, release func()) {
	t.Helper()
	init, stdin := startNamespaceWith(t, "sh", "read go; "+script)
	return init, func() { stdin.Write([]byte("go\n")); stdin.Close() }
}

// startNamespaceWith runs script with init as PID 1 of a new PID namespace
// (a shell takes -c script; the test's reaper takes the script alone); the
// script reads its stdin, the returned writer.
func startNamespaceWith(t *testing.T, init, script string) (pid int, stdin io.WriteCloser) {
	t.Helper()
	testenv.RequireCommands(t, "unshare")
	args := []string{"--pid", "--fork", "--kill-child", init, "-c", script}
	if filepath.Base(init) == "postgres" {
		args = []string{"--pid", "--fork", "--kill-child", init, script}
	}
	cmd := exec.Command("unshare", args...)
	stdin, _ = cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	return testenv.ChildOf(t, cmd.Process.Pid), stdin
}

// In a PID namespace whose PID 1 is a plain shell, an orphan is adopted by
// that shell: with StreamAll the adoption is predicted in the kernel,
// confirmed by the orphan's own exit, and carries the chain it came from.
// By default nothing of it reaches user space: no postmaster is involved.
func TestKernelOrphanAdoptedByShellNamespaceInit(t *testing.T) {
	c := startProbe(t, Config{StreamAll: true})
	filtered := startProbe(t, Config{})
	init, release := startNamespace(t, `sh -c "sleep 0.3 & exit 0"; sleep 1`)
	release()

	// Only this namespace's: other namespaces on a busy machine have their
	// own PID 1 adopting orphans of shells.
	adoption := c.waitFor(t, "adoption", func(ev *event.Event) bool {
		return ev.Kind == event.KindAdoption && ev.Parent.PID == uint32(init) && ev.Previous.Comm.Is("sh")
	})
	if adoption.Parent.Flags&event.TaskNSReaper == 0 || !adoption.Parent.Comm.Is("sh") {
		t.Errorf("new parent = %+v, want the namespace's PID 1 shell", adoption.Parent)
	}
	if adoption.Task.NSLevel != 1 || adoption.Task.NSPid == adoption.Task.PID {
		t.Errorf("orphan namespace view = level %d ns pid %d (host %d)", adoption.Task.NSLevel, adoption.Task.NSPid, adoption.Task.PID)
	}
	if adoption.Birth.Ancestry[0].PID != adoption.Previous.PID || adoption.Birth.Ancestry[1].PID != adoption.Parent.PID {
		t.Errorf("orphan's chain = %+v (flags %#x), want the dying shell, then the init", adoption.Birth.Ancestry, adoption.Birth.Flags)
	}
	exit := c.waitFor(t, "orphan exit", exitOf(int(adoption.Task.PID)))
	if exit.Parent.PID != adoption.Parent.PID {
		t.Errorf("orphan died under %d, adoption predicted %d", exit.Parent.PID, adoption.Parent.PID)
	}
	time.Sleep(100 * time.Millisecond)
	if n := filtered.count(func(ev *event.Event) bool { return ev.Task.PID == adoption.Task.PID }); n != 0 {
		t.Errorf("%d events about an orphan of a shell init reached user space by default, want 0", n)
	}
}

// Where PID 1 of a namespace is a postmaster (watched), every birth there is
// recorded: an orphan's exit says, from the kernel alone, that it was adopted
// and who its original parent was.
func TestKernelBirthsAreRecordedUnderAWatchedInit(t *testing.T) {
	c := startProbe(t, Config{})
	init, release := startNamespace(t, `sh -c "sleep 0.3 & exit 0"; sleep 1`)
	st, err := procfs.Default.ReadStat(init)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.probe.Watch(event.ProcessKey{PID: uint32(init), StartTicks: st.StartTicks}); err != nil {
		t.Fatal(err)
	}
	release()
	adoption := c.waitFor(t, "adoption", func(ev *event.Event) bool {
		return ev.Kind == event.KindAdoption && ev.Parent.PID == uint32(init)
	})
	if adoption.Flags&event.HasBirth == 0 || adoption.Birth.Flags&event.BirthForked == 0 || adoption.Birth.Ancestry[0].PID != adoption.Previous.PID {
		t.Errorf("birth = %+v (flags %#x), want the fork record naming the dying shell", adoption.Birth.Ancestry[0], adoption.Birth.Flags)
	}
	if adoption.Parent.Flags&event.TaskWatched == 0 {
		t.Errorf("new parent flags %#x: want it seen as watched", adoption.Parent.Flags)
	}
	exit := c.waitFor(t, "orphan exit", exitOf(int(adoption.Task.PID)))
	if exit.Flags&event.Adopted == 0 || exit.Birth.Ancestry[0].PID != adoption.Previous.PID {
		t.Errorf("exit flags %#x, birth parent %d: want Adopted, born to %d", exit.Flags, exit.Birth.Ancestry[0].PID, adoption.Previous.PID)
	}
}

// A postmaster's crash handling signals each child and then the child's
// process group: a signal event says whether the sender is the target's
// parent, which tells the postmaster's own children (server processes) from
// their descendants.
func TestKernelSignalSaysWhetherItWentToAChild(t *testing.T) {
	c := startProbe(t, Config{})
	// The sender starts a process group of its own (a child and a
	// grandchild), waits to be watched, then signals the whole group.
	sender := exec.Command("sh", "-c", `setsid sh -c 'sleep 30 & wait' & read go; kill -TERM -$!; wait`)
	stdin, err := sender.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sender.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); sender.Process.Kill(); sender.Wait() })
	child := testenv.ChildOf(t, sender.Process.Pid)
	grandchild := testenv.ChildOf(t, child)
	t.Cleanup(func() { unix.Kill(-child, unix.SIGKILL) })
	st, err := procfs.Default.ReadStat(sender.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.probe.Watch(event.ProcessKey{PID: uint32(sender.Process.Pid), StartTicks: st.StartTicks}); err != nil {
		t.Fatal(err)
	}
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	for target, toChild := range map[int]bool{child: true, grandchild: false} {
		ev := c.waitFor(t, "signal", func(ev *event.Event) bool { return ev.Kind == event.KindSignal && ev.Task.PID == uint32(target) })
		if ev.Parent.PID != uint32(sender.Process.Pid) || ev.Signal.Signo != uint32(unix.SIGTERM) {
			t.Errorf("signal to %d: sender %d signal %d, want SIGTERM from %d", target, ev.Parent.PID, ev.Signal.Signo, sender.Process.Pid)
		}
		if got := ev.Signal.Flags&event.SignalToChild != 0; got != toChild {
			t.Errorf("signal to %d: to a child of the sender %v, want %v", target, got, toChild)
		}
	}
}

// The counters count while the fork and exit programs are attached (here
// always: AttachAll); what they see stays in the kernel by default.
func TestKernelCountersAndDefaultFilter(t *testing.T) {
	c := startProbe(t, Config{AttachAll: true})
	before, err := c.probe.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		run(t, "true")
	}
	sh := run(t, "sh", "-c", "exit 7")
	after, err := c.probe.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if after.Forks-before.Forks < 21 || after.Exits-before.Exits < 21 {
		t.Errorf("counters went from %+v to %+v, want at least 21 more forks and exits", before, after)
	}
	if lost, err := c.probe.Lost(); err != nil || lost != after.Lost {
		t.Errorf("Lost() = %d, %v; Counters says %d", lost, err, after.Lost)
	}
	if after.Lost != 0 || after.BirthsEvicted != 0 {
		t.Errorf("lost %d events, %d birth records evicted in a quiet run, want 0", after.Lost, after.BirthsEvicted)
	}
	time.Sleep(200 * time.Millisecond)
	// Ordinary exits, even with a code >= 2, of processes whose parent is no
	// postmaster, namespace init or subreaper stay in the kernel.
	if n := c.count(exitOf(sh.Process.Pid)); n != 0 {
		t.Errorf("an ordinary exit reached user space in default mode")
	}
}

func TestLoadErrorsSayWhatToDo(t *testing.T) {
	testenv.RequireRoot(t)
	_, err := Load(Config{KernelBTF: "/nonexistent/vmlinux"})
	var perr *Error
	if !errors.As(err, &perr) || perr.Problem != ProblemNoBTF || !strings.Contains(err.Error(), "CONFIG_DEBUG_INFO_BTF") {
		t.Errorf("missing BTF: %v, want ProblemNoBTF naming CONFIG_DEBUG_INFO_BTF", err)
	}
	_, err = Load(Config{Refuse: []string{"handle_exit"}})
	if !errors.As(err, &perr) || perr.Problem != ProblemKernel || !strings.Contains(err.Error(), "handle_exit") {
		t.Errorf("refused program: %v, want ProblemKernel naming handle_exit", err)
	}
	// Sizes apply to every object sharing the maps.
	p, err := Load(Config{RingBufferBytes: 4096, MaxProcesses: 512})
	if err != nil {
		t.Fatalf("small maps: %v", err)
	}
	if info, err := p.lifecycle.Births.Info(); err != nil || info.MaxEntries != 512 {
		t.Errorf("births map: %+v, %v; want 512 entries", info, err)
	}
	var wakeup uint32
	if err := p.lifecycle.WakeupBytes.Get(&wakeup); err != nil || wakeup != 2048 {
		t.Errorf("wakeup threshold %d, %v; want half the 4096-byte ring buffer", wakeup, err)
	}
	if loaded := p.oom.HandleMarkVictim != nil; loaded == (len(p.Unavailable()) != 0) {
		t.Errorf("OOM program loaded: %v, yet unavailable: %q", loaded, p.Unavailable())
	}
	p.Close()
	_, err = Load(Config{RingBufferBytes: 12345})
	if err == nil || !strings.Contains(err.Error(), "power of two") {
		t.Errorf("bad ring buffer size: %v", err)
	}
}

// When PID 1 of a namespace dies the kernel kills everything in it
// (zap_pid_ns_processes): its children are not adopted by anyone.
func TestKernelNamespaceTeardownIsNoAdoption(t *testing.T) {
	c := startProbe(t, Config{StreamAll: true})
	init, release := startNamespace(t, "sleep 30 & sleep 30 & wait")
	release()
	time.Sleep(200 * time.Millisecond) // let it start its children
	unix.Kill(init, unix.SIGKILL)
	// Its killed children are reported as exits of children of a namespace
	// init, never as adoptions.
	c.waitFor(t, "a killed sleep", func(ev *event.Event) bool {
		return ev.Kind == event.KindExit && ev.Task.Comm.Is("sleep") && ev.Parent.PID == uint32(init)
	})
	if n := c.count(func(ev *event.Event) bool { return ev.Kind == event.KindAdoption && ev.Previous.PID == uint32(init) }); n != 0 {
		t.Errorf("%d adoption events for the children of a dying namespace init, want 0", n)
	}
}

// A host pid reused by a new process (forced through ns_last_pid) gets its
// own birth record: the kernel never hands it the previous owner's.
func TestKernelPIDReuseKeepsBirthsApart(t *testing.T) {
	c := startProbe(t, Config{StreamAll: true})
	first := run(t, "sleep", "0.05")
	pid := first.Process.Pid
	var second *exec.Cmd
	for attempt := 0; ; attempt++ {
		if attempt == 50 {
			t.Fatalf("could not get pid %d reused", pid)
		}
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(fmt.Sprint(pid-1)), 0); err != nil {
			t.Fatal(err)
		}
		second = run(t, "sh", "-c", "exit 3")
		if second.Process.Pid == pid {
			break
		}
	}
	var events []event.Event
	deadline := time.Now().Add(5 * time.Second)
	for len(events) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		c.mu.Lock()
		events = events[:0]
		for _, ev := range c.events {
			if ev.Kind == event.KindExit && ev.Task.PID == uint32(pid) {
				events = append(events, ev)
			}
		}
		c.mu.Unlock()
	}
	if len(events) != 2 {
		t.Fatalf("%d exits of pid %d, want 2", len(events), pid)
	}
	a, b := events[0], events[1]
	if a.Task.Key() == b.Task.Key() || b.Task.Start <= a.Task.Start {
		t.Errorf("keys %+v and %+v: the two processes are not told apart", a.Task.Key(), b.Task.Key())
	}
	if a.Birth.ExePath() != "/usr/bin/sleep" || a.Status.Code() != 0 || !a.Task.Comm.Is("sleep") {
		t.Errorf("first owner = %q %v %q", a.Birth.ExePath(), a.Status, a.Task.Comm)
	}
	if b.Birth.ExePath() != "/usr/bin/sh" || b.Status.Code() != 3 || !b.Task.Comm.Is("sh") || b.Birth.Time <= a.Birth.Time {
		t.Errorf("second owner = %q %v %q born %d (first %d)", b.Birth.ExePath(), b.Status, b.Task.Comm, b.Birth.Time, a.Birth.Time)
	}
}

// A postgres binary's start reaches user space whichever exec program is
// attached: handle_exec_idle with nothing watched, handle_exec once a
// postmaster is, handle_exec_idle again when it is gone. Other execs do not.
func TestKernelServerExecReportedByEitherExecProgram(t *testing.T) {
	c := startProbe(t, Config{})
	dir, err := os.MkdirTemp("/tmp", "ow") // a path short enough for the kernel's exe field
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	server := filepath.Join(dir, "postgres")
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", sleep, server).CombinedOutput(); err != nil {
		t.Fatalf("copying sleep: %v: %s", err, out)
	}
	execOf := func(pid int) func(*event.Event) bool {
		return func(ev *event.Event) bool { return ev.Kind == event.KindExec && ev.Task.PID == uint32(pid) }
	}
	phase := func(when, program, summary string) {
		t.Helper()
		if got := c.probe.AttachSummary(); !strings.Contains(got, summary) {
			t.Errorf("%s: the startup line says %q, want it to say %q", when, got, summary)
		}
		var attached []string
		for _, a := range c.probe.Attached() {
			if a.Hook == "tp_btf/sched_process_exec" {
				attached = append(attached, a.Program)
			}
		}
		if !slices.Equal(attached, []string{program}) {
			t.Errorf("%s: exec programs attached %v, want [%s]", when, attached, program)
		}
		cmd := run(t, server, "0.01")
		ev := c.waitFor(t, "postgres exec ("+when+")", execOf(cmd.Process.Pid))
		if ev.Birth.ExePath() != server || !strings.Contains(string(ev.Birth.Args[:ev.Birth.ArgsLen]), "0.01") {
			t.Errorf("%s: exec event exe %q args %q, want %s 0.01", when, ev.Birth.ExePath(), ev.Birth.Args[:ev.Birth.ArgsLen], server)
		}
		other := run(t, "true")
		time.Sleep(100 * time.Millisecond)
		if n := c.count(execOf(other.Process.Pid)); n != 0 {
			t.Errorf("%s: true's exec reached user space", when)
		}
	}
	phase("nothing watched", "handle_exec_idle", "attached to tp_btf/sched_process_exec (no postmaster on this node: an exec program that only compares comms; tp_btf/sched_process_fork, ")
	st, err := procfs.Default.ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	self := event.ProcessKey{PID: uint32(os.Getpid()), StartTicks: st.StartTicks}
	if err := c.probe.Watch(self); err != nil {
		t.Fatal(err)
	}
	phase("a postmaster watched", "handle_exec", "(all of them: 1 postmaster(s) watched;")
	if err := c.probe.Unwatch(self.PID); err != nil {
		t.Fatal(err)
	}
	phase("the postmaster gone", "handle_exec_idle", "no postmaster on this node")
}
