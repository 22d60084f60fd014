package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// Every supported PostgreSQL major, for real: each version's own server (a
// container of Debian's package, the postmaster PID 1 as in the official
// image) meets the same incidents, and each record is checked against what
// that server wrote in its log, pid for pid. What differs between versions
// is PostgreSQL's, not the test's: the word for a child it did not fork
// ("server process" up to 17, "untracked child process" in 18), whether it
// logs such a child's exit 0 or 1 (18 does), and which server processes
// its crash handling tells to quit (the statistics collector up to 14, I/O
// workers from 18).
func TestPostgresVersions(t *testing.T) {
	e, tr := startDockerTrace(t)
	for _, version := range dockerPostgresVersions {
		t.Run(fmt.Sprintf("postgres%d", version), func(t *testing.T) {
			c := testenv.StartPostgresContainer(t, e, version, testenv.UniqueName(fmt.Sprintf("ow-v%d", version)))
			if _, ok := tr.WaitFor(10*time.Second, forPostmaster(c.PostmasterPID, "postmaster-pid1")); !ok {
				t.Fatalf("no postmaster-pid1 record for the postmaster (pid %d); trace:\n%s", c.PostmasterPID, traceSummary(tr))
			}
			// In order, on one server: each step starts from a server that
			// accepts connections, and reads only the log written since.
			t.Run("check", func(t *testing.T) { versionCheck(t, c) })
			t.Run("clean-exits", func(t *testing.T) { versionCleanExits(t, tr, c) })
			t.Run("seed-incident", func(t *testing.T) { versionSeedIncident(t, tr, c) })
			t.Run("crash-restart-confirmed", func(t *testing.T) { versionConfirmed(t, tr, c) })
		})
	}
	// A container of its own per version: the OOM kill needs a memory limit.
	for _, version := range dockerPostgresVersions {
		t.Run(fmt.Sprintf("postgres%d/oom-kill", version), func(t *testing.T) { versionOOM(t, e, tr, version) })
	}
}

// check finds the postmaster and says which PostgreSQL it is and its data
// directory: the server's own answers (server_version_num, data_directory).
// Only that line is checked here; check's findings have tests of their own.
func versionCheck(t *testing.T, c *testenv.PostgresContainer) {
	num, dataDir := query(t, c, "show server_version_num"), query(t, c, "show data_directory")
	major, err := strconv.Atoi(num)
	if err != nil || major/10000 != c.Version {
		t.Fatalf("server_version_num %q: not PostgreSQL %d", num, c.Version)
	}
	code, out, _ := runCheck(t, "--pid", strconv.Itoa(c.PostmasterPID))
	t.Logf("orphanwatch check --pid %d (exit %d):\n%s", c.PostmasterPID, code, out)
	prefix := fmt.Sprintf("postmaster pid %d: ", c.PostmasterPID)
	var line string
	for l := range strings.Lines(out) {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			line = strings.TrimSpace(l)
		}
	}
	if line == "" {
		t.Fatalf("check printed no line starting %q", prefix)
	}
	for _, want := range []string{"PID 1 of its namespace", fmt.Sprintf("PostgreSQL %d,", c.Version), ", " + dataDir} {
		if !strings.Contains(line, want) {
			t.Errorf("check says %q: no %q (the server says PostgreSQL %s, data_directory %s)", line, want, num, dataDir)
		}
	}
}

// query runs one SQL statement in the container and returns its value.
func query(t *testing.T, c *testenv.PostgresContainer, sql string) string {
	t.Helper()
	out, err := c.Exec("sh", "-c", testenv.PsqlArgs+` -Atc "`+sql+`"`)
	if err != nil {
		t.Fatalf("%s: %v: %s", sql, err, out)
	}
	return strings.TrimSpace(out)
}

// Adoptees exiting 0 and 1: no version restarts; 18 logs each as an
// untracked child's exit, and the adopted record predicts that line.
func versionCleanExits(t *testing.T, tr *testenv.Tracer, c *testenv.PostgresContainer) {
	logged := len(c.Logs())
	started := time.Now()
	if out, err := c.Shell(`sh -c 'sleep 0.3; exit 0' & sh -c 'sleep 0.3; exit 1' & exit`); err != nil {
		t.Fatalf("docker exec: %v: %s", err, out)
	}
	adopted := func(code int) func(*report.Record) bool {
		return func(r *report.Record) bool {
			return forPostmaster(c.PostmasterPID, "adopted")(r) && r.ExitCode != nil && *r.ExitCode == code && r.Time.After(started)
		}
	}
	var records []report.Record
	for _, code := range []int{0, 1} {
		r, ok := tr.WaitFor(30*time.Second, adopted(code))
		if !ok {
			t.Fatalf("no adopted record of an exit %d; trace:\n%s", code, traceSummary(tr))
		}
		records = append(records, r)
	}
	time.Sleep(2 * time.Second) // a crash, were there one, would be logged and reported by now
	log := c.Logs()[logged:]
	exits := testenv.ChildExits(testenv.ParseLog(log))
	for _, r := range records {
		var line *testenv.ChildExit
		for i := range exits {
			if exits[i].NSPid == r.NSPid {
				line = &exits[i]
			}
		}
		switch {
		case c.Version >= 18 && line == nil:
			t.Errorf("PostgreSQL %d logged nothing about ns pid %d's exit %d, want an untracked child's exit:\n%s", c.Version, r.NSPid, *r.ExitCode, log)
		case c.Version >= 18 && (line.Subject != "untracked child process" || line.ExitCode != *r.ExitCode || r.PostgresLog != line.Message):
			t.Errorf("PostgreSQL %d logged %q; the record (exit %d) predicts %q", c.Version, line.Message, *r.ExitCode, r.PostgresLog)
		case c.Version < 18 && line != nil:
			t.Errorf("PostgreSQL %d logged %q: up to 17 an exit 0 or 1 is logged at DEBUG2 only", c.Version, line.Text)
		case c.Version < 18 && r.PostgresLog != "":
			t.Errorf("the record predicts the line %q, which PostgreSQL %d does not log", r.PostgresLog, c.Version)
		}
		if r.CrashRestart {
			t.Errorf("exit %d reported as a crash-restart", *r.ExitCode)
		}
		if line != nil {
			t.Logf("PostgreSQL %d logged: %s", c.Version, line.Text)
		}
	}
	if strings.Contains(log, "terminating any other active server processes") || len(testenv.CrashLines(log)) != 0 {
		t.Errorf("PostgreSQL %d restarted after exits 0 and 1:\n%s", c.Version, log)
	}
	if crashes := tr.Records(func(r *report.Record) bool {
		return strings.HasPrefix(r.Verdict, "crash-restart") && r.Postmaster != nil && r.Postmaster.PID == uint32(c.PostmasterPID)
	}); len(crashes) != 0 {
		t.Errorf("crash-restart records for exits 0 and 1: %+v", crashes)
	}
}

// The seed incident: psql | head through docker exec, psql dies of SIGPIPE.
func versionSeedIncident(t *testing.T, tr *testenv.Tracer, c *testenv.PostgresContainer) {
	if out, err := c.SeedIncident(); err != nil {
		t.Fatalf("docker exec: %v: %s", err, out)
	}
	// The first crash this server logs, and the first crash-restart record
	// of its postmaster: both this one.
	r := expectContainerCrash(t, tr, c, dockerCulprit{comm: "psql", signal: "SIGPIPE",
		origin: "docker-exec", detail: "docker exec into container " + c.Name, fix: "not through docker exec"})
	want := "server process"
	if c.Version >= 18 {
		want = "untracked child process"
	}
	if !strings.HasPrefix(r.PostgresLog, want+" (PID ") {
		t.Errorf("PostgreSQL %d calls an adoptee %q; the record says %q", c.Version, want, r.PostgresLog)
	}
	confirmed, ok := tr.WaitFor(30*time.Second, func(x *report.Record) bool {
		return forPostmaster(c.PostmasterPID, "crash-restart-confirmed")(x) && x.Trigger != nil && x.Trigger.PID == r.PID
	})
	if !ok {
		t.Fatalf("no crash-restart-confirmed naming psql (pid %d); log:\n%s", r.PID, c.Logs())
	}
	if confirmed.RecoveryMS == nil || *confirmed.RecoveryMS <= 0 {
		t.Errorf("recovery_ms %v", confirmed.RecoveryMS)
	}
	if err := c.Ready(60 * time.Second); err != nil {
		t.Fatalf("server did not come back: %v\n%s", err, c.Logs())
	}
}

// serverChildren are the postmaster's children running the server binary,
// by host pid, with their process titles.
func serverChildren(t *testing.T, c *testenv.PostgresContainer) map[int]string {
	t.Helper()
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", c.PostmasterPID))
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", c.PostmasterPID, c.PostmasterPID))
	for _, f := range strings.Fields(string(data)) {
		pid, _ := strconv.Atoi(f)
		if x, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || x != exe {
			continue
		}
		title, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		out[pid] = strings.TrimSpace(strings.ReplaceAll(string(title), "\x00", " "))
	}
	return out
}

// crash-restart-confirmed, on an idle server: an orphaned sleep is killed
// by SIGKILL. PostgreSQL tells every server process it runs to quit
// (which ones differs between versions), then runs crash recovery in a new
// startup process; the record counts the former and ends with the latter.
func versionConfirmed(t *testing.T, tr *testenv.Tracer, c *testenv.PostgresContainer) {
	logged := len(c.Logs())
	if out, err := c.Shell(`sleep 60 & exit`); err != nil {
		t.Fatalf("docker exec: %v: %s", err, out)
	}
	var sleeper int
	deadline := time.Now().Add(10 * time.Second)
	for sleeper == 0 {
		if pids := childrenNamed(c.PostmasterPID, "sleep", false); len(pids) > 0 {
			sleeper = pids[0]
		} else if time.Now().After(deadline) {
			t.Fatalf("the orphaned sleep never showed under the postmaster %d", c.PostmasterPID)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Let a backend's or worker's exit, if any, be over: the fan-out then
	// reaches exactly the processes listed.
	time.Sleep(500 * time.Millisecond)
	children := serverChildren(t, c)
	if err := syscall.Kill(sleeper, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	titles := slices.Sorted(func(yield func(string) bool) {
		for _, s := range children {
			if !yield(s) {
				return
			}
		}
	})
	t.Logf("PostgreSQL %d's server processes at the crash (%d): %s", c.Version, len(children), strings.Join(titles, "; "))
	// Which server processes each version runs when idle.
	hasTitle := func(s string) bool {
		return slices.ContainsFunc(titles, func(x string) bool { return strings.Contains(x, s) })
	}
	if hasTitle("io worker") != (c.Version >= 18) {
		t.Errorf("PostgreSQL %d: I/O workers %v, want them from 18 only", c.Version, hasTitle("io worker"))
	}
	if hasTitle("stats collector") != (c.Version <= 14) {
		t.Errorf("PostgreSQL %d: statistics collector %v, want it up to 14 only", c.Version, hasTitle("stats collector"))
	}

	crash, ok := tr.WaitFor(30*time.Second, func(r *report.Record) bool {
		return forPostmaster(c.PostmasterPID, "crash-restart")(r) && r.PID == uint32(sleeper)
	})
	if !ok {
		t.Fatalf("no crash-restart record for the sleep (pid %d); trace:\n%s\nlog:\n%s", sleeper, traceSummary(tr), c.Logs())
	}
	confirmed, ok := tr.WaitFor(30*time.Second, func(r *report.Record) bool {
		return forPostmaster(c.PostmasterPID, "crash-restart-confirmed")(r) && r.Trigger != nil && r.Trigger.PID == uint32(sleeper)
	})
	if !ok {
		t.Fatalf("no crash-restart-confirmed naming the sleep (pid %d); log:\n%s", sleeper, c.Logs())
	}
	if err := c.Ready(60 * time.Second); err != nil {
		t.Fatalf("server did not come back: %v\n%s", err, c.Logs())
	}
	log := c.Logs()[logged:]
	lines := testenv.CrashLines(log)
	if len(lines) != 1 || lines[0].NSPid != crash.NSPid || lines[0].Signal != 9 || crash.PostgresLog != lines[0].Message {
		t.Fatalf("PostgreSQL %d logged %+v; the record (ns pid %d) predicts %q:\n%s", c.Version, lines, crash.NSPid, crash.PostgresLog, log)
	}
	t.Logf("PostgreSQL %d logged: %s", c.Version, lines[0].Text)
	if confirmed.Trigger.NSPid != crash.NSPid || confirmed.Trigger.Verdict != "crash-restart" || confirmed.Trigger.Signal != "SIGKILL" {
		t.Errorf("trigger %+v, want the crash-restart of ns pid %d by SIGKILL", *confirmed.Trigger, crash.NSPid)
	}
	if confirmed.ServerProcessesKilled == nil || *confirmed.ServerProcessesKilled != len(children) {
		t.Errorf("server_processes_killed %v, want the %d server processes PostgreSQL %d ran: %s", ptrValue(confirmed.ServerProcessesKilled), len(children), c.Version, strings.Join(titles, "; "))
	}
	// Down from the crash until recovery ended: between the crash line and
	// "ready to accept connections" in the log (milliseconds, the
	// postmaster's clock; the record's ends are the kernel's).
	var ready time.Time
	for _, l := range testenv.ParseLog(log) {
		if l.Time.After(lines[0].Time) && strings.Contains(l.Message, "database system is ready to accept connections") && ready.IsZero() {
			ready = l.Time
		}
	}
	if ready.IsZero() || confirmed.RecoveryMS == nil {
		t.Fatalf("no ready line after the crash, or no recovery_ms (%v):\n%s", confirmed.RecoveryMS, log)
	}
	down := ready.Sub(lines[0].Time)
	if got := time.Duration(*confirmed.RecoveryMS) * time.Millisecond; got <= 0 || got > down+time.Second || got < down-time.Second {
		t.Errorf("recovery_ms %d, PostgreSQL %d's log says %s from the crash to ready", *confirmed.RecoveryMS, c.Version, down)
	}
	if n := len(tr.Records(func(r *report.Record) bool {
		return forPostmaster(c.PostmasterPID, "crash-restart-confirmed")(r) && r.Time.After(crash.Time)
	})); n != 1 {
		t.Errorf("%d crash-restart-confirmed records after the crash, want 1", n)
	}
}

func ptrValue(p *int) string {
	if p == nil {
		return "null"
	}
	return strconv.Itoa(*p)
}

// oomLimitDocker is the container's memory limit (docker run --memory):
// room for the server, not for a 2 GiB string.
const oomLimitDocker = 400 << 20

// The OOM killer takes an orphan adopted by the postmaster: a perl building
// a 2 GiB string in a container limited to 400 MiB. It dies of SIGKILL,
// which every version takes for a crash.
func versionOOM(t *testing.T, e *testenv.DockerEngine, tr *testenv.Tracer, version int) {
	_, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes")
	testenv.Require(t, err == nil, "needs the cgroup v1 memory controller at /sys/fs/cgroup/memory (docker run --memory)")
	limit := strconv.Itoa(oomLimitDocker)
	c := testenv.StartPostgresContainer(t, e, version, testenv.UniqueName(fmt.Sprintf("ow-oom%d", version)),
		"--memory", limit, "--memory-swap", limit)
	cgroup := filepath.Join("/sys/fs/cgroup/memory", memoryCgroup(t, c.PostmasterPID))
	if got := readTrimmed(t, filepath.Join(cgroup, "memory.limit_in_bytes")); got != limit {
		t.Fatalf("%s/memory.limit_in_bytes = %s, want %s", cgroup, got, limit)
	}
	if _, ok := tr.WaitFor(10*time.Second, forPostmaster(c.PostmasterPID, "postmaster-pid1")); !ok {
		t.Fatalf("no postmaster-pid1 record for pid %d", c.PostmasterPID)
	}
	if out, err := c.Shell(`perl -e '$x = "x" x (2 << 30); sleep 60' & exit`); err != nil {
		t.Fatalf("docker exec: %v: %s", err, out)
	}
	r, ok := tr.WaitFor(60*time.Second, forPostmaster(c.PostmasterPID, "oom-kill"))
	if !ok {
		t.Fatalf("no oom-kill record within 60s; trace:\n%s\nlog:\n%s", traceSummary(tr), c.Logs())
	}
	if r.OOM == nil {
		t.Fatalf("oom-kill record without oom details: %+v", r)
	}
	t.Logf("%s: %s; oom %+v", r.Verdict, r.Summary, *r.OOM)
	if r.Comm != "perl" || r.OOM.Role != "adopted" || r.OOM.Constraint != "memcg" || r.Signal != "SIGKILL" || !r.CrashRestart || r.ParentNSPid != 1 {
		t.Errorf("victim %s role %q constraint %q signal %q crash_restart %v parent ns pid %d; want the adopted perl killed in its memcg, a crash-restart",
			r.Comm, r.OOM.Role, r.OOM.Constraint, r.Signal, r.CrashRestart, r.ParentNSPid)
	}
	checkContainerNames(t, r, c)
	confirmed, ok := tr.WaitFor(60*time.Second, func(x *report.Record) bool {
		return forPostmaster(c.PostmasterPID, "crash-restart-confirmed")(x) && x.Trigger != nil && x.Trigger.PID == r.PID
	})
	if !ok {
		t.Fatalf("no crash-restart-confirmed naming the OOM victim; log:\n%s", c.Logs())
	} else if confirmed.Trigger.Verdict != "oom-kill" {
		t.Errorf("trigger %+v, want the oom-kill", *confirmed.Trigger)
	}
	if err := c.Ready(60 * time.Second); err != nil {
		t.Fatalf("server did not come back: %v\n%s", err, c.Logs())
	}
	lines := testenv.CrashLines(c.Logs())
	if len(lines) != 1 || lines[0].NSPid != r.NSPid || lines[0].Signal != 9 {
		t.Fatalf("PostgreSQL %d logged %+v, want one crash: ns pid %d killed by signal 9\n%s", version, lines, r.NSPid, c.Logs())
	}
	t.Logf("PostgreSQL %d logged: %s", version, lines[0].Text)
}

// memoryCgroup is a process's cgroup v1 memory controller path.
func memoryCgroup(t *testing.T, pid int) string {
	t.Helper()
	for line := range strings.Lines(readTrimmed(t, fmt.Sprintf("/proc/%d/cgroup", pid))) {
		// hierarchy-id:controllers:path
		if f := strings.SplitN(strings.TrimSpace(line), ":", 3); len(f) == 3 && slices.Contains(strings.Split(f[1], ","), "memory") {
			return f[2]
		}
	}
	t.Fatalf("pid %d is in no memory cgroup", pid)
	return ""
}
