package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// With restart_after_crash = off the postmaster reacts to the same death by
// telling every server process to quit, then shuts down instead of
// restarting: the death is still reported, but no crash-restart is
// confirmed, because PostgreSQL did not perform one.
func TestCrashWithRestartAfterCrashOffIsNotConfirmed(t *testing.T) {
	testenv.RequirePostgres(t)
	tr := testenv.StartTrace(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{Settings: []string{"restart_after_crash=off"}})
	if _, ok := tr.WaitFor(10*time.Second, forPostmaster(c.PostmasterPID, "postmaster-pid1")); !ok {
		t.Fatalf("no postmaster-pid1 record for pid %d", c.PostmasterPID)
	}
	if err := c.SeedIncident(); err != nil {
		t.Fatalf("running the incident: %v", err)
	}
	if _, ok := tr.WaitFor(30*time.Second, forPostmaster(c.PostmasterPID, "crash-restart")); !ok {
		t.Fatalf("no crash-restart record; postgres log:\n%s", c.Log())
	}
	if !c.WaitLog("shutting down because restart_after_crash is off", 15*time.Second) {
		t.Fatalf("PostgreSQL did not shut down:\n%s", c.Log())
	}
	if _, ok := tr.WaitFor(15*time.Second, forPostmaster(c.PostmasterPID, "postmaster-exit")); !ok {
		t.Fatalf("no postmaster-exit record; trace stderr:\n%s", tr.Stderr())
	}
	time.Sleep(2 * time.Second) // past the confirmer's settling time
	if confirmed := tr.Records(forPostmaster(c.PostmasterPID, "crash-restart-confirmed")); len(confirmed) != 0 {
		t.Errorf("a crash that shut PostgreSQL down was confirmed as a crash-restart: %+v", confirmed)
	}
}

// pg_ctl stop -m immediate sends the postmaster SIGQUIT; it then tells every
// server process to quit, as in a crash. That is a shutdown.
func TestImmediateShutdownIsNotACrashRestart(t *testing.T) {
	testenv.RequirePostgres(t)
	tr := testenv.StartTrace(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{})
	if _, ok := tr.WaitFor(10*time.Second, forPostmaster(c.PostmasterPID, "postmaster-pid1")); !ok {
		t.Fatalf("no postmaster-pid1 record for pid %d", c.PostmasterPID)
	}
	if err := syscall.Kill(c.PostmasterPID, syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	if _, ok := tr.WaitFor(15*time.Second, forPostmaster(c.PostmasterPID, "postmaster-exit")); !ok {
		t.Fatalf("no postmaster-exit record; postgres log:\n%s", c.Log())
	}
	if !c.WaitLog("received immediate shutdown request", 5*time.Second) {
		t.Errorf("PostgreSQL did not log an immediate shutdown:\n%s", c.Log())
	}
	time.Sleep(2 * time.Second)
	for _, v := range []string{"crash-restart-confirmed", "crash-restart", "server-crash"} {
		if rs := tr.Records(forPostmaster(c.PostmasterPID, v)); len(rs) != 0 {
			t.Errorf("an immediate shutdown reported as %s: %+v", v, rs)
		}
	}
}
