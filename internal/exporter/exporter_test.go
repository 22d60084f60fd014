package exporter

import (
	"bufio"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/agent"
	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/lineage"
	"github.com/orphanwatch/orphanwatch/internal/probe"
	"github.com/orphanwatch/orphanwatch/internal/procfs/procfstest"
	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

const (
	pgBin = "/usr/lib/postgresql/15/bin/postgres"
	// dbID is the Docker container the postmaster runs in.
	dbID     = "4c01db0b339c8b8f5b6d5e4e1a8e7e2f0b4b1c1d2e3f405162738495a6b7c8d9"
	dbCgroup = "/system.slice/docker-" + dbID + ".scope"
	dbLabels = `container="",container_id="` + dbID + `",namespace="",pod=""`
)

// kernelStub stands in for the probe's counters map, which needs root;
// TestKernelCountersFromARealProbe reads the real one.
type kernelStub struct{ counters probe.Counters }

func (k kernelStub) Counters() (probe.Counters, error) { return k.counters, nil }
func (k kernelStub) Malformed() uint64                 { return 2 }
func (k kernelStub) Programs() []probe.Attachment {
	return []probe.Attachment{{Program: "handle_exit", Hook: "tp_btf/sched_process_exit", OnDemand: true, Attached: true}}
}
func (k kernelStub) Switches() uint64 { return 1 }

// watchList is the agent's view of the kernel's watched-postmaster map.
type watchList struct{}

func (watchList) Watch(event.ProcessKey) error            { return nil }
func (watchList) Unwatch(uint32) error                    { return nil }
func (watchList) EndReset(event.ProcessKey, uint64) error { return nil }

// fixture is serve's pipeline on a fake /proc: a PostgreSQL 15 postmaster,
// PID 1 of its namespace in a Docker container, one backend, and a psql it
// adopted before orphanwatch started.
type fixture struct {
	exp    *Exporter
	reg    *prometheus.Registry
	agent  *agent.Agent
	stdout *testenv.Buffer
	proc   *procfstest.Tree
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	proc := procfstest.New(t)
	proc.Add(procfstest.Proc{PID: 10, PPID: 1, Comm: "containerd-shim", Start: 5, Exe: "/usr/bin/containerd-shim-runc-v2"})
	proc.Add(procfstest.Proc{PID: 100, PPID: 10, Comm: "postgres", Start: 20, Exe: pgBin, Argv: []string{pgBin, "-D", "/data"},
		NSpid: []int{100, 1}, Cgroup: dbCgroup, DataDir: "/data", Major: 15})
	proc.Add(procfstest.Proc{PID: 101, PPID: 100, Comm: "postgres", Start: 21, Exe: pgBin, NSpid: []int{101, 30}, Cgroup: dbCgroup})
	proc.Add(procfstest.Proc{PID: 300, PPID: 100, Comm: "psql", Start: 40, Exe: "/usr/bin/psql",
		Argv: []string{"psql", "-c", "select generate_series(1,3000000)"}, NSpid: []int{300, 9}, Cgroup: dbCgroup})

	f := &fixture{exp: New(cfg), stdout: &testenv.Buffer{}, proc: proc}
	f.reg = NewRegistry(f.exp)
	table := lineage.New(proc.FS(), 1000)
	f.agent = agent.New(agent.Config{
		Kernel: watchList{}, Table: table, Proc: proc.FS(),
		Wall: func(ns uint64) time.Time { return time.Unix(0, int64(ns)) }, Now: func() uint64 { return 30e7 },
		Sinks: []agent.Sink{f.exp, report.NewJSONWriter(f.stdout)},
	})
	pms, err := f.agent.Start()
	if err != nil {
		t.Fatal(err)
	}
	f.exp.Attach(Sources{Kernel: kernelStub{probe.Counters{Lost: 3, Forks: 1000, Exits: 990, BirthsEvicted: 4, ChildrenTruncated: 5}}, Table: table, Agent: f.agent})
	f.agent.ReportRunning(pms)
	return f
}

func task(pid, nspid uint32, startTicks uint64, comm string) event.Task {
	t := event.Task{PID: pid, NSPid: nspid, Start: startTicks * 1e7}
	copy(t.Comm[:], comm)
	return t
}

var postmaster = task(100, 1, 20, "postgres")

// seedIncident is what the kernel reports when the adopted psql dies of
// SIGPIPE, the postmaster answers with its SIGQUIT fan-out, and its
// startup process ends crash recovery 0.3 s after the crash. The agent
// reads them as from the probe, flushing its sinks when they are drained.
func (f *fixture) seedIncident(t *testing.T) {
	var events []*event.Event
	ev := &event.Event{Kind: event.KindExit, Time: 50e7, Status: event.ExitStatus(unix.SIGPIPE), Flags: event.HasSignal}
	ev.Task, ev.Parent = task(300, 9, 40, "psql"), postmaster
	copy(ev.Cgroup.Name[:], "docker-"+dbID+".scope")
	copy(ev.Cgroup.Parent[:], "system.slice")
	ev.Signal = event.Signal{Signo: uint32(unix.SIGPIPE), SenderPID: 300, Flags: event.SignalFromSelf | event.SignalNoInfo}
	events = append(events, ev, reapOf(ev))
	for range 2 { // to the backend's pid, then to its process group
		q := &event.Event{Kind: event.KindSignal, Time: 50e7 + 1e6, Task: task(101, 30, 21, "postgres"), Parent: postmaster, Flags: event.HasSignal}
		q.Signal = event.Signal{Signo: uint32(unix.SIGQUIT), SenderPID: 100, Flags: event.SignalToChild}
		events = append(events, q)
	}
	startup := &event.Event{Kind: event.KindExit, Time: 80e7, Task: task(110, 31, 0, "postgres"), Parent: postmaster, Flags: event.HasBirth}
	startup.Task.Start = 55e7
	startup.Birth.Flags = event.BirthForked
	startup.Birth.Ancestry[0].PID = 100
	events = append(events, startup, reapOf(startup))
	read := func(_ context.Context, handle func(*event.Event), idle func()) error {
		for _, ev := range events {
			handle(ev)
		}
		idle()
		return nil
	}
	if err := f.agent.Run(context.Background(), read); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(f.stdout.String(), `"verdict":"crash-restart-confirmed"`) {
		t.Fatalf("no crash-restart-confirmed record; stdout:\n%s", f.stdout)
	}
}

// reapOf is the kernel's report that the postmaster's waitpid reaps the
// child whose death ev began.
func reapOf(ev *event.Event) *event.Event {
	return &event.Event{Kind: event.KindReap, Time: ev.Time + 1e5, Status: ev.Status, Task: ev.Task, Parent: postmaster}
}

func TestGaugesAndZeroSeriesBeforeAnyIncident(t *testing.T) {
	f := newFixture(t, Config{})
	want := `
# HELP orphanwatch_adopted_processes Live processes whose parent is a postmaster that did not start them (orphans it adopted), by the postmaster's container.
# TYPE orphanwatch_adopted_processes gauge
orphanwatch_adopted_processes{` + dbLabels + `} 1
# HELP orphanwatch_postmasters PostgreSQL postmasters running now, by container.
# TYPE orphanwatch_postmasters gauge
orphanwatch_postmasters{` + dbLabels + `} 1
# HELP orphanwatch_postmasters_pid1 How many postmasters run now as PID 1 of their PID namespace, per container, from orphanwatch's live process table: each adopts every orphan there, and an orphan's abnormal death crash-restarts PostgreSQL. orphanwatch_postmaster_pid1 is the per-postmaster 0/1 gauge of the /proc audit.
# TYPE orphanwatch_postmasters_pid1 gauge
orphanwatch_postmasters_pid1{` + dbLabels + `} 1
# HELP orphanwatch_postmaster_crash_restarts_total Crash-restarts PostgreSQL really performed, seen in the kernel: the postmaster took a death for a crash (or, unasked to stop, told its server processes to quit), and its startup process then finished crash recovery. Series start at 0 for every running postmaster.
# TYPE orphanwatch_postmaster_crash_restarts_total counter
orphanwatch_postmaster_crash_restarts_total{` + dbLabels + `} 0
# HELP orphanwatch_events_lost_total Events the kernel dropped because the ring buffer was full: raise --ringbuf-size.
# TYPE orphanwatch_events_lost_total counter
orphanwatch_events_lost_total 3
# HELP orphanwatch_events_malformed_total Ring-buffer records that could not be decoded and were skipped.
# TYPE orphanwatch_events_malformed_total counter
orphanwatch_events_malformed_total 2
# HELP orphanwatch_birth_records_evicted_total Exits whose birth record the kernel had evicted (more live processes than --max-processes): their origin is judged from /proc instead.
# TYPE orphanwatch_birth_records_evicted_total counter
orphanwatch_birth_records_evicted_total 4
# HELP orphanwatch_children_truncated_total Dying parents with more children than --max-children: the orphans past that were not reported.
# TYPE orphanwatch_children_truncated_total counter
orphanwatch_children_truncated_total 5
`
	names := []string{"orphanwatch_adopted_processes", "orphanwatch_postmasters", "orphanwatch_postmasters_pid1",
		"orphanwatch_postmaster_crash_restarts_total", "orphanwatch_events_lost_total", "orphanwatch_events_malformed_total",
		"orphanwatch_birth_records_evicted_total", "orphanwatch_children_truncated_total"}
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// Zero series exist for the running postmaster's container, so that the
	// first incident there is an increase() Prometheus can see.
	for name, n := range map[string]int{"orphanwatch_adoptions_total": 1, "orphanwatch_oom_kills_total": 3, "orphanwatch_adopted_child_exits_total": 0} {
		if got, err := testutil.GatherAndCount(f.reg, name); err != nil || got != n {
			t.Errorf("%s: %d series (err %v), want %d", name, got, err, n)
		}
	}
}

func TestSeedIncidentCountsAndJSONLines(t *testing.T) {
	f := newFixture(t, Config{})
	f.seedIncident(t)
	want := `
# HELP orphanwatch_adopted_child_exits_total Deaths of processes a postmaster adopted but never started. verdict="crash-restart": it died of a signal or exited with code 2 or more while PostgreSQL ran, so PostgreSQL crash-restarted; verdict="adopted": it exited 0 or 1, which PostgreSQL ignores; verdict="casualty": it died so while PostgreSQL was already resetting, and was ignored. signal is empty for an exit. origin is where it came from (docker-exec, cri-exec, healthcheck, probe, entrypoint, server-process, unknown). comm is capped (--metrics.max-comms); comm and container_id read "other" past the caps.
# TYPE orphanwatch_adopted_child_exits_total counter
orphanwatch_adopted_child_exits_total{comm="psql",` + withOrigin("unknown") + `,signal="SIGPIPE",verdict="crash-restart"} 1
# HELP orphanwatch_postmaster_crash_restarts_total Crash-restarts PostgreSQL really performed, seen in the kernel: the postmaster took a death for a crash (or, unasked to stop, told its server processes to quit), and its startup process then finished crash recovery. Series start at 0 for every running postmaster.
# TYPE orphanwatch_postmaster_crash_restarts_total counter
orphanwatch_postmaster_crash_restarts_total{` + dbLabels + `} 1
# HELP orphanwatch_adopted_processes Live processes whose parent is a postmaster that did not start them (orphans it adopted), by the postmaster's container.
# TYPE orphanwatch_adopted_processes gauge
orphanwatch_adopted_processes{` + dbLabels + `} 0
# HELP orphanwatch_events_total Events received from the kernel, by kind (exit, adoption, exec, signal, oom, reap, reaped-all, pmsignal).
# TYPE orphanwatch_events_total counter
orphanwatch_events_total{kind="adoption"} 0
orphanwatch_events_total{kind="exec"} 0
orphanwatch_events_total{kind="exit"} 2
orphanwatch_events_total{kind="oom"} 0
orphanwatch_events_total{kind="pmsignal"} 0
orphanwatch_events_total{kind="reap"} 2
orphanwatch_events_total{kind="reaped-all"} 0
orphanwatch_events_total{kind="signal"} 2
# HELP orphanwatch_unexplained_crash_restarts_total Crash-restarts PostgreSQL performed whose culprit orphanwatch did not see: the death it reacted to never reached orphanwatch (lost events, or a bug to report). Series start at 0 for every running postmaster.
# TYPE orphanwatch_unexplained_crash_restarts_total counter
orphanwatch_unexplained_crash_restarts_total{` + dbLabels + `} 0
# HELP orphanwatch_postgres_recovery_seconds How long PostgreSQL was down per crash-restart: from the crash to the end of crash recovery (its startup process's exit), while it refused connections.
# TYPE orphanwatch_postgres_recovery_seconds histogram
orphanwatch_postgres_recovery_seconds_bucket{le="0.05"} 0
orphanwatch_postgres_recovery_seconds_bucket{le="0.1"} 0
orphanwatch_postgres_recovery_seconds_bucket{le="0.25"} 0
orphanwatch_postgres_recovery_seconds_bucket{le="0.5"} 1
orphanwatch_postgres_recovery_seconds_bucket{le="1"} 1
orphanwatch_postgres_recovery_seconds_bucket{le="2.5"} 1
orphanwatch_postgres_recovery_seconds_bucket{le="5"} 1
orphanwatch_postgres_recovery_seconds_bucket{le="10"} 1
orphanwatch_postgres_recovery_seconds_bucket{le="30"} 1
orphanwatch_postgres_recovery_seconds_bucket{le="60"} 1
orphanwatch_postgres_recovery_seconds_bucket{le="300"} 1
orphanwatch_postgres_recovery_seconds_bucket{le="+Inf"} 1
orphanwatch_postgres_recovery_seconds_sum 0.3
orphanwatch_postgres_recovery_seconds_count 1
`
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want), "orphanwatch_adopted_child_exits_total",
		"orphanwatch_postmaster_crash_restarts_total", "orphanwatch_adopted_processes", "orphanwatch_events_total",
		"orphanwatch_unexplained_crash_restarts_total", "orphanwatch_postgres_recovery_seconds"); err != nil {
		t.Error(err)
	}

	// stdout: one JSON record per line, the trace contract, and exactly the
	// records orphanwatch_records_total counts.
	var lines []report.Record
	scan := bufio.NewScanner(strings.NewReader(f.stdout.String()))
	for scan.Scan() {
		var r report.Record
		if err := json.Unmarshal(scan.Bytes(), &r); err != nil {
			t.Fatalf("stdout line is not a record: %v: %s", err, scan.Text())
		}
		lines = append(lines, r)
	}
	var verdicts []string
	for _, r := range lines {
		verdicts = append(verdicts, r.Verdict)
	}
	if got := strings.Join(verdicts, " "); got != "postmaster-pid1 crash-restart crash-restart-confirmed" {
		t.Fatalf("stdout verdicts = %s, want postmaster-pid1 crash-restart crash-restart-confirmed", got)
	}
	if r := lines[1]; r.Comm != "psql" || r.Signal != "SIGPIPE" || r.ContainerID != dbID || r.Fix == "" {
		t.Errorf("crash-restart line: comm %q signal %q container %q fix %q", r.Comm, r.Signal, r.ContainerID, r.Fix)
	}
	if r := lines[2]; r.Trigger == nil || r.Trigger.Comm != "psql" || r.Terminated != 1 || r.ContainerID != dbID {
		t.Errorf("confirmed line: trigger %+v terminated %d container %q", r.Trigger, r.Terminated, r.ContainerID)
	}
	for _, v := range []string{"postmaster-pid1", "crash-restart", "crash-restart-confirmed"} {
		got := testutil.ToFloat64(constCollector(t, f.reg, "orphanwatch_records_total", "verdict", v))
		if got != 1 {
			t.Errorf("orphanwatch_records_total{verdict=%q} = %v, want 1 (one stdout line)", v, got)
		}
	}
}

// constCollector picks one series of a gathered family, as a collector
// testutil.ToFloat64 can read.
func constCollector(t *testing.T, g prometheus.Gatherer, name, label, value string) prometheus.Collector {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					c := prometheus.NewCounter(prometheus.CounterOpts{Name: name})
					c.Add(m.GetCounter().GetValue())
					return c
				}
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return nil
}

func TestMetricsFollowPrometheusConventions(t *testing.T) {
	f := newFixture(t, Config{})
	f.seedIncident(t)
	problems, err := testutil.GatherAndLint(f.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "orphanwatch_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

// withOrigin is dbLabels with an origin label, in Prometheus' label order.
func withOrigin(origin string) string {
	return `container="",container_id="` + dbID + `",namespace="",origin="` + origin + `",pod=""`
}
