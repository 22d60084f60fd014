// Package e2e runs orphanwatch the way a user does, against a real
// PostgreSQL 15 whose postmaster is PID 1 of its own PID namespace (or sits
// behind an init), and checks what the user would check.
package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

func forPostmaster(pid int, verdict string) func(*report.Record) bool {
	return func(r *report.Record) bool {
		return r.Verdict == verdict && r.Postmaster != nil && r.Postmaster.PID == uint32(pid)
	}
}

// The seed incident: an orphaned psql dies of SIGPIPE under a PID 1 postmaster.
func TestSeedIncidentIsOneCrashRestart(t *testing.T) {
	testenv.RequirePostgres(t)
	tr := testenv.StartTrace(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{})

	if _, ok := tr.WaitFor(10*time.Second, forPostmaster(c.PostmasterPID, "postmaster-pid1")); !ok {
		t.Errorf("no postmaster-pid1 record for the postmaster (pid %d) started as PID 1", c.PostmasterPID)
	}
	if err := c.SeedIncident(); err != nil {
		t.Fatalf("running the incident: %v", err)
	}
	r, ok := tr.WaitFor(30*time.Second, forPostmaster(c.PostmasterPID, "crash-restart"))
	if !ok {
		t.Fatalf("no crash-restart within 30s; trace stderr:\n%s\npostgres log:\n%s", tr.Stderr(), c.Log())
	}
	if !c.WaitLog("terminated by signal 13", 10*time.Second) {
		t.Errorf("PostgreSQL did not log the crash:\n%s", c.Log())
	}
	if err := c.Ready(30 * time.Second); err != nil {
		t.Fatalf("server did not come back: %v", err)
	}
	time.Sleep(2 * time.Second) // anything more would have arrived by now

	if n := len(tr.Records(forPostmaster(c.PostmasterPID, "crash-restart"))); n != 1 {
		t.Errorf("%d crash-restart records, want exactly 1", n)
	}
	// The backends the postmaster then told to quit are consequences.
	if crashes := tr.Records(forPostmaster(c.PostmasterPID, "server-crash")); len(crashes) != 0 {
		t.Errorf("server processes killed by the crash handling reported as crashes: %+v", crashes)
	}
	if confirmed := tr.Records(forPostmaster(c.PostmasterPID, "crash-restart-confirmed")); len(confirmed) != 1 ||
		confirmed[0].Trigger == nil || confirmed[0].Trigger.Comm != "psql" || confirmed[0].Terminated < 2 {
		t.Errorf("crash-restart-confirmed = %+v, want one naming psql and the server processes told to quit", confirmed)
	}
	if r.Comm != "psql" || r.Signal != "SIGPIPE" || r.ExitCode != nil {
		t.Errorf("culprit = %s %s (exit code %v), want psql killed by SIGPIPE", r.Comm, r.Signal, r.ExitCode)
	}
	if r.ParentPID != uint32(c.PostmasterPID) || r.ParentNSPid != 1 || !r.Postmaster.PID1 {
		t.Errorf("adopter = pid %d ns pid %d, want the postmaster %d as ns pid 1", r.ParentPID, r.ParentNSPid, c.PostmasterPID)
	}
	if r.OriginalParentComm != "sh" || r.OriginalParentPID == 0 || r.OriginalParentPID == r.ParentPID {
		t.Errorf("original parent = %s %d, want the shell that started psql", r.OriginalParentComm, r.OriginalParentPID)
	}
	if r.AdoptedAt == nil || r.LifetimeMS == nil || r.NSPid == r.PID || r.NSPid == 0 {
		t.Errorf("adopted_at %v lifetime %v ns_pid %d: want the adoption time, a lifetime and the namespace pid", r.AdoptedAt, r.LifetimeMS, r.NSPid)
	}
	if len(r.Ancestry) < 2 || r.Ancestry[0].Comm != "sh" || r.Ancestry[1].Comm != "nsenter" {
		t.Errorf("ancestry = %+v, want sh <- nsenter <- ...", r.Ancestry)
	}
	if !strings.Contains(r.Cmdline, "generate_series") || !strings.HasSuffix(r.Exe, "/psql") {
		t.Errorf("command = %q %q, want the psql command line", r.Exe, r.Cmdline)
	}
	if want := "was terminated by signal 13: Broken pipe"; !strings.Contains(r.PostgresLog, want) || !strings.Contains(c.Log(), r.PostgresLog) {
		t.Errorf("predicted log line %q, PostgreSQL logged:\n%s", r.PostgresLog, c.Log())
	}
	if !r.CrashRestart || r.Fix == "" || r.Postmaster.Version != 15 {
		t.Errorf("crash_restart %v, fix %q, version %d", r.CrashRestart, r.Fix, r.Postmaster.Version)
	}
}

// An orphan exiting 1 is ignored by the postmaster: reported as adopted, and
// PostgreSQL keeps running.
func TestOrphanExitingOneIsAdoptedNotACrash(t *testing.T) {
	testenv.RequirePostgres(t)
	tr := testenv.StartTrace(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{})
	if _, err := c.Exec(`sh -c 'sleep 0.5; exit 1' & exit`); err != nil {
		t.Fatal(err)
	}
	r, ok := tr.WaitFor(15*time.Second, forPostmaster(c.PostmasterPID, "adopted"))
	if !ok {
		t.Fatalf("no adopted record; stderr:\n%s", tr.Stderr())
	}
	if r.ExitCode == nil || *r.ExitCode != 1 || r.Signal != "" || r.ParentNSPid != 1 {
		t.Errorf("record = exit %v signal %q parent ns pid %d, want exit 1 under ns pid 1", r.ExitCode, r.Signal, r.ParentNSPid)
	}
	time.Sleep(time.Second)
	if n := len(tr.Records(forPostmaster(c.PostmasterPID, "crash-restart"))); n != 0 {
		t.Errorf("%d crash-restart records for an exit 1", n)
	}
	if strings.Contains(c.Log(), "server process") || strings.Contains(c.Log(), "reinitializing") {
		t.Errorf("PostgreSQL reacted to an exit 1:\n%s", c.Log())
	}
}

// With tini as PID 1 the same incident is harmless: tini reaps psql.
func TestTiniAsPID1PreventsTheCrash(t *testing.T) {
	testenv.RequirePostgres(t)
	testenv.RequireCommands(t, "tini")
	tr := testenv.StartTrace(t, "--all")
	c := testenv.StartCluster(t, testenv.ClusterOptions{Init: []string{"tini", "--"}})
	if err := c.SeedIncident(); err != nil {
		t.Fatal(err)
	}
	psqlDied := func(r *report.Record) bool {
		return r.Kind == "exit" && r.Comm == "psql" && r.ParentPID == uint32(c.InitPID)
	}
	r, ok := tr.WaitFor(30*time.Second, psqlDied)
	if !ok {
		t.Fatalf("never saw psql die under tini (pid %d)", c.InitPID)
	}
	if r.Signal != "SIGPIPE" || r.ParentComm != "tini" || r.Verdict != "exit" {
		t.Errorf("psql under tini: %s %s parent %s, want a plain exit verdict for SIGPIPE under tini", r.Verdict, r.Signal, r.ParentComm)
	}
	time.Sleep(2 * time.Second)
	// The trace sees the whole host: only this cluster's namespace counts.
	if crashes := tr.Records(func(x *report.Record) bool {
		return strings.HasPrefix(x.Verdict, "crash-restart") && x.PidNS == r.PidNS
	}); len(crashes) != 0 {
		t.Errorf("crash-restart reported with tini as PID 1: %+v", crashes)
	}
	if strings.Contains(c.Log(), "terminated by signal") || strings.Contains(c.Log(), "reinitializing") {
		t.Errorf("PostgreSQL log is not clean behind tini:\n%s", c.Log())
	}
	if pm := tr.Records(forPostmaster(c.PostmasterPID, "postmaster-pid1")); len(pm) != 0 {
		t.Errorf("postmaster behind tini reported as PID 1")
	}
}
