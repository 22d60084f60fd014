package probe

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/procfs"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// startPostmasterNamespace runs script in a new PID namespace whose PID 1
// the kernel takes for a watched postmaster: a small program named postgres
// (its comm) that, like a postmaster, reaps its children with waitpid(-1,
// WNOHANG) in a loop when it takes SIGCHLD; watched by c. The script reads
// lines from the returned writer. It returns the init's host pid and key.
func startPostmasterNamespace(t *testing.T, c *collector, script string) (int, event.ProcessKey, io.Writer) {
	t.Helper()
	bin := testenv.CompileC(t, "postgres", `#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void reaper(int sig) { int st; (void)sig; while (waitpid(-1, &st, WNOHANG) > 0) ; }
int main(int argc, char **argv) {
	(void)argc;
	signal(SIGCHLD, reaper);
	if (fork() == 0) { execl("/bin/sh", "sh", "-c", argv[1], (char *)0); _exit(127); }
	for (;;) pause();
}
`)
	return startWatched(t, c, bin, "read go; "+script)
}

// startWatched runs bin with arg as PID 1 of a new PID namespace, has c
// watch it as a postmaster, then writes "go" to its stdin.
func startWatched(t *testing.T, c *collector, bin, arg string) (int, event.ProcessKey, io.Writer) {
	t.Helper()
	init, stdin := startNamespaceWith(t, bin, arg)
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

// reapOrder lists the pids the init's waitpid reaped, in order.
func (c *collector) reapOrder(init int) []uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint32
	for _, ev := range c.events {
		if ev.Kind == event.KindReap && ev.Parent.PID == uint32(init) {
			out = append(out, ev.Task.PID)
		}
	}
	return out
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
// once, whichever program sees it first, and each reap by the postmaster's
// waitpid once. Repeated: the two deaths race.
func TestKernelGroupKillReportsEachDeathOnce(t *testing.T) {
	c := startProbe(t, Config{})
	for round := range 10 {
		init, _, _ := startPostmasterNamespace(t, c, `setsid sh -c 'sleep 60 & wait' & exit`)
		sh, sleep := waitOrphan(t, init, "sh", "sleep")
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
		// The init's waitpid reaps each once, the older child, the shell,
		// first: its children list puts the orphan it adopted last.
		for _, pid := range []int{sh, sleep} {
			c.waitFor(t, "the init reaping", func(ev *event.Event) bool {
				return ev.Kind == event.KindReap && ev.Parent.PID == uint32(init) && ev.Task.PID == uint32(pid)
			})
			if n := c.count(func(ev *event.Event) bool { return ev.Kind == event.KindReap && ev.Task.PID == uint32(pid) }); n != 1 {
				t.Errorf("round %d: %d reaps of %d, want 1", round, n, pid)
			}
		}
		if order := c.reapOrder(init); len(order) < 2 || order[0] != uint32(sh) {
			t.Errorf("round %d: reaped %v, want the shell %d first", round, order, sh)
		}
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

// waitOrphan finds a child of init named comm (adopted: its shell exited)
// with a child of its own named grandchild.
func waitOrphan(t *testing.T, init int, comm, grandchild string) (int, int) {
	t.Helper()
	for range 200 {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", init, init))
		for _, f := range strings.Fields(string(data)) {
			pid, _ := strconv.Atoi(f)
			if st, err := procfs.Default.ReadStat(pid); err != nil || st.Comm != comm {
				continue
			}
			kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
			for _, k := range strings.Fields(string(kids)) {
				kid, _ := strconv.Atoi(k)
				if st, err := procfs.Default.ReadStat(kid); err == nil && st.Comm == grandchild {
					return pid, kid
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no orphan %q with a child %q under %d", comm, grandchild, init)
	return 0, 0
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
		`while read what; do (sh -c "sleep 0.2; exit $what" &); done`)
	clean := func() int {
		return c.count(func(ev *event.Event) bool {
			return ev.Kind == event.KindExit && ev.Parent.PID == uint32(init) && ev.Status == 0
		})
	}
	// As the programs read it (maps.h resetting): flagged by the last
	// crash, and not ended by user space since.
	resetting := func() bool {
		var w lifecycleWatch
		if err := c.probe.lifecycle.Watched.Lookup(key.PID, &w); err != nil {
			t.Fatal(err)
		}
		var end uint64
		if err := c.probe.lifecycle.ResetEnds.Lookup(key.PID, &end); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Fatal(err)
		}
		return w.Flags&uint32(lifecycleWatchFlagWATCH_RESETTING) != 0 && end < w.ResetAtNs
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
	bin := testenv.LeaderExitsProgram(t)
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

// From PostgreSQL 16 the postmaster's main loop handles the children's
// exits, then the pmsignal that ends a reset. A child that dies as a
// reaping pass ends, between its last waitpid (which found nothing) and the
// pmsignal, is reaped after the reset ended, and PostgreSQL logs it as a
// crash. So the pmsignal says zombies are pending (wait for the next pass)
// unless it is taken on the way out of a waitpid that reaped nothing. A
// postmaster-like program: a child crashes (the reset begins, its zombie
// waits), and a second child, the "startup process", sends SIGUSR1 while
// the postmaster waits for it (interrupted: nothing reaped), or pauses.
func TestKernelPMSignalAfterAnEmptyWaitFindsNoZombiesPending(t *testing.T) {
	c := startProbe(t, Config{})
	bin := testenv.CompileC(t, "postgres", `#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static void pmsignal(int sig) { (void)sig; }
int main(int argc, char **argv) {
	struct sigaction sa;
	char go;
	(void)argc;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = pmsignal; /* no SA_RESTART: the signal ends the wait */
	sigaction(SIGUSR1, &sa, 0);
	if (read(0, &go, 1) != 1) return 1;
	if (fork() == 0) _exit(2);
	pid_t startup = fork();
	if (startup == 0) { usleep(300000); kill(getppid(), SIGUSR1); pause(); _exit(0); }
	if (strcmp(argv[1], "wait") == 0) waitpid(startup, 0, 0);
	for (;;) pause();
}
`)
	for _, how := range []struct {
		arg     string
		pending bool
	}{{"wait", false}, {"pause", true}} {
		init, _, _ := startWatched(t, c, bin, how.arg)
		pm := c.pmsignalOf(t, init, how.arg)
		if got := pm.Flags&event.ZombiesPending != 0; got != how.pending {
			t.Errorf("pmsignal taken in %s: zombies pending %v, want %v", how.arg, got, how.pending)
		}
	}
}

// From PostgreSQL 16 a pmsignal taken with no reaping pass under way or
// due is acted on when the main loop gets to it, unless a child's SIGCHLD
// comes first: then that child is reaped before it. A postmaster-like
// program: a crash, reaped (the pass ends finding none), then the startup
// process's SIGUSR1, taken while it sleeps; then, before a second child
// exits 2, it either spins (still in that turn of its loop: the pmsignal
// waits for the pass) or sleeps again (back in its wait: it was acted on).
func TestKernelPMSignalHeldUntilTheNextSIGCHLDSaysWhichCameFirst(t *testing.T) {
	c := startProbe(t, Config{})
	bin := testenv.CompileC(t, "postgres", `#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static volatile sig_atomic_t usr1, chld;
static void on_usr1(int sig) { (void)sig; usr1 = 1; }
static void on_chld(int sig) { (void)sig; chld = 1; }
int main(int argc, char **argv) {
	struct sigaction sa;
	char go;
	int st;
	(void)argc;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, 0);
	sa.sa_handler = on_chld;
	sigaction(SIGCHLD, &sa, 0);
	if (read(0, &go, 1) != 1) return 1;
	if (fork() == 0) _exit(2);
	while (!chld) usleep(10000);
	chld = 0;
	while (waitpid(-1, &st, WNOHANG) > 0) ;
	if (fork() == 0) { usleep(300000); kill(getppid(), SIGUSR1); pause(); _exit(0); }
	if (fork() == 0) { usleep(600000); _exit(2); }
	while (!usr1) usleep(10000);
	if (strcmp(argv[1], "spin") == 0) { while (!chld) ; }
	else { while (!chld) usleep(10000); }
	while (waitpid(-1, &st, WNOHANG) > 0) ;
	for (;;) pause();
}
`)
	for _, how := range []struct {
		arg     string
		pending bool
	}{{"spin", true}, {"sleep", false}} {
		init, _, _ := startWatched(t, c, bin, how.arg)
		pm := c.pmsignalOf(t, init, how.arg)
		if got := pm.Flags&event.ZombiesPending != 0; got != how.pending {
			t.Errorf("pmsignal, then a child's exit while the postmaster %ss: zombies pending %v, want %v", how.arg, got, how.pending)
		}
		if how.pending {
			c.waitFor(t, "the end of the reaping pass ("+how.arg+")", func(ev *event.Event) bool {
				return ev.Kind == event.KindReapedAll && ev.Parent.PID == uint32(init)
			})
		}
	}
}

// pmsignalOf waits for the pmsignal the watched init takes; in names the
// case for the failure message.
func (c *collector) pmsignalOf(t *testing.T, init int, in string) event.Event {
	t.Helper()
	return c.waitFor(t, "the pmsignal ("+in+")", func(ev *event.Event) bool {
		return ev.Kind == event.KindPMSignal && ev.Parent.PID == uint32(init)
	})
}
