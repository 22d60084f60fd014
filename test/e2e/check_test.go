package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/audit"
	"github.com/orphanwatch/orphanwatch/internal/redact"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// runCheck runs `orphanwatch check` as a user does and returns its exit
// status, what it printed, and how long it took.
func runCheck(t *testing.T, args ...string) (int, string, time.Duration) {
	t.Helper()
	return runBinary(t, testenv.Binary(t), append([]string{"check"}, args...))
}

// runBinary runs bin with args, behind a wrapper command (setpriv ...) if
// given.
func runBinary(t *testing.T, bin string, args []string, wrapper ...string) (int, string, time.Duration) {
	t.Helper()
	argv := append(append(slices.Clone(wrapper), bin), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running %v: %v", argv, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String() + stderr.String(), took
}

// checkJSON runs `orphanwatch check --json` and decodes its report.
func checkJSON(t *testing.T, args ...string) (int, audit.Report, string) {
	t.Helper()
	code, out, _ := runCheck(t, append([]string{"--json"}, args...)...)
	var r audit.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("check --json printed something that is not a report (exit %d): %v\n%s", code, err, out)
	}
	return code, r, out
}

// finding returns the postmaster's finding of that check.
func finding(t *testing.T, r audit.Report, pid int, check audit.Check) audit.Finding {
	t.Helper()
	for _, f := range r.Findings {
		if f.Postmaster == uint32(pid) && f.Check == check {
			return f
		}
	}
	t.Fatalf("no %s finding for postmaster %d in %+v", check, pid, r.Findings)
	return audit.Finding{}
}

// pidNamespace is the inode of a process's PID namespace.
func pidNamespace(t *testing.T, pid int) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/pid", pid), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func postmasterIn(t *testing.T, r audit.Report, pid int) audit.Postmaster {
	t.Helper()
	for _, pm := range r.Postmasters {
		if pm.PID == uint32(pid) {
			return pm
		}
	}
	t.Fatalf("postmaster %d not in the report: %+v", pid, r.Postmasters)
	return audit.Postmaster{}
}

// A postmaster that is PID 1 of its namespace fails the check, by name, with
// the fix; found both on its own and in a scan of the whole host, quickly.
func TestCheckFailsForPostmasterAsPID1(t *testing.T) {
	testenv.RequirePostgres(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{})

	// The best of three runs: what check costs, not what the other tests'
	// load on this machine adds.
	code, out, took := runCheck(t)
	for range 2 {
		if _, _, d := runCheck(t); d < took {
			took = d
		}
	}
	t.Logf("orphanwatch check took %s:\n%s", took, out)
	if code != 2 {
		t.Errorf("exit status %d, want 2 (failure)", code)
	}
	if took > time.Second {
		t.Errorf("check took %s, want well under a second", took)
	}
	for _, want := range []string{
		"orphanwatch check: FAIL",
		fmt.Sprintf("postmaster pid %d: PID 1 of its namespace, PostgreSQL 15, %s", c.PostmasterPID, c.Dir),
		fmt.Sprintf("the postmaster (pid %d) is PID 1 of PID namespace %d: it adopts every orphan there", c.PostmasterPID, pidNamespace(t, c.PostmasterPID)),
		"fix: run an init as PID 1", "tini",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}

	code, r, _ := checkJSON(t, "--pid", strconv.Itoa(c.PostmasterPID))
	if code != 2 || r.Status != audit.Fail || len(r.Postmasters) != 1 {
		t.Fatalf("--pid: exit %d, status %s, %d postmasters; want 2, fail, 1", code, r.Status, len(r.Postmasters))
	}
	pm := r.Postmasters[0]
	if !pm.PID1 || pm.NSPid != 1 || pm.Version != 15 || pm.DataDir != c.Dir || pm.ParentPID != uint32(c.UnsharePID) {
		t.Errorf("postmaster = %+v, want PID 1, PostgreSQL 15 in %s, started by unshare %d", pm, c.Dir, c.UnsharePID)
	}
	if f := finding(t, r, c.PostmasterPID, audit.CheckPID1); f.Level != audit.Fail || !strings.Contains(f.Fix, "tini") {
		t.Errorf("pid1 finding = %+v, want a failure with the fix", f)
	}
	// checkpointer, background writer, walwriter, autovacuum launcher, ...
	if len(pm.ServerProcesses) < 3 {
		t.Errorf("server processes = %+v, want the postmaster's auxiliary processes", pm.ServerProcesses)
	}
}

// Behind tini the postmaster is not PID 1: no failure.
func TestCheckBehindTiniHasNoFailure(t *testing.T) {
	testenv.RequirePostgres(t)
	testenv.RequireCommands(t, "tini")
	c := testenv.StartCluster(t, testenv.ClusterOptions{Init: []string{"tini", "--"}})

	code, r, out := checkJSON(t, "--pid", strconv.Itoa(c.PostmasterPID))
	if code == 2 || code == 3 || r.Status == audit.Fail {
		t.Errorf("exit status %d (%s) behind tini, want no failure:\n%s", code, r.Status, out)
	}
	pm := postmasterIn(t, r, c.PostmasterPID)
	if pm.PID1 || pm.NSPid == 1 || pm.ParentComm != "tini" || pm.ParentPID != uint32(c.InitPID) {
		t.Errorf("postmaster = %+v, want a child of tini (pid %d)", pm, c.InitPID)
	}
	if f := finding(t, r, c.PostmasterPID, audit.CheckPID1); f.Level != audit.OK || !strings.Contains(f.Message, "started by tini") {
		t.Errorf("pid1 finding = %+v, want OK naming tini", f)
	}
	for _, f := range r.Findings {
		if f.Level == audit.Fail || f.Check == audit.CheckOrphan {
			t.Errorf("unexpected finding behind tini: %+v", f)
		}
	}
}

// canLowerOOMScoreAdj: setting a negative oom_score_adj needs
// CAP_SYS_RESOURCE, which sandboxes and containers often drop.
func canLowerOOMScoreAdj() bool {
	return exec.Command("sh", "-c", "echo -1000 > /proc/self/oom_score_adj").Run() == nil
}

// The protection PostgreSQL's documentation recommends: the postmaster
// started below its children (-1000 where the kernel allows it), children
// reset by PG_OOM_ADJUST_FILE/PG_OOM_ADJUST_VALUE. No OOM warning.
func TestCheckPostmasterProtectedChildrenReset(t *testing.T) {
	testenv.RequirePostgres(t)
	testenv.RequireCommands(t, "tini")
	postmaster, children := -1000, 0
	if !canLowerOOMScoreAdj() {
		// Without CAP_SYS_RESOURCE nothing goes below 0: keep the shape,
		// the postmaster below its children, one step up.
		postmaster, children = 0, 500
		t.Logf("no CAP_SYS_RESOURCE here: postmaster at %d, server processes reset to %d", postmaster, children)
	}
	c := testenv.StartCluster(t, testenv.ClusterOptions{
		Init:        []string{"tini", "--"},
		OOMScoreAdj: &postmaster,
		Env:         []string{"PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj", "PG_OOM_ADJUST_VALUE=" + strconv.Itoa(children)},
	})

	_, r, out := checkJSON(t, "--pid", strconv.Itoa(c.PostmasterPID))
	pm := postmasterIn(t, r, c.PostmasterPID)
	if pm.OOMScoreAdj != postmaster || pm.OOMAdjustFile != "/proc/self/oom_score_adj" || pm.OOMAdjustValue != strconv.Itoa(children) {
		t.Errorf("postmaster oom_score_adj %d, PG_OOM_ADJUST_FILE %q VALUE %q; want %d, the file and %d", pm.OOMScoreAdj, pm.OOMAdjustFile, pm.OOMAdjustValue, postmaster, children)
	}
	if len(pm.ServerProcesses) < 3 {
		t.Fatalf("server processes = %+v", pm.ServerProcesses)
	}
	for _, s := range pm.ServerProcesses {
		if s.OOMScoreAdj != children {
			t.Errorf("server process %d has oom_score_adj %d, want %d (reset by PostgreSQL)", s.PID, s.OOMScoreAdj, children)
		}
	}
	if f := finding(t, r, c.PostmasterPID, audit.CheckOOMScoreAdj); f.Level != audit.OK {
		t.Errorf("oom_score_adj finding = %+v, want OK:\n%s", f, out)
	}
	_, text, _ := runCheck(t, "--pid", strconv.Itoa(c.PostmasterPID))
	if strings.Contains(text, "WARN    oom_score_adj") {
		t.Errorf("report warns about oom_score_adj:\n%s", text)
	}
}

// The postmaster above its children: the OOM killer may take it first.
func TestCheckWarnsWhenPostmasterKillableBeforeChildren(t *testing.T) {
	testenv.RequirePostgres(t)
	testenv.RequireCommands(t, "tini")
	postmaster := 500
	c := testenv.StartCluster(t, testenv.ClusterOptions{
		Init:        []string{"tini", "--"},
		OOMScoreAdj: &postmaster,
		Env:         []string{"PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj", "PG_OOM_ADJUST_VALUE=0"},
	})
	code, out, _ := runCheck(t, "--pid", strconv.Itoa(c.PostmasterPID))
	if code != 1 {
		t.Errorf("exit status %d, want 1 (warning):\n%s", code, out)
	}
	if !strings.Contains(out, "WARN    oom_score_adj     the postmaster (oom_score_adj 500) can be chosen by the OOM killer before its server processes (all ") ||
		!strings.Contains(out, "at 0)") || !strings.Contains(out, "PG_OOM_ADJUST_VALUE=0") {
		t.Errorf("report lacks the oom_score_adj warning and its fix:\n%s", out)
	}
}

// A live orphan under a PID 1 postmaster is listed, with its command line
// redacted.
func TestCheckListsLiveOrphanRedacted(t *testing.T) {
	testenv.RequirePostgres(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{})
	// The shell started by nsenter exits at once; its background child,
	// with a password in its argv, is adopted by the postmaster. It exits
	// 0 after 30 s, which the postmaster ignores.
	printed, err := c.Exec(`sh -c 'sleep 30; exit 0' 'postgresql://u:secret@h/db' >/dev/null 2>&1 & echo $!`)
	if err != nil {
		t.Fatalf("starting the orphan: %v: %s", err, printed)
	}
	nsPid, err := strconv.Atoi(strings.TrimSpace(printed))
	if err != nil {
		t.Fatalf("no pid printed: %q", printed)
	}

	code, r, raw := checkJSON(t, "--pid", strconv.Itoa(c.PostmasterPID))
	if code != 2 {
		t.Errorf("exit status %d, want 2 (PID 1)", code)
	}
	pm := postmasterIn(t, r, c.PostmasterPID)
	if len(pm.Orphans) != 1 {
		t.Fatalf("orphans = %+v, want the adopted sh", pm.Orphans)
	}
	o := pm.Orphans[0]
	if o.NSPid != uint32(nsPid) || o.Comm != "sh" || o.Exe == "" {
		t.Errorf("orphan = %+v, want sh with ns pid %d", o, nsPid)
	}
	argv := []string{"sh", "-c", "sleep 30; exit 0", "postgresql://u:secret@h/db"}
	if want := redact.Argv(argv); o.Cmdline != want || !strings.Contains(o.Cmdline, "postgresql://u:***@h/db") {
		t.Errorf("orphan command line = %q, want %q with the password masked", o.Cmdline, want)
	}
	if f := finding(t, r, c.PostmasterPID, audit.CheckOrphan); f.Level != audit.Warn || f.PID != o.PID || !strings.Contains(f.Message, "u:***@h/db") {
		t.Errorf("orphan finding = %+v", f)
	}
	_, text, _ := runCheck(t, "--pid", strconv.Itoa(c.PostmasterPID))
	if !strings.Contains(text, fmt.Sprintf("WARN    orphan            orphan sh (pid %d, pid %d in its namespace)", o.PID, nsPid)) {
		t.Errorf("report does not list the orphan:\n%s", text)
	}
	for _, out := range []string{raw, text} {
		if strings.Contains(out, "secret") {
			t.Errorf("the password leaked:\n%s", out)
		}
	}
}

// --container selects a postmaster by container id prefix, names the
// container, and the memory limit is the tightest in its cgroup's ancestry.
func TestCheckContainerAndItsMemoryLimit(t *testing.T) {
	testenv.RequirePostgres(t)
	_, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes")
	testenv.Require(t, err == nil, "needs the cgroup v1 memory controller at /sys/fs/cgroup/memory")

	// Docker's cgroupfs layout, under a parent of our own holding the limit.
	id := fmt.Sprintf("%016x", time.Now().UnixNano()) + strings.Repeat("c0ffee", 8)
	base := fmt.Sprintf("/sys/fs/cgroup/memory/orphanwatch-check-%d", os.Getpid())
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	leaf := base + "/docker/" + id
	removeCgroupsAtCleanup(t, leaf, base+"/docker", base)
	if err := os.WriteFile(base+"/memory.limit_in_bytes", []byte("1073741824"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := testenv.StartCluster(t, testenv.ClusterOptions{
		Cgroup:      leaf,
		CgroupFiles: map[string]string{"memory.limit_in_bytes": "2147483648"},
	})

	code, r, out := checkJSON(t, "--container", id[:12])
	if code != 2 || len(r.Postmasters) != 1 {
		t.Fatalf("--container %s: exit %d with %d postmasters, want 2 and ours:\n%s", id[:12], code, len(r.Postmasters), out)
	}
	pm := r.Postmasters[0]
	if pm.PID != uint32(c.PostmasterPID) || pm.ContainerID != id || pm.ContainerRuntime != "docker" {
		t.Errorf("postmaster %d in %s %s, want %d in docker %s", pm.PID, pm.ContainerRuntime, pm.ContainerID, c.PostmasterPID, id)
	}
	if f := finding(t, r, c.PostmasterPID, audit.CheckPID1); !strings.Contains(f.Message, "is PID 1 of the PID namespace of container docker "+id[:12]) {
		t.Errorf("pid1 finding does not name the container: %q", f.Message)
	}
	m := pm.Memory
	if m.CgroupVersion != 1 || m.LimitBytes == nil || *m.LimitBytes != 1<<30 || m.LimitCgroup != strings.TrimPrefix(base, "/sys/fs/cgroup/memory") {
		t.Errorf("memory = %+v (limit %v), want v1 and the parent's 1 GiB", m, m.LimitBytes)
	}
	if m.UsedBytes == 0 || m.UsedBytes > 1<<30 {
		t.Errorf("used = %d bytes, want PostgreSQL's memory, charged to the cgroup", m.UsedBytes)
	}
	if f := finding(t, r, c.PostmasterPID, audit.CheckMemoryLimit); f.Level != audit.OK || !strings.Contains(f.Message, "memory limit 1 GiB") {
		t.Errorf("memory finding = %+v", f)
	}

	code, out, _ = runCheck(t, "--container", "containerd://"+id)
	if code != 2 || !strings.Contains(out, fmt.Sprintf("postmaster pid %d", c.PostmasterPID)) {
		t.Errorf("--container with a Kubernetes-style id: exit %d:\n%s", code, out)
	}
	code, out, _ = runCheck(t, "--container", "0000deadbeef")
	if code != 3 || !strings.Contains(out, `no running postmaster in a container whose id starts with "0000deadbeef"`) {
		t.Errorf("--container matching nothing: exit %d, want 3 (unknown):\n%s", code, out)
	}
}

// Without root or CAP_SYS_PTRACE other users' postmasters cannot be read:
// unknown, saying what is missing.
func TestCheckWithoutPrivilegeIsUnknown(t *testing.T) {
	testenv.RequirePostgres(t)
	testenv.StartCluster(t, testenv.ClusterOptions{})
	// A copy nobody can execute (testenv's build directory is private).
	dir, err := os.MkdirTemp("", "orphanwatch-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "orphanwatch")
	data, err := os.ReadFile(testenv.Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runBinary(t, bin, []string{"check"}, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
	if code != 3 {
		t.Errorf("exit status %d as nobody, want 3 (unknown):\n%s", code, out)
	}
	if !strings.Contains(out, "UNKNOWN discovery") || !strings.Contains(out, "run it as root (sudo orphanwatch check), and in a container grant it CAP_SYS_PTRACE") {
		t.Errorf("report does not say what is missing:\n%s", out)
	}
}

// Usage errors are unknown (3), not failures (2), as monitoring plugins do.
func TestCheckUsageErrorsAreUnknown(t *testing.T) {
	for _, args := range [][]string{{"--pid", "0"}, {"--pid", "x"}, {"--no-such-flag"}, {"--pid", "7", "--container", "abc"}, {"extra"}} {
		code, out, _ := runCheck(t, args...)
		if code != 3 || out == "" {
			t.Errorf("check %v: exit %d, want 3 with a message:\n%s", args, code, out)
		}
	}
	if code, out, _ := runCheck(t, "-h"); code != 0 || !strings.Contains(out, "Exit status: 0 all good, 1 warnings, 2 failures, 3 unknown") {
		t.Errorf("check -h: exit %d:\n%s", code, out)
	}
}
