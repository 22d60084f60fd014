package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/audit"
	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// oomLimit is the memory cgroup's limit: room for shared_buffers (128 MB by
// default) and a few backends, not for a 4 GB work_mem sort.
const oomLimit = 400 << 20

// oomCluster starts PostgreSQL as PID 1 of a PID namespace inside a v1
// memory cgroup limited to oomLimit.
func oomCluster(t *testing.T, opts testenv.ClusterOptions) *testenv.Cluster {
	t.Helper()
	testenv.RequirePostgres(t)
	_, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes")
	testenv.Require(t, err == nil, "needs the cgroup v1 memory controller at /sys/fs/cgroup/memory")
	cgroup := fmt.Sprintf("/sys/fs/cgroup/memory/orphanwatch-oom-%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	opts.Cgroup = cgroup
	removeCgroupsAtCleanup(t, cgroup)
	// StartCluster writes the limit before the launcher joins the cgroup,
	// so the postmaster and every backend are charged to it. There is no
	// swap here; where there is, memory.memsw.limit_in_bytes would bound it.
	opts.CgroupFiles = map[string]string{"memory.limit_in_bytes": strconv.Itoa(oomLimit)}
	c := testenv.StartCluster(t, opts)
	if got := readTrimmed(t, cgroup+"/memory.limit_in_bytes"); got != strconv.Itoa(oomLimit) {
		t.Fatalf("memory.limit_in_bytes = %s, want %d", got, oomLimit)
	}
	if procs := readTrimmed(t, cgroup+"/cgroup.procs"); !strings.Contains("\n"+procs+"\n", fmt.Sprintf("\n%d\n", c.PostmasterPID)) {
		t.Fatalf("postmaster %d is not in %s (cgroup.procs: %s)", c.PostmasterPID, cgroup, procs)
	}
	return c
}

// runOutOfMemory has a backend print its pid (as the postmaster sees it),
// then sort 40 million distinct values in memory, past the limit.
func runOutOfMemory(t *testing.T, c *testenv.Cluster) (backendNSPid int, psqlSaid string) {
	t.Helper()
	out, err := c.Exec(c.PsqlArgs() + ` -At -c "select pg_backend_pid()" -c "set work_mem='4GB'" -c "select count(distinct g) from generate_series(1,40000000) g"`)
	if err == nil {
		t.Fatalf("the query finished within %d MiB: %s", oomLimit>>20, out)
	}
	pid, err := strconv.Atoi(strings.SplitN(strings.TrimSpace(out), "\n", 2)[0])
	if err != nil {
		t.Fatalf("psql did not print the backend pid: %s", out)
	}
	return pid, out
}

// A real OOM kill: a backend whose sort outgrows its container's memory
// limit is killed by the kernel, and PostgreSQL crash-restarts.
func TestOOMKillOfABackendInAMemoryCgroup(t *testing.T) {
	testenv.RequirePostgres(t)
	tr := testenv.StartTrace(t)
	serve := startServe(t) // the agent, for orphanwatch_oom_kills_total
	serve.waitReady(15 * time.Second)
	c := oomCluster(t, testenv.ClusterOptions{})
	waitWatching(t, tr, serve, c.PostmasterPID)
	adj := readTrimmed(t, fmt.Sprintf("/proc/%d/oom_score_adj", c.PostmasterPID))
	before := oomKills(t, serve.Addr, "server")
	backend, out := runOutOfMemory(t, c)

	r, ok := tr.WaitFor(30*time.Second, forPostmaster(c.PostmasterPID, "oom-kill"))
	if !ok {
		t.Fatalf("no oom-kill record within 30s; psql said:\n%s\ntrace stderr:\n%s\npostgres log:\n%s", out, tr.Stderr(), c.Log())
	}
	if r.OOM == nil {
		t.Fatalf("oom-kill record without oom details: %+v", r)
	}
	t.Logf("%s: %s; oom %+v", r.Verdict, r.Summary, *r.OOM)
	if want := fmt.Sprintf("server process (PID %d) was terminated by signal 9: Killed", backend); !c.WaitLog(want, 10*time.Second) {
		t.Errorf("PostgreSQL did not log %q:\n%s", want, c.Log())
	}
	if r.NSPid != uint32(backend) || r.Comm != "postgres" {
		t.Errorf("victim = %s ns pid %d, want the backend postgres ns pid %d", r.Comm, r.NSPid, backend)
	}
	if r.OOM.Role != "server" || r.Signal != "SIGKILL" || !r.CrashRestart {
		t.Errorf("role %q signal %q crash_restart %v, want a server process killed by SIGKILL and a crash-restart", r.OOM.Role, r.Signal, r.CrashRestart)
	}
	if r.OOM.Constraint != "memcg" {
		t.Errorf("constraint = %q, want memcg: the cgroup's %d MiB ran out, not the machine", r.OOM.Constraint, oomLimit>>20)
	}
	if strconv.Itoa(int(r.OOM.OOMScoreAdj)) != adj {
		t.Errorf("oom_score_adj = %d, want %s, inherited from the postmaster", r.OOM.OOMScoreAdj, adj)
	}
	// Most of the limit was the backend's sort: anonymous memory.
	if r.OOM.AnonRSSBytes < 100<<20 || r.OOM.TotalVMBytes < r.OOM.AnonRSSBytes {
		t.Errorf("anon rss %d, total vm %d: want the sort's hundreds of MiB", r.OOM.AnonRSSBytes, r.OOM.TotalVMBytes)
	}
	if r.ParentPID != uint32(c.PostmasterPID) || r.ParentNSPid != 1 || r.Postmaster == nil || !r.Postmaster.PID1 {
		t.Errorf("parent = pid %d ns pid %d, want the postmaster %d as ns pid 1", r.ParentPID, r.ParentNSPid, c.PostmasterPID)
	}
	if r.Fix == "" || !strings.Contains(r.Summary, "OOM killer") {
		t.Errorf("summary %q fix %q", r.Summary, r.Fix)
	}

	if after := waitOOMKills(t, serve.Addr, "server", before+1); after != before+1 {
		t.Errorf(`orphanwatch_oom_kills_total{role="server"} went from %v to %v, want one more`, before, after)
	}

	if err := c.Ready(30 * time.Second); err != nil {
		t.Fatalf("server did not come back: %v\n%s", err, c.Log())
	}
	if _, ok := tr.WaitFor(10*time.Second, func(r *report.Record) bool {
		return r.Verdict == "crash-restart-confirmed" && r.PID == uint32(c.PostmasterPID)
	}); !ok {
		t.Errorf("no crash-restart-confirmed for the postmaster")
	}
	time.Sleep(2 * time.Second) // anything more would have arrived by now

	// The backend's SIGKILL exit is the same incident, not a second one.
	if n := len(tr.Records(forPostmaster(c.PostmasterPID, "oom-kill"))); n != 1 {
		t.Errorf("%d oom-kill records, want 1", n)
	}
	if dup := tr.Records(forPostmaster(c.PostmasterPID, "server-crash")); len(dup) != 0 {
		t.Errorf("the OOM victim's exit was reported again as server-crash: %+v", dup)
	}
	confirmed := tr.Records(func(r *report.Record) bool {
		return r.Verdict == "crash-restart-confirmed" && r.PID == uint32(c.PostmasterPID)
	})
	if len(confirmed) != 1 || confirmed[0].Trigger == nil || confirmed[0].Trigger.Verdict != "oom-kill" || confirmed[0].Trigger.NSPid != uint32(backend) {
		t.Errorf("crash-restart-confirmed = %+v, want one, triggered by the oom-kill of ns pid %d", confirmed, backend)
	}
	if after := oomKills(t, serve.Addr, "server"); after != before+1 {
		t.Errorf(`orphanwatch_oom_kills_total{role="server"} = %v after the restart, want %v: counted once`, after, before+1)
	}
}

// The postmaster more killable than its backends (oom_score_adj 1000,
// backends reset to 0): check warns, and when many backends together
// exhaust the limit the OOM killer proves it right, taking the postmaster
// and with it the whole server. (A single backend holding the whole limit
// would still be chosen: +1000 adds the limit's size to the postmaster's
// score, and that backend's resident size is as large.)
func TestOOMKillOfAnUnprotectedPostmaster(t *testing.T) {
	testenv.RequirePostgres(t)
	tr := testenv.StartTrace(t)
	serve := startServe(t)
	serve.waitReady(15 * time.Second)
	adj := 1000
	c := oomCluster(t, testenv.ClusterOptions{
		OOMScoreAdj: &adj,
		Env:         []string{"PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj", "PG_OOM_ADJUST_VALUE=0"},
	})

	waitWatching(t, tr, serve, c.PostmasterPID)
	code, audited, _ := checkJSON(t, "--pid", strconv.Itoa(c.PostmasterPID))
	if f := finding(t, audited, c.PostmasterPID, audit.CheckOOMScoreAdj); code != 2 || f.Level != audit.Warn || !strings.Contains(f.Message, "(oom_score_adj 1000) can be chosen by the OOM killer before its server processes") {
		t.Errorf("check before the OOM: exit %d, oom_score_adj finding %+v; want the warning", code, f)
	}
	before := oomKills(t, serve.Addr, "postmaster")
	// Eight sessions sorting at once: together past the limit, each far
	// below it, so that the postmaster's +1000 outweighs any backend's size.
	if out, err := c.Exec(fmt.Sprintf(`for i in 1 2 3 4 5 6 7 8; do %s -c "set work_mem='100MB'" -c "select count(distinct g) from generate_series(1,40000000) g" >/dev/null 2>&1 & done; wait`, c.PsqlArgs())); err != nil {
		t.Logf("sessions: %v: %s", err, out)
	}

	r, ok := tr.WaitFor(30*time.Second, func(r *report.Record) bool { return r.Verdict == "oom-kill" && r.PID == uint32(c.PostmasterPID) })
	if !ok {
		var seen []string
		for _, r := range tr.Records(func(r *report.Record) bool {
			return r.PID == uint32(c.PostmasterPID) || r.ParentPID == uint32(c.PostmasterPID)
		}) {
			seen = append(seen, fmt.Sprintf("%s %s pid %d ns %d", r.Verdict, r.Comm, r.PID, r.NSPid))
		}
		kernel, _ := exec.Command("sh", "-c", "dmesg | grep -iE 'oom-kill|killed process' | tail -n 4").CombinedOutput()
		t.Fatalf("no oom-kill record for the postmaster %d within 30s; its records and its children's: %v; the kernel said: %s\ntrace stderr:\n%s\npostgres log:\n%s",
			c.PostmasterPID, seen, strings.ReplaceAll(strings.TrimSpace(string(kernel)), "\n", " | "), tr.Stderr(), c.Log())
	}
	if r.OOM == nil || r.OOM.Role != "postmaster" || r.OOM.OOMScoreAdj != 1000 || r.OOM.Constraint != "memcg" || r.Signal != "SIGKILL" || r.CrashRestart || r.NSPid != 1 {
		t.Errorf("record = %+v, oom %+v; want the postmaster (ns pid 1, oom_score_adj 1000) killed in its memcg, no crash-restart", r, r.OOM)
	}
	if !strings.Contains(r.Summary, "PostgreSQL goes down") {
		t.Errorf("summary = %q", r.Summary)
	}
	if exit, ok := tr.WaitFor(10*time.Second, forPostmaster(c.PostmasterPID, "postmaster-exit")); !ok || exit.Signal != "SIGKILL" {
		t.Errorf("postmaster-exit = %+v (found %v), want its death by SIGKILL", exit, ok)
	}
	if after := waitOOMKills(t, serve.Addr, "postmaster", before+1); after != before+1 {
		t.Errorf(`orphanwatch_oom_kills_total{role="postmaster"} went from %v to %v, want one more`, before, after)
	}
	if crash := tr.Records(forPostmaster(c.PostmasterPID, "crash-restart-confirmed")); len(crash) != 0 {
		t.Errorf("a dead postmaster cannot crash-restart: %+v", crash)
	}
}

// waitWatching waits until trace and serve both watch the postmaster, whose
// start they learn from the kernel: the OOM program attaches only then
// (attach by need), and an OOM kill before it would go unseen.
func waitWatching(t *testing.T, tr *testenv.Tracer, serve *server, pm int) {
	t.Helper()
	if _, ok := tr.WaitFor(15*time.Second, forPostmaster(pm, "postmaster-pid1")); !ok {
		t.Fatalf("trace reported no postmaster-pid1 for %d within 15s:\n%s", pm, tr.Stderr())
	}
	if serve.waitMetric(15*time.Second, "orphanwatch_programs_attached", `program="handle_mark_victim"`, 1) != 1 {
		t.Fatalf("serve has not attached its OOM program within 15s of the postmaster's start")
	}
}

// waitOOMKills waits up to 10 s for the counter to reach want.
func waitOOMKills(t *testing.T, addr, role string, want float64) float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := oomKills(t, addr, role)
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// oomKills sums orphanwatch_oom_kills_total{role=...} over containers, from
// serve's /metrics.
func oomKills(t *testing.T, addr, role string) float64 {
	t.Helper()
	code, body := httpGet(t, "http://"+addr+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d: %s", code, body)
	}
	sum := 0.0
	for line := range strings.Lines(body) {
		if !strings.HasPrefix(line, "orphanwatch_oom_kills_total{") || !strings.Contains(line, `role="`+role+`"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// removeCgroupsAtCleanup removes cgroup directories, innermost first, once
// the test's cluster is gone: registered before StartCluster, it runs after
// the cluster's cleanup, and waits, because a PID namespace can take
// seconds to empty after its init is killed.
func removeCgroupsAtCleanup(t *testing.T, dirs ...string) {
	t.Cleanup(func() {
		for _, d := range dirs {
			deadline := time.Now().Add(30 * time.Second)
			for {
				err := os.Remove(d)
				if err == nil || os.IsNotExist(err) {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("cgroup %s left behind: %v", d, err)
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	})
}

func readTrimmed(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}
