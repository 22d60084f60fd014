package testenv

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// PostgresContainer is a container of an orphanwatch-postgres image: the
// entrypoint's postmaster is PID 1, or the child of docker-init with --init.
type PostgresContainer struct {
	*Container
	Version int
	// InitPID is the host pid of the container's PID 1.
	InitPID int
	// PostmasterPID is the host pid of the postmaster.
	PostmasterPID int
}

// StartPostgresContainer runs the image for a major version (built if
// need be) with extra docker run args, and waits until the server accepts
// connections (initdb included).
func StartPostgresContainer(t testing.TB, e *DockerEngine, version int, name string, args ...string) *PostgresContainer {
	t.Helper()
	image := PostgresImage(t, e, version)
	c := &PostgresContainer{Container: RunContainer(t, e, name, args, image), Version: version}
	if !c.WaitLog("database system is ready to accept connections", 60*time.Second) {
		t.Fatalf("PostgreSQL %d in %s not ready after 60s; status %s; log:\n%s", version, name, c.Inspect("{{.State.Status}}"), c.Logs())
	}
	c.InitPID = c.Container.InitPID()
	c.PostmasterPID = c.InitPID
	if comm(c.InitPID) != "postgres" { // --init: docker-init's child
		c.PostmasterPID = ChildOf(t, c.InitPID)
		if comm(c.PostmasterPID) != "postgres" {
			t.Fatalf("PID 1 of %s is %s (%d), its child %s (%d): no postmaster", name, comm(c.InitPID), c.InitPID, comm(c.PostmasterPID), c.PostmasterPID)
		}
	}
	return c
}

func comm(pid int) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(data))
}

// PsqlArgs is how psql inside the container reaches the server: its
// default unix socket directory, as a user's docker exec would.
const PsqlArgs = "psql -X -q -U postgres -d postgres"

// SeedIncident is the incident through docker exec: the shell starts psql |
// head in the background and exits, orphaning both to PID 1; psql dies of
// SIGPIPE when head has read 10 bytes and gone.
func (c *PostgresContainer) SeedIncident() (string, error) {
	return c.Shell(PsqlArgs + ` -c "select generate_series(1,3000000)" | head -c 10 >/dev/null & exit`)
}

// Ready waits until the server answers a query again (after a crash-restart).
func (c *PostgresContainer) Ready(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out, err := c.Exec("sh", "-c", PsqlArgs+` -Atc "select 1"`)
		if err == nil && strings.TrimSpace(out) == "1" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server in %s not ready after %s: %v: %s", c.Name, timeout, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
