package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/audit"
	"github.com/orphanwatch/orphanwatch/internal/procfs"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// `orphanwatch check` against containers of the real Docker Engine
// (testenv.Docker), as an operator runs it: by container name, reading the
// engine's config.v2.json files for names and HEALTHCHECKs.

// checkDocker runs check with the engine's data root.
func checkDocker(t *testing.T, e *testenv.DockerEngine, args ...string) (int, string) {
	t.Helper()
	code, out, _ := runCheck(t, append([]string{"--docker-root", e.ContainersDir()}, args...)...)
	t.Logf("orphanwatch check %s (exit %d):\n%s", strings.Join(args, " "), code, out)
	return code, out
}

func checkDockerJSON(t *testing.T, e *testenv.DockerEngine, args ...string) (int, audit.Report) {
	t.Helper()
	code, r, _ := checkJSON(t, append([]string{"--docker-root", e.ContainersDir()}, args...)...)
	return code, r
}

func wantLines(t *testing.T, out string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(out, l) {
			t.Errorf("check's report lacks %q", l)
		}
	}
}

// nsPid is a process's pid in its own namespace.
func nsPid(t *testing.T, pid int) int {
	t.Helper()
	st, err := procfs.Default.ReadStatus(pid)
	if err != nil {
		t.Fatal(err)
	}
	return st.NSPid()
}

func short(id string) string { return id[:12] }

// startPostgresCmd is testenv.StartPostgresContainer with a command: for an
// init given as the entrypoint, which then runs the image's entrypoint.
func startPostgresCmd(t *testing.T, e *testenv.DockerEngine, name string, args []string, cmd ...string) *testenv.PostgresContainer {
	t.Helper()
	c := &testenv.PostgresContainer{Container: testenv.RunContainer(t, e, name, args, testenv.PostgresImage(t, e, dockerVersion), cmd...), Version: dockerVersion}
	if !c.WaitLog("database system is ready to accept connections", 60*time.Second) {
		t.Fatalf("PostgreSQL in %s not ready after 60s; log:\n%s", name, c.Logs())
	}
	c.InitPID = c.Container.InitPID()
	c.PostmasterPID = testenv.ChildOf(t, c.InitPID)
	return c
}

// The official image's shape: the postmaster is PID 1 and a CMD-SHELL
// HEALTHCHECK forks. check fails, lists the HEALTHCHECK with its fix, and
// finds the container by name or id; Debian's dash as /bin/sh forks even a
// single command, which check reads in the container's own filesystem; a
// shell form started with exec does not fork.
func TestCheckDockerOfficialImageHealthcheck(t *testing.T) {
	e := testenv.Docker(t)
	// The first probe runs after an interval: none runs during the test.
	health := func(cmd string) []string {
		return []string{"--health-cmd", cmd, "--health-interval", "1h", "--health-timeout", "5s"}
	}
	c := testenv.StartPostgresContainer(t, e, dockerVersion, testenv.UniqueName("ow-check-official"), health("pg_isready -q -U postgres || exit 1")...)
	where := fmt.Sprintf("container %s (docker %s)", c.Name, short(c.ID))

	code, out := checkDocker(t, e, "--container", c.Name)
	if code != 2 {
		t.Errorf("exit status %d, want 2 (failure)", code)
	}
	wantLines(t, out,
		"orphanwatch check: FAIL (1 failure, 1 warning, ",
		fmt.Sprintf("postmaster pid %d: PID 1 of its namespace, PostgreSQL 15, /var/lib/postgresql/data, %s\n", c.PostmasterPID, where),
		fmt.Sprintf("  FAIL    pid1              the postmaster (pid %d) is PID 1 of the PID namespace of %s: it adopts every orphan there", c.PostmasterPID, where),
		fmt.Sprintf("  WARN    healthcheck       HEALTHCHECK of %s: CMD-SHELL 'pg_isready -q -U postgres || exit 1', timeout 5s: it forks "+
			"(|| makes the shell run the command before it as its child): when Docker kills it at its timeout, its child is orphaned to the postmaster", where),
		`fix: give the HEALTHCHECK the exec form, which runs no shell: HEALTHCHECK CMD ["pg_isready", "-q", "-U", "postgres"] in the Dockerfile, `+
			`test: ["CMD", "pg_isready", "-q", "-U", "postgres"] in Compose; docker run --health-cmd takes the shell form only: `+
			`make it one command started with exec (--health-cmd 'exec pg_isready -q -U postgres')`,
	)

	// By id prefix, as JSON: the same postmaster, named.
	code, r := checkDockerJSON(t, e, "--container", c.ID[:10])
	if code != 2 || len(r.Postmasters) != 1 {
		t.Fatalf("--container %s: exit %d, %d postmasters", c.ID[:10], code, len(r.Postmasters))
	}
	pm := r.Postmasters[0]
	if pm.PID != uint32(c.PostmasterPID) || pm.ContainerName != c.Name || pm.ContainerID != c.ID || pm.Init != nil {
		t.Errorf("postmaster = %+v, want %d in %s (%s), PID 1", pm, c.PostmasterPID, c.Name, c.ID)
	}
	if f := finding(t, r, c.PostmasterPID, audit.CheckHealthcheck); f.Level != audit.Warn {
		t.Errorf("healthcheck finding = %+v", f)
	}

	// One command under Debian's /bin/sh (dash): it still forks. Started
	// with exec: it does not.
	single := testenv.StartPostgresContainer(t, e, dockerVersion, testenv.UniqueName("ow-check-single"), health("pg_isready -q -U postgres")...)
	code, out = checkDocker(t, e, "--container", single.Name)
	if code != 2 {
		t.Errorf("exit status %d, want 2", code)
	}
	wantLines(t, out, "CMD-SHELL 'pg_isready -q -U postgres', timeout 5s: it forks (the container's shell is dash, which runs even a single command as its child")
	execd := testenv.StartPostgresContainer(t, e, dockerVersion, testenv.UniqueName("ow-check-exec"), health("exec pg_isready -q -U postgres")...)
	code, out = checkDocker(t, e, "--container", execd.Name)
	if code != 2 {
		t.Errorf("exit status %d, want 2 (PID 1 still fails)", code)
	}
	wantLines(t, out, fmt.Sprintf("  OK      healthcheck       HEALTHCHECK of container %s (docker %s): CMD-SHELL 'exec pg_isready -q -U postgres', timeout 5s: it runs one program, in place of any shell",
		execd.Name, short(execd.ID)))

	// What check says when nothing matches: unknown.
	code, out = checkDocker(t, e, "--container", "ow-no-such-container")
	if code != 3 {
		t.Errorf("--container ow-no-such-container: exit %d, want 3", code)
	}
	wantLines(t, out, `UNKNOWN discovery         no running postmaster in a container named "ow-no-such-container"; postmasters run in `, c.Name+" ("+short(c.ID)+")")
}

// docker run --init: docker-init is PID 1, named, and reaps every orphan.
// The HEALTHCHECK that forks is not listed: what it leaves goes to
// docker-init.
func TestCheckDockerInit(t *testing.T) {
	e := testenv.Docker(t)
	c := testenv.StartPostgresContainer(t, e, dockerVersion, testenv.UniqueName("ow-check-init"), "--init",
		"--health-cmd", "pg_isready -q -U postgres || exit 1", "--health-interval", "1h")
	code, out := checkDocker(t, e, "--container", c.Name)
	if code != 0 {
		t.Errorf("exit status %d, want 0 (ok; notes only)", code)
	}
	wantLines(t, out,
		"orphanwatch check: NOTE (", // notes only: exit 0
		fmt.Sprintf("postmaster pid %d: pid %d in its namespace, PostgreSQL 15, /var/lib/postgresql/data, container %s (docker %s)\n", c.PostmasterPID, nsPid(t, c.PostmasterPID), c.Name, short(c.ID)),
		fmt.Sprintf("  OK      pid1              the postmaster is pid %d in its PID namespace, started by docker-init (pid %d); "+
			"PID 1 there is docker-init (Docker's init, docker run --init: tini) (pid %d): orphans go to it, not to PostgreSQL, it reaps every one\n",
			nsPid(t, c.PostmasterPID), c.InitPID, c.InitPID))
	if strings.Contains(out, "healthcheck") || strings.Contains(out, "FAIL") || strings.Contains(out, "WARN") {
		t.Errorf("behind docker-init: no failure, warning or healthcheck finding expected")
	}
}

// tini as the entrypoint (Debian's static tini, bind-mounted: the image
// has none), running the image's entrypoint.
func TestCheckDockerTini(t *testing.T) {
	e := testenv.Docker(t)
	const tini = "/usr/bin/tini-static"
	_, err := os.Stat(tini)
	testenv.Require(t, err == nil, "needs "+tini+" (apt-get install tini; scripts/deps.sh does)")
	c := startPostgresCmd(t, e, testenv.UniqueName("ow-check-tini"),
		[]string{"--volume", tini + ":/tini:ro", "--entrypoint", "/tini"}, "--", "/usr/local/bin/docker-entrypoint.sh", "postgres")
	code, out := checkDocker(t, e, "--container", c.Name)
	if code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	wantLines(t, out, fmt.Sprintf("  OK      pid1              the postmaster is pid %d in its PID namespace, started by tini (pid %d); "+
		"PID 1 there is tini (pid %d): orphans go to it, not to PostgreSQL, it reaps every one\n", nsPid(t, c.PostmasterPID), c.InitPID, c.InitPID))
}

// startPause runs a container whose PID 1 is argv (bind-mounted from the
// host when it is not in the image), for others to join its PID namespace.
func startPause(t *testing.T, e *testenv.DockerEngine, name string, mount string, argv ...string) (*testenv.Container, int) {
	t.Helper()
	args := []string{"--entrypoint", argv[0]}
	if mount != "" {
		args = append(args, "--volume", mount+":"+argv[0]+":ro")
	}
	c := testenv.RunContainer(t, e, name, args, testenv.PostgresImage(t, e, dockerVersion), argv[1:]...)
	return c, c.InitPID()
}

// A shared PID namespace: a pause container (catatonit -P, what Podman's
// pods run; Kubernetes' pause does the same) is PID 1, and the postgres
// container joins it with --pid container:NAME, as a pod with
// shareProcessNamespace: true does. check names the pause container; asked
// for it, it says it runs no postmaster.
func TestCheckDockerSharedPIDNamespace(t *testing.T) {
	e := testenv.Docker(t)
	testenv.RequireCommands(t, "catatonit")
	pause, pausePID := startPause(t, e, testenv.UniqueName("ow-check-pause"), "/usr/bin/catatonit", "/catatonit", "-P")
	c := testenv.StartPostgresContainer(t, e, dockerVersion, testenv.UniqueName("ow-check-shared"), "--pid", "container:"+pause.Name)
	code, out := checkDocker(t, e, "--container", c.Name)
	if code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	wantLines(t, out, fmt.Sprintf("PID 1 there is catatonit (Podman's init and pause process) (pid %d) of container %s (%s): "+
		"the postmaster's container shares its PID namespace (docker run --pid container:%s): orphans go to it, not to PostgreSQL, it reaps every one\n",
		pausePID, pause.Name, short(pause.ID), pause.Name))

	code, r := checkDockerJSON(t, e, "--container", c.Name)
	if code != 0 || len(r.Postmasters) != 1 || r.Postmasters[0].Init == nil {
		t.Fatalf("exit %d, %+v", code, r.Postmasters)
	}
	in := r.Postmasters[0].Init
	if in.PID != uint32(pausePID) || !in.SharedNamespace || in.ContainerID != pause.ID || in.ContainerName != pause.Name || in.Kind != "catatonit" || in.Reaps != audit.ReapsAll {
		t.Errorf("init = %+v", in)
	}

	code, out = checkDocker(t, e, "--container", pause.Name)
	if code != 3 {
		t.Errorf("--container %s: exit %d, want 3", pause.Name, code)
	}
	wantLines(t, out, fmt.Sprintf("container %s (%s) has no running postmaster", pause.Name, short(pause.ID)))
}

// A PID 1 that reaps nothing (sleep, standing in for one that reaps only
// its own, as CloudNativePG's instance manager does for anything not named
// postgres): an orphan left by a docker exec stays a zombie, and check
// warns about it.
func TestCheckDockerZombiesUnderPID1(t *testing.T) {
	e := testenv.Docker(t)
	pause, pausePID := startPause(t, e, testenv.UniqueName("ow-check-sleep"), "", "sleep", "infinity")
	c := testenv.StartPostgresContainer(t, e, dockerVersion, testenv.UniqueName("ow-check-zombie"), "--pid", "container:"+pause.Name)
	// The exec's shell exits at once; its sleep goes to PID 1, exits and
	// stays unreaped.
	if out, err := c.Shell("sleep 0.2 >/dev/null 2>&1 & echo $!"); err != nil {
		t.Fatalf("docker exec: %v: %s", err, out)
	}
	var zombie int
	deadline := time.Now().Add(10 * time.Second)
	for zombie == 0 && time.Now().Before(deadline) {
		if z := childrenNamed(pausePID, "sleep", true); len(z) > 0 {
			zombie = z[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	if zombie == 0 {
		t.Fatalf("no zombie sleep under PID 1 (pid %d)", pausePID)
	}
	code, out := checkDocker(t, e, "--container", c.Name)
	if code != 1 {
		t.Errorf("exit status %d, want 1 (warning)", code)
	}
	wantLines(t, out,
		"orphanwatch check: WARN (1 warning, ",
		fmt.Sprintf(`PID 1 there is sleep (pid %d, running "sleep infinity") of container %s (%s): the postmaster's container shares its PID namespace`, pausePID, pause.Name, short(pause.ID)),
		"orphanwatch does not know whether it reaps them (zombies it leaves are reported)",
		fmt.Sprintf("  WARN    zombies           1 process exited under PID 1 sleep (pid %d) and was never reaped: sleep[%d]. Each holds a pid", pausePID, zombie),
		"fix: a zombie is gone once its parent reaps it or exits")
	_, r := checkDockerJSON(t, e, "--container", c.Name)
	if in := r.Postmasters[0].Init; in == nil || len(in.Zombies) != 1 || in.Zombies[0].PID != uint32(zombie) || in.Zombies[0].NSPid != uint32(nsPid(t, zombie)) {
		t.Errorf("init = %+v, want the zombie %d", in, zombie)
	}
}
