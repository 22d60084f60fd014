package oracle

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// TraceRecord is one line of `orphanwatch trace --json`.
type TraceRecord struct {
	report.Record
	Line    string    // as printed
	Arrived time.Time // when the harness read it
}

// tracer runs `orphanwatch trace --json` for the whole run. Unlike
// testenv.Tracer it needs no test: the oracle is also a program.
type tracer struct {
	cmd       *exec.Cmd
	mu        sync.Mutex
	records   []TraceRecord
	malformed []string // lines that are not records: orphanwatch's fault
	stderr    testenv.Buffer
	done      chan struct{}
	exitErr   error
	diedEarly bool
	stopping  bool // set before the harness interrupts it: an exit before that is orphanwatch's failure
}

func startTracer(binary string, args ...string) (*tracer, error) {
	tr := &tracer{done: make(chan struct{})}
	// Interrupted, it prints its summary: what it gets if the oracle dies.
	tr.cmd = ownGroup(exec.Command(binary, append([]string{"trace", "--json"}, args...)...), syscall.SIGINT)
	stdout, err := tr.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	tr.cmd.Stderr = &tr.stderr
	if err := tr.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting orphanwatch trace: %w", err)
	}
	go func() {
		defer close(tr.done)
		scan := bufio.NewScanner(stdout)
		scan.Buffer(make([]byte, 1<<20), 1<<20)
		for scan.Scan() {
			line := scan.Text()
			var r report.Record
			err := json.Unmarshal([]byte(line), &r)
			tr.mu.Lock()
			if err != nil {
				tr.malformed = append(tr.malformed, line)
			} else {
				tr.records = append(tr.records, TraceRecord{Record: r, Line: line, Arrived: time.Now()})
			}
			tr.mu.Unlock()
		}
		tr.exitErr = tr.cmd.Wait()
		tr.mu.Lock()
		tr.diedEarly = !tr.stopping
		tr.mu.Unlock()
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(tr.stderr.String(), "tracing;") {
		if tr.exited() {
			return nil, fmt.Errorf("orphanwatch trace exited before attaching: %v\n%s", tr.exitErr, tr.stderr.String())
		}
		if time.Now().After(deadline) {
			tr.cmd.Process.Kill()
			<-tr.done
			return nil, fmt.Errorf("orphanwatch trace did not attach within 30s:\n%s", tr.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return tr, nil
}

func (tr *tracer) exited() bool {
	select {
	case <-tr.done:
		return true
	default:
		return false
	}
}

// stop interrupts the trace as Ctrl-C does and waits for its summary; it
// reports whether trace ended by itself within 10 s.
func (tr *tracer) stop() bool {
	if tr.exited() {
		return true
	}
	tr.mu.Lock()
	tr.stopping = true
	tr.mu.Unlock()
	tr.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-tr.done:
		return true
	case <-time.After(10 * time.Second):
		tr.cmd.Process.Kill()
		<-tr.done
		return false
	}
}

// snapshot is the records so far.
func (tr *tracer) snapshot() []TraceRecord {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]TraceRecord(nil), tr.records...)
}

// waitFor waits until a record matches.
func (tr *tracer) waitFor(timeout time.Duration, match func(*TraceRecord) bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		tr.mu.Lock()
		for i := range tr.records {
			if match(&tr.records[i]) {
				tr.mu.Unlock()
				return true
			}
		}
		tr.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// Counters are the kernel-side counts trace prints in its summary.
type Counters struct {
	Found     bool // the summary line was there
	Forks     int64
	Exits     int64
	Lost      int64
	Malformed int64
	Evicted   int64 // birth records evicted
	Truncated int64 // orphans not reported (too many children)
	TableEvictions,
	Mispredicted int64
	// Misordered: reaps trace warned it decided out of the postmaster's
	// order; a miss beside a non-zero count is that race.
	Misordered int64
}

var summaryRE = regexp.MustCompile(`kernel saw (\d+) forks and (\d+) exits; lost events (\d+), malformed (\d+), birth records evicted (\d+), orphans not reported \(too many children\) (\d+), table evictions (\d+), mispredicted adoptions (\d+)`)

var misorderedRE = regexp.MustCompile(`WARNING: (\d+) reaps misordered`)

func parseCounters(stderr string) Counters {
	m := summaryRE.FindStringSubmatch(stderr)
	if m == nil {
		return Counters{}
	}
	n := func(i int) int64 { v, _ := strconv.ParseInt(m[i], 10, 64); return v }
	c := Counters{Found: true, Forks: n(1), Exits: n(2), Lost: n(3), Malformed: n(4), Evicted: n(5), Truncated: n(6), TableEvictions: n(7), Mispredicted: n(8)}
	if w := misorderedRE.FindStringSubmatch(stderr); w != nil {
		c.Misordered, _ = strconv.ParseInt(w[1], 10, 64)
	}
	return c
}

func (c Counters) String() string {
	if !c.Found {
		return "no summary (trace did not print one)"
	}
	return fmt.Sprintf("kernel saw %d forks, %d exits; lost events %d, malformed %d, birth records evicted %d, orphans not reported %d, table evictions %d, mispredicted adoptions %d, reaps misordered %d",
		c.Forks, c.Exits, c.Lost, c.Malformed, c.Evicted, c.Truncated, c.TableEvictions, c.Mispredicted, c.Misordered)
}
