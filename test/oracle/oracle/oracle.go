// Package oracle is orphanwatch's differential oracle: it runs seeded
// rounds of incidents (families) against a real PostgreSQL whose
// postmaster is PID 1 of its PID namespace, with fork storms around them,
// while `orphanwatch trace --json` watches; then PostgreSQL's own log is
// the judge: every crash line it wrote must match exactly one crash-restart
// record, and every crash-restart record exactly one line.
package oracle

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// Config is one oracle run.
type Config struct {
	Rounds   int
	Seed     uint64
	Families []string // empty: all
	Round    int      // >= 0: replay only this round
	From     int      // the first round's index: rounds From..From+Rounds-1 run
	Workers  int
	PG       int    // PostgreSQL major version
	Cluster  string // a key of Kinds; empty: AutoKind(PG)
	Storms   bool
	Verbose  bool
	Out      io.Writer
	// TraceArgs are extra arguments for orphanwatch trace.
	TraceArgs []string
	// Artifacts, when set, is a directory the run's evidence is written
	// to: each cluster's PostgreSQL log, trace's records and stderr, and
	// the rounds with their processes.
	Artifacts string
	// Interrupt, when closed, stops handing out rounds: the rounds under
	// way finish, and the run ends and is judged as usual (Ctrl-C).
	Interrupt <-chan struct{}
}

// Instance is one cluster the run used: a fresh one starts after a round
// shuts the server down.
type Instance struct {
	Index         int
	PostmasterPID int
	Started       time.Time
	Ended         time.Time
	Log           string // read before the cluster's files are removed
	PidNS         uint64 // the inode of its PID namespace
	cluster       Cluster
}

// runner is the shared state of a run.
type runner struct {
	cfg      Config
	families []*Family
	scratch  string
	owRun    string // ow-run's host path
	threads  string // owthreads' host path
	template string // the data directory a second postmaster copies
	storm    string // static (older glibcs in the images), in scratch
	kind     Kind
	pidNS    uint64 // the current cluster's PID namespace
	trace    *tracer

	// mu is held for reading by each round and for writing by a round
	// that ends the cluster (and while the cluster is replaced).
	mu        sync.RWMutex
	instances []*Instance
	harness   []string // harness failures outside rounds
	// traceStopped: a crash line logged after it is no miss of orphanwatch's.
	traceStopped time.Time
	logMu        sync.Mutex
}

//go:embed testdata/threads.c
var threadsSource []byte

// Run runs the oracle and judges it.
func Run(cfg Config) (*Result, error) {
	if cfg.Workers < 1 {
		cfg.Workers = 1
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Cluster == "" || cfg.Cluster == "auto" {
		cfg.Cluster = AutoKind(cfg.PG)
	}
	kind, ok := Kinds[cfg.Cluster]
	if !ok {
		return nil, fmt.Errorf("no cluster kind %q", cfg.Cluster)
	}
	if !slices.Contains(kind.Versions(), cfg.PG) {
		return nil, fmt.Errorf("the %s cluster runs PostgreSQL %v, not %d", cfg.Cluster, kind.Versions(), cfg.PG)
	}
	start := kind.Start
	run := &runner{cfg: cfg, kind: kind}
	for _, name := range cfg.Families {
		f := FamilyNamed(name)
		if f == nil {
			return nil, fmt.Errorf("no family %q (families: %s)", name, familyNames())
		}
		run.families = append(run.families, f)
	}
	if len(run.families) == 0 {
		run.families = Families
	}
	if err := run.prepare(); err != nil {
		return nil, err
	}
	defer os.RemoveAll(run.scratch)

	began := time.Now()
	tr, err := startTracer(mustBinary(), cfg.TraceArgs...)
	if err != nil {
		return nil, err
	}
	run.trace = tr
	defer tr.stop()
	if err := run.newInstance(start); err != nil {
		return nil, err
	}

	ctx, stopStorms := context.WithCancel(context.Background())
	var storms sync.WaitGroup
	if cfg.Storms {
		run.startStorms(ctx, &storms)
	}

	rounds := run.playRounds(start)

	stopStorms()
	storms.Wait()
	// Let the run end cleanly: the server up again and late records in.
	current := run.instances[len(run.instances)-1]
	if err := current.cluster.Ready(60 * time.Second); err != nil {
		run.harnessf("after the last round the server did not come back: %v", err)
	}
	time.Sleep(2 * time.Second)
	run.traceStopped = time.Now()
	stoppedCleanly := tr.stop()
	run.endInstance(current)

	res := judge(run, rounds)
	res.Elapsed = time.Since(began)
	res.Counters = parseCounters(tr.stderr.String())
	res.TraceStderr = tr.stderr.String()
	if !stoppedCleanly {
		res.OrphanwatchErrors = append(res.OrphanwatchErrors, "orphanwatch trace did not exit within 10 s of SIGINT (killed)")
	}
	if cfg.Artifacts != "" {
		if err := res.writeArtifacts(cfg.Artifacts, tr.snapshot()); err != nil {
			return res, fmt.Errorf("writing the artifacts: %w", err)
		}
	}
	return res, nil
}

// prepare builds what the rounds need in a scratch directory the
// namespace can read. The programs run inside are linked statically: a
// container's glibc may be older than the host's.
func (run *runner) prepare() error {
	var err error
	if _, err = testenv.BuildBinary(); err != nil {
		return err
	}
	if run.scratch, err = os.MkdirTemp("", "orphanwatch-oracle-"); err != nil {
		return err
	}
	if err := os.Chmod(run.scratch, 0o755); err != nil {
		return err
	}
	if run.template, err = run.kind.Template(run.cfg.PG, run.scratch, prefixWriter{run}); err != nil {
		return err
	}
	run.owRun = filepath.Join(run.scratch, "ow-run")
	if err := writeExecutable(run.owRun, owRun); err != nil {
		return err
	}
	src := filepath.Join(run.scratch, "threads.c")
	run.threads = filepath.Join(run.scratch, "owthreads")
	if err := os.WriteFile(src, threadsSource, 0o644); err != nil {
		return err
	}
	if out, err := exec.Command("cc", "-O2", "-static", "-pthread", "-o", run.threads, src).CombinedOutput(); err != nil {
		return fmt.Errorf("compiling owthreads: %v: %s", err, out)
	}
	run.storm = filepath.Join(run.scratch, "storm")
	if out, err := exec.Command("cc", "-O2", "-static", "-o", run.storm, filepath.Join(testenv.ModuleRoot(), "bench", "storm", "storm.c")).CombinedOutput(); err != nil {
		return fmt.Errorf("compiling the storm driver: %v: %s", err, out)
	}
	return nil
}

// prefixWriter sends a kind's progress (an image build) to the run's log.
type prefixWriter struct{ run *runner }

func (w prefixWriter) Write(p []byte) (int, error) {
	w.run.logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func mustBinary() string {
	path, _ := testenv.BuildBinary() // built by prepare
	return path
}

// writeArtifacts writes the evidence the run was judged on.
func (res *Result) writeArtifacts(dir string, records []TraceRecord) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, inst := range res.Instances {
		name := filepath.Join(dir, fmt.Sprintf("postgres-%d-pid%d.log", inst.Index, inst.PostmasterPID))
		if err := os.WriteFile(name, []byte(inst.Log), 0o644); err != nil {
			return err
		}
	}
	var trace strings.Builder
	for _, r := range records {
		trace.WriteString(r.Line + "\n")
	}
	var rounds strings.Builder
	for _, r := range res.Rounds {
		fmt.Fprintf(&rounds, "%s, cluster %d, %s to %s\n", describeRound(r), r.Instance, clock(r.Start), clock(r.End))
	}
	var report strings.Builder
	res.Print(&report)
	for name, text := range map[string]string{"trace.jsonl": trace.String(), "trace.stderr": res.TraceStderr,
		"rounds.txt": rounds.String(), "report.txt": report.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// newInstance starts a cluster and waits until orphanwatch has seen its
// postmaster (a round before that would test the start, not the rules).
func (run *runner) newInstance(start ClusterStarter) error {
	began := time.Now() // its lifetime includes its start
	c, err := start(run.cfg.PG, run.scratch)
	if err != nil {
		return fmt.Errorf("starting PostgreSQL %d: %w", run.cfg.PG, err)
	}
	inst := &Instance{Index: len(run.instances), PostmasterPID: c.PostmasterPID(), Started: began, cluster: c}
	run.instances = append(run.instances, inst)
	if run.pidNS, err = pidNamespace(c.PostmasterPID()); err != nil {
		return fmt.Errorf("the postmaster's PID namespace: %w", err)
	}
	inst.PidNS = run.pidNS
	pm := uint32(c.PostmasterPID())
	if !run.trace.waitFor(15*time.Second, func(r *TraceRecord) bool {
		return r.Verdict == "postmaster-pid1" && r.Postmaster != nil && r.Postmaster.PID == pm
	}) {
		run.logf("warning: no postmaster-pid1 record for postmaster %d within 15 s", pm)
	}
	run.logf("cluster %d: PostgreSQL %d, postmaster pid %d (PID 1 of its namespace)", inst.Index, run.cfg.PG, pm)
	return nil
}

// endInstance keeps the cluster's log and removes it.
func (run *runner) endInstance(inst *Instance) {
	inst.Log = inst.cluster.Log()
	inst.Ended = time.Now()
	if err := inst.cluster.Stop(); err != nil {
		run.harnessf("stopping cluster %d: %v", inst.Index, err)
	}
}

// familyFor is round i's family: the first rounds visit every family once,
// in an order drawn from the seed, so that a short run covers them all
// (those rounds are isolated: see Round.Isolated); after that by weight.
func (run *runner) familyFor(i int, rng *rand.Rand) *Family {
	fams := run.families
	if i < len(fams) {
		order := rand.New(rand.NewPCG(run.cfg.Seed, 0xfa)).Perm(len(fams))
		return fams[order[i]]
	}
	total := 0.0
	for _, f := range fams {
		total += f.Weight
	}
	x := rng.Float64() * total
	for _, f := range fams {
		if x -= f.Weight; x < 0 {
			return f
		}
	}
	return fams[len(fams)-1]
}

// playRounds runs the rounds on the workers.
func (run *runner) playRounds(start ClusterStarter) []*Round {
	var indices []int
	if run.cfg.Round >= 0 {
		indices = []int{run.cfg.Round}
	} else {
		for i := range run.cfg.Rounds {
			indices = append(indices, run.cfg.From+i)
		}
	}
	rounds := make([]*Round, len(indices))
	jobs := make(chan int)
	var wg sync.WaitGroup
	var doneMu sync.Mutex
	done := 0
	began := time.Now()
	for range run.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range jobs {
				rounds[k] = run.playRound(indices[k], start)
				doneMu.Lock()
				done++
				if run.cfg.Verbose {
					run.logf("%s", describeRound(rounds[k]))
				} else if done%10 == 0 || done == len(indices) {
					run.logf("%d/%d rounds, %s", done, len(indices), time.Since(began).Round(time.Second))
				}
				doneMu.Unlock()
			}
		}()
	}
	started := len(indices)
feed:
	for k := range indices {
		select {
		case jobs <- k:
		case <-run.cfg.Interrupt:
			run.logf("interrupted: finishing the rounds under way, then judging the %d started", k)
			started = k
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	return rounds[:started]
}

// playRound runs one round against the current cluster.
func (run *runner) playRound(i int, start ClusterStarter) *Round {
	rng := roundRNG(run.cfg.Seed, i)
	r := &Round{Index: i, rng: rng, run: run}
	r.Family = run.familyFor(i, rng)
	r.Isolated = i < len(run.families)
	r.dir = filepath.Join(run.scratch, fmt.Sprintf("r%d", i))
	if err := os.Mkdir(r.dir, 0o755); err != nil {
		r.HarnessErr = err
		return r
	}
	run.replaceIfExited(start)
	if r.Family.Exclusive || r.Isolated {
		run.mu.Lock()
		defer run.mu.Unlock()
	} else {
		run.mu.RLock()
		defer run.mu.RUnlock()
	}
	inst := run.instances[len(run.instances)-1]
	r.Instance, r.cluster, r.psql = inst.Index, inst.cluster, inst.cluster.Psql()
	r.Start = time.Now()
	err := r.Family.Run(r)
	r.collect()
	r.End = time.Now()
	r.release()
	r.HarnessErr = err
	if r.EndsCluster {
		// Held for writing: no other round runs.
		run.endInstance(inst)
		if err := run.newInstance(start); err != nil {
			run.harnessf("starting a fresh cluster after %s: %v", r, err)
		}
	}
	return r
}

// replaceIfExited starts a fresh cluster if the current one died without
// a round meaning it to: a harness failure.
func (run *runner) replaceIfExited(start ClusterStarter) {
	run.mu.RLock()
	inst := run.instances[len(run.instances)-1]
	exited := inst.cluster.Exited()
	run.mu.RUnlock()
	if !exited {
		return
	}
	run.mu.Lock()
	defer run.mu.Unlock()
	if inst != run.instances[len(run.instances)-1] {
		return // another worker replaced it
	}
	run.harnessf("cluster %d (postmaster %d) exited with no round ending it:\n%s", inst.Index, inst.PostmasterPID, tail(inst.cluster.Log(), 20))
	run.endInstance(inst)
	if err := run.newInstance(start); err != nil {
		run.harnessf("starting a fresh cluster: %v", err)
	}
}

// startStorms runs the storm binary on the host continuously and short
// storms inside the namespace, until ctx ends.
func (run *runner) startStorms(ctx context.Context, wg *sync.WaitGroup) {
	loop := func(pause time.Duration, cmd func() *exec.Cmd) {
		defer wg.Done()
		for ctx.Err() == nil {
			if c := cmd(); c != nil {
				c.Run() // a storm cut short by a cluster's end is no failure
			}
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			}
		}
	}
	wg.Add(2)
	go loop(300*time.Millisecond, func() *exec.Cmd {
		return ownGroup(exec.CommandContext(ctx, run.storm, "-v", "-n", "2000"), syscall.SIGKILL)
	})
	go loop(time.Second, func() *exec.Cmd {
		if !run.mu.TryRLock() {
			return nil // a cluster is being replaced
		}
		defer run.mu.RUnlock()
		c := run.instances[len(run.instances)-1].cluster
		return ownGroup(c.Command(run.storm, "-v", "-n", "300"), syscall.SIGKILL)
	})
}

// ownGroup puts a child of the oracle in a process group of its own, so
// that a Ctrl-C at the terminal reaches only the oracle (which then ends
// the run cleanly), and has the kernel send it deathSignal if the oracle
// dies first, so that nothing outlives a killed oracle.
func ownGroup(cmd *exec.Cmd, deathSignal syscall.Signal) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSignal}
	return cmd
}

func (run *runner) logf(format string, args ...any) {
	run.logMu.Lock()
	defer run.logMu.Unlock()
	fmt.Fprintf(run.cfg.Out, "oracle: "+format+"\n", args...)
}

func (run *runner) harnessf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	run.logMu.Lock()
	run.harness = append(run.harness, msg)
	run.logMu.Unlock()
	run.logf("HARNESS: %s", msg)
}

func describeRound(r *Round) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r, r.End.Sub(r.Start).Round(time.Millisecond))
	var procs []string
	for _, p := range r.Procs {
		procs = append(procs, p.String())
	}
	if len(procs) > 0 {
		fmt.Fprintf(&b, "; %s", strings.Join(procs, ", "))
	}
	if r.HarnessErr != nil {
		fmt.Fprintf(&b, "\n  HARNESS: %v", r.HarnessErr)
	}
	return b.String()
}

func familyNames() string {
	var names []string
	for _, f := range Families {
		names = append(names, f.Name)
	}
	return strings.Join(names, ",")
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
