package agent

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/lineage"
	"github.com/orphanwatch/orphanwatch/internal/procfs/procfstest"
	"github.com/orphanwatch/orphanwatch/internal/report"
)

type fakeKernel struct {
	mu      sync.Mutex
	watched map[uint32]uint64
}

func (k *fakeKernel) Watch(key event.ProcessKey) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.watched[key.PID] = key.StartTicks
	return nil
}

func (k *fakeKernel) Unwatch(pid uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.watched, pid)
	return nil
}

type sink struct {
	mu      sync.Mutex
	records []report.Record
}

func (s *sink) Write(r *report.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = append(s.records, *r)
	return nil
}

func (s *sink) byVerdict(v string) []report.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []report.Record
	for _, r := range s.records {
		if r.Verdict == v {
			out = append(out, r)
		}
	}
	return out
}

const pgBin = "/usr/lib/postgresql/15/bin/postgres"

type fixture struct {
	agent  *Agent
	kernel *fakeKernel
	sink   *sink
	proc   *procfstest.Tree
}

func newFixture(t testing.TB, all bool) *fixture {
	f := &fixture{kernel: &fakeKernel{watched: map[uint32]uint64{}}, sink: &sink{}, proc: procfstest.New(t)}
	f.proc.Add(procfstest.Proc{PID: 10, PPID: 1, Comm: "unshare", Start: 5, Exe: "/usr/bin/unshare"})
	f.proc.Add(procfstest.Proc{PID: 100, PPID: 10, Comm: "postgres", Start: 20, Exe: pgBin, Argv: []string{pgBin, "-D", "/data"}, NSpid: []int{100, 1}, DataDir: "/data", Major: 15})
	f.agent = New(Config{
		Kernel: f.kernel, Table: lineage.New(f.proc.FS(), 1000), Proc: f.proc.FS(),
		Wall: func(ns uint64) time.Time { return time.Unix(0, int64(ns)) }, Now: func() uint64 { return 1 },
		Sinks: []Sink{f.sink}, All: all,
	})
	return f
}

func task(pid, nspid uint32, startTicks uint64, comm string) event.Task {
	t := event.Task{PID: pid, NSPid: nspid, Start: startTicks * 1e7}
	copy(t.Comm[:], comm)
	return t
}

var postmaster = task(100, 1, 20, "postgres")

func (f *fixture) postmasterExec() {
	ev := &event.Event{Kind: event.KindExec, Time: 20e7, Task: postmaster, Parent: task(10, 10, 5, "unshare"), Flags: event.HasBirth}
	ev.Birth.Flags = event.BirthExeced
	copy(ev.Birth.Exe[:], pgBin)
	f.agent.Handle(ev)
}

// psqlExit is the seed incident's death: adopted psql killed by SIGPIPE.
func psqlExit() *event.Event {
	ev := &event.Event{Kind: event.KindExit, Time: 50e7, Status: event.ExitStatus(unix.SIGPIPE), Flags: event.HasBirth | event.HasSignal | event.Adopted}
	ev.Task = task(300, 9, 40, "psql")
	ev.Parent = postmaster
	ev.Birth.Flags = event.BirthForked | event.BirthExeced
	ev.Birth.Ancestry[0] = event.Ancestor{PID: 299}
	copy(ev.Birth.Ancestry[0].Comm[:], "sh")
	copy(ev.Birth.Exe[:], "/usr/bin/psql")
	argv := "psql\x00postgresql://app:hunter2@db/x\x00-c\x00select 1"
	copy(ev.Birth.Args[:], argv)
	ev.Birth.ArgsLen = uint16(len(argv))
	ev.Signal = event.Signal{Signo: uint32(unix.SIGPIPE), SenderPID: 300, Flags: event.SignalFromSelf | event.SignalNoInfo}
	return ev
}

func TestPostmasterStartIsWatchedAndFlaggedAsPID1(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	if f.kernel.watched[100] != 20 {
		t.Errorf("kernel watches %v, want postmaster 100 (start 20)", f.kernel.watched)
	}
	rs := f.sink.byVerdict("postmaster-pid1")
	if len(rs) != 1 || rs[0].Postmaster == nil || !rs[0].Postmaster.PID1 || rs[0].Fix == "" {
		t.Fatalf("records = %+v", f.sink.records)
	}
}

func TestSeedIncidentVerdictAndRecord(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.agent.Handle(psqlExit())
	rs := f.sink.byVerdict("crash-restart")
	if len(rs) != 1 {
		t.Fatalf("crash-restart records: %+v", f.sink.records)
	}
	r := rs[0]
	if r.Comm != "psql" || r.Signal != "SIGPIPE" || r.ParentNSPid != 1 || r.OriginalParentComm != "sh" || !r.CrashRestart {
		t.Errorf("record = %+v", r)
	}
	if strings.Contains(r.Cmdline, "hunter2") || !strings.Contains(r.Cmdline, "app:***@") {
		t.Errorf("cmdline not redacted: %q", r.Cmdline)
	}
	if r.PostgresLog != "server process (PID 9) was terminated by signal 13: Broken pipe" {
		t.Errorf("postgres log = %q", r.PostgresLog)
	}
	if r.SignalSender == nil || r.SignalSender.Origin != "kernel-for-self" || !strings.Contains(r.Summary, "pipe whose reader had gone") {
		t.Errorf("sender %+v summary %q", r.SignalSender, r.Summary)
	}
}

// fanOut is the postmaster's crash handling: SIGQUIT to each child, to the
// pid and then to its process group, at boot time at (ns).
func (f *fixture) fanOut(at uint64, children ...uint32) {
	for _, child := range children {
		for range 2 {
			f.agent.Handle(quitFromPostmaster(at, task(child, child, 21, "postgres"), true))
		}
	}
}

// quitFromPostmaster is the SIGQUIT event the postmaster's fan-out makes
// for target: one of its children, or a member of a child's process group.
func quitFromPostmaster(at uint64, target event.Task, child bool) *event.Event {
	ev := &event.Event{Kind: event.KindSignal, Time: at, Task: target, Parent: postmaster, Flags: event.HasSignal}
	ev.Signal = event.Signal{Signo: uint32(unix.SIGQUIT), SenderPID: 100}
	if child {
		ev.Signal.Flags |= event.SignalToChild
	}
	return ev
}

// pgCtlStop is pg_ctl stop sending the postmaster sig at 0.6 s of boot
// time: SIGTERM smart, SIGINT fast, SIGQUIT immediate.
func pgCtlStop(sig unix.Signal) *event.Event {
	ev := &event.Event{Kind: event.KindSignal, Time: 60e7, Task: postmaster, Parent: task(400, 400, 55, "pg_ctl"), Flags: event.HasSignal}
	ev.Signal = event.Signal{Signo: uint32(sig), SenderPID: 400}
	return ev
}

// restart is what /proc shows once the postmaster restarted: a child of
// it that started after the fan-out (by default at 0.501 s of boot time,
// 50 ticks).
func (f *fixture) restart(startTicks ...uint64) {
	start := uint64(52)
	if len(startTicks) > 0 {
		start = startTicks[0]
	}
	f.proc.Add(procfstest.Proc{PID: 110, PPID: 100, Comm: "postgres", Start: start, Exe: pgBin})
}

func (f *fixture) waitConfirmed(within time.Duration) []report.Record {
	deadline := time.Now().Add(within)
	for len(f.sink.byVerdict("crash-restart-confirmed")) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return f.sink.byVerdict("crash-restart-confirmed")
}

// A crash-restart is confirmed by the postmaster's SIGQUIT fan-out followed
// by its restart (a new child).
func TestCrashRestartConfirmedByFanOut(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.agent.Handle(psqlExit())
	f.fanOut(50e7+1e6, 101, 102, 103)
	f.restart()
	rs := f.waitConfirmed(3 * time.Second)
	if len(rs) != 1 {
		t.Fatalf("confirmed records: %d", len(rs))
	}
	if rs[0].Terminated != 3 || rs[0].Trigger == nil || rs[0].Trigger.Comm != "psql" || rs[0].Trigger.Signal != "SIGPIPE" {
		t.Errorf("confirmed = terminated %d trigger %+v", rs[0].Terminated, rs[0].Trigger)
	}
}

// The signal to a server process's group also reaches that process's own
// children (the archiver's archive_command shell, say): they are not server
// processes, and the count says how many server processes were told to quit.
func TestConfirmedCountsOnlyThePostmastersChildren(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.agent.Handle(psqlExit())
	f.fanOut(50e7+1e6, 101, 102)
	f.agent.Handle(quitFromPostmaster(50e7+2e6, task(120, 120, 30, "sh"), false)) // in the archiver's group
	f.restart()
	rs := f.waitConfirmed(3 * time.Second)
	if len(rs) != 1 || rs[0].Terminated != 2 {
		t.Fatalf("confirmed records %+v, want one telling 2 server processes to quit", rs)
	}
}

// restart_after_crash = off: the same fan-out, then the postmaster exits.
// PostgreSQL did not restart, so nothing is confirmed.
func TestFanOutWithoutRestartIsNotConfirmed(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.agent.Handle(psqlExit())
	f.fanOut(50e7+1e6, 101, 102)
	f.proc.Remove(100)
	if rs := f.waitConfirmed(1500 * time.Millisecond); len(rs) != 0 {
		t.Errorf("a crash shutdown was confirmed as a crash-restart: %+v", rs)
	}
}

// A postmaster that fans out and stays without a new child (its children
// still dying) is confirmed once it forks, within the deadline, and not
// after it.
func TestRestartIsWaitedForUntilADeadline(t *testing.T) {
	f := newFixture(t, false)
	f.agent.confirm.settle, f.agent.confirm.recheck, f.agent.confirm.giveUp = 50*time.Millisecond, 50*time.Millisecond, 600*time.Millisecond
	f.postmasterExec()
	f.agent.Handle(psqlExit())
	f.fanOut(50e7+1e6, 101)
	time.Sleep(300 * time.Millisecond)
	if rs := f.sink.byVerdict("crash-restart-confirmed"); len(rs) != 0 {
		t.Fatalf("confirmed before the restart: %+v", rs)
	}
	f.restart()
	if rs := f.waitConfirmed(time.Second); len(rs) != 1 {
		t.Fatalf("confirmed records after the restart: %d", len(rs))
	}

	// The next crash: no restart within the deadline, no confirmation.
	f.proc.Remove(110)
	f.fanOut(90e7, 101)
	time.Sleep(time.Second)
	f.restart(95) // too late
	time.Sleep(200 * time.Millisecond)
	if rs := f.sink.byVerdict("crash-restart-confirmed"); len(rs) != 1 {
		t.Errorf("confirmed records = %d, want still 1", len(rs))
	}
}

// trace --duration ends a second after a crash: Run decides the pending
// confirmation before it returns, and nothing is written after.
func TestRunSettlesPendingConfirmationsBeforeReturning(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.restart()
	read := func(ctx context.Context, handle func(*event.Event), idle func()) error {
		handle(psqlExit())
		f.fanOut(50e7+1e6, 101, 102)
		idle()
		return nil
	}
	if err := f.agent.Run(context.Background(), read); err != nil {
		t.Fatal(err)
	}
	if rs := f.sink.byVerdict("crash-restart-confirmed"); len(rs) != 1 || rs[0].Terminated != 2 {
		t.Fatalf("confirmed when Run returned: %+v", rs)
	}
	n := len(f.sink.records)
	time.Sleep(1500 * time.Millisecond)
	if len(f.sink.records) != n {
		t.Errorf("records written after Run returned: %+v", f.sink.records[n:])
	}
}

// A smart shutdown (SIGTERM) of PostgreSQL 12-14 ends with a SIGQUIT to the
// statistics collector, possibly long after: still a shutdown.
func TestSignalAfterASmartShutdownIsNotConfirmed(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.agent.Handle(pgCtlStop(unix.SIGTERM))
	later := 60e7 + uint64(2*time.Hour)
	f.restart(later/1e7 + 5)
	f.fanOut(later, 101)
	if rs := f.waitConfirmed(1500 * time.Millisecond); len(rs) != 0 {
		t.Errorf("a shutdown was confirmed as a crash-restart: %+v", rs)
	}
}

// The OOM killer chose a process the postmaster adopted: the kernel's birth
// record says so (its parent at birth is not the postmaster).
func TestOOMKillOfAnAdopteeHasTheAdoptedRole(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	ev := &event.Event{Kind: event.KindOOM, Time: 55e7, Flags: event.HasBirth}
	ev.Task, ev.Parent = task(300, 9, 40, "psql"), postmaster
	ev.Birth.Flags = event.BirthForked | event.BirthExeced
	ev.Birth.Ancestry[0] = event.Ancestor{PID: 299}
	copy(ev.Birth.Exe[:], "/usr/bin/psql")
	f.agent.Handle(ev)
	rs := f.sink.byVerdict("oom-kill")
	if len(rs) != 1 || rs[0].OOM == nil || rs[0].OOM.Role != "adopted" || !rs[0].CrashRestart {
		t.Fatalf("oom-kill records = %+v", rs)
	}
}

// pg_ctl stop -m immediate: the postmaster is sent SIGQUIT, then fans out.
// That is a shutdown, not a crash-restart.
func TestImmediateShutdownIsNotConfirmed(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.agent.Handle(pgCtlStop(unix.SIGQUIT))
	f.agent.Handle(quitFromPostmaster(60e7+1e6, task(101, 101, 21, "postgres"), true))
	f.restart()
	if rs := f.waitConfirmed(1500 * time.Millisecond); len(rs) != 0 {
		t.Errorf("an immediate shutdown was confirmed as a crash-restart: %+v", rs)
	}
}

// The postmaster's own crash handling kills backends: their deaths are not
// more crashes.
func TestBackendsKilledByThePostmasterAreNotReported(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	ev := &event.Event{Kind: event.KindExit, Time: 51e7, Status: event.ExitStatus(2 << 8), Flags: event.HasBirth | event.HasSignal}
	ev.Task, ev.Parent = task(101, 2, 21, "postgres"), postmaster
	ev.Birth.Flags = event.BirthForked
	ev.Birth.Ancestry[0].PID = 100
	ev.Signal = event.Signal{Signo: uint32(unix.SIGQUIT), SenderPID: 100, Generated: 50e7}
	f.agent.Handle(ev)
	if len(f.sink.records) != 1 { // only postmaster-pid1
		t.Errorf("records = %+v", f.sink.records)
	}
}

func TestZombieHandedToThePostmasterIsACrash(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	ev := &event.Event{Kind: event.KindAdoption, Time: 52e7, Status: event.ExitStatus(unix.SIGTERM)}
	ev.Task, ev.Parent, ev.Previous = task(500, 12, 45, "job"), postmaster, task(499, 11, 44, "sh")
	ev.Task.Flags = event.TaskZombie
	ev.Parent.Flags = event.TaskNSReaper | event.TaskWatched
	f.agent.Handle(ev)
	rs := f.sink.byVerdict("crash-restart")
	if len(rs) != 1 || rs[0].Signal != "SIGTERM" || rs[0].PreviousComm != "sh" {
		t.Errorf("records = %+v", f.sink.records)
	}
}

func TestPostmasterExitUnwatches(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.agent.Handle(&event.Event{Kind: event.KindExit, Time: 70e7, Task: postmaster, Parent: task(10, 10, 5, "unshare")})
	if _, ok := f.kernel.watched[100]; ok {
		t.Error("kernel still watches an exited postmaster")
	}
	if len(f.sink.byVerdict("postmaster-exit")) != 1 {
		t.Errorf("records = %+v", f.sink.records)
	}
	stats := f.agent.Stats()
	if stats.Events[event.KindExit] != 1 || stats.Events[event.KindExec] != 1 || stats.Reported["postmaster-exit"] != 1 {
		t.Errorf("stats = %+v", stats)
	}
}

// An ordinary exit: no postmaster involved. This is every exit with --all,
// and the path must cost nothing.
func ordinaryExit() *event.Event {
	ev := &event.Event{Kind: event.KindExit, Time: 1e9, Status: event.ExitStatus(2 << 8)}
	ev.Task, ev.Parent = task(7000, 7000, 90, "make"), task(6999, 6999, 89, "bash")
	return ev
}

func TestOrdinaryExitIsNotReported(t *testing.T) {
	f := newFixture(t, false)
	f.agent.Handle(ordinaryExit())
	if len(f.sink.records) != 0 {
		t.Errorf("records = %+v", f.sink.records)
	}
	ev := ordinaryExit()
	if allocs := testing.AllocsPerRun(100, func() { f.agent.Handle(ev) }); allocs != 0 {
		t.Errorf("%v allocations per ordinary exit, want 0", allocs)
	}
}

func BenchmarkHandleOrdinaryExit(b *testing.B) {
	f := newFixture(b, false)
	f.postmasterExec()
	ev := ordinaryExit()
	b.ReportAllocs()
	for b.Loop() {
		f.agent.Handle(ev)
	}
}

// A backend told to quit whose kernel signal record was since overwritten by
// a signal it handled (a timer's SIGALRM) is still a consequence of the
// crash handling, not a second crash, and psql stays the trigger.
func TestBackendToldToQuitIsAConsequenceEvenIfItsSignalRecordMoved(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.agent.Handle(psqlExit())
	f.agent.Handle(quitFromPostmaster(50e7+1e6, task(101, 2, 21, "postgres"), true))
	exit := &event.Event{Kind: event.KindExit, Time: 50e7 + 40e6, Status: event.ExitStatus(2 << 8), Flags: event.HasBirth | event.HasSignal}
	exit.Task, exit.Parent = task(101, 2, 21, "postgres"), postmaster
	exit.Birth.Flags = event.BirthForked
	exit.Birth.Ancestry[0].PID = 100
	exit.Signal = event.Signal{Signo: uint32(unix.SIGALRM), Flags: event.SignalFromKernel, Generated: 50e7 + 30e6}
	f.agent.Handle(exit)
	if rs := f.sink.byVerdict("server-crash"); len(rs) != 0 {
		t.Errorf("a backend told to quit was reported as a crash: %+v", rs)
	}
	f.restart()
	rs := f.waitConfirmed(3 * time.Second)
	if len(rs) != 1 || rs[0].Trigger == nil || rs[0].Trigger.Comm != "psql" {
		t.Fatalf("confirmed = %+v, want one naming psql", rs)
	}
}

// With --all every exit is built into a record and written as JSON: the
// agent's cost per exit in that mode.
func BenchmarkHandleExitReportedAsJSON(b *testing.B) {
	f := newFixture(b, true)
	f.agent.cfg.Sinks = []Sink{report.NewJSONWriter(io.Discard)}
	ev := ordinaryExit()
	ev.Flags |= event.HasBirth
	ev.Birth.Flags = event.BirthForked | event.BirthExeced
	copy(ev.Birth.Exe[:], "/usr/bin/make")
	argv := "make\x00-j4\x00all"
	copy(ev.Birth.Args[:], argv)
	ev.Birth.ArgsLen = uint16(len(argv))
	copy(ev.Cgroup.Name[:], "9ab62136e4ba88493ceabc6b946f855c")
	copy(ev.Cgroup.Parent[:], "process_api")
	b.ReportAllocs()
	for b.Loop() {
		f.agent.Handle(ev)
	}
}
