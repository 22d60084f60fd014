// Command bench measures orphanwatch's cost side by side with no tracer and
// with a bpftrace peer, in one run, and prints its tables (make bench; the
// results and how to read them are in docs/benchmarks.md). It needs root,
// bin/orphanwatch (make build), cc, bpftrace, tini, PostgreSQL 15 with
// pgbench, and tracefs (mounted if absent).
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

var (
	binary     = flag.String("orphanwatch", "bin/orphanwatch", "the orphanwatch binary to measure")
	rounds     = flag.Int("rounds", 40, "paired storm rounds (none, serve) on the host")
	peerRounds = flag.Int("peer-rounds", 6, "paired storm rounds (none, bpftrace) on the host")
	dbRounds   = flag.Int("db-rounds", 10, "paired storm rounds (none, serve) inside the PostgreSQL container")
	stormCPU   = flag.Int("storm-cpu", -1, "CPU to pin the storm to (default: the last)")
	stormSize  = flag.Int("storm", 20000, "processes per vfork storm")
	forkSize   = flag.Int("fork-storm", 2000, "processes per fork() storm (~1 ms each here)")
	execSize   = flag.Int("exec-storm", 600, "processes per fork+exec storm (~3 ms each here)")
	kernRounds = flag.Int("kernel-rounds", 3, "storms of each kind per node configuration for the kernel's accounting")
	pgRounds   = flag.Int("pgbench-rounds", 14, "paired pgbench -C rounds (none, serve)")
	pgSeconds  = flag.Int("pgbench-seconds", 4, "seconds per pgbench -C run")
	switches   = flag.Int("switches", 5, "postmaster starts and stops during the storm for lost events across attach/detach")
	costSize   = flag.Int("cost-storm", 100000, "processes for the agent and BPF cost run")
	extraProcs = flag.Int("startup-processes", 10000, "extra live processes during the startup measurement")
	latencyN   = flag.Int("latency-events", 2000, "exits timed for detection latency")
	markdown   = flag.Bool("markdown", false, "print the table as Markdown (for docs/benchmarks.md)")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type row struct{ measure, result, target, verdict string }

func run() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: run `make bench` as root")
	}
	work, err := os.MkdirTemp("", "orphanwatch-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	storm := filepath.Join(work, "storm")
	if out, err := exec.Command("cc", "-O2", "-o", storm, "bench/storm/storm.c").CombinedOutput(); err != nil {
		return fmt.Errorf("compiling bench/storm/storm.c: %v: %s", err, out)
	}
	if err := mountTracefs(); err != nil {
		return err
	}
	for _, tool := range []string{"bpftrace", "tini", "taskset", "unshare", "nsenter", filepath.Join(testenv.PGBin, "pgbench")} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("needs %s (scripts/deps.sh installs it): %w", tool, err)
		}
	}
	defer testenv.RemoveBuilt() // the template cluster

	started := time.Now()
	var rows []row

	say("storm overhead on the host: %d paired rounds with serve, %d with bpftrace, %d processes each", *rounds, *peerRounds, *stormSize)
	overhead, err := stormOverheads(storm)
	if err != nil {
		return err
	}
	rows = append(rows, overhead...)

	// The kernel's accounting in each node configuration, and PostgreSQL's
	// throughput, share the PID-1 cluster that the in-database storms use.
	m, db, err := measureNodes(storm)
	if db == nil {
		return err
	}
	// Once only: a second Stop would signal pids the kernel may have reused.
	stopDB := sync.OnceValue(db.Stop)
	defer stopDB()
	if err != nil {
		return err
	}
	say("pgbench -C against the PID-1 postmaster: %d paired rounds of %ds", *pgRounds, *pgSeconds)
	tps, err := pgbenchRatio(db, work)
	if err != nil {
		return err
	}

	say("storm inside a PostgreSQL container (postmaster as PID 1: births recorded): %d rounds", *dbRounds)
	inDB, err := databaseStorms(db, storm, m.birthsRow())
	if err != nil {
		return err
	}
	rows = append(rows, inDB...)
	if err := stopDB(); err != nil {
		return err
	}

	say("lost events across attach/detach: %d postmaster starts and stops (PID 1 of a namespace) during a host storm", *switches)
	lostSwitching, err := lostAcrossSwitches(storm)
	if err != nil {
		return err
	}

	say("agent and BPF cost: %d processes with serve, then with serve --all", *costSize)
	cost, err := agentCost(storm)
	if err != nil {
		return err
	}
	rows = append(rows, cost...)

	say("detection latency: %d exits with serve --all", *latencyN)
	latency, err := detectionLatency()
	if err != nil {
		return err
	}
	rows = append(rows, latency...)

	say("user-space path: go test -bench")
	userspace, err := userSpacePath()
	if err != nil {
		return err
	}
	rows = append(rows, userspace...)

	say("startup with %d extra processes", *extraProcs)
	startup, err := startupTime(storm)
	if err != nil {
		return err
	}
	rows = append(rows, startup...)

	rows = append(rows, m.targetRows()...)
	rows = append(rows, tps...)
	rows = append(rows, lostSwitching...)
	printTables(rows, m, time.Since(started))
	return nil
}

// benchStart dates the progress lines, which tell where the time goes.
var benchStart = time.Now()

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: %s "+format+"\n", append([]any{time.Since(benchStart).Round(time.Second)}, args...)...)
}

func mountTracefs() error {
	if _, err := os.Stat("/sys/kernel/tracing/events"); err == nil {
		return nil
	}
	if err := unix.Mount("nodev", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return fmt.Errorf("mounting tracefs at /sys/kernel/tracing for the bpftrace peer: %w", err)
	}
	fmt.Fprintln(os.Stderr, "bench: mounted tracefs at /sys/kernel/tracing (bpftrace's tracepoints need it; orphanwatch does not)")
	return nil
}

// where runs a command on the host or inside the database's namespace.
type where func(name string, args ...string) *exec.Cmd

var onHost where = exec.Command

// stormKind is one way of making processes, each exiting at once (a third
// of them abnormally).
type stormKind struct {
	name  string
	flags []string // bench/storm/storm.c's
	pin   bool     // run on one CPU
	size  func() int
}

var (
	// vforkStorm is the cheapest real process lifecycle, where a tracer's
	// cost shows most in wall time (fork() costs ~0.9 ms in a VM with
	// nested paging, which would hide it), pinned to one CPU: a parent and
	// child migrating between CPUs double its time and its noise.
	vforkStorm = stormKind{"vfork", []string{"-v"}, true, func() int { return *stormSize }}
	// forkStorm is what most programs do: fork() and exit, unpinned, up to
	// 8 children alive, as on a busy node.
	forkStorm = stormKind{"fork()", nil, false, func() int { return *forkSize }}
	// execStorm is what a shell script does: fork, exec /bin/true, exit.
	execStorm = stormKind{"fork+exec", []string{"-x"}, false, func() int { return *execSize }}
)

// runStorm runs n processes of a storm kind and returns its wall time.
func runStorm(run where, storm string, kind stormKind, n int) (time.Duration, error) {
	args := append(slices.Clone(kind.flags), "-n", strconv.Itoa(n), "-f", "3")
	name := storm
	if kind.pin {
		cpu := *stormCPU
		if cpu < 0 {
			cpu = numCPU() - 1
		}
		name, args = "taskset", append([]string{"-c", strconv.Itoa(cpu), storm}, args...)
	}
	out, err := run(name, args...).Output()
	if err != nil {
		return 0, fmt.Errorf("storm %s: %w", kind.name, err)
	}
	secs, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		return 0, fmt.Errorf("storm output %q: %w", out, err)
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// tracer is a running orphanwatch serve or bpftrace.
type tracer struct {
	cmd   *exec.Cmd
	pid   int // the tracer itself: cmd's process, or its child under unshare
	addr  string
	lines chan []byte // serve's JSON lines, when asked for
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:19877"
	}
	defer l.Close()
	return l.Addr().String()
}

// startServe starts orphanwatch serve and waits until /readyz says ready.
func startServe(keepLines bool, args ...string) (*tracer, error) {
	return startServeIn(nil, keepLines, args...)
}

// startServeIn starts serve under a command prefix (e.g. unshare) that
// execs it as its only child.
func startServeIn(prefix []string, keepLines bool, args ...string) (*tracer, error) {
	t := &tracer{addr: freeAddr()}
	argv := append(append(slices.Clone(prefix), *binary, "serve", "--web.listen-address", t.addr, "--log.level", "warn"), args...)
	t.cmd = exec.Command(argv[0], argv[1:]...)
	stdout, err := t.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	t.cmd.Stderr = os.Stderr
	if err := t.cmd.Start(); err != nil {
		return nil, err
	}
	t.pid = t.cmd.Process.Pid
	if len(prefix) > 0 {
		if t.pid, err = testenv.FirstChild(t.cmd.Process.Pid); err != nil {
			t.cmd.Process.Kill()
			t.cmd.Wait()
			return nil, err
		}
	}
	if keepLines {
		t.lines = make(chan []byte, 1<<16)
	}
	go func() {
		scan := bufio.NewScanner(stdout)
		scan.Buffer(make([]byte, 1<<20), 1<<20)
		for scan.Scan() {
			if t.lines != nil {
				line := append([]byte(nil), scan.Bytes()...)
				select {
				case t.lines <- append(line, []byte(" "+strconv.FormatInt(time.Now().UnixNano(), 10))...):
				default:
				}
			}
		}
	}()
	if _, err := waitReady(t.addr, 30*time.Second); err != nil {
		t.stop()
		return nil, err
	}
	return t, nil
}

func waitReady(addr string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	client := http.Client{Timeout: time.Second}
	for time.Since(start) < timeout {
		resp, err := client.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start), nil
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, fmt.Errorf("orphanwatch serve not ready on %s after %s", addr, timeout)
}

func startPeer() (*tracer, error) { return startBpftrace("bench/peer.bt") }

func startBpftrace(script string) (*tracer, error) {
	t := &tracer{}
	t.cmd = exec.Command("bpftrace", script)
	stdout, err := t.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := t.cmd.Start(); err != nil {
		return nil, err
	}
	t.pid = t.cmd.Process.Pid
	attached := make(chan bool, 1)
	go func() {
		scan := bufio.NewScanner(stdout)
		for scan.Scan() {
			if strings.HasPrefix(scan.Text(), "Attaching") {
				attached <- true
			}
		}
		attached <- false
	}()
	select {
	case ok := <-attached:
		if !ok {
			return nil, errors.New("bpftrace exited before attaching")
		}
	case <-time.After(60 * time.Second):
		t.stop()
		return nil, errors.New("bpftrace did not attach within 60s")
	}
	time.Sleep(300 * time.Millisecond) // "Attaching" is printed just before the attach
	return t, nil
}

func (t *tracer) stop() {
	syscall.Kill(t.pid, syscall.SIGINT)
	done := make(chan struct{})
	go func() { t.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.cmd.Process.Kill()
		<-done
	}
}

// metric reads one sample from serve's /metrics.
func (t *tracer) metric(name string) (float64, error) {
	m, err := t.scrape()
	if err != nil {
		return 0, err
	}
	for series, v := range m {
		if series == name || strings.HasPrefix(series, name+"{") {
			return v, nil
		}
	}
	return 0, fmt.Errorf("metric %s not exposed", name)
}

// scrape reads every sample of serve's /metrics, by series
// (`name{labels}` as exposed).
func (t *tracer) scrape() (metrics, error) {
	resp, err := http.Get("http://" + t.addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := metrics{}
	scan := bufio.NewScanner(resp.Body)
	scan.Buffer(make([]byte, 1<<20), 1<<20)
	for scan.Scan() {
		line := scan.Text()
		i := strings.LastIndexByte(line, ' ')
		if strings.HasPrefix(line, "#") || i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, scan.Err()
}

type metrics map[string]float64

// sum adds up every series of a metric; ok says whether it is exposed.
func (m metrics) sum(name string) (total float64, ok bool) {
	for series, v := range m {
		if series == name || strings.HasPrefix(series, name+"{") {
			total, ok = total+v, true
		}
	}
	return total, ok
}

type procUsage struct {
	cpu      time.Duration
	rss, hwm int // KiB
}

func usage(pid int) (procUsage, error) {
	var u procUsage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	u.cpu = time.Duration(utime+stime) * time.Second / 100 // USER_HZ
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "VmRSS:":
			u.rss, _ = strconv.Atoi(fields[1])
		case "VmHWM:":
			u.hwm, _ = strconv.Atoi(fields[1])
		}
	}
	return u, nil
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pairedOverhead measures a tracer's cost on the storm: each round runs the
// storm with no tracer and with it, back to back in alternating order, and
// keeps their ratio. The storm's own wall time drifts by far more than 1%
// over minutes here (steal time, frequency), so only adjacent runs compare.
func pairedOverhead(stormRun func() (time.Duration, error), tracerName string, rounds int, label string) (ratios []float64, base time.Duration, lost float64, peerHWM int, err error) {
	var bases []time.Duration
	for r := range rounds {
		var with, without time.Duration
		for i := range 2 {
			if (r+i)%2 == 0 {
				if without, err = stormRun(); err != nil {
					return
				}
				continue
			}
			var t *tracer
			if tracerName == "serve" {
				t, err = startServe(false)
			} else {
				t, err = startPeer()
			}
			if err != nil {
				return
			}
			var lostBefore float64
			if tracerName == "serve" {
				if lostBefore, err = t.metric("orphanwatch_events_lost_total"); err != nil {
					t.stop()
					return
				}
			}
			with, err = stormRun()
			switch {
			case err != nil:
			case tracerName == "serve":
				// A failed scrape (serve died in the storm) must not pass as 0 lost.
				var lostAfter float64
				if lostAfter, err = t.metric("orphanwatch_events_lost_total"); err == nil {
					lost += lostAfter - lostBefore
				}
			default:
				if u, uerr := usage(t.pid); uerr == nil {
					peerHWM = max(peerHWM, u.hwm)
				}
			}
			t.stop()
			if err != nil {
				return
			}
		}
		bases = append(bases, without)
		ratios = append(ratios, float64(with)/float64(without))
		say("%s round %d/%d: none %s, %s %s (%.3f)", label, r+1, rounds, without.Round(time.Millisecond), tracerName, with.Round(time.Millisecond), ratios[r])
	}
	slices.Sort(ratios)
	return ratios, median(bases), lost, peerHWM, nil
}

// quartiles of sorted values: median, and the interquartile range.
func quartiles(v []float64) (med, lo, hi float64) {
	q := func(p float64) float64 { return v[int(p*float64(len(v)-1)+0.5)] }
	return q(0.5), q(0.25), q(0.75)
}

func stormOverheads(storm string) ([]row, error) {
	hostStorm := func() (time.Duration, error) { return runStorm(onHost, storm, vforkStorm, *stormSize) }
	serve, base, lost, _, err := pairedOverhead(hostStorm, "serve", *rounds, "host")
	if err != nil {
		return nil, err
	}
	peer, _, _, peerHWM, err := pairedOverhead(hostStorm, "bpftrace", *peerRounds, "host")
	if err != nil {
		return nil, err
	}
	sMed, sLo, sHi := quartiles(serve)
	pMed, pLo, pHi := quartiles(peer)
	return []row{
		{"host storm, no tracer (median)", fmt.Sprintf("%s for %d processes, %s per vfork+exit", base.Round(time.Millisecond), *stormSize, (base / time.Duration(*stormSize)).Round(100*time.Nanosecond)), "", ""},
		row{fmt.Sprintf("host storm overhead: serve / none (median of %d paired rounds)", *rounds), fmt.Sprintf("%.4f (IQR %.3f-%.3f)", sMed, sLo, sHi), "<= 1.01, below bpftrace", pass(sMed <= 1.01 && sMed < pMed)}.noWorse("host-overhead", sMed),
		{fmt.Sprintf("host storm overhead: bpftrace peer / none (median of %d paired rounds)", *peerRounds), fmt.Sprintf("%.4f (IQR %.3f-%.3f)", pMed, pLo, pHi), "", ""},
		{"bpftrace peer peak RSS", fmt.Sprintf("%.1f MiB", float64(peerHWM)/1024), "", ""},
		{fmt.Sprintf("lost events during %d host storms (default mode)", *rounds), fmt.Sprintf("%.0f", lost), "0", pass(lost == 0)},
	}, nil
}

// databaseStorms runs the storm inside a PostgreSQL container whose
// postmaster is PID 1, where every birth is recorded: the costly path.
// births is that path's BPF cost, measured with the other node
// configurations (measureNodes).
func databaseStorms(db *testenv.Cluster, storm string, births row) ([]row, error) {
	ratios, base, lost, _, err := pairedOverhead(func() (time.Duration, error) { return runStorm(db.Command, storm, vforkStorm, *stormSize) },
		"serve", *dbRounds, "in-database")
	if err != nil {
		return nil, err
	}
	med, lo, hi := quartiles(ratios)
	rows := []row{
		{"in-database storm, no tracer (median)", fmt.Sprintf("%s, %s per vfork+exit", base.Round(time.Millisecond), (base / time.Duration(*stormSize)).Round(100*time.Nanosecond)), "", ""},
		row{fmt.Sprintf("in-database storm overhead: serve / none (median of %d paired rounds)", *dbRounds), fmt.Sprintf("%.4f (IQR %.3f-%.3f)", med, lo, hi), "", ""}.noWorse("db-overhead", med),
		{fmt.Sprintf("lost events during %d in-database storms", *dbRounds), fmt.Sprintf("%.0f", lost), "0", pass(lost == 0)},
		births,
	}
	t, err := startServe(true)
	if err != nil {
		return nil, err
	}
	defer t.stop()

	// Detection latency of what orphanwatch is for, in its default mode:
	// orphans the postmaster adopts, each reported when it exits. The
	// orphan outlives its shell by 50 ms: one that exited first under load
	// would never be adopted.
	want := *latencyN / 4
	orphans := fmt.Sprintf(`for i in $(seq %d); do sh -c '(sleep 0.05; exit 0) & exit'; sleep 0.003; done; sleep 0.5`, want)
	if out, err := db.Command("sh", "-c", orphans).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("making orphans: %v: %s", err, out)
	}
	lat, err := latencies(t, want, func(r *latencyRecord) bool { return r.Verdict == "adopted" && r.Kind == "exit" })
	if err != nil {
		return nil, err
	}
	return append(rows, latencyRow(fmt.Sprintf("detection latency, default mode: orphan exit to JSON line (%d adopted orphans)", want), lat, want, "latency-default")), nil
}

// latencyRow judges detection latencies: p99 within 10 ms, no worse than
// today, and every record there (one missing is a lost event, or a bug).
func latencyRow(measure string, lat []time.Duration, want int, key string) row {
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	result := fmt.Sprintf("p50 %s, p99 %s", p50.Round(time.Microsecond), p99.Round(time.Microsecond))
	r := row{measure, result, "p99 <= 10 ms", pass(p99 <= 10*time.Millisecond)}.noWorse(key+"-p50", ms(p50)).noWorse(key+"-p99", ms(p99))
	if len(lat) < want {
		r.result += fmt.Sprintf("; only %d of %d records", len(lat), want)
		r.verdict = "MISS"
	}
	return r
}

// ms is a duration in milliseconds, for comparisons with today's figures.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// latencyRecord is the part of a JSON line latency needs.
type latencyRecord struct {
	Time    time.Time `json:"time"`
	PID     int       `json:"pid"`
	Kind    string    `json:"kind"`
	Verdict string    `json:"verdict"`
}

// latencies collects, from t's JSON lines, the time from each matching
// record's kernel timestamp to the line being read, for want records or as
// many as come within 15 s.
func latencies(t *tracer, want int, match func(*latencyRecord) bool) ([]time.Duration, error) {
	var lat []time.Duration
	deadline := time.After(15 * time.Second)
	for len(lat) < want {
		select {
		case line := <-t.lines:
			i := strings.LastIndexByte(string(line), ' ')
			readAt, _ := strconv.ParseInt(string(line[i+1:]), 10, 64)
			var rec latencyRecord
			if json.Unmarshal(line[:i], &rec) != nil || !match(&rec) {
				continue
			}
			lat = append(lat, time.Duration(readAt-rec.Time.UnixNano()))
		case <-deadline:
			if len(lat) == 0 {
				return nil, fmt.Errorf("none of %d records within 15s", want)
			}
			say("only %d of %d records within 15s", len(lat), want)
			slices.Sort(lat)
			return lat, nil
		}
	}
	slices.Sort(lat)
	return lat, nil
}

// bpfCost runs work with the kernel's BPF run-time statistics on (they cost
// every program run a little, so they are on only here) and returns the
// time t's programs spent per process, and per program.
func bpfCost(t *tracer, work func() error, processes int) (time.Duration, []row, error) {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return 0, nil, fmt.Errorf("enabling BPF run-time statistics: %w", err)
	}
	defer stats.Close()
	before, err := heldPrograms(t.pid)
	if err != nil {
		return 0, nil, err
	}
	if err := work(); err != nil {
		return 0, nil, err
	}
	after, err := heldPrograms(t.pid)
	if err != nil {
		return 0, nil, err
	}
	spent := after.since(before)
	var total time.Duration
	var rows []row
	for _, name := range spent.names() {
		s := spent[name]
		total += s.runtime
		rows = append(rows, row{"  BPF " + name, fmt.Sprintf("%d ns/run, %d runs", s.perRun().Nanoseconds(), s.runs), "", ""})
	}
	return total / time.Duration(processes), rows, nil
}

func pass(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func agentCost(storm string) ([]row, error) {
	var rows []row
	for _, all := range []bool{false, true} {
		var args []string
		mode := "default"
		if all {
			args, mode = []string{"--all"}, "--all"
		}
		t, err := startServe(false, args...)
		if err != nil {
			return nil, err
		}
		time.Sleep(2 * time.Second)
		idle, _ := usage(t.pid)
		// Start the peak-RSS count here: loading peaked while decoding BTF.
		os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", t.pid), []byte("5"), 0)
		lostBefore, _ := t.metric("orphanwatch_events_lost_total")
		perLifecycle, programRows, err := bpfCost(t, func() error {
			_, err := runStorm(onHost, storm, vforkStorm, *costSize)
			time.Sleep(500 * time.Millisecond) // let the agent drain
			return err
		}, *costSize)
		if err != nil {
			return nil, err
		}
		busy, _ := usage(t.pid)
		lost, _ := t.metric("orphanwatch_events_lost_total")
		t.stop()
		per100k := (busy.cpu - idle.cpu) * time.Duration(100000) / time.Duration(*costSize)
		rows = append(rows,
			row{fmt.Sprintf("agent CPU per 100k exits (%s)", mode), fmt.Sprintf("%.2f s", per100k.Seconds()), "<= 1 s", pass(per100k <= time.Second)}.
				noWorse("agent-cpu-"+mode, per100k.Seconds()),
			row{fmt.Sprintf("agent peak RSS, %d-process storm (%s)", *costSize, mode), fmt.Sprintf("%.1f MiB", float64(busy.hwm)/1024), "", ""}.
				noWorse("agent-hwm-"+mode, float64(busy.hwm)/1024),
		)
		if all {
			rows = append(rows, row{fmt.Sprintf("lost events, %d-process storm with --all (every exit sent)", *costSize), fmt.Sprintf("%.0f", lost-lostBefore), "", ""}.
				noWorse("lost-all", lost-lostBefore))
			continue
		}
		rows = append(rows, row{"agent steady-state RSS (idle, after start)", fmt.Sprintf("%.1f MiB", float64(idle.rss)/1024), "<= 40 MiB", pass(idle.rss <= 40*1024)}.
			noWorse("agent-idle-rss", float64(idle.rss)/1024))
		rows = append(rows, programRows...)
		rows = append(rows, row{"BPF per process lifecycle, all programs (kernel's run_time_ns)", fmt.Sprintf("%d ns", perLifecycle.Nanoseconds()), "<= 500 ns", pass(perLifecycle <= 500*time.Nanosecond)}.
			noWorse("bpf-lifecycle", float64(perLifecycle.Nanoseconds())))
	}
	return rows, nil
}

// detectionLatency times exits from the kernel's timestamp (the record's
// "time") to the moment the JSON line is read from serve's stdout.
func detectionLatency() ([]row, error) {
	t, err := startServe(true, "--all")
	if err != nil {
		return nil, err
	}
	defer t.stop()
	pids := map[int]bool{}
	for range *latencyN {
		cmd := exec.Command("/bin/true")
		if err := cmd.Run(); err != nil {
			return nil, err
		}
		pids[cmd.Process.Pid] = true
		time.Sleep(2 * time.Millisecond)
	}
	lat, err := latencies(t, len(pids), func(r *latencyRecord) bool { return r.Kind == "exit" && pids[r.PID] })
	if err != nil {
		return nil, err
	}
	return []row{latencyRow(fmt.Sprintf("detection latency, --all (batched wakeups): exit to JSON line (%d exits)", len(pids)), lat, len(pids), "latency-all")}, nil
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+)-\d+\s+\d+\s+([\d.]+) ns/op\s+(\d+) B/op\s+(\d+) allocs/op`)

func userSpacePath() ([]row, error) {
	out, err := exec.Command("go", "test", "-run", "^$", "-bench", "^(BenchmarkDecode|BenchmarkHandleOrdinaryExit)$",
		"-benchmem", "-count", "1", "./internal/probe", "./internal/agent").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go test -bench: %v\n%s", err, out)
	}
	var total float64
	var allocs int
	var parts []string
	for _, line := range strings.Split(string(out), "\n") {
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ns, _ := strconv.ParseFloat(m[2], 64)
		a, _ := strconv.Atoi(m[4])
		total += ns
		allocs += a
		parts = append(parts, fmt.Sprintf("%s %.0f ns", strings.TrimPrefix(m[1], "Benchmark"), ns))
	}
	if len(parts) != 2 {
		return nil, fmt.Errorf("benchmarks not found in:\n%s", out)
	}
	return []row{row{"user-space path per ordinary event: decode + lineage + verdict",
		fmt.Sprintf("%.0f ns, %d allocs (%s)", total, allocs, strings.Join(parts, " + ")), "<= 1 µs, 0 allocs", pass(total <= 1000 && allocs == 0)}.
		noWorse("userspace-ns", total).noWorse("userspace-allocs", float64(allocs))}, nil
}

func startupTime(storm string) ([]row, error) {
	hold := exec.Command(storm, "-l", strconv.Itoa(*extraProcs))
	stdin, err := hold.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := hold.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := hold.Start(); err != nil {
		return nil, err
	}
	defer func() { stdin.Close(); hold.Wait() }()
	ready, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(ready, "ready") {
		return nil, fmt.Errorf("holding %d processes: %v %q", *extraProcs, err, ready)
	}
	go io.Copy(io.Discard, stdout)
	var times []time.Duration
	for range 5 {
		addr := freeAddr()
		start := time.Now()
		cmd := exec.Command(*binary, "serve", "--web.listen-address", addr, "--log.level", "warn")
		cmd.Stdout = io.Discard
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		_, err := waitReady(addr, 30*time.Second)
		took := time.Since(start)
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if err != nil {
			return nil, err
		}
		times = append(times, took)
	}
	slices.Sort(times)
	return []row{row{fmt.Sprintf("startup to ready with %s extra processes (median of 5, max)", strings.TrimSpace(strings.TrimPrefix(ready, "ready"))),
		fmt.Sprintf("%s, max %s", median(times).Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond)), "<= 1 s", pass(times[len(times)-1] <= time.Second)}.
		noWorse("startup-median", ms(median(times))).noWorse("startup-max", ms(times[len(times)-1]))}, nil
}

func printTables(rows []row, m *matrix, took time.Duration) {
	var u unix.Utsname
	unix.Uname(&u)
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if m := regexp.MustCompile(`model name\s*:\s*(.*)`).FindSubmatch(data); m != nil {
			cpu = string(m[1])
		}
	}
	fmt.Printf("orphanwatch benchmark, %s: kernel %s, %s, %d CPUs; took %s\n\n",
		time.Now().Format("2006-01-02 15:04"), unix.ByteSliceToString(u.Release[:]), cpu, numCPU(), took.Round(time.Second))
	table := [][]string{{"measure", "result", "target", ""}}
	for _, r := range rows {
		table = append(table, []string{r.measure, r.result, r.target, r.verdict})
	}
	printGrid(table)

	fmt.Printf("\nBPF ns per process by the kernel's accounting (run_time_ns of every program the tracer holds / processes in the storm; "+
		"median of %d storms, range); serve, the bpftrace peer and bench/floor.bt's empty programs attached side by side; "+
		"other processes: those the rest of the machine made during the storms\n\n", *kernRounds)
	grid := [][]string{{"node", "storm", "per process (wall)", "serve", "bpftrace peer", "serve by program", "empty programs (floor)", "other processes"}}
	for _, c := range m.cells {
		var wall time.Duration
		for _, w := range c.wall {
			wall += w
		}
		grid = append(grid, []string{c.node, fmt.Sprintf("%s x %d", c.storm, c.processes),
			(wall / time.Duration(c.processes*len(c.wall))).Round(100 * time.Nanosecond).String(),
			spread(c.serve), spread(c.peer), c.byProgram(), c.emptyPrograms(), strconv.FormatUint(c.others, 10)})
	}
	printGrid(grid)
	fmt.Println()
	for _, n := range m.nodes {
		fmt.Printf("- %s: %s\n", n[0], n[1])
	}
}

// printGrid prints a table, as Markdown with -markdown.
func printGrid(rows [][]string) {
	if *markdown {
		for i, r := range rows {
			fmt.Printf("| %s |\n", strings.Join(r, " | "))
			if i == 0 {
				fmt.Printf("|%s\n", strings.Repeat("---|", len(r)))
			}
		}
		return
	}
	w := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, f := range r {
			w[i] = max(w[i], len([]rune(f)))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, f := range r {
			fmt.Fprintf(&b, "%-*s  ", w[i], f)
		}
		fmt.Println(strings.TrimRight(b.String(), " "))
	}
}

func numCPU() int {
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) != nil {
		return 0
	}
	return set.Count()
}
