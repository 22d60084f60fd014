package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// Each way of failing to start says what is wrong and what to do in one
// line, exits with a status of its own, and leaves nothing attached.
func TestFailuresAreClearAndLeaveNothingAttached(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "setpriv")
	before := testenv.SettledProgramsNamed(t, "handle_")
	asNobody := []string{"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all"}
	tests := []struct {
		name     string
		prefix   []string
		args     []string
		status   int
		sentence string
	}{
		{"unprivileged user", asNobody, []string{"trace", "--duration", "1s"}, 3, "needs root, or the capabilities CAP_BPF, CAP_PERFMON"},
		{"no BTF", nil, []string{"trace", "--duration", "1s", "--kernel-btf", "/nonexistent/vmlinux"}, 4, "CONFIG_DEBUG_INFO_BTF=y"},
		{"kernel feature missing", []string{"env", "ORPHANWATCH_REFUSE_PROGRAM=handle_mark_victim"}, []string{"trace", "--duration", "1s"}, 5, "lacks a BPF feature orphanwatch needs"},
		{"unknown flag", nil, []string{"trace", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{"bad value", nil, []string{"trace", "--ringbuf-size", "1000"}, 2, "must be a power of two"},
		{"not a number", nil, []string{"trace", "--max-processes", "64K"}, 2, "-max-processes: must be a whole number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, stderr, _ := runBinary(t, testenv.Binary(t), tt.args, tt.prefix...)
			if status != tt.status {
				t.Errorf("exit status %d, want %d; stderr:\n%s", status, tt.status, stderr)
			}
			first := strings.SplitN(strings.TrimSpace(stderr), "\n", 2)[0]
			if !strings.Contains(first, tt.sentence) {
				t.Errorf("first line %q does not say %q", first, tt.sentence)
			}
			if tt.status != 2 && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Errorf("more than one line:\n%s", stderr)
			}
			if after := testenv.SettledProgramsNamed(t, "handle_"); after != before {
				t.Errorf("%d orphanwatch BPF programs loaded after the failure, %d before", after, before)
			}
		})
	}
}

func TestSIGTERMDetachesWithinTwoSeconds(t *testing.T) {
	testenv.RequireRoot(t)
	before := testenv.SettledProgramsNamed(t, "handle_")
	cmd := exec.Command(testenv.Binary(t), "trace", "--json")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitLine(t, stderr, "tracing;")
	// Eight loaded, attached or not: two exec programs (one attached at a
	// time), fork, exit, wait, two signal programs and the OOM one.
	if n := testenv.ProgramsNamed(t, "handle_"); n != before+8 {
		t.Errorf("%d programs while tracing, want %d", n, before+8)
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("SIGTERM took %s to exit, want under 2s", took)
	}
	if err != nil {
		t.Errorf("exit after SIGTERM: %v, want status 0", err)
	}
	// The kernel frees programs once their last reference (RCU) is gone.
	deadline := time.Now().Add(time.Second)
	for testenv.ProgramsNamed(t, "handle_") != before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if after := testenv.ProgramsNamed(t, "handle_"); after != before {
		t.Errorf("%d programs left after exit, %d before", after, before)
	}
}

func waitLine(t *testing.T, r interface{ Read([]byte) (int, error) }, substr string) {
	t.Helper()
	found := make(chan bool, 1)
	go func() {
		scan := bufio.NewScanner(r)
		for scan.Scan() {
			if strings.Contains(scan.Text(), substr) {
				found <- true
				for scan.Scan() { // keep draining
				}
				return
			}
		}
		found <- false
	}()
	select {
	case ok := <-found:
		if !ok {
			t.Fatalf("output ended before %q", substr)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no %q within 15s", substr)
	}
}

// kill -9 of the agent while an orphan is adopted: the kernel drops every
// program with the process; a new agent re-learns the orphan from /proc and
// flags its death.
func TestRestartRelearnsOrphansAndLeavesNothingBehind(t *testing.T) {
	testenv.RequirePostgres(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{})
	before := testenv.SettledProgramsNamed(t, "handle_")
	first := testenv.StartTrace(t)
	if _, err := c.Exec(`sh -c 'sleep 4; kill -TERM $$' >/dev/null 2>&1 & exit`); err != nil {
		t.Fatal(err)
	}
	adoption, ok := first.WaitFor(10*time.Second, forPostmaster(c.PostmasterPID, "adoption"))
	if !ok {
		t.Fatalf("first agent saw no adoption:\n%s", first.Stderr())
	}
	first.Kill()
	deadline := time.Now().Add(2 * time.Second)
	for testenv.ProgramsNamed(t, "handle_") != before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := testenv.ProgramsNamed(t, "handle_"); n != before {
		t.Fatalf("%d programs left after kill -9 of the agent, %d before", n, before)
	}

	second := testenv.StartTrace(t)
	r, ok := second.WaitFor(15*time.Second, func(r *report.Record) bool { return r.PID == adoption.PID && r.Kind == "exit" })
	if !ok {
		t.Fatalf("the restarted agent did not report the orphan's death:\n%s", second.Stderr())
	}
	if r.Verdict != "crash-restart" || r.Signal != "SIGTERM" || r.ParentPID != uint32(c.PostmasterPID) {
		t.Errorf("orphan death after restart: %s %s parent %d, want crash-restart SIGTERM under %d", r.Verdict, r.Signal, r.ParentPID, c.PostmasterPID)
	}
	if !strings.Contains(r.Cmdline, "kill -TERM") {
		t.Errorf("the command line re-learned from /proc is missing: %q", r.Cmdline)
	}
}

var nsPidLine = regexp.MustCompile(`^\d+$`)

// In a fresh PID namespace a pid is forced to be reused (ns_last_pid): the
// two orphans that carry it in turn are never mixed up.
func TestPIDReuseNeverMixesUpTwoOrphans(t *testing.T) {
	testenv.RequirePostgres(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{})
	tr := testenv.StartTrace(t)

	out, err := c.Exec(`sh -c 'echo $$; sleep 1' & exit`)
	if err != nil || !nsPidLine.MatchString(strings.TrimSpace(out)) {
		t.Fatalf("first orphan: %v %q", err, out)
	}
	nsPid, _ := strconv.Atoi(strings.TrimSpace(out))
	first, ok := tr.WaitFor(15*time.Second, func(r *report.Record) bool {
		return r.Verdict == "adopted" && r.NSPid == uint32(nsPid) && r.ParentPID == uint32(c.PostmasterPID)
	})
	if !ok {
		t.Fatalf("no adopted record for ns pid %d", nsPid)
	}

	// The next fork in the namespace gets nsPid again.
	var second report.Record
	for attempt := 0; ; attempt++ {
		if attempt == 10 {
			t.Fatalf("could not get ns pid %d reused", nsPid)
		}
		if _, err := c.Exec(fmt.Sprintf(`echo %d > /proc/sys/kernel/ns_last_pid; tail -f /dev/null >/dev/null 2>&1 & exit`, nsPid-1)); err != nil {
			t.Fatal(err)
		}
		adoption, ok := tr.WaitFor(10*time.Second, func(r *report.Record) bool {
			return r.Verdict == "adoption" && r.ParentPID == uint32(c.PostmasterPID) && r.PID != first.PID && r.Time.After(first.Time)
		})
		if !ok {
			t.Fatal("no adoption of the second orphan")
		}
		syscall.Kill(int(adoption.PID), syscall.SIGTERM)
		second, ok = tr.WaitFor(10*time.Second, func(r *report.Record) bool { return r.Kind == "exit" && r.PID == adoption.PID })
		if !ok {
			t.Fatal("the second orphan's death was not reported")
		}
		if adoption.NSPid == uint32(nsPid) {
			break
		}
		c.Ready(30 * time.Second) // that one crash-restarted PostgreSQL too; try again
		first.Time = second.Time
	}

	if first.Comm != "sh" || first.ExitCode == nil || *first.ExitCode != 0 || first.Verdict != "adopted" {
		t.Errorf("first orphan = %s %s exit %v", first.Verdict, first.Comm, first.ExitCode)
	}
	if second.Verdict != "crash-restart" || second.Comm != "tail" || second.Signal != "SIGTERM" || second.NSPid != uint32(nsPid) {
		t.Errorf("second orphan = %s %s %s ns pid %d, want crash-restart tail SIGTERM with ns pid %d", second.Verdict, second.Comm, second.Signal, second.NSPid, nsPid)
	}
	if second.PID == first.PID || second.OriginalParentPID == first.OriginalParentPID || !strings.HasSuffix(second.Exe, "/tail") {
		t.Errorf("the second orphan carries the first one's story: %+v vs %+v", second, first)
	}
	if *second.LifetimeMS >= 60_000 || second.AdoptedAt == nil || !second.AdoptedAt.After(first.Time) {
		t.Errorf("second orphan's lifetime %d ms, adopted at %v: not its own", *second.LifetimeMS, second.AdoptedAt)
	}
}

func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("agent gone: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(line)[1])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

var summaryCount = func(stderr, what string) int {
	m := regexp.MustCompile(what + ` (\d+)`).FindStringSubmatch(stderr)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// A ring buffer too small for a storm loses events: they are counted and
// reported, in the metric and in trace's summary, and the agents carry on
// with bounded memory.
func TestTinyRingBufferCountsItsLosses(t *testing.T) {
	testenv.RequireRoot(t)
	storm := testenv.Storm(t)
	tr := testenv.StartTrace(t, "--all", "--ringbuf-size", "4096")
	s := startServe(t, "--all", "--ringbuf-size", "4096")
	s.waitReady(30 * time.Second)
	if out, err := exec.Command(storm, "-n", "5000", "-c", "16").CombinedOutput(); err != nil {
		t.Fatalf("storm: %v: %s", err, out)
	}
	if tr.Exited() {
		t.Fatalf("the agent died in the storm:\n%s", tr.Stderr())
	}
	if rss := rssKiB(t, tr.PID()); rss > 64*1024 {
		t.Errorf("agent RSS %d KiB after the storm, want under 64 MiB", rss)
	}
	if lost := metricValue(t, s.Addr, "orphanwatch_events_lost_total"); lost <= 0 {
		t.Errorf("orphanwatch_events_lost_total = %v after a storm through a 4 KiB ring buffer", lost)
	}
	if code, _ := httpGet(t, "http://"+s.Addr+"/readyz"); code != 200 {
		t.Errorf("serve not ready after the storm: %d", code)
	}
	tr.Stop()
	stderr := tr.Stderr()
	if lost := summaryCount(stderr, "lost events"); lost <= 0 {
		t.Errorf("summary reports %d lost events for a 4 KiB ring buffer under a storm:\n%s", lost, stderr)
	}
	if !strings.Contains(stderr, "raise --ringbuf-size") {
		t.Errorf("no advice about the losses:\n%s", stderr)
	}
}

// More live processes in the database's namespace (where births are
// recorded: its PID 1 is a postmaster) than --max-processes: the kernel's
// LRU evicts birth records and counts it, memory stays bounded, and an
// incident during the storm is still reported.
func TestForkStormOutgrowingTheMapsStillReportsTheIncident(t *testing.T) {
	testenv.RequirePostgres(t)
	storm := testenv.Storm(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{})
	tr := testenv.StartTrace(t, "--max-processes", "512")

	hold := c.Command(storm, "-l", "3000")
	stdin, _ := hold.StdinPipe()
	stdout, _ := hold.StdoutPipe()
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	waitLine(t, stdout, "ready")
	if err := c.SeedIncident(); err != nil {
		t.Fatal(err)
	}
	r, ok := tr.WaitFor(30*time.Second, forPostmaster(c.PostmasterPID, "crash-restart"))
	if !ok {
		t.Fatalf("the incident during the storm was not reported:\n%s", tr.Stderr())
	}
	if r.Comm != "psql" || r.Signal != "SIGPIPE" || r.OriginalParentComm != "sh" {
		t.Errorf("incident during the storm: %s %s from %s", r.Comm, r.Signal, r.OriginalParentComm)
	}
	if rss := rssKiB(t, tr.PID()); rss > 64*1024 {
		t.Errorf("agent RSS %d KiB with 3000 extra processes, want under 64 MiB", rss)
	}
	stdin.Close()
	hold.Wait()
	time.Sleep(time.Second)
	tr.Stop()
	if evicted := summaryCount(tr.Stderr(), "birth records evicted"); evicted <= 0 {
		t.Errorf("summary reports %d evicted birth records with 3000 processes in a 512-entry map:\n%s", evicted, tr.Stderr())
	}
}

// metricValue scrapes one unlabelled sample from serve.
func metricValue(t *testing.T, addr, name string) float64 {
	t.Helper()
	code, body := httpGet(t, "http://"+addr+"/metrics")
	if code != 200 {
		t.Fatalf("scrape: %d %s", code, body)
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name+" ") {
			v, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return v
		}
	}
	t.Fatalf("%s not exposed", name)
	return 0
}

// An adopted orphan with a password in its environment, in a conninfo and in
// a URI dies: the secrets appear nowhere orphanwatch writes.
func TestSecretsNeverLeaveTheAgent(t *testing.T) {
	testenv.RequirePostgres(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{})
	s := startServe(t, "--log.level=debug")
	s.waitReady(30 * time.Second)
	tr := testenv.StartTrace(t)
	secrets := []string{"envsecret9731", "kwsecret9731", "urisecret9731"}
	script := `PGPASSWORD=envsecret9731 sh -c 'sleep 3; kill -TERM $$' job 'host=db password=kwsecret9731' 'postgresql://app:urisecret9731@db/x' >/dev/null 2>&1 & exit`
	if _, err := c.Exec(script); err != nil {
		t.Fatal(err)
	}
	adoption, ok := tr.WaitFor(10*time.Second, forPostmaster(c.PostmasterPID, "adoption"))
	if !ok {
		t.Fatalf("no adoption:\n%s", tr.Stderr())
	}
	_, checkText, _ := runCheck(t)
	_, _, checkJSONText := checkJSON(t)
	if !strings.Contains(checkText, fmt.Sprint(adoption.PID)) || !strings.Contains(checkText, "password=***") {
		t.Errorf("check does not list the orphan with its command line redacted:\n%s", checkText)
	}
	crash, ok := tr.WaitFor(15*time.Second, forPostmaster(c.PostmasterPID, "crash-restart"))
	if !ok {
		t.Fatalf("no crash-restart:\n%s", tr.Stderr())
	}
	if !strings.Contains(crash.Cmdline, "password=***") || !strings.Contains(crash.Cmdline, "app:***@db") {
		t.Errorf("cmdline %q: want it captured and redacted", crash.Cmdline)
	}
	if _, ok := s.waitRecord(10*time.Second, forPostmaster(c.PostmasterPID, "crash-restart")); !ok {
		t.Fatal("serve wrote no crash-restart line")
	}
	_, metrics := httpGet(t, "http://"+s.Addr+"/metrics")
	traced, _ := json.Marshal(tr.Records(func(*report.Record) bool { return true }))
	for where, text := range map[string]string{
		"trace JSON": string(traced), "trace stderr": tr.Stderr(), "serve JSON": s.stdout.String(),
		"serve log": s.stderr.String(), "metrics": metrics, "check": checkText, "check --json": checkJSONText,
	} {
		for _, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("%s leaks %q", where, secret)
			}
		}
	}
}

// The exporter under load: 100 concurrent scrapes while a fork storm runs
// are all answered; a client that never finishes its headers is cut off.
func TestExporterServesConcurrentScrapesDuringAStorm(t *testing.T) {
	testenv.RequireRoot(t)
	storm := testenv.Storm(t)
	s := startServe(t)
	s.waitReady(30 * time.Second)

	slow, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprint(slow, "GET /metrics HTTP/1.1\r\nHost: x\r\n") // and nothing more

	stormDone := make(chan error, 1)
	go func() { stormDone <- exec.Command(storm, "-v", "-n", "60000").Run() }()
	var wg sync.WaitGroup
	failures := make(chan string, 100)
	client := &http.Client{Timeout: 20 * time.Second}
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get("http://" + s.Addr + "/metrics")
			if err != nil {
				failures <- fmt.Sprintf("scrape %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !strings.Contains(string(body), "orphanwatch_kernel_exits_total") {
				failures <- fmt.Sprintf("scrape %d: %d, %d bytes", i, resp.StatusCode, len(body))
			}
		}()
	}
	wg.Wait()
	close(failures)
	for f := range failures {
		t.Error(f)
	}
	if err := <-stormDone; err != nil {
		t.Fatalf("storm: %v", err)
	}
	if lost := metricValue(t, s.Addr, "orphanwatch_events_lost_total"); lost != 0 {
		t.Errorf("%v events lost in the default mode", lost)
	}
	// The server's ReadHeaderTimeout (5 s) ends the half-sent request.
	slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(slow); err != nil {
		t.Errorf("a client stuck in its headers was not cut off within 10s: %v", err)
	}
}
