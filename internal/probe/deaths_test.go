package probe

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/procfs"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// startPostmasterNamespace runs script in a new PID namespace whose PID 1
// the kernel takes for a watched postmaster: bash (which, like a
// postmaster, handles SIGCHLD) under the name postgres (its comm), watched
// by c. The script reads lines from the returned writer. It returns the
// init's host pid and key.
func startPostmasterNamespace(t *testing.T, c *collector, script string) (int, event.ProcessKey, io.Writer) {
	t.Helper()
	dir := t.TempDir()
	sh := filepath.Join(dir, "postgres")
	data, err := os.ReadFile("/bin/bash")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sh, data, 0o755); err != nil {
		t.Fatal(err)
	}
	init, stdin := startNamespaceWith(t, sh, "read go; "+script)
	st, err := procfs.Default.ReadStat(init)
	if err != nil {
		t.Fatal(err)
	}
	key := event.ProcessKey{PID: uint32(init), StartTicks: st.StartTicks}
	if err := c.probe.Watch(key); err != nil {
		t.Fatal(err)
	}
	stdin.Write([]byte("go\n"))
	return init, key, stdin
}

// nsPidOf reads a process's pid in its own namespace.
func nsPidOf(t *testing.T, pid int) int {
	t.Helper()
	st, err := procfs.Default.ReadStatus(pid)
	if err != nil {
		t.Fatal(err)
	}
	return st.NSPid()
}

// deathsOf counts the events that report pid's death: its exit, or its
// handing over dead.
func (c *collector) deathsOf(pid int) []event.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []event.Event
	for _, ev := range c.events {
		if ev.Task.PID == uint32(pid) && (ev.Kind == event.KindExit || (ev.Kind == event.KindAdoption && ev.Flags&event.Dead != 0)) {
			out = append(out, ev)
		}
	}
	return out
}

// A process group killed at once (kill -9 -PGID): a shell the postmaster
// adopted and its child die together. Each death reaches user space exactly
// once, whichever program sees it first; each becomes a zombie of the
// postmaster once; and the postmaster's taking SIGCHLD is reported, which
// is when it reaps them. Repeated: the two deaths race.
func TestKernelGroupKillReportsEachDeathOnce(t *testing.T) {
	c := startProbe(t, Config{})
	for round := range 10 {
		init, _, _ := startPostmasterNamespace(t, c, `trap : CHLD; setsid sh -c 'sleep 60 & wait' & while :; do sleep 1; done`)
		sh := waitChild(t, init, "sh")
		sleep := waitChild(t, sh, "sleep")
		if err := unix.Kill(-sh, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		c.waitFor(t, "the shell's exit", exitOf(sh))
		deadline := time.Now().Add(3 * time.Second)
		for len(c.deathsOf(sleep)) == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		shDeaths, sleepDeaths := c.deathsOf(sh), c.deathsOf(sleep)
		if len(shDeaths) != 1 || len(sleepDeaths) != 1 {
			t.Fatalf("round %d: %d reports of the shell's death, %d of its child's, want 1 each", round, len(shDeaths), len(sleepDeaths))
		}
		// Each became a zombie of the init once, and the init then reaped.
		for _, pid := range []int{sh, sleep} {
			ns := nsPidOf0(sleepDeaths[0], shDeaths[0], pid)
			z := c.count(func(ev *event.Event) bool {
				return ev.Kind == event.KindZombie && ev.Parent.PID == uint32(init) && ev.Task.NSPid == ns
			})
			if z != 1 {
				t.Errorf("round %d: %d zombie events for pid %d (ns %d), want 1", round, z, pid, ns)
			}
		}
		c.waitFor(t, "the init reaping", func(ev *event.Event) bool {
			return ev.Kind == event.KindReaping && ev.Parent.PID == uint32(init)
		})
		d := sleepDeaths[0]
		if d.Status.Signal() != unix.SIGKILL || d.Parent.PID != uint32(init) {
			t.Errorf("round %d: child's death %v under %d, want SIGKILL under the init %d", round, d.Status, d.Parent.PID, init)
		}
		// Reported while its father was dying (not after the handover), it
		// names the father.
		if (d.Kind == event.KindAdoption || d.Flags&event.ParentExiting != 0) && d.Previous.PID != uint32(sh) {
			t.Errorf("round %d: child's death (kind %v flags %#x previous %d) does not name its dying father %d",
				round, d.Kind, d.Flags, d.Previous.PID, sh)
		}
		unix.Kill(init, unix.SIGKILL)
	}
}

// nsPidOf0 is the namespace pid of pid, from its death report.
func nsPidOf0(a, b event.Event, pid int) uint32 {
	if a.Task.PID == uint32(pid) {
		return a.Task.NSPid
	}
	return b.Task.NSPid
}

// waitChild finds the child of parent whose comm is comm.
func waitChild(t *testing.T, parent int, comm string) int {
	t.Helper()
	for range 200 {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", parent, parent))
		for _, f := range strings.Fields(string(data)) {
			pid, _ := strconv.Atoi(f)
			if st, err := procfs.Default.ReadStat(pid); err == nil && st.Comm == comm {
				return pid
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no child %q of %d", comm, parent)
	return 0
}

// A child of the watched postmaster that dies of a crash status begins a
// reset in the kernel: from then on its clean exits are reported too (the
// startup process's ends the reset), until user space ends it.
func TestKernelCrashFlagsAResetUntilUserSpaceEndsIt(t *testing.T) {
	c := startProbe(t, Config{})
	init, key, step := startPostmasterNamespace(t, c,
		`while read what; do sh -c "exit $what"; done`)
	clean := func() int {
		return c.count(func(ev *event.Event) bool {
			return ev.Kind == event.KindExit && ev.Parent.PID == uint32(init) && ev.Status == 0
		})
	}
	resetting := func() bool {
		var w lifecycleWatch
		if err := c.probe.lifecycle.Watched.Lookup(key.PID, &w); err != nil {
			t.Fatal(err)
		}
		return w.Flags&uint32(lifecycleWatchFlagWATCH_RESETTING) != 0
	}
	fmt.Fprintln(step, 0)
	time.Sleep(200 * time.Millisecond)
	if clean() != 0 || resetting() {
		t.Fatalf("a clean exit while running was reported (%d) or began a reset (%v)", clean(), resetting())
	}
	fmt.Fprintln(step, 3)
	c.waitFor(t, "the crash", func(ev *event.Event) bool {
		return ev.Kind == event.KindExit && ev.Parent.PID == uint32(init) && ev.Status.Code() == 3
	})
	if !resetting() {
		t.Fatal("a child's exit 3 did not flag the postmaster as resetting")
	}
	fmt.Fprintln(step, 0)
	c.waitFor(t, "a clean exit during the reset", func(ev *event.Event) bool {
		return ev.Kind == event.KindExit && ev.Parent.PID == uint32(init) && ev.Status == 0
	})
	// A reset that began after the moment user space ends is kept.
	if err := c.probe.EndReset(key, 1); err != nil || !resetting() {
		t.Fatalf("EndReset before the reset began cleared it (%v)", err)
	}
	if err := c.probe.EndReset(key, c.probe.Clock().BootNow()); err != nil || resetting() {
		t.Fatalf("EndReset did not clear the reset (%v)", err)
	}
	fmt.Fprintln(step, 0)
	time.Sleep(200 * time.Millisecond)
	if n := clean(); n != 1 {
		t.Errorf("%d clean exits reported, want only the one during the reset", n)
	}
}

// Before Linux 6.16 two threads of a group exit can both read signal->live
// as 0: the program for those kernels claims the death, so a multi-threaded
// process killed is still one exit. Run here on purpose (ExitLive).
func TestKernelExitLiveProgramReportsOneExit(t *testing.T) {
	c := startProbe(t, Config{StreamAll: true, ExitLive: true})
	if got := c.probe.Attached(); !strings.Contains(fmt.Sprint(got), "handle_exit_live") {
		t.Fatalf("attached %v, want handle_exit_live", got)
	}
	for range 20 {
		helper, _ := startHelper(t, "threads")
		helper.Process.Signal(unix.SIGKILL)
		helper.Wait()
		pid := helper.Process.Pid
		c.waitFor(t, "helper exit", exitOf(pid))
		time.Sleep(50 * time.Millisecond)
		if n := c.count(exitOf(pid)); n != 1 {
			t.Fatalf("%d exit events for a process of 9 threads killed by SIGKILL, want 1", n)
		}
	}
}

// A process whose leader thread ended (pthread_exit) while its other
// threads run is alive: when its parent dies it is handed over alive, and
// its real death, later, is reported with its real status.
func TestKernelLeaderThreadExitIsNotADeath(t *testing.T) {
	c := startProbe(t, Config{})
	testenv.RequireCommands(t, "cc")
	bin := buildLeaderExits(t)
	init, _, _ := startPostmasterNamespace(t, c, fmt.Sprintf(`sh -c '%s & sleep 0.5; exit 0'; sleep 60`, bin))
	adoption := c.waitFor(t, "adoption", func(ev *event.Event) bool {
		return ev.Kind == event.KindAdoption && ev.Parent.PID == uint32(init)
	})
	if adoption.Flags&event.Dead != 0 {
		t.Fatalf("a process whose leader thread exited was handed over dead, status %v", adoption.Status)
	}
	unix.Kill(int(adoption.Task.PID), unix.SIGTERM)
	exit := c.waitFor(t, "its death", exitOf(int(adoption.Task.PID)))
	if exit.Status.Signal() != unix.SIGTERM || exit.Parent.PID != uint32(init) {
		t.Errorf("death = %v under %d, want SIGTERM under the init %d", exit.Status, exit.Parent.PID, init)
	}
	if n := len(c.deathsOf(int(adoption.Task.PID))); n != 1 {
		t.Errorf("%d reports of its death, want 1", n)
	}
}

// buildLeaderExits compiles a program whose main thread calls pthread_exit
// while a second thread sleeps on.
func buildLeaderExits(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "leader.c")
	os.WriteFile(src, []byte(`#include <pthread.h>
#include <unistd.h>
static void *sleeper(void *arg) { (void)arg; sleep(60); return 0; }
int main(void) { pthread_t t; pthread_create(&t, 0, sleeper, 0); pthread_exit(0); }
`), 0o644)
	bin := filepath.Join(dir, "leader")
	if out, err := exec.Command("cc", "-pthread", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v: %s", err, out)
	}
	os.Chmod(dir, 0o755)
	return bin
}
