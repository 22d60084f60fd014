package probe

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The kernel tests need multi-threaded processes: the test binary run again
// with helperEnv set is one, doing what the variable names.
const helperEnv = "ORPHANWATCH_PROBE_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "threads": // several threads blocked in read(2), until killed
		blockThreads(8)
		fmt.Println("ready")
		select {}
	case "fork-from-thread": // a worker thread forks a child, then the process exits
		blockThreads(8)
		tid, child := forkFromWorkerThread()
		fmt.Println(tid, child)
		os.Exit(0)
	}
	fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
	os.Exit(2)
}

// blockThreads parks n OS threads in read(2) on a pipe nobody writes to.
func blockThreads(n int) {
	var fds [2]int
	if err := unix.Pipe(fds[:]); err != nil {
		panic(err)
	}
	for range n {
		go func() {
			runtime.LockOSThread()
			unix.Read(fds[0], make([]byte, 1))
		}()
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if tasks, _ := os.ReadDir("/proc/self/task"); len(tasks) > n {
			return
		}
	}
	panic("threads did not start")
}

// onWorkerThread runs fn on an OS thread of its own that is not the main
// thread, locked to it: the thread ends when fn returns. Go wedges the main
// thread instead of ending it, so a goroutine that lands there tries again.
func onWorkerThread(fn func()) {
	worker := make(chan bool)
	for {
		go func() {
			runtime.LockOSThread()
			if unix.Gettid() == os.Getpid() {
				runtime.UnlockOSThread()
				worker <- false
				return
			}
			worker <- true
			fn()
		}()
		if <-worker {
			return
		}
	}
}

// forkFromWorkerThread starts `sleep 5` from a thread that is not the main
// one, which stays blocked afterwards: the child is on that thread's list
// of children. Returns the thread's id and the child's pid.
func forkFromWorkerThread() (tid, child int) {
	type result struct{ tid, child int }
	done := make(chan result)
	onWorkerThread(func() {
		cmd := exec.Command("sleep", "5")
		if err := cmd.Start(); err != nil {
			panic(err)
		}
		done <- result{unix.Gettid(), cmd.Process.Pid}
		select {} // keeps the thread, locked and parked
	})
	r := <-done
	return r.tid, r.child
}

// startHelper runs the test binary as helper mode and returns it with the
// first line it printed.
func startHelper(t *testing.T, mode string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("helper %s: %v", mode, err)
	}
	return cmd, line
}
