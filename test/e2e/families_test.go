package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// The families of incidents that overlap in real containers, each judged by
// PostgreSQL's own log: every crash line it wrote matches exactly one
// crash-restart record (same pid in the namespace, same status, the same
// text in postgres_log), and every crash-restart record matches a line.

// judge checks orphanwatch's crash-restart records about a postmaster
// against the crash lines of its log, after waiting for stragglers, and
// returns the lines.
func judge(t *testing.T, tr *testenv.Tracer, c *testenv.Cluster) []testenv.ChildExit {
	t.Helper()
	if err := c.Ready(30 * time.Second); err != nil {
		t.Fatalf("server not back: %v\n%s", err, c.Log())
	}
	time.Sleep(2 * time.Second) // records of the last deaths arrive by now
	lines := testenv.CrashLines(c.Log())
	records := tr.Records(forPostmaster(c.PostmasterPID, "crash-restart"))
	used := make([]bool, len(records))
	for _, l := range lines {
		n := 0
		for i, r := range records {
			if r.NSPid == l.NSPid && sameStatus(&r, l) {
				n++
				used[i] = true
				if r.PostgresLog != l.Message {
					t.Errorf("PostgreSQL logged %q, orphanwatch predicted %q", l.Message, r.PostgresLog)
				}
			}
		}
		if n != 1 {
			t.Errorf("PostgreSQL logged %q; orphanwatch has %d crash-restart records for it, want 1", l.Text, n)
		}
	}
	for i, r := range records {
		if !used[i] {
			t.Errorf("crash-restart record for %s (ns pid %d, %s%v) matches no line of PostgreSQL's log:\n%s",
				r.Comm, r.NSPid, r.Signal, statusOf(&r), c.Log())
		}
	}
	return lines
}

func sameStatus(r *report.Record, l testenv.ChildExit) bool {
	if l.Signal != 0 {
		return unix.SignalNum(r.Signal) == syscall.Signal(l.Signal)
	}
	return r.ExitCode != nil && *r.ExitCode == l.ExitCode
}

func statusOf(r *report.Record) string {
	if r.ExitCode == nil {
		return ""
	}
	return fmt.Sprintf("exit %d", *r.ExitCode)
}

// nsExec runs a script in the cluster's namespace and returns its output,
// trimmed.
func nsExec(t *testing.T, c *testenv.Cluster, script string) string {
	t.Helper()
	out, err := c.Exec(script)
	if err != nil {
		t.Fatalf("%s: %v: %s", script, err, out)
	}
	return strings.TrimSpace(out)
}

// A process group killed at once (kill -9 -PGID: Ctrl-C or a hang-up of a
// docker exec session, timeout, a job runner): an orphaned shell and the
// psql it started die together. The postmaster reaps the shell first, so
// PostgreSQL blames the shell and ignores psql.
func TestProcessGroupKilledAtOnce(t *testing.T) {
	testenv.RequirePostgres(t)
	tr := testenv.StartTrace(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{})
	const rounds = 6
	for i := range rounds {
		pgid := nsExec(t, c, fmt.Sprintf(`setsid sh -c "%s -c 'select pg_sleep(60)' & wait" >/dev/null 2>&1 & echo $!`, c.PsqlArgs()))
		time.Sleep(700 * time.Millisecond) // psql connected
		sig := []string{"KILL", "TERM", "HUP"}[i%3]
		nsExec(t, c, fmt.Sprintf("kill -%s -%s", sig, pgid))
		if err := c.Ready(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if lines := judge(t, tr, c); len(lines) != rounds {
		t.Errorf("PostgreSQL logged %d crashes in %d rounds:\n%s", len(lines), rounds, c.Log())
	}
}

// Three orphaned psqls: one dies of SIGKILL, the crash kills the other two's
// backends, and they exit 2 while PostgreSQL resets: PostgreSQL logs one
// crash, orphanwatch names one, and calls the others casualties.
func TestCasualtiesOfAResetAreNotCrashRestarts(t *testing.T) {
	testenv.RequirePostgres(t)
	tr := testenv.StartTrace(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{})
	pids := strings.Fields(nsExec(t, c, fmt.Sprintf(
		`for i in 1 2 3; do %s -c 'select pg_sleep(60)' >/dev/null 2>&1 & echo $!; done; exit`, c.PsqlArgs())))
	if len(pids) != 3 {
		t.Fatalf("started %q", pids)
	}
	time.Sleep(time.Second)
	nsExec(t, c, "kill -KILL "+pids[0])
	lines := judge(t, tr, c)
	if len(lines) != 1 {
		t.Fatalf("PostgreSQL logged %d crashes, want 1:\n%s", len(lines), c.Log())
	}
	casualties := tr.Records(forPostmaster(c.PostmasterPID, "casualty"))
	if len(casualties) != 2 {
		t.Errorf("%d casualty records, want the two psqls whose backends the reset killed: %+v", len(casualties), casualties)
	}
	for _, r := range casualties {
		if r.CrashRestart || r.PostgresLog != "" || r.ExitCode == nil || *r.ExitCode != 2 {
			t.Errorf("casualty = %+v", r)
		}
	}
	confirmed := tr.Records(forPostmaster(c.PostmasterPID, "crash-restart-confirmed"))
	if len(confirmed) != 1 || confirmed[0].Trigger == nil || confirmed[0].Trigger.NSPid != lines[0].NSPid ||
		confirmed[0].RecoveryMS == nil || *confirmed[0].RecoveryMS <= 0 || confirmed[0].ServerProcessesKilled == nil || *confirmed[0].ServerProcessesKilled < 2 {
		t.Errorf("crash-restart-confirmed = %+v", confirmed)
	}
}

// Recovery ends, then a new crash: two resets, two lines, two records, two
// confirmations, each with how long PostgreSQL was down.
func TestNewCrashAfterRecovery(t *testing.T) {
	testenv.RequirePostgres(t)
	tr := testenv.StartTrace(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{})
	for range 2 {
		if err := c.SeedIncident(); err != nil {
			t.Fatal(err)
		}
		if !c.WaitLog("terminated by signal 13", 30*time.Second) {
			t.Fatalf("no crash:\n%s", c.Log())
		}
		if err := c.Ready(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if lines := judge(t, tr, c); len(lines) != 2 {
		t.Fatalf("PostgreSQL logged %d crashes, want 2:\n%s", len(lines), c.Log())
	}
	confirmed := tr.Records(forPostmaster(c.PostmasterPID, "crash-restart-confirmed"))
	if len(confirmed) != 2 {
		t.Fatalf("%d crash-restart-confirmed records, want 2", len(confirmed))
	}
	for _, r := range confirmed {
		if r.Trigger == nil || r.Trigger.Comm != "psql" || r.RecoveryMS == nil || *r.RecoveryMS <= 0 {
			t.Errorf("confirmed = %+v", r)
		}
	}
}

// pg_ctl start inside the container: a second postmaster, orphaned by
// pg_ctl, adopted by the PID-1 postmaster. Killed, it is a crash of the
// PID-1 postmaster (and its own postmaster-exit).
func TestSecondPostmasterAdoptedAndKilled(t *testing.T) {
	testenv.RequirePostgres(t)
	tr := testenv.StartTrace(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{})
	template, err := testenv.TemplateDataDir()
	if err != nil {
		t.Fatal(err)
	}
	second := filepath.Join(filepath.Dir(c.Dir), "second")
	if out, err := exec.Command("cp", "-a", template, second).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	nsExec(t, c, fmt.Sprintf(`setpriv --reuid=postgres --regid=postgres --clear-groups %s/pg_ctl start -D %s -o "-k %s -c listen_addresses= -p 5433" -l %s/second.log -s -w`,
		testenv.PGBin, second, c.Socket, filepath.Dir(c.Dir)))
	pm2, err := os.ReadFile(filepath.Join(second, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	nsPid := strings.SplitN(string(pm2), "\n", 2)[0]
	if _, ok := tr.WaitFor(10*time.Second, func(r *report.Record) bool {
		return r.Verdict == "adoption" && strconv.Itoa(int(r.NSPid)) == nsPid && r.Postmaster != nil && r.Postmaster.PID == uint32(c.PostmasterPID)
	}); !ok {
		t.Fatalf("the second postmaster (ns pid %s) was not seen adopted", nsPid)
	}
	nsExec(t, c, "kill -KILL "+nsPid)
	lines := judge(t, tr, c)
	if len(lines) != 1 || strconv.Itoa(int(lines[0].NSPid)) != nsPid {
		t.Fatalf("PostgreSQL logged %+v, want the second postmaster's death:\n%s", lines, c.Log())
	}
	if _, ok := tr.WaitFor(time.Second, func(r *report.Record) bool {
		return r.Verdict == "postmaster-exit" && strconv.Itoa(int(r.NSPid)) == nsPid
	}); !ok {
		t.Error("no postmaster-exit for the second postmaster")
	}
}

// An orphan killed by SIGTERM while PostgreSQL shuts down (smart: a client
// is still connected): PostgreSQL logs it as a crash and stops instead of
// waiting. orphanwatch names it, says PostgreSQL stops, and confirms no
// restart.
func TestOrphanKilledDuringAShutdown(t *testing.T) {
	testenv.RequirePostgres(t)
	tr := testenv.StartTrace(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{})
	orphan := nsExec(t, c, `sleep 60 >/dev/null 2>&1 & echo $!; exit`)
	client := c.Command("sh", "-c", c.PsqlArgs()+` -c "select pg_sleep(60)"`)
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { client.Process.Kill(); client.Wait() }()
	time.Sleep(time.Second)
	if err := syscall.Kill(c.PostmasterPID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !c.WaitLog("received smart shutdown request", 10*time.Second) {
		t.Fatalf("no smart shutdown:\n%s", c.Log())
	}
	nsExec(t, c, "kill -TERM "+orphan)
	if _, ok := tr.WaitFor(15*time.Second, forPostmaster(c.PostmasterPID, "postmaster-exit")); !ok {
		t.Fatalf("PostgreSQL did not stop:\n%s", c.Log())
	}
	lines := testenv.CrashLines(c.Log())
	if len(lines) != 1 || strconv.Itoa(int(lines[0].NSPid)) != orphan || lines[0].Signal != int(syscall.SIGTERM) {
		t.Fatalf("PostgreSQL logged %+v, want the orphan's SIGTERM:\n%s", lines, c.Log())
	}
	rs := tr.Records(forPostmaster(c.PostmasterPID, "crash-restart"))
	if len(rs) != 1 || strconv.Itoa(int(rs[0].NSPid)) != orphan || rs[0].PostgresLog != lines[0].Message || rs[0].CrashRestart ||
		!strings.Contains(rs[0].Summary, "stops instead of restarting") {
		t.Errorf("crash-restart = %+v", rs)
	}
	if rs := tr.Records(forPostmaster(c.PostmasterPID, "crash-restart-confirmed")); len(rs) != 0 {
		t.Errorf("a shutdown confirmed as a crash-restart: %+v", rs)
	}
}

// An adoptee whose main thread called pthread_exit while another thread
// runs is alive: no death when its parent dies, and its real death later is
// the one PostgreSQL logs.
func TestAdopteeWhoseLeaderThreadExitedFirst(t *testing.T) {
	testenv.RequirePostgres(t)
	bin := testenv.LeaderExitsProgram(t)
	tr := testenv.StartTrace(t)
	c := testenv.StartCluster(t, testenv.ClusterOptions{})
	pid := nsExec(t, c, fmt.Sprintf(`%s >/dev/null 2>&1 & echo $!; exit`, bin))
	time.Sleep(time.Second)
	if rs := tr.Records(forPostmaster(c.PostmasterPID, "adopted")); len(rs) != 0 {
		t.Fatalf("a live adoptee reported dead: %+v", rs)
	}
	nsExec(t, c, "kill -TERM "+pid)
	if lines := judge(t, tr, c); len(lines) != 1 || strconv.Itoa(int(lines[0].NSPid)) != pid {
		t.Fatalf("PostgreSQL logged %+v, want the adoptee's death", lines)
	}
}

// A postmaster whose start event was lost (the agent's stdout stalled, the
// ring buffer overflowed) is found by the sweep that lost events trigger:
// watched from then, reported, counted, and its incidents named.
func TestPostmasterFoundAfterItsStartWasLost(t *testing.T) {
	testenv.RequirePostgres(t)
	storm := testenv.Storm(t)
	tr := startStalledTrace(t, "--all", "--ringbuf-size", "4096")
	for range 3 { // fill the ring buffer while nobody reads stdout
		exec.Command(storm, "-v", "-n", "3000").Run()
	}
	c := testenv.StartCluster(t, testenv.ClusterOptions{})
	exec.Command(storm, "-v", "-n", "3000").Run()
	tr.resume()
	r, ok := tr.waitFor(30*time.Second, forPostmaster(c.PostmasterPID, "postmaster-pid1"))
	if !ok {
		t.Fatalf("the postmaster was never found; stderr:\n%s", tr.stderr.String())
	}
	if r.Kind != "running" {
		t.Errorf("postmaster found as %q: its start was not lost, the test proves nothing", r.Kind)
	}
	if err := c.SeedIncident(); err != nil {
		t.Fatal(err)
	}
	crash, ok := tr.waitFor(30*time.Second, forPostmaster(c.PostmasterPID, "crash-restart"))
	if !ok {
		t.Fatalf("the seed incident was missed after the postmaster was found:\n%s", c.Log())
	}
	// PostgreSQL's log is the judge: its one crash line is that record's.
	if err := c.Ready(30 * time.Second); err != nil {
		t.Fatalf("server not back: %v\n%s", err, c.Log())
	}
	lines := testenv.CrashLines(c.Log())
	if len(lines) != 1 || lines[0].NSPid != crash.NSPid || !sameStatus(&crash, lines[0]) || crash.PostgresLog != lines[0].Message {
		t.Errorf("crash-restart record of %s (ns pid %d, %q); PostgreSQL logged %d crash lines, want that one:\n%s",
			crash.Comm, crash.NSPid, crash.PostgresLog, len(lines), c.Log())
	}
	tr.stop()
	// Other postmasters on the host may have been missed too: at least one.
	var n int
	if _, rest, ok := strings.Cut(tr.stderr.String(), "postmasters rediscovered "); ok {
		fmt.Sscan(rest, &n)
	}
	if n < 1 {
		t.Errorf("summary does not count the rediscovery:\n%s", tr.stderr.String())
	}
}

// stalledTrace is `orphanwatch trace --json` whose stdout nobody reads
// until resume: its agent blocks on the full pipe, and the kernel's ring
// buffer overflows, as with a stuck log shipper.
type stalledTrace struct {
	cmd     *exec.Cmd
	stdout  *os.File
	stderr  testenv.Buffer
	mu      chan struct{}
	records []report.Record
	done    chan struct{}
}

func startStalledTrace(t *testing.T, args ...string) *stalledTrace {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	tr := &stalledTrace{stdout: r, mu: make(chan struct{}, 1), done: make(chan struct{})}
	tr.cmd = exec.Command(testenv.Binary(t), append([]string{"trace", "--json"}, args...)...)
	tr.cmd.Stdout, tr.cmd.Stderr = w, &tr.stderr
	if err := tr.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(tr.stop)
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(tr.stderr.String(), "tracing;") {
		if time.Now().After(deadline) {
			t.Fatalf("trace did not attach:\n%s", tr.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return tr
}

// resume starts reading stdout.
func (tr *stalledTrace) resume() {
	go func() {
		defer close(tr.done)
		dec := json.NewDecoder(tr.stdout)
		for {
			var r report.Record
			if err := dec.Decode(&r); err != nil {
				return
			}
			tr.mu <- struct{}{}
			tr.records = append(tr.records, r)
			<-tr.mu
		}
	}()
}

func (tr *stalledTrace) waitFor(timeout time.Duration, match func(*report.Record) bool) (report.Record, bool) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		tr.mu <- struct{}{}
		for i := range tr.records {
			if match(&tr.records[i]) {
				r := tr.records[i]
				<-tr.mu
				return r, true
			}
		}
		<-tr.mu
		time.Sleep(50 * time.Millisecond)
	}
	return report.Record{}, false
}

// stop interrupts it and waits for its summary.
func (tr *stalledTrace) stop() {
	if tr.cmd.ProcessState != nil {
		return
	}
	tr.cmd.Process.Signal(os.Interrupt)
	tr.cmd.Wait()
	select {
	case <-tr.done:
	case <-time.After(5 * time.Second):
	}
}
