package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// inContainer runs the cluster in a cgroup named the way Docker names a
// container's, with an id of its own, so that the postmaster's series and
// alerts carry container_id=<id> and other PostgreSQL servers on the host
// cannot be mistaken for this one.
func inContainer(t *testing.T, opts testenv.ClusterOptions) (testenv.ClusterOptions, string) {
	t.Helper()
	id := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		t.Fatal(err)
	}
	containerID := hex.EncodeToString(id)
	switch {
	case fileExists("/sys/fs/cgroup/cgroup.controllers"): // cgroup v2 only
		opts.Cgroup = filepath.Join("/sys/fs/cgroup/system.slice", "docker-"+containerID+".scope")
	case fileExists("/sys/fs/cgroup/memory/cgroup.procs"): // v1 memory controller
		opts.Cgroup = filepath.Join("/sys/fs/cgroup/memory/docker", containerID)
	default:
		testenv.Require(t, false, "needs cgroup v2 or the v1 memory controller under /sys/fs/cgroup")
	}
	// Registered before StartCluster's cleanup, so it runs after it and
	// waits for the PID namespace to empty. The parent stays: other tests
	// may be using it.
	removeCgroupsAtCleanup(t, opts.Cgroup)
	return opts, containerID
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// The promise: with the postmaster as PID 1, the seed incident pages
// through a real Prometheus within 30 s, naming the culprit and the fix,
// and PostgreSQL's crash-restart is counted exactly once.
func TestServePrometheusAlertsOnSeedIncident(t *testing.T) {
	testenv.RequirePostgres(t)
	testenv.RequireCommands(t, "prometheus")
	s := startServe(t)
	s.waitReady(15 * time.Second)
	prom := startPrometheus(t, s.Addr)
	opts, id := inContainer(t, testenv.ClusterOptions{})
	c := testenv.StartCluster(t, opts)
	sel := `{container_id="` + id + `"}`

	if _, ok := prom.waitValue(30*time.Second, `sum(orphanwatch_postmasters_pid1`+sel+`)`, func(v float64) bool { return v == 1 }); !ok {
		t.Fatalf("Prometheus never saw the postmaster as PID 1 of container %s; serve stderr:\n%s", id, s.stderr)
	}
	crashRestarts := `sum(orphanwatch_postmaster_crash_restarts_total` + sel + `)`
	before, ok := prom.waitValue(10*time.Second, crashRestarts, func(float64) bool { return true })
	if !ok || before != 0 {
		t.Fatalf("%s = %v (found %v) before any incident, want a series at 0", crashRestarts, before, ok)
	}
	if a := prom.alerts("PostgresAdoptedChildCrash", id); len(a) != 0 {
		t.Fatalf("PostgresAdoptedChildCrash active before any incident: %+v", a)
	}

	if err := c.SeedIncident(); err != nil {
		t.Fatalf("running the incident: %v", err)
	}
	start := time.Now()
	a, ok := prom.waitFiring(30*time.Second, "PostgresAdoptedChildCrash", id)
	if !ok {
		t.Fatalf("PostgresAdoptedChildCrash not firing 30s after the incident; alerts:\n%s\nserve stdout:\n%s\npostgres log:\n%s",
			prom.rawAlerts(), s.stdout, c.Log())
	}
	t.Logf("PostgresAdoptedChildCrash firing %s after the incident", time.Since(start).Round(100*time.Millisecond))
	if a.Labels["comm"] != "psql" || a.Labels["signal"] != "SIGPIPE" || a.Labels["severity"] != "critical" || a.Labels["instance"] != s.Addr {
		t.Errorf("alert labels = %v, want psql, SIGPIPE, critical, instance %s", a.Labels, s.Addr)
	}
	if !strings.Contains(a.Annotations["summary"], "container "+id[:12]) ||
		!strings.Contains(a.Annotations["summary"], "adopted child psql died of SIGPIPE") ||
		!strings.Contains(a.Annotations["description"], "tini") ||
		!strings.HasSuffix(a.Annotations["runbook_url"], "docs/runbook.md#postgresadoptedchildcrash") {
		t.Errorf("alert annotations = %v, want the container, the culprit, the fix and the runbook", a.Annotations)
	}

	// PostgreSQL really reset, once.
	if err := c.Ready(30 * time.Second); err != nil {
		t.Fatalf("server did not come back: %v", err)
	}
	if _, ok := prom.waitValue(30*time.Second, crashRestarts, func(v float64) bool { return v >= before+1 }); !ok {
		t.Fatalf("%s did not rise; serve stdout:\n%s", crashRestarts, s.stdout)
	}
	time.Sleep(3 * time.Second) // a second confirmation would have been scraped by now
	if after, _ := prom.value(crashRestarts); after-before != 1 {
		t.Errorf("%s rose by %v, want exactly 1", crashRestarts, after-before)
	}
	if got, _ := prom.value(`sum(orphanwatch_adopted_child_exits_total{verdict="crash-restart",comm="psql",signal="SIGPIPE",container_id="` + id + `"})`); got != 1 {
		t.Errorf("orphanwatch_adopted_child_exits_total for psql SIGPIPE = %v, want 1", got)
	}

	// The same story on stdout, one JSON line per record.
	mine := func(v string) func(*report.Record) bool { return forPostmaster(c.PostmasterPID, v) }
	var crash, confirmed []report.Record
	for _, r := range s.records() {
		switch {
		case mine("crash-restart")(&r):
			crash = append(crash, r)
		case mine("crash-restart-confirmed")(&r):
			confirmed = append(confirmed, r)
		}
	}
	if len(crash) != 1 || crash[0].Comm != "psql" || crash[0].Signal != "SIGPIPE" {
		t.Errorf("stdout crash-restart records = %+v, want one for psql killed by SIGPIPE", crash)
	}
	if len(confirmed) != 1 || confirmed[0].Terminated == 0 {
		t.Errorf("stdout crash-restart-confirmed records = %+v, want one that terminated server processes", confirmed)
	} else if tr := confirmed[0].Trigger; tr == nil || tr.Comm != "psql" {
		t.Errorf("crash-restart-confirmed names trigger %+v, want psql", tr)
	}

	// The warnings: psql was adopted, and the hazard itself (5 min to fire).
	if _, ok := prom.waitFiring(10*time.Second, "PostgresOrphanAdopted", id); !ok {
		t.Errorf("PostgresOrphanAdopted not firing; alerts:\n%s", prom.rawAlerts())
	}
	if pid1 := prom.alerts("PostgresPostmasterIsPID1", id); len(pid1) != 1 || pid1[0].State != "pending" {
		t.Errorf("PostgresPostmasterIsPID1 = %+v, want one pending alert", pid1)
	}
	t.Logf("alerts as Prometheus reports them:\n%s", prom.rawAlerts())
}

// With tini as PID 1, tini adopts and reaps psql: orphanwatch sees the
// death (with --all) and Prometheus raises nothing.
func TestServePrometheusNoAlertBehindTini(t *testing.T) {
	testenv.RequirePostgres(t)
	testenv.RequireCommands(t, "prometheus", "tini")
	s := startServe(t, "--all")
	s.waitReady(15 * time.Second)
	prom := startPrometheus(t, s.Addr)
	opts, id := inContainer(t, testenv.ClusterOptions{Init: []string{"tini", "--"}})
	c := testenv.StartCluster(t, opts)
	sel := `{container_id="` + id + `"}`

	if _, ok := prom.waitValue(30*time.Second, `sum(orphanwatch_postmasters`+sel+`)`, func(v float64) bool { return v == 1 }); !ok {
		t.Fatalf("Prometheus never saw the postmaster of container %s; serve stderr:\n%s", id, s.stderr)
	}
	if err := c.SeedIncident(); err != nil {
		t.Fatal(err)
	}
	r, ok := s.waitRecord(30*time.Second, func(r *report.Record) bool {
		return r.Kind == "exit" && r.Comm == "psql" && r.ParentPID == uint32(c.InitPID)
	})
	if !ok {
		t.Fatalf("serve never reported psql dying under tini (pid %d)", c.InitPID)
	}
	if r.Signal != "SIGPIPE" || r.ParentComm != "tini" || r.Verdict != "exit" {
		t.Fatalf("psql under tini: %s %s parent %s, want a plain exit for SIGPIPE under tini", r.Verdict, r.Signal, r.ParentComm)
	}
	// Let Prometheus scrape after the death and evaluate the rules on it.
	died := time.Now()
	if _, ok := prom.waitValue(15*time.Second, `max(timestamp(orphanwatch_build_info))`, func(v float64) bool {
		return v > float64(died.Add(time.Second).Unix())
	}); !ok {
		t.Fatal("Prometheus stopped scraping orphanwatch")
	}
	time.Sleep(3 * time.Second)

	for _, name := range []string{"PostgresAdoptedChildCrash", "PostgresOrphanAdopted", "PostgresPostmasterIsPID1"} {
		if a := prom.alerts(name, id); len(a) != 0 {
			t.Errorf("%s raised behind tini: %+v", name, a)
		}
	}
	for expr, want := range map[string]float64{
		`sum(orphanwatch_postmaster_crash_restarts_total` + sel + `)`: 0,
		`sum(orphanwatch_adoptions_total` + sel + `)`:                 0,
		`sum(orphanwatch_postmasters_pid1` + sel + `)`:                0,
		`sum(orphanwatch_adopted_processes` + sel + `)`:               0,
	} {
		if got, ok := prom.value(expr); !ok || got != want {
			t.Errorf("%s = %v (found %v) behind tini, want %v", expr, got, ok, want)
		}
	}
	if got := prom.query(`orphanwatch_adopted_child_exits_total` + sel); len(got) != 0 {
		t.Errorf("adopted child exits counted behind tini: %+v", got)
	}
}

func TestServeReadyzHealthzAndMetrics(t *testing.T) {
	testenv.RequireRoot(t)
	s := startServe(t)
	s.waitReady(15 * time.Second)
	base := "http://" + s.Addr
	code, body := httpGet(t, base+"/readyz")
	for _, hook := range []string{"sched_process_fork", "sched_process_exec", "sched_process_exit", "signal_generate", "signal_deliver", "mark_victim"} {
		if code != 200 || !strings.Contains(body, hook) {
			t.Errorf("/readyz = %d %q, want 200 naming %s", code, body, hook)
		}
	}
	if code, _ := httpGet(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, body := httpGet(t, base+"/"); code != 200 || !strings.Contains(body, "/metrics") {
		t.Errorf("landing page = %d, want 200 linking /metrics", code)
	}
	_, metrics := httpGet(t, base+"/metrics")
	for _, want := range []string{"orphanwatch_build_info{", "orphanwatch_events_lost_total 0", "process_start_time_seconds", "go_goroutines"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// One exec program or the other, by whether a postmaster runs.
	exec := `orphanwatch_programs_attached{hook="tp_btf/sched_process_exec",program=`
	if strings.Contains(metrics, exec+`"handle_exec"} 1`) == strings.Contains(metrics, exec+`"handle_exec_idle"} 1`) {
		t.Errorf("/metrics: want exactly one exec program attached:\n%s", grepLines(metrics, exec))
	}
}

// A node with no postmaster runs only the exec program that compares
// comms; the first postmaster attaches the rest (and the full exec
// program in its place), in time for an incident right after its start,
// and the last one gone detaches them again.
func TestServeAttachesTheLifecycleOnlyWhileAPostmasterRuns(t *testing.T) {
	testenv.RequirePostgres(t)
	s := startServe(t)
	s.waitReady(15 * time.Second)
	fork := `orphanwatch_programs_attached{hook="tp_btf/sched_process_fork",program="handle_fork"}`
	idleExec := `orphanwatch_programs_attached{hook="tp_btf/sched_process_exec",program="handle_exec_idle"}`
	fullExec := `orphanwatch_programs_attached{hook="tp_btf/sched_process_exec",program="handle_exec"}`
	waitMetrics := func(what string, ok func(m string) bool) string {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			_, m := httpGet(t, "http://"+s.Addr+"/metrics")
			if ok(m) {
				return m
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 15s; metrics:\n%s\nserve stderr:\n%s", what, grepLines(m, "orphanwatch_programs_attached", "orphanwatch_postmasters ", "orphanwatch_program_switches_total"), s.stderr)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Other PostgreSQL servers on the host (outside CI) keep everything
	// attached: then only the switch back is checked.
	// (Another test's cluster may still be on its way out.)
	var m string
	alone := false
	for deadline := time.Now().Add(15 * time.Second); !alone && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		_, m = httpGet(t, "http://"+s.Addr+"/metrics")
		alone = !strings.Contains(m, "\norphanwatch_postmasters{")
	}
	if alone {
		waitMetrics("only the idle exec program attached with no postmaster", func(m string) bool {
			return strings.Contains(m, fork+" 0") && strings.Contains(m, idleExec+" 1") && strings.Contains(m, fullExec+" 0")
		})
	} else if os.Getenv("CI") == "true" {
		t.Fatalf("a postmaster runs on the CI host before the test starts one:\n%s", grepLines(m, "orphanwatch_postmasters"))
	} else {
		t.Logf("NOTE: other postmasters run on this host; the detached state is not checked:\n%s", grepLines(m, "orphanwatch_postmasters"))
	}

	c := testenv.StartCluster(t, testenv.ClusterOptions{})
	if err := c.SeedIncident(); err != nil {
		t.Fatalf("running the incident: %v", err)
	}
	waitMetrics("the lifecycle programs attached for the postmaster", func(m string) bool {
		return strings.Contains(m, fork+" 1") && strings.Contains(m, fullExec+" 1") && strings.Contains(m, idleExec+" 0")
	})
	r, ok := s.waitRecord(15*time.Second, func(r *report.Record) bool { return r.Verdict == "crash-restart" && r.ParentPID == uint32(c.InitPID) })
	if !ok {
		t.Fatalf("no crash-restart record for the incident right after the postmaster's start; serve stderr:\n%s", s.stderr)
	}
	if pids := testenv.ChildExits(testenv.ParseLog(c.Log())); len(pids) != 1 || pids[0].NSPid != r.NSPid {
		t.Errorf("PostgreSQL logged child exits %+v, orphanwatch named ns pid %d", pids, r.NSPid)
	}

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if alone {
		m := waitMetrics("the lifecycle programs detached once the postmaster is gone", func(m string) bool {
			return strings.Contains(m, fork+" 0") && strings.Contains(m, idleExec+" 1") && strings.Contains(m, fullExec+" 0")
		})
		if !strings.Contains(m, "orphanwatch_program_switches_total 2") {
			t.Errorf("switches: %s, want 2 (attached, detached)", grepLines(m, "orphanwatch_program_switches_total"))
		}
	}
	if lost := "orphanwatch_events_lost_total 0"; !strings.Contains(m, lost) {
		t.Errorf("metrics lack %q", lost)
	}
}

// grepLines keeps the lines of text that start with one of prefixes.
func grepLines(text string, prefixes ...string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				out = append(out, line)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

func TestServeExitsZeroWithin2sOnSIGTERM(t *testing.T) {
	testenv.RequireRoot(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		s := startServe(t)
		s.waitReady(15 * time.Second)
		// A scrape in flight must not hold up the stop.
		go httpGet(t, "http://"+s.Addr+"/metrics")
		start := time.Now()
		if err := s.cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		select {
		case <-s.done:
		case <-time.After(2 * time.Second):
			t.Fatalf("serve still running 2s after %v:\n%s", sig, s.stderr)
		}
		if s.err != nil {
			t.Errorf("serve exited with %v after %v, want status 0:\n%s", s.err, sig, s.stderr)
		}
		if !strings.Contains(s.stderr.String(), "BPF programs detached") || strings.Contains(s.stderr.String(), "detaching the BPF programs") {
			t.Errorf("serve did not detach cleanly after %v:\n%s", sig, s.stderr)
		}
		t.Logf("%v: exited in %s", sig, time.Since(start).Round(time.Millisecond))
	}
}

// A taken port fails at once with status 6, before any BPF is loaded: it
// needs no root, and as non-root a load attempt would fail with status 3.
func TestServeTakenPortExitsSix(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cmd := exec.Command(testenv.Binary(t), "serve", "--web.listen-address="+l.Addr().String())
	var stdout, stderr testenv.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	elapsed := time.Since(start)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 6 {
		t.Fatalf("serve on a taken port: %v, want exit status 6\n%s", err, stderr.String())
	}
	if elapsed > time.Second {
		t.Errorf("took %s to fail, want it at once", elapsed)
	}
	msg := strings.TrimSpace(stderr.String())
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, l.Addr().String()) ||
		!strings.Contains(msg, "already uses that address") || !strings.Contains(msg, "--web.listen-address") {
		t.Errorf("message = %q, want one line naming the address, the problem and the flag", msg)
	}
	if stdout.String() != "" {
		t.Errorf("stdout = %q, want nothing", stdout.String())
	}
}
