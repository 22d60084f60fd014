package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// memoryV1 is the cgroup v1 memory controller, where this machine's
// containers (and the kernel side's v1 fallback) live.
const memoryV1 = "/sys/fs/cgroup/memory"

// The seed incident inside a cgroup shaped like a Docker container's
// (Docker's cgroupfs driver: /docker/<id> in the memory controller): every
// record about it names that container, from the kernel's view of the
// dying process's cgroup and from /proc's view of the postmaster's.
func TestContainerAttributesCrashRestartToDockerContainer(t *testing.T) {
	testenv.RequirePostgres(t)
	_, err := os.Stat(filepath.Join(memoryV1, "cgroup.procs"))
	testenv.Require(t, err == nil, "needs the cgroup v1 memory controller mounted at "+memoryV1)

	id := randomContainerID(t)
	parent := filepath.Join(memoryV1, "docker")
	if _, err := os.Stat(parent); os.IsNotExist(err) {
		// Runs after the cluster's cleanup has removed the container's
		// cgroup; a real Docker's parent cgroup is never touched.
		t.Cleanup(func() { os.Remove(parent) })
	}
	cgroup := filepath.Join(parent, id)

	tr := testenv.StartTrace(t, "--all")
	c := testenv.StartCluster(t, testenv.ClusterOptions{Cgroup: cgroup})
	t.Cleanup(func() { stopInCgroup(t, c, cgroup) })
	t.Logf("container cgroup %s", cgroup)

	if r, ok := tr.WaitFor(10*time.Second, forPostmaster(c.PostmasterPID, "postmaster-pid1")); !ok {
		t.Errorf("no postmaster-pid1 record for the postmaster (pid %d)", c.PostmasterPID)
	} else if r.ContainerID != id || r.ContainerRuntime != "docker" {
		t.Errorf("postmaster-pid1 names container %q (%s), want %s (docker)", r.ContainerID, r.ContainerRuntime, id)
	}

	// The incident as `docker exec` would run it: the shell joins the
	// container's cgroup, starts psql | head in the background and exits,
	// orphaning them to the postmaster.
	script := fmt.Sprintf(`echo $$ > %s/cgroup.procs; %s -c "select generate_series(1,3000000)" | head -c 10 >/dev/null & exit`, cgroup, c.PsqlArgs())
	if out, err := c.Exec(script); err != nil {
		t.Fatalf("running the incident: %v: %s", err, out)
	}
	r, ok := tr.WaitFor(30*time.Second, forPostmaster(c.PostmasterPID, "crash-restart"))
	if !ok {
		t.Fatalf("no crash-restart within 30s; trace stderr:\n%s\npostgres log:\n%s", tr.Stderr(), c.Log())
	}
	if r.Comm != "psql" || r.Signal != "SIGPIPE" {
		t.Errorf("culprit %s %s, want psql killed by SIGPIPE", r.Comm, r.Signal)
	}
	if r.ContainerID != id || r.ContainerRuntime != "docker" {
		t.Errorf("crash-restart names container %q (%s), want %s (docker)", r.ContainerID, r.ContainerRuntime, id)
	}
	confirmed, ok := tr.WaitFor(15*time.Second, forPostmaster(c.PostmasterPID, "crash-restart-confirmed"))
	if !ok {
		t.Errorf("no crash-restart-confirmed; postgres log:\n%s", c.Log())
	} else if confirmed.ContainerID != id {
		t.Errorf("crash-restart-confirmed names container %q, want %s", confirmed.ContainerID, id)
	}

	// No postmaster is involved in the exits of the shell and of nsenter:
	// only the kernel's record of their cgroups can name a container. The
	// shell had joined the container; nsenter stayed outside. (The trace
	// sees the whole host: match this cluster's namespace and this test's
	// child.)
	shell, ok := tr.WaitFor(10*time.Second, func(s *report.Record) bool {
		return s.Kind == "exit" && s.Comm == "sh" && s.ParentComm == "nsenter" && s.Postmaster == nil && s.PidNS == r.PidNS
	})
	if !ok {
		t.Errorf("no exit record for the shell that ran the incident")
	} else if shell.ContainerID != id || shell.ContainerRuntime != "docker" {
		t.Errorf("the shell in the container exited in container %q (%s), want %s (docker)", shell.ContainerID, shell.ContainerRuntime, id)
	}
	nsenter, ok := tr.WaitFor(10*time.Second, func(n *report.Record) bool {
		return n.Kind == "exit" && n.Comm == "nsenter" && n.ParentPID == uint32(os.Getpid())
	})
	if !ok {
		t.Errorf("no exit record for nsenter")
	} else if nsenter.ContainerID == id {
		t.Errorf("nsenter, outside the container's cgroup, attributed to it")
	}
}

// stopInCgroup kills the cluster and removes its cgroup once empty. It runs
// before testenv's own cleanups (registered earlier, run later), whose
// cgroup removal would otherwise give up while the cluster still runs.
func stopInCgroup(t *testing.T, c *testenv.Cluster, cgroup string) {
	syscall.Kill(c.InitPID, syscall.SIGKILL) // the kernel kills the rest of the namespace
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := os.Remove(cgroup); err == nil || os.IsNotExist(err) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	procs, _ := os.ReadFile(filepath.Join(cgroup, "cgroup.procs"))
	t.Errorf("cgroup %s not removable after 10s; processes: %q", cgroup, procs)
}

// randomContainerID is an id as Docker makes them: 32 random bytes in hex.
func randomContainerID(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
