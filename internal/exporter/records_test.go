package exporter

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/orphanwatch/orphanwatch/internal/report"
)

// clock is the exporter's notion of now, moved by the test.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func crash(comm, containerID string) *report.Record {
	return &report.Record{Verdict: "crash-restart", Kind: "exit", Comm: comm, Signal: "SIGPIPE", ContainerID: containerID}
}

// series lists a family's series as "label=value,..." strings, sorted.
func series(t *testing.T, c prometheus.Collector, name string, labels ...string) []string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var parts []string
			for _, lp := range m.GetLabel() {
				for _, want := range labels {
					if lp.GetName() == want {
						parts = append(parts, fmt.Sprintf("%s=%s", lp.GetName(), lp.GetValue()))
					}
				}
			}
			parts = append(parts, fmt.Sprint(m.GetCounter().GetValue()))
			out = append(out, strings.Join(parts, " "))
		}
	}
	return out
}

func TestCommNamesPastTheCapAreFoldedIntoOther(t *testing.T) {
	clk := &clock{now: time.Unix(1e9, 0)}
	e := New(Config{MaxComms: 2, Now: clk.Now})
	for _, comm := range []string{"psql", "pg_dump", "backup.sh", "cron", "psql"} {
		e.Write(crash(comm, dbID))
	}
	got := strings.Join(series(t, e, "orphanwatch_adopted_child_exits_total", "comm"), "; ")
	if want := "comm=other 2; comm=pg_dump 1; comm=psql 2"; got != want {
		t.Errorf("series = %s, want %s", got, want)
	}
	if got := testutil.ToFloat64(e.records.folded.WithLabelValues("orphanwatch_adopted_child_exits_total", "max-comms")); got != 2 {
		t.Errorf("folded by max-comms = %v, want 2", got)
	}

	// An hour later a name unused since gives up its place, and its series.
	clk.now = clk.now.Add(DefaultEvictAfter)
	e.Write(crash("psql", dbID))
	clk.now = clk.now.Add(time.Minute)
	e.Write(crash("vacuumdb", dbID))
	got = strings.Join(series(t, e, "orphanwatch_adopted_child_exits_total", "comm"), "; ")
	if want := "comm=other 2; comm=psql 3; comm=vacuumdb 1"; got != want {
		t.Errorf("after an idle hour: series = %s, want %s", got, want)
	}
}

func TestContainersPastTheSeriesCapAreFoldedIntoOther(t *testing.T) {
	clk := &clock{now: time.Unix(1e9, 0)}
	e := New(Config{MaxSeries: 2, Now: clk.Now})
	confirmed := func(id string) *report.Record {
		return &report.Record{Verdict: "crash-restart-confirmed", Kind: "signal", ContainerID: id, Namespace: "db", Pod: "pg-" + id}
	}
	for _, id := range []string{"aaa", "bbb", "ccc", "ddd"} {
		e.Write(confirmed(id))
	}
	got := strings.Join(series(t, e, "orphanwatch_postmaster_crash_restarts_total", "container_id", "pod"), "; ")
	if want := "container_id=aaa pod=pg-aaa 1; container_id=bbb pod=pg-bbb 1; container_id=other pod= 2"; got != want {
		t.Errorf("series = %s, want %s", got, want)
	}
	// Still within the hour: nothing may be evicted, an alert may be
	// looking at it.
	clk.now = clk.now.Add(DefaultEvictAfter - time.Second)
	e.Write(confirmed("bbb"))
	e.Write(confirmed("eee"))
	if n := testutil.CollectAndCount(e, "orphanwatch_postmaster_crash_restarts_total"); n != 3 {
		t.Errorf("%d series, want 2 and the overflow", n)
	}
	clk.now = clk.now.Add(2 * time.Second) // aaa now idle for an hour
	e.Write(confirmed("fff"))
	got = strings.Join(series(t, e, "orphanwatch_postmaster_crash_restarts_total", "container_id"), "; ")
	if want := "container_id=bbb 2; container_id=fff 1; container_id=other 3"; got != want {
		t.Errorf("after an idle hour: series = %s, want %s", got, want)
	}
	if got := testutil.ToFloat64(e.records.evicted.WithLabelValues("orphanwatch_postmaster_crash_restarts_total")); got != 1 {
		t.Errorf("evicted = %v, want 1", got)
	}
}

func TestRecordCountersByVerdict(t *testing.T) {
	e := New(Config{})
	exit3 := 3
	for _, r := range []*report.Record{
		{Verdict: "adopted", Kind: "exit", Comm: "sh", ContainerID: dbID, Origin: "entrypoint"},
		{Verdict: "crash-restart", Kind: "exit", Comm: "sh", ExitCode: &exit3, ContainerID: dbID, Origin: "docker-exec"},
		// A zombie handed to the postmaster: an adoption and a crash at once.
		{Verdict: "crash-restart", Kind: "adoption", Comm: "sh", Signal: "SIGKILL", ContainerID: dbID, ParentPID: 100, Postmaster: &report.PostmasterRecord{PID: 100}, Origin: "healthcheck"},
		{Verdict: "adoption", Kind: "adoption", Comm: "sleep", ContainerID: dbID, ParentPID: 100, Postmaster: &report.PostmasterRecord{PID: 100}},
		// Adopted by the container's init, not by a postmaster.
		{Verdict: "adoption", Kind: "adoption", Comm: "sleep", ContainerID: dbID, ParentPID: 7},
		{Verdict: "oom-kill", Kind: "oom", Comm: "postgres", ContainerID: dbID, OOM: &report.OOMRecord{Role: "server"}},
		{Verdict: "server-crash", Kind: "exit", Comm: "postgres", ContainerID: dbID},
		{Verdict: "postmaster-pid1", Kind: "exec", Comm: "postgres", ContainerID: dbID},
		{Verdict: "adopted", Kind: "exit", Comm: "bad\xffname", ContainerID: dbID, Origin: "unknown"},
	} {
		if err := e.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	want := `
# HELP orphanwatch_adopted_child_exits_total x
# TYPE orphanwatch_adopted_child_exits_total counter
orphanwatch_adopted_child_exits_total{comm="bad` + "\uFFFD" + `name",` + withOrigin("unknown") + `,signal="",verdict="adopted"} 1
orphanwatch_adopted_child_exits_total{comm="sh",` + withOrigin("docker-exec") + `,signal="",verdict="crash-restart"} 1
orphanwatch_adopted_child_exits_total{comm="sh",` + withOrigin("entrypoint") + `,signal="",verdict="adopted"} 1
orphanwatch_adopted_child_exits_total{comm="sh",` + withOrigin("healthcheck") + `,signal="SIGKILL",verdict="crash-restart"} 1
# HELP orphanwatch_adoptions_total x
# TYPE orphanwatch_adoptions_total counter
orphanwatch_adoptions_total{` + dbLabels + `} 2
# HELP orphanwatch_oom_kills_total x
# TYPE orphanwatch_oom_kills_total counter
orphanwatch_oom_kills_total{` + dbLabels + `,role="server"} 1
`
	// HELP texts are checked elsewhere; compare values only.
	got, err := testutil.CollectAndFormat(e, expfmt.TypeTextPlain, "orphanwatch_adopted_child_exits_total", "orphanwatch_adoptions_total", "orphanwatch_oom_kills_total", "orphanwatch_postmaster_crash_restarts_total")
	if err != nil {
		t.Fatal(err)
	}
	if strip(string(got)) != strip(want) {
		t.Errorf("got\n%s\nwant\n%s", strip(string(got)), strip(want))
	}
}

// strip drops comment lines.
func strip(exposition string) string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(exposition), "\n") {
		if !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
