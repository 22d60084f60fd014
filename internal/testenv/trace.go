package testenv

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/report"
)

// Tracer is a running `orphanwatch trace --json`, collecting its records.
type Tracer struct {
	t       testing.TB
	cmd     *exec.Cmd
	mu      sync.Mutex
	records []report.Record
	stderr  Buffer
	done    chan struct{}
	cancel  context.CancelFunc
}

// StartTrace runs the binary's trace command with --json and extra args,
// and waits until it has attached.
func StartTrace(t testing.TB, args ...string) *Tracer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr := &Tracer{t: t, done: make(chan struct{}), cancel: cancel}
	tr.cmd = exec.CommandContext(ctx, Binary(t), append([]string{"trace", "--json"}, args...)...)
	tr.cmd.Cancel = func() error { return tr.cmd.Process.Signal(os.Interrupt) }
	tr.cmd.WaitDelay = 5 * time.Second
	stdout, err := tr.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	tr.cmd.Stderr = &tr.stderr
	if err := tr.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(tr.done)
		scan := bufio.NewScanner(stdout)
		scan.Buffer(make([]byte, 1<<20), 1<<20)
		for scan.Scan() {
			var r report.Record
			if err := json.Unmarshal(scan.Bytes(), &r); err != nil {
				t.Errorf("trace wrote a line that is not a record: %v: %s", err, scan.Text())
				continue
			}
			tr.mu.Lock()
			tr.records = append(tr.records, r)
			tr.mu.Unlock()
		}
		tr.cmd.Wait()
	}()
	t.Cleanup(func() { tr.Stop() })
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(tr.Stderr(), "tracing;") {
		select {
		case <-tr.done:
			t.Fatalf("trace exited before attaching:\n%s", tr.Stderr())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace did not attach within 15s:\n%s", tr.Stderr())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return tr
}

// Stop interrupts the trace (as Ctrl-C does) and waits for its summary.
func (tr *Tracer) Stop() {
	tr.cancel()
	<-tr.done
}

// Kill ends the trace with SIGKILL, as a crash or the OOM killer would.
func (tr *Tracer) Kill() {
	tr.cmd.Process.Kill()
	<-tr.done
}

// PID is the agent's process id.
func (tr *Tracer) PID() int { return tr.cmd.Process.Pid }

// Exited reports whether the trace has exited.
func (tr *Tracer) Exited() bool {
	select {
	case <-tr.done:
		return true
	default:
		return false
	}
}

// Stderr is what the trace printed on stderr: header and summary.
func (tr *Tracer) Stderr() string { return tr.stderr.String() }

// Records returns the records so far that match.
func (tr *Tracer) Records(match func(*report.Record) bool) []report.Record {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []report.Record
	for i := range tr.records {
		if match(&tr.records[i]) {
			out = append(out, tr.records[i])
		}
	}
	return out
}

// WaitFor waits until a record matches, and returns it.
func (tr *Tracer) WaitFor(timeout time.Duration, match func(*report.Record) bool) (report.Record, bool) {
	deadline := time.Now().Add(timeout)
	for {
		if rs := tr.Records(match); len(rs) > 0 {
			return rs[0], true
		}
		if time.Now().After(deadline) {
			return report.Record{}, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
