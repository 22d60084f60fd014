package e2e

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

func envDuration(t *testing.T, key string, def time.Duration) time.Duration {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", key, v, err)
	}
	return d
}

// Soak: mixed process churn on the host and inside the database container,
// against real PostgreSQL whose postmaster is PID 1, with the seed incident
// every interval. Every incident is reported exactly once and confirmed,
// the agent's RSS stays flat within 10%, no event is lost. A one-minute run
// by default (CI); `make soak` runs it for 10 minutes (SOAK_DURATION,
// SOAK_INTERVAL).
func TestSoak(t *testing.T) {
	testenv.RequirePostgres(t)
	duration := envDuration(t, "SOAK_DURATION", time.Minute)
	interval := envDuration(t, "SOAK_INTERVAL", 15*time.Second)
	storm := testenv.Storm(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{})
	s := startServe(t)
	s.waitReady(30 * time.Second)

	ctx, stopChurn := context.WithCancel(context.Background())
	churn := func(every time.Duration, cmd func() *exec.Cmd) {
		for ctx.Err() == nil {
			cmd().Run()
			select {
			case <-ctx.Done():
			case <-time.After(every):
			}
		}
	}
	go churn(500*time.Millisecond, func() *exec.Cmd { return exec.Command(storm, "-v", "-n", "3000") })
	go churn(time.Second, func() *exec.Cmd { return c.Command(storm, "-v", "-n", "1000") })
	go churn(200*time.Millisecond, func() *exec.Cmd { return exec.Command("sh", "-c", "for i in $(seq 20); do /bin/true; done") })
	defer stopChurn()

	mine := func(verdict string) []report.Record {
		var out []report.Record
		for _, r := range s.records() {
			if forPostmaster(c.PostmasterPID, verdict)(&r) {
				out = append(out, r)
			}
		}
		return out
	}
	var rss []int
	incidents := 0
	start := time.Now()
	for time.Since(start) < duration {
		next := time.Now().Add(interval)
		if err := c.SeedIncident(); err != nil {
			t.Fatalf("incident %d: %v", incidents+1, err)
		}
		incidents++
		deadline := time.Now().Add(30 * time.Second)
		for len(mine("crash-restart")) < incidents && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if err := c.Ready(30 * time.Second); err != nil {
			t.Fatalf("after incident %d: %v", incidents, err)
		}
		rss = append(rss, rssKiB(t, s.cmd.Process.Pid))
		time.Sleep(time.Until(next))
	}
	stopChurn()
	time.Sleep(2 * time.Second)

	crashes, confirmed := mine("crash-restart"), mine("crash-restart-confirmed")
	culprits := map[uint32]bool{}
	for _, r := range crashes {
		if r.Comm != "psql" || r.Signal != "SIGPIPE" || culprits[r.PID] {
			t.Errorf("unexpected crash-restart record: %s %s pid %d", r.Comm, r.Signal, r.PID)
		}
		culprits[r.PID] = true
	}
	if len(crashes) != incidents || len(confirmed) != incidents {
		t.Errorf("%d incidents: %d crash-restart and %d crash-restart-confirmed records, want one of each per incident", incidents, len(crashes), len(confirmed))
	}
	if lost := metricValue(t, s.Addr, "orphanwatch_events_lost_total"); lost != 0 {
		t.Errorf("%v events lost", lost)
	}
	first, last := rss[0], rss[len(rss)-1]
	if growth := float64(last-first) / float64(first); growth > 0.10 || growth < -0.10 {
		t.Errorf("agent RSS went from %d KiB to %d KiB (%+.1f%%), want within 10%%: %v", first, last, 100*growth, rss)
	}
	exits := metricValue(t, s.Addr, "orphanwatch_kernel_exits_total")
	t.Logf("soak %s: %d incidents, %d reported, %d confirmed; %.0f tasks ended on the host; lost 0; agent RSS %d -> %d KiB (samples %v)",
		time.Since(start).Round(time.Second), incidents, len(crashes), len(confirmed), exits, first, last, rss)
}
