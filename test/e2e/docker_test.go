package e2e

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// The Docker tests run a real Docker Engine (testenv.Docker) and PostgreSQL
// images built from Debian's packages, whose entrypoint execs the postmaster
// as PID 1 like the official image. Every record is checked against the
// container's own log (docker logs), pid for pid: the pid PostgreSQL logs is
// the pid in the container, the record's ns_pid.

// dockerPostgresVersions are the majors with an image (testenv.PostgresSuites).
var dockerPostgresVersions = []int{13, 15, 17, 18}

// dockerVersion is the major the single-version tests use.
const dockerVersion = 15

// dockerCulprit is what a crash-restart record must say about the process
// whose death crash-restarted the container's PostgreSQL.
type dockerCulprit struct {
	comm     string
	signal   string // "SIGPIPE"; empty for an exit
	exitCode int    // when signal is empty
	origin   string // docker-exec, healthcheck, entrypoint, ...
	detail   string // what origin_detail must contain
	fix      string // what the fix must contain
}

// dockerTraceArgs name containers from the engine's config.v2.json files,
// with a ring buffer large enough for the fork storms other tests may run
// on the same kernel meanwhile (1 MiB overflowed under them).
func dockerTraceArgs(e *testenv.DockerEngine) []string {
	return []string{"--docker-root", e.ContainersDir(), "--ringbuf-size", "16777216"}
}

// startDockerTrace starts the engine and a trace that names its containers.
func startDockerTrace(t *testing.T, args ...string) (*testenv.DockerEngine, *testenv.Tracer) {
	t.Helper()
	e := testenv.Docker(t)
	return e, testenv.StartTrace(t, append(dockerTraceArgs(e), args...)...)
}

// traceSummary stops the trace and returns what it printed, with its
// summary of lost events: for a record that never came.
func traceSummary(tr *testenv.Tracer) string {
	tr.Stop()
	return tr.Stderr()
}

// expectContainerCrash waits for the crash-restart record of the container's
// postmaster and checks it against the culprit and the container's log.
func expectContainerCrash(t *testing.T, tr *testenv.Tracer, c *testenv.PostgresContainer, want dockerCulprit) report.Record {
	t.Helper()
	r, ok := tr.WaitFor(30*time.Second, forPostmaster(c.PostmasterPID, "crash-restart"))
	if !ok {
		t.Fatalf("no crash-restart within 30s; trace:\n%s\ndocker logs:\n%s", traceSummary(tr), c.Logs())
	}
	if r.Comm != want.comm || r.Signal != want.signal || (want.signal == "" && (r.ExitCode == nil || *r.ExitCode != want.exitCode)) {
		t.Errorf("culprit = %s signal %q exit code %v, want %+v", r.Comm, r.Signal, exitCode(r), want)
	}
	checkContainerNames(t, r, c)
	if r.Postmaster == nil || !r.Postmaster.PID1 || r.Postmaster.Version != c.Version || r.ParentNSPid != 1 {
		t.Errorf("postmaster %+v, parent ns pid %d: want PostgreSQL %d as PID 1 of the container", r.Postmaster, r.ParentNSPid, c.Version)
	}
	if !r.CrashRestart || r.Fix == "" {
		t.Errorf("crash_restart %v, fix %q", r.CrashRestart, r.Fix)
	}
	if r.Origin != want.origin || !strings.Contains(r.OriginDetail, want.detail) || !strings.Contains(r.Fix, want.fix) {
		t.Errorf("origin %q %q, fix %q; want %s, a detail with %q, a fix with %q", r.Origin, r.OriginDetail, r.Fix, want.origin, want.detail, want.fix)
	}
	// PostgreSQL's word: the first crash it logged is this one, same pid.
	var logged []testenv.ChildExit
	deadline := time.Now().Add(10 * time.Second)
	for len(logged) == 0 && time.Now().Before(deadline) {
		logged = testenv.CrashLines(c.Logs())
		time.Sleep(100 * time.Millisecond)
	}
	if len(logged) == 0 {
		t.Fatalf("PostgreSQL logged no crash; docker logs:\n%s", c.Logs())
	}
	if logged[0].NSPid != r.NSPid {
		t.Errorf("PostgreSQL logged pid %d (%q), the record names ns_pid %d (host pid %d)", logged[0].NSPid, logged[0].Message, r.NSPid, r.PID)
	}
	if r.PostgresLog != logged[0].Message {
		t.Errorf("postgres_log = %q, PostgreSQL logged %q", r.PostgresLog, logged[0].Message)
	}
	t.Logf("PostgreSQL %d logged: %s", c.Version, logged[0].Text)
	t.Logf("record: %s pid %d ns_pid %d %q, started by %s[%d], ancestry %+v, adopted_at %v",
		r.Comm, r.PID, r.NSPid, r.Cmdline, r.OriginalParentComm, r.OriginalParentPID, r.Ancestry, r.AdoptedAt)
	return r
}

func checkContainerNames(t *testing.T, r report.Record, c *testenv.PostgresContainer) {
	t.Helper()
	if r.ContainerID != c.ID || r.ContainerRuntime != "docker" || r.Container != c.Name {
		t.Errorf("%s record names container %q %q (%s), want %q %q (docker)", r.Verdict, r.ContainerID, r.Container, r.ContainerRuntime, c.ID, c.Name)
	}
}

func exitCode(r report.Record) string {
	if r.ExitCode == nil {
		return "null"
	}
	return fmt.Sprint(*r.ExitCode)
}

// expectOneCrash checks, once the server is back, that the incident made
// exactly one crash-restart and that PostgreSQL logged exactly one crash.
func expectOneCrash(t *testing.T, tr *testenv.Tracer, c *testenv.PostgresContainer) {
	t.Helper()
	if err := c.Ready(60 * time.Second); err != nil {
		t.Fatalf("server did not come back: %v\n%s", err, c.Logs())
	}
	time.Sleep(2 * time.Second) // anything more would have arrived by now
	if n := len(tr.Records(forPostmaster(c.PostmasterPID, "crash-restart"))); n != 1 {
		t.Errorf("%d crash-restart records, want exactly 1", n)
	}
	if n := len(testenv.CrashLines(c.Logs())); n != 1 {
		t.Errorf("PostgreSQL logged %d crashes, want 1:\n%s", n, c.Logs())
	}
	confirmed, ok := tr.WaitFor(5*time.Second, forPostmaster(c.PostmasterPID, "crash-restart-confirmed"))
	if !ok {
		t.Errorf("no crash-restart-confirmed")
	} else {
		checkContainerNames(t, confirmed, c)
	}
}

// The seed incident through docker exec, on every PostgreSQL version: an
// orphaned psql dies of SIGPIPE under the postmaster, PID 1 of the container.
func TestDockerExecSeedIncident(t *testing.T) {
	e, tr := startDockerTrace(t)
	for _, version := range dockerPostgresVersions {
		t.Run(fmt.Sprintf("postgres%d", version), func(t *testing.T) {
			c := testenv.StartPostgresContainer(t, e, version, testenv.UniqueName(fmt.Sprintf("ow-seed-%d", version)))
			if pm, ok := tr.WaitFor(10*time.Second, forPostmaster(c.PostmasterPID, "postmaster-pid1")); !ok {
				t.Errorf("no postmaster-pid1 record for the postmaster (pid %d)", c.PostmasterPID)
			} else {
				checkContainerNames(t, pm, c)
			}
			if out, err := c.SeedIncident(); err != nil {
				t.Fatalf("docker exec: %v: %s", err, out)
			}
			r := expectContainerCrash(t, tr, c, dockerCulprit{comm: "psql", signal: "SIGPIPE",
				origin: "docker-exec", detail: "docker exec into container " + c.Name + ": sh -c", fix: "not through docker exec"})
			if !strings.Contains(r.Cmdline, "generate_series") || r.OriginalParentComm != "sh" {
				t.Errorf("command %q started by %s, want the psql the exec's shell started", r.Cmdline, r.OriginalParentComm)
			}
			if r.AdoptedAt == nil {
				t.Errorf("no adopted_at: the adoption by the postmaster was not seen")
			}
			want := "server process"
			if version >= 18 {
				want = "untracked child process"
			}
			if !strings.HasPrefix(r.PostgresLog, want) {
				t.Errorf("PostgreSQL %d log line %q, want it to start %q", version, r.PostgresLog, want)
			}
			expectOneCrash(t, tr, c)
		})
	}
}

// docker run --init: docker-init (tini) is PID 1 and adopts the orphans;
// the same incident leaves PostgreSQL's log clean. The default view says
// nothing of the adoption (no postmaster adopts), so /proc shows it: psql
// sleeps 2 s before its output kills it with SIGPIPE, as an orphan of
// docker-init.
func TestDockerRunInitPreventsTheCrash(t *testing.T) {
	e, tr := startDockerTrace(t)
	c := testenv.StartPostgresContainer(t, e, dockerVersion, testenv.UniqueName("ow-init"), "--init")
	if c.InitPID == c.PostmasterPID {
		t.Fatalf("with --init the postmaster (pid %d) is still PID 1", c.PostmasterPID)
	}
	incident := testenv.PsqlArgs + ` -c "select pg_sleep(2)" -c "select generate_series(1,3000000)" | head -c 10 >/dev/null & exit`
	if out, err := c.Shell(incident); err != nil {
		t.Fatalf("docker exec: %v: %s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(childrenNamed(c.InitPID, "psql", false)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("psql never became a child of docker-init (pid %d); trace:\n%s", c.InitPID, traceSummary(tr))
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitNoChild(t, c.InitPID, "psql", 30*time.Second)
	if adoptions := tr.Records(func(r *report.Record) bool { return r.Verdict == "adoption" && r.ContainerID == c.ID }); len(adoptions) != 0 {
		t.Errorf("adoptions by docker-init in the default view: %+v", adoptions)
	}
	time.Sleep(2 * time.Second)
	if crashes := tr.Records(func(r *report.Record) bool {
		return strings.HasPrefix(r.Verdict, "crash-restart") && r.ContainerID == c.ID
	}); len(crashes) != 0 {
		t.Errorf("crash-restart reported with docker-init as PID 1: %+v", crashes)
	}
	if pm := tr.Records(forPostmaster(c.PostmasterPID, "postmaster-pid1")); len(pm) != 0 {
		t.Errorf("postmaster behind docker-init reported as PID 1")
	}
	if log := c.Logs(); len(testenv.ChildExits(testenv.ParseLog(log))) != 0 || strings.Contains(log, "reinitializing") {
		t.Errorf("PostgreSQL log is not clean behind docker-init:\n%s", log)
	}
}

// waitNoChild waits until parent has no child named comm.
func waitNoChild(t *testing.T, parent int, comm string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if len(childrenNamed(parent, comm, false)) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s still running under pid %d after %s", comm, parent, timeout)
}

// childrenNamed are parent's children called comm; with zombies, only
// those dead whose status is not yet reaped.
func childrenNamed(parent int, comm string, zombies bool) []int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", parent, parent))
	var out []int
	for _, f := range strings.Fields(string(data)) {
		stat, err := os.ReadFile("/proc/" + f + "/stat")
		if err != nil {
			continue
		}
		s := string(stat) // pid (comm) state ...
		i := strings.LastIndexByte(s, ')')
		if i < 0 || !strings.HasSuffix(s[:i], "("+comm) || (zombies && !strings.HasPrefix(s[i+1:], " Z")) {
			continue
		}
		var pid int
		fmt.Sscan(f, &pid)
		out = append(out, pid)
	}
	return out
}

// A CMD-SHELL healthcheck that times out while the server stalls (an I/O
// stall, here a SIGSTOP of the postmaster): Docker SIGKILLs the probe's shell,
// the pg_isready it forked is orphaned to the postmaster, gives up after
// its own 3 s connect timeout and exits 2 (PQPING_NO_RESPONSE), and the
// resumed postmaster takes that for a crashed server process.
func TestDockerHealthcheckTimeoutOrphan(t *testing.T) {
	e, tr := startDockerTrace(t)
	// `|| exit 1` keeps sh from exec'ing pg_isready: it forks it, as the
	// users' `pg_isready -U ... && psql ...` probes do. A probe starts 5 s
	// after the last one ended, so a stall of one probe's timeout plus
	// pg_isready's 3 s orphans exactly one.
	c := testenv.StartPostgresContainer(t, e, dockerVersion, testenv.UniqueName("ow-health"),
		"--health-cmd", "pg_isready -q -U postgres || exit 1",
		"--health-interval", "5s", "--health-timeout", "1s", "--health-retries", "1000")
	waitHealth(t, c, "healthy", 30*time.Second)

	if err := syscall.Kill(c.PostmasterPID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			syscall.Kill(c.PostmasterPID, syscall.SIGCONT)
			resumed = true
		}
	}
	defer resume()
	orphan := waitOrphanExited(t, c.PostmasterPID, "pg_isready", 20*time.Second)
	resume()
	t.Logf("orphaned probe pg_isready (pid %d) exited while the postmaster was stopped; health: %s", orphan, c.Health())

	r := expectContainerCrash(t, tr, c, dockerCulprit{comm: "pg_isready", exitCode: 2,
		origin: "healthcheck", detail: "HEALTHCHECK of container " + c.Name + ": CMD-SHELL 'pg_isready -q -U postgres || exit 1', timeout 1s",
		fix: "exec form"})
	if r.PID != uint32(orphan) || r.OriginalParentComm != "sh" {
		t.Errorf("culprit pid %d started by %s, want the orphaned probe %d started by the probe's sh", r.PID, r.OriginalParentComm, orphan)
	}
	expectOneCrash(t, tr, c)
}

func waitHealth(t *testing.T, c *testenv.PostgresContainer, status string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.HasPrefix(c.Health(), status) {
		if time.Now().After(deadline) {
			t.Fatalf("container %s not %s after %s: %s", c.Name, status, timeout, c.Health())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitOrphanExited waits for a child of the (stopped) postmaster named comm
// to be a zombie: dead, its exit status not yet reaped.
func waitOrphanExited(t *testing.T, postmaster int, comm string, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if pids := childrenNamed(postmaster, comm, true); len(pids) > 0 {
			return pids[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no %s died under the postmaster %d within %s", comm, postmaster, timeout)
	return 0
}

// A helper the entrypoint starts in the background before it execs the
// server: the postmaster inherits it as a child it never forked (the
// entrypoint's pid became the postmaster), and its death by a signal
// crash-restarts PostgreSQL.
func TestDockerEntrypointHelperCrash(t *testing.T) {
	e, tr := startDockerTrace(t)
	c := testenv.StartPostgresContainer(t, e, dockerVersion, testenv.UniqueName("ow-entrypoint"),
		"--env", `OW_ENTRYPOINT_HELPER=sleep 8; kill -TERM $$`)
	r := expectContainerCrash(t, tr, c, dockerCulprit{comm: "sh", signal: "SIGTERM",
		origin: "entrypoint", detail: "before it exec'd the postmaster", fix: "make the entrypoint wait for the helpers"})
	if !strings.Contains(r.Cmdline, "kill -TERM") {
		t.Errorf("command %q, want the entrypoint's helper", r.Cmdline)
	}
	expectOneCrash(t, tr, c)
}

// Docker names come from the engine's config.v2.json, and docker rename
// shows at once: Docker rewrites the file, and the namer reads a changed
// file again (container.DockerNamer).
func TestDockerNamesAfterRename(t *testing.T) {
	e, tr := startDockerTrace(t)
	c := testenv.StartPostgresContainer(t, e, dockerVersion, testenv.UniqueName("ow-before"))
	pm, ok := tr.WaitFor(10*time.Second, forPostmaster(c.PostmasterPID, "postmaster-pid1"))
	if !ok {
		t.Fatalf("no postmaster-pid1 record")
	}
	checkContainerNames(t, pm, c)
	before := c.Name

	c.Rename(testenv.UniqueName("ow-after"))
	if out, err := c.SeedIncident(); err != nil {
		t.Fatalf("docker exec: %v: %s", err, out)
	}
	r, ok := tr.WaitFor(30*time.Second, forPostmaster(c.PostmasterPID, "crash-restart"))
	if !ok {
		t.Fatalf("no crash-restart; docker logs:\n%s", c.Logs())
	}
	if r.Container != c.Name {
		t.Errorf("right after docker rename %s -> %s, the record names %q", before, c.Name, r.Container)
	}
	checkContainerNames(t, r, c)
	if !strings.Contains(r.OriginDetail, c.Name) {
		t.Errorf("origin_detail %q does not name the container %s", r.OriginDetail, c.Name)
	}
}

// Nothing the engine runs listens or sends on a network address: no TCP or
// UDP socket of dockerd, containerd or a shim in the host's tables, no
// docker-proxy, no bridge; and a container has only its loopback, with no
// socket on it.
func TestDockerNothingOnTheNetwork(t *testing.T) {
	e := testenv.Docker(t)
	c := testenv.StartPostgresContainer(t, e, dockerVersion, testenv.UniqueName("ow-net"))

	pids, err := e.Processes()
	if err != nil {
		t.Fatal(err)
	}
	inet := inetSocketInodes(t, "/proc/net")
	seen := map[string]bool{}
	for _, pid := range pids {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		seen[exe] = true
		if exe == "/usr/sbin/docker-proxy" {
			t.Errorf("docker-proxy running (pid %d): a port is published", pid)
		}
		for _, ino := range socketInodes(pid) {
			if where, ok := inet[ino]; ok {
				t.Errorf("%s (pid %d) has a network socket: %s", exe, pid, where)
			}
		}
	}
	for _, exe := range []string{"/usr/sbin/dockerd", "/usr/bin/containerd", "/usr/bin/containerd-shim-runc-v2"} {
		if !seen[exe] {
			t.Errorf("no %s among the engine's processes %v: nothing checked", exe, pids)
		}
	}
	if _, err := os.Stat("/sys/class/net/docker0"); err == nil {
		t.Errorf("a docker0 bridge exists")
	}
	if nets := c.Inspect("{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}"); strings.TrimSpace(nets) != "none" {
		t.Errorf("container networks %q, want none", nets)
	}
	// The container's own network namespace, through its PID 1.
	netdir := fmt.Sprintf("/proc/%d/net", c.InitPID)
	if socks := inetSocketInodes(t, netdir); len(socks) != 0 {
		t.Errorf("sockets on network addresses in the container: %v", socks)
	}
	dev, _ := os.ReadFile(netdir + "/dev")
	for _, line := range strings.Split(string(dev), "\n")[2:] {
		if name, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && name != "lo" {
			t.Errorf("container has network interface %s", name)
		}
	}
}

// inetSocketInodes maps the inode of every TCP, UDP and raw socket in a
// network namespace's tables to its table and addresses.
func inetSocketInodes(t *testing.T, netdir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, table := range []string{"tcp", "tcp6", "udp", "udp6", "raw", "raw6"} {
		data, err := os.ReadFile(netdir + "/" + table)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 9 {
				out[f[9]] = table + " " + f[1] + " -> " + f[2]
			}
		}
	}
	return out
}

func socketInodes(pid int) []string {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	var out []string
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			out = append(out, strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"))
		}
	}
	return out
}
