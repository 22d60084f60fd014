// Command bench measures orphanwatch's cost side by side with no tracer and
// with a bpftrace peer, in one run, and prints one table (make bench; the
// results and how to read them are in docs/benchmarks.md). It needs root,
// bin/orphanwatch (make build), cc, bpftrace and tracefs (mounted if absent).
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
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

var (
	binary     = flag.String("orphanwatch", "bin/orphanwatch", "the orphanwatch binary to measure")
	rounds     = flag.Int("rounds", 15, "alternating storm rounds per tracer")
	stormSize  = flag.Int("storm", 20000, "processes per storm")
	stormConc  = flag.Int("concurrency", 2, "storm processes alive at once")
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
	stopStats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return fmt.Errorf("enabling BPF run-time statistics: %w", err)
	}
	defer stopStats.Close()

	started := time.Now()
	var rows []row
	say := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...) }

	say("storm overhead: %d rounds of %d processes, alternating none / serve / bpftrace", *rounds, *stormSize)
	overhead, err := stormOverhead(storm, say)
	if err != nil {
		return err
	}
	rows = append(rows, overhead...)

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

	printTable(rows, time.Since(started))
	return nil
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

// runStorm runs the storm driver and returns its wall time.
func runStorm(storm string, n int) (time.Duration, error) {
	out, err := exec.Command(storm, "-n", strconv.Itoa(n), "-c", strconv.Itoa(*stormConc), "-f", "3").Output()
	if err != nil {
		return 0, fmt.Errorf("storm: %w", err)
	}
	secs, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		return 0, fmt.Errorf("storm output %q: %w", out, err)
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// tracer is a running orphanwatch serve or bpftrace.
type tracer struct {
	cmd     *exec.Cmd
	addr    string
	lines   chan []byte // serve's JSON lines, when asked for
	firstID ebpf.ProgramID
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
	t := &tracer{addr: freeAddr(), firstID: nextProgramID()}
	t.cmd = exec.Command(*binary, append([]string{"serve", "--web.listen-address", t.addr, "--log.level", "warn"}, args...)...)
	stdout, err := t.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	t.cmd.Stderr = os.Stderr
	if err := t.cmd.Start(); err != nil {
		return nil, err
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

func startPeer() (*tracer, error) {
	t := &tracer{firstID: nextProgramID()}
	t.cmd = exec.Command("bpftrace", "bench/peer.bt")
	stdout, err := t.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := t.cmd.Start(); err != nil {
		return nil, err
	}
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
	t.cmd.Process.Signal(syscall.SIGINT)
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
	resp, err := http.Get("http://" + t.addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	scan := bufio.NewScanner(resp.Body)
	scan.Buffer(make([]byte, 1<<20), 1<<20)
	for scan.Scan() {
		line := scan.Text()
		if strings.HasPrefix(line, name+" ") || strings.HasPrefix(line, name+"{") {
			fields := strings.Fields(line)
			return strconv.ParseFloat(fields[len(fields)-1], 64)
		}
	}
	return 0, fmt.Errorf("metric %s not exposed", name)
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

func stormOverhead(storm string, say func(string, ...any)) ([]row, error) {
	names := []string{"none", "serve", "bpftrace"}
	walls := map[string][]time.Duration{}
	var lost float64
	peerHWM := 0
	for r := 0; r < *rounds; r++ {
		for i := range names {
			name := names[(i+r)%len(names)] // rotate the order to cancel drift
			var t *tracer
			var err error
			switch name {
			case "serve":
				t, err = startServe(false)
			case "bpftrace":
				t, err = startPeer()
			}
			if err != nil {
				return nil, err
			}
			var lostBefore float64
			if name == "serve" {
				lostBefore, _ = t.metric("orphanwatch_events_lost_total")
			}
			wall, err := runStorm(storm, *stormSize)
			if err != nil {
				return nil, err
			}
			walls[name] = append(walls[name], wall)
			switch name {
			case "serve":
				after, err := t.metric("orphanwatch_events_lost_total")
				if err != nil {
					return nil, err
				}
				lost += after - lostBefore
			case "bpftrace":
				if u, err := usage(t.cmd.Process.Pid); err == nil && u.hwm > peerHWM {
					peerHWM = u.hwm
				}
			}
			if t != nil {
				t.stop()
			}
		}
		say("round %d/%d: none %s, serve %s, bpftrace %s", r+1, *rounds,
			walls["none"][r].Round(time.Millisecond), walls["serve"][r].Round(time.Millisecond), walls["bpftrace"][r].Round(time.Millisecond))
	}
	base := median(walls["none"])
	ratio := func(name string) (float64, float64, float64) {
		rs := make([]float64, len(walls[name]))
		for i, w := range walls[name] {
			rs[i] = float64(w) / float64(base)
		}
		slices.Sort(rs)
		q := func(p float64) float64 { return rs[int(p*float64(len(rs)-1)+0.5)] }
		return float64(median(walls[name])) / float64(base), q(0.25), q(0.75)
	}
	serveRatio, sLo, sHi := ratio("serve")
	peerRatio, pLo, pHi := ratio("bpftrace")
	_, nLo, nHi := ratio("none")
	perProc := base / time.Duration(*stormSize) * time.Duration(*stormConc)
	return []row{
		{fmt.Sprintf("storm wall time, no tracer (median of %d; one fork+exit)", *rounds), fmt.Sprintf("%s (%s per process); run-to-run IQR %.3f-%.3f", base.Round(time.Millisecond), perProc.Round(time.Microsecond), nLo, nHi), "", ""},
		{"storm overhead: serve / none", fmt.Sprintf("%.4f (IQR of runs %.3f-%.3f)", serveRatio, sLo, sHi), "<= 1.01, below bpftrace", pass(serveRatio <= 1.01 && serveRatio < peerRatio)},
		{"storm overhead: bpftrace peer / none", fmt.Sprintf("%.4f (IQR of runs %.3f-%.3f)", peerRatio, pLo, pHi), "", ""},
		{fmt.Sprintf("lost events during %d storms (default mode)", *rounds), fmt.Sprintf("%.0f", lost), "0", pass(lost == 0)},
		{"bpftrace peer peak RSS", fmt.Sprintf("%.1f MiB", float64(peerHWM)/1024), "", ""},
	}, nil
}

func pass(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// programs lists BPF programs loaded since first (by id), name -> stats.
func programs(first ebpf.ProgramID) (map[string]ebpf.ProgramStats, error) {
	out := map[string]ebpf.ProgramStats{}
	id := first - 1
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		id = next
		prog, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, ierr := prog.Info()
		stats, serr := prog.Stats()
		prog.Close()
		if ierr != nil || serr != nil {
			continue
		}
		s := out[info.Name]
		s.Runtime += stats.Runtime
		s.RunCount += stats.RunCount
		out[info.Name] = s
	}
}

// nextProgramID is the id the next loaded program will have at least.
func nextProgramID() ebpf.ProgramID {
	var id, last ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return last + 1
		}
		id, last = next, next
	}
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
		idle, _ := usage(t.cmd.Process.Pid)
		before, err := programs(t.firstID)
		if err != nil {
			return nil, err
		}
		lostBefore, _ := t.metric("orphanwatch_events_lost_total")
		if _, err := runStorm(storm, *costSize); err != nil {
			return nil, err
		}
		time.Sleep(500 * time.Millisecond) // let the agent drain
		after, err := programs(t.firstID)
		if err != nil {
			return nil, err
		}
		busy, _ := usage(t.cmd.Process.Pid)
		lost, _ := t.metric("orphanwatch_events_lost_total")
		t.stop()
		per100k := (busy.cpu - idle.cpu) * time.Duration(100000) / time.Duration(*costSize)
		rows = append(rows,
			row{fmt.Sprintf("agent CPU per 100k exits (%s)", mode), fmt.Sprintf("%.2f s", per100k.Seconds()), "<= 1 s", pass(per100k <= time.Second)},
			row{fmt.Sprintf("agent peak RSS, %d-process storm (%s)", *costSize, mode), fmt.Sprintf("%.1f MiB", float64(busy.hwm)/1024), "", ""},
		)
		if all {
			rows = append(rows, row{fmt.Sprintf("lost events, %d-process storm with --all (every exit sent)", *costSize), fmt.Sprintf("%.0f", lost-lostBefore), "", ""})
			continue
		}
		rows = append(rows, row{"agent steady-state RSS (idle, after start)", fmt.Sprintf("%.1f MiB", float64(idle.rss)/1024), "<= 40 MiB", pass(idle.rss <= 40*1024)})
		var total time.Duration
		names := make([]string, 0, len(after))
		for name := range after {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			runs := after[name].RunCount - before[name].RunCount
			spent := after[name].Runtime - before[name].Runtime
			total += spent
			perRun := time.Duration(0)
			if runs > 0 {
				perRun = spent / time.Duration(runs)
			}
			rows = append(rows, row{"  BPF " + name, fmt.Sprintf("%d ns/run, %d runs", perRun.Nanoseconds(), runs), "", ""})
		}
		perLifecycle := total / time.Duration(*costSize)
		rows = append(rows, row{"BPF per process lifecycle, all programs (kernel's run_time_ns)", fmt.Sprintf("%d ns", perLifecycle.Nanoseconds()), "<= 500 ns", pass(perLifecycle <= 500*time.Nanosecond)})
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
	var lat []time.Duration
	deadline := time.After(10 * time.Second)
	for len(lat) < len(pids) {
		select {
		case line := <-t.lines:
			i := strings.LastIndexByte(string(line), ' ')
			readAt, _ := strconv.ParseInt(string(line[i+1:]), 10, 64)
			var rec struct {
				Time time.Time `json:"time"`
				PID  int       `json:"pid"`
				Kind string    `json:"kind"`
			}
			if json.Unmarshal(line[:i], &rec) != nil || rec.Kind != "exit" || !pids[rec.PID] {
				continue
			}
			lat = append(lat, time.Duration(readAt-rec.Time.UnixNano()))
		case <-deadline:
			return nil, fmt.Errorf("only %d of %d exits reported within 10s", len(lat), len(pids))
		}
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	return []row{{fmt.Sprintf("detection latency, exit to JSON line (%d exits)", len(lat)),
		fmt.Sprintf("p50 %s, p99 %s", p50.Round(time.Microsecond), p99.Round(time.Microsecond)), "p99 <= 10 ms", pass(p99 <= 10*time.Millisecond)}}, nil
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
	return []row{{"user-space path per ordinary event: decode + lineage + verdict",
		fmt.Sprintf("%.0f ns, %d allocs (%s)", total, allocs, strings.Join(parts, " + ")), "<= 1 µs, 0 allocs", pass(total <= 1000 && allocs == 0)}}, nil
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
	return []row{{fmt.Sprintf("startup to ready with %s extra processes (median of 5, max)", strings.TrimSpace(strings.TrimPrefix(ready, "ready"))),
		fmt.Sprintf("%s, max %s", median(times).Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond)), "<= 1 s", pass(times[len(times)-1] <= time.Second)}}, nil
}

func printTable(rows []row, took time.Duration) {
	var u unix.Utsname
	unix.Uname(&u)
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if m := regexp.MustCompile(`model name\s*:\s*(.*)`).FindSubmatch(data); m != nil {
			cpu = string(m[1])
		}
	}
	header := fmt.Sprintf("orphanwatch benchmark, %s: kernel %s, %s, %d CPUs, storm concurrency %d; took %s",
		time.Now().Format("2006-01-02 15:04"), unix.ByteSliceToString(u.Release[:]), cpu, numCPU(), *stormConc, took.Round(time.Second))
	if *markdown {
		fmt.Println(header + "\n")
		fmt.Println("| measure | result | target | |")
		fmt.Println("|---|---|---|---|")
		for _, r := range rows {
			fmt.Printf("| %s | %s | %s | %s |\n", r.measure, r.result, r.target, r.verdict)
		}
		return
	}
	fmt.Println(header)
	w := 0
	for _, r := range rows {
		w = max(w, len(r.measure))
	}
	for _, r := range rows {
		fmt.Printf("%-*s  %-48s  %-24s  %s\n", w, r.measure, r.result, r.target, r.verdict)
	}
}

func numCPU() int {
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) != nil {
		return 0
	}
	return set.Count()
}
