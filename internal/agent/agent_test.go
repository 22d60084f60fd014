package agent

import (
	"context"
	"io"
	"os"
	"path/filepath"
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
	mu        sync.Mutex
	watched   map[uint32]uint64
	watches   int      // Watch calls
	resetEnds []uint64 // the times EndReset was given
}

func (k *fakeKernel) EndReset(_ event.ProcessKey, at uint64) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.resetEnds = append(k.resetEnds, at)
	return nil
}

func (k *fakeKernel) Watch(key event.ProcessKey) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.watches++
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

// While the probe's two exec programs trade places both may report one
// exec: the postmaster is watched and reported once.
func TestPostmasterExecSeenTwiceIsOneStart(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.postmasterExec()
	if f.kernel.watches != 1 {
		t.Errorf("Watch called %d times, want 1", f.kernel.watches)
	}
	if rs := f.sink.byVerdict("postmaster-pid1"); len(rs) != 1 {
		t.Errorf("%d postmaster-pid1 records, want 1: %+v", len(rs), f.sink.records)
	}
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
	if rs := f.sink.byVerdict("crash-restart"); len(rs) != 0 {
		t.Fatalf("decided before the postmaster reaped it: %+v", rs)
	}
	f.agent.Handle(reapOf(psqlExit()))
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

// childExit is the exit of a child of the postmaster with a birth record:
// forked by parentAtBirth (the postmaster itself for a server process).
func childExit(at uint64, child event.Task, status event.ExitStatus, parentAtBirth uint32) *event.Event {
	ev := &event.Event{Kind: event.KindExit, Time: at, Status: status, Flags: event.HasBirth, Task: child, Parent: postmaster}
	ev.Birth.Flags = event.BirthForked
	ev.Birth.Ancestry[0].PID = parentAtBirth
	return ev
}

// startupEnds is the startup process, forked by the postmaster after the
// reset began, exiting 0 at boot time at: crash recovery is over.
func (f *fixture) startupEnds(at uint64) {
	startup := task(110, 40, 0, "postgres")
	startup.Start = at - 5e6 // forked once the crash's children were gone
	f.die(childExit(at, startup, 0, 100))
}

// reapOf is the kernel's report that the postmaster's waitpid reaps the
// child whose death ev began.
func reapOf(ev *event.Event) *event.Event {
	return &event.Event{Kind: event.KindReap, Time: ev.Time + 1e5, Status: ev.Status, Task: ev.Task, Parent: postmaster}
}

// reapedLate is the reap of the child whose death ev began, reported at
// boot time at by the postmaster's next waitpid: the call that made it
// began before the child was a zombie (event.ReapedEarlier).
func reapedLate(ev *event.Event, at uint64) *event.Event {
	r := reapOf(ev)
	r.Time, r.Flags = at, event.ReapedEarlier
	return r
}

// die reports deaths as the kernel does: each beginning, then the
// postmaster reaping them in the same order.
func (f *fixture) die(deaths ...*event.Event) {
	for _, ev := range deaths {
		f.agent.Handle(ev)
	}
	for _, ev := range deaths {
		f.agent.Handle(reapOf(ev))
	}
}

// A crash-restart is confirmed when the startup process ends crash
// recovery: it names the culprit, the server processes told to quit, and
// how long PostgreSQL was down.
func TestCrashRestartConfirmedWhenRecoveryEnds(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.die(psqlExit())
	f.fanOut(50e7+1e6, 101, 102, 103)
	if rs := f.sink.byVerdict("crash-restart-confirmed"); len(rs) != 0 {
		t.Fatalf("confirmed before recovery ended: %+v", rs)
	}
	f.startupEnds(80e7)
	rs := f.sink.byVerdict("crash-restart-confirmed")
	if len(rs) != 1 {
		t.Fatalf("confirmed records: %d", len(rs))
	}
	r := rs[0]
	if r.Terminated != 3 || r.ServerProcessesKilled == nil || *r.ServerProcessesKilled != 3 || r.Trigger == nil ||
		r.Trigger.Comm != "psql" || r.Trigger.Signal != "SIGPIPE" {
		t.Errorf("confirmed = terminated %d trigger %+v", r.Terminated, r.Trigger)
	}
	if r.RecoveryMS == nil || *r.RecoveryMS != 300 {
		t.Errorf("recovery_ms = %v, want 300 (crash at 0.5 s, recovery done at 0.8 s)", r.RecoveryMS)
	}
	// At the startup process's exit, not at its reap (80e7+1e5): a child
	// crashing in between is a new reset, which the kernel must keep.
	if ends := f.kernel.resetEnds; len(ends) != 1 || ends[0] != 80e7 {
		t.Errorf("the kernel was told a reset ended at %v, want once, at the startup process's exit (80e7)", ends)
	}
	if s := f.agent.Stats(); s.Unexplained != 0 {
		t.Errorf("stats = %+v", s)
	}
}

// The signal to a server process's group also reaches that process's own
// children (the archiver's archive_command shell, say): they are not server
// processes, and the count says how many server processes were told to quit.
func TestConfirmedCountsOnlyThePostmastersChildren(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.die(psqlExit())
	f.fanOut(50e7+1e6, 101, 102)
	f.agent.Handle(quitFromPostmaster(50e7+2e6, task(120, 120, 30, "sh"), false)) // in the archiver's group
	f.startupEnds(70e7)
	rs := f.sink.byVerdict("crash-restart-confirmed")
	if len(rs) != 1 || rs[0].Terminated != 2 {
		t.Fatalf("confirmed records %+v, want one telling 2 server processes to quit", rs)
	}
}

// A reset whose cause was not seen (its death lost) is still a
// crash-restart PostgreSQL performed: confirmed, without a culprit, and
// counted as unexplained.
func TestUnexplainedCrashRestart(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.fanOut(50e7, 101, 102)
	f.startupEnds(60e7)
	rs := f.sink.byVerdict("crash-restart-confirmed")
	if len(rs) != 1 || rs[0].Trigger != nil || !strings.Contains(rs[0].Summary, "culprit not seen") {
		t.Fatalf("confirmed = %+v", rs)
	}
	if s := f.agent.Stats(); s.Unexplained != 1 {
		t.Errorf("unexplained = %d, want 1", s.Unexplained)
	}
}

// restart_after_crash = off: the same fan-out, then the postmaster exits.
// Recovery never ends, so nothing is confirmed.
func TestCrashThatStopsPostgresIsNotConfirmed(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.die(psqlExit())
	f.fanOut(50e7+1e6, 101, 102)
	f.agent.Handle(&event.Event{Kind: event.KindExit, Time: 70e7, Status: 1 << 8, Task: postmaster, Parent: task(10, 10, 5, "unshare")})
	if rs := f.sink.byVerdict("crash-restart-confirmed"); len(rs) != 0 {
		t.Errorf("a crash that stopped PostgreSQL was confirmed: %+v", rs)
	}
}

// Three orphaned psqls: one dies of SIGPIPE, the crash kills the others'
// backends and they exit 2 while PostgreSQL resets. PostgreSQL logs one
// crash; so does orphanwatch, and the other two are casualties.
func TestCasualtiesOfAResetAreNotCrashRestarts(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.die(psqlExit())
	f.fanOut(50e7+1e6, 101, 102)
	for i, pid := range []uint32{301, 302} {
		f.die(childExit(51e7+uint64(i)*1e6, task(pid, 10+pid, 41, "psql"), 2<<8, 299))
	}
	if n := len(f.sink.byVerdict("crash-restart")); n != 1 {
		t.Errorf("%d crash-restart records, want 1", n)
	}
	cas := f.sink.byVerdict("casualty")
	if len(cas) != 2 || cas[0].CrashRestart || cas[0].PostgresLog != "" {
		t.Errorf("casualties = %+v", cas)
	}
	// After recovery a new crash is a crash again.
	f.startupEnds(70e7)
	f.die(childExit(90e7, task(303, 313, 85, "psql"), 2<<8, 299))
	if n := len(f.sink.byVerdict("crash-restart")); n != 2 {
		t.Errorf("%d crash-restart records after recovery and a new crash, want 2", n)
	}
}

// kill -9 of a process group: sh (adopted earlier) and its child psql die
// together. exit_notify() hands psql to the postmaster and makes sh a zombie
// in one step; the postmaster's waitpid reaps the older child, sh, first,
// and blames it, though psql's death began first.
func TestDeathsAreDecidedInTheOrderReaped(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	sh := task(290, 23, 30, "sh")
	psql := childExit(50e7, task(291, 24, 31, "psql"), event.ExitStatus(unix.SIGKILL), 290)
	psql.Flags |= event.ParentExiting | event.Adopted
	psql.Previous = sh
	shExit := childExit(50e7+1e5, sh, event.ExitStatus(unix.SIGKILL), 289)
	f.agent.Handle(psql)
	f.agent.Handle(shExit)
	f.agent.Handle(reapOf(shExit))
	f.agent.Handle(reapOf(psql))
	crash, cas := f.sink.byVerdict("crash-restart"), f.sink.byVerdict("casualty")
	if len(crash) != 1 || crash[0].Comm != "sh" || crash[0].NSPid != 23 || len(cas) != 1 || cas[0].Comm != "psql" {
		t.Fatalf("crash-restart %+v, casualty %+v: want sh blamed, psql a casualty", crash, cas)
	}
	if crash[0].PostgresLog != "server process (PID 23) was terminated by signal 9: Killed" {
		t.Errorf("postgres_log = %q", crash[0].PostgresLog)
	}
}

// From PostgreSQL 15 the startup process's pmsignal ends FatalError as WAL
// recovery begins; from 16 only after the reaping pass the postmaster also
// has pending.
func TestPMSignalEndsTheResetEarly(t *testing.T) {
	for _, major := range []int{15, 18} {
		f := newFixture(t, false)
		f.postmasterExec()
		f.agent.cfg.Table.Postmaster(postmaster.Key()).Major = major
		f.die(psqlExit())
		pending := &event.Event{Kind: event.KindPMSignal, Time: 60e7, Parent: postmaster, Flags: event.ZombiesPending}
		pending.Task.Start = 55e7 // the startup process, forked after the crash
		f.agent.Handle(pending)
		late := childExit(61e7, task(305, 35, 55, "psql"), 2<<8, 299)
		f.die(late) // reaped in the pass the pmsignal came with
		if major == 15 {
			if n := len(f.sink.byVerdict("crash-restart")); n != 2 {
				t.Errorf("15: %d crash-restarts, want the reap after the pmsignal's handler to count", n)
			}
			continue
		}
		// The pass ends with no fan-out after it: PostgreSQL ignored it.
		f.agent.Handle(&event.Event{Kind: event.KindReapedAll, Time: 62e7, Parent: postmaster})
		if n := len(f.sink.byVerdict("casualty")); n != 1 {
			t.Errorf("18: %d casualties, want the reap before the main loop's pmsignal to be ignored", n)
		}
		f.die(childExit(63e7, task(306, 36, 56, "psql"), 2<<8, 299))
		if n := len(f.sink.byVerdict("crash-restart")); n != 2 {
			t.Errorf("18: %d crash-restarts after the pass ended, want 2", n)
		}
	}
}

// PostgreSQL 16+: the kernel cannot always tell whether the main loop
// handled the pmsignal before a reaping pass (the postmaster took the
// child's SIGCHLD busy). PostgreSQL's next step says: a crash it acts on is
// followed at once by its SIGQUIT to every child, an ignored one by its
// next waitpid. Each order, in each way the pass goes on.
func TestPMSignalOrderDecidedByWhatThePostmasterDoesNext(t *testing.T) {
	for _, tc := range []struct {
		name     string
		next     func(f *fixture)
		verdict  string // of the psql reaped after the pmsignal
		confirms bool   // it began a second reset, which the startup process ends
	}{
		{"fan-out: the pmsignal came first", func(f *fixture) { f.fanOut(61e7+2e5, 130, 131) }, "crash-restart", true},
		{"the pass ends", func(f *fixture) {
			f.agent.Handle(&event.Event{Kind: event.KindReapedAll, Time: 61e7 + 2e5, Parent: postmaster})
		}, "casualty", false},
		{"the pass reaps another", func(f *fixture) {
			f.die(childExit(61e7+2e5, task(307, 37, 57, "sleep"), 0, 299))
		}, "casualty", false},
		{"nothing follows", func(f *fixture) {
			f.agent.mu.Lock()
			f.agent.settle(0)
			f.agent.mu.Unlock()
		}, "casualty", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, false)
			f.postmasterExec()
			f.agent.cfg.Table.Postmaster(postmaster.Key()).Major = 17
			f.die(psqlExit())
			f.fanOut(50e7+1e6, 101, 102)
			held := &event.Event{Kind: event.KindPMSignal, Time: 60e7, Parent: postmaster, Flags: event.ZombiesPending}
			held.Task.Start = 55e7 // the startup process, forked after the crash
			f.agent.Handle(held)
			late := childExit(61e7, task(305, 35, 55, "psql"), 2<<8, 299)
			f.die(late)
			if n := len(f.sink.byVerdict("crash-restart")) + len(f.sink.byVerdict("casualty")); n != 1 {
				t.Fatalf("%d records of the first crash and the undecided psql before the postmaster's next step, want 1", n)
			}
			tc.next(f)
			rs := f.sink.byVerdict(tc.verdict)
			if len(rs) == 0 || rs[len(rs)-1].NSPid != 35 {
				t.Fatalf("no %s record of psql ns pid 35: %+v", tc.verdict, f.sink.records)
			}
			if tc.verdict == "crash-restart" && rs[len(rs)-1].PostgresLog != "server process (PID 35) exited with exit code 2" {
				t.Errorf("postgres_log = %q", rs[len(rs)-1].PostgresLog)
			}
			f.startupEnds(70e7)
			confirmed := f.sink.byVerdict("crash-restart-confirmed")
			culprit := uint32(9) // the first crash's, whose reset the startup process ends
			if tc.confirms {
				culprit = 35
			}
			if len(confirmed) != 1 || confirmed[0].Trigger == nil || confirmed[0].Trigger.NSPid != culprit {
				t.Errorf("confirmed = %+v, want one naming ns pid %d", confirmed, culprit)
			}
		})
	}
}

// The kernel looks for the zombie a waitpid reaps before the call takes the
// lock: a child that becomes a zombie in between is reaped unseen, and the
// next call reports it (event.ReapedEarlier), after the fan-out it caused.
// That crash began the reset; the fan-out is no crash of an unseen cause.
// With PostgreSQL running; with PostgreSQL 15 back to acting on crashes
// (the pmsignal) while the last reset's recovery still runs; and with
// PostgreSQL 17's pmsignal waiting for the reaping pass, which the fan-out
// shows it did not (a crash acted on).
func TestCrashReportedAfterItsFanOutBeganTheReset(t *testing.T) {
	for _, tc := range []struct {
		name     string
		major    int
		pmsignal bool        // an earlier crash's startup process has sent its pmsignal
		flags    event.Flags // of that pmsignal
	}{
		{"running", 15, false, 0},
		{"15 after the pmsignal", 15, true, 0},
		{"17 with the pmsignal waiting", 17, true, event.ZombiesPending},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, false)
			f.postmasterExec()
			f.agent.cfg.Table.Postmaster(postmaster.Key()).Major = tc.major
			if tc.pmsignal {
				f.die(childExit(30e7, task(304, 34, 25, "sh"), 3<<8, 299))
				f.fanOut(30e7+1e6, 101)
				redo := &event.Event{Kind: event.KindPMSignal, Time: 40e7, Parent: postmaster, Flags: tc.flags}
				redo.Task.Start = 35e7 // the startup process, forked after that crash
				f.agent.Handle(redo)
			}
			psql := psqlExit()
			f.agent.Handle(psql)
			f.fanOut(50e7+1e6, 101, 102)
			f.agent.Handle(reapedLate(psql, 50e7+2e6))
			if rs := f.sink.byVerdict("crash-restart"); len(rs) == 0 || rs[len(rs)-1].NSPid != 9 {
				t.Fatalf("no crash-restart of psql ns pid 9: %+v", f.sink.records)
			}
			if rs := f.sink.byVerdict("casualty"); len(rs) != 0 {
				t.Errorf("casualties %+v", rs)
			}
			f.startupEnds(80e7)
			rs := f.sink.byVerdict("crash-restart-confirmed")
			if len(rs) != 1 || rs[0].Trigger == nil || rs[0].Trigger.NSPid != 9 || rs[0].Terminated != 2 {
				t.Errorf("confirmed = %+v, want one naming ns pid 9, 2 told to quit", rs)
			}
			if s := f.agent.Stats(); s.Unexplained != 0 {
				t.Errorf("%d unexplained", s.Unexplained)
			}
		})
	}
}

// The startup process's end, reaped as a fan-out began (reported after
// it): recovery from the first crash ended, and the fan-out is a new
// reset of its own, whose cause was not seen. The first is confirmed with
// its culprit and the children it told to quit.
func TestRecoveryEndReportedAfterTheNextFanOut(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.die(psqlExit())
	f.fanOut(50e7+1e6, 101, 102)
	startup := task(110, 40, 0, "postgres")
	startup.Start = 60e7
	redo := &event.Event{Kind: event.KindPMSignal, Time: 61e7, Parent: postmaster}
	redo.Task.Start = startup.Start
	f.agent.Handle(redo)
	end := childExit(70e7, startup, 0, 100)
	f.agent.Handle(end)
	f.fanOut(70e7+1e6, 103)
	f.agent.Handle(reapedLate(end, 70e7+2e6))
	rs := f.sink.byVerdict("crash-restart-confirmed")
	if len(rs) != 1 || rs[0].Trigger == nil || rs[0].Trigger.NSPid != 9 || rs[0].Terminated != 2 {
		t.Fatalf("confirmed = %+v, want one naming ns pid 9, 2 told to quit", rs)
	}
	if s := f.agent.Stats(); s.Unexplained != 0 {
		t.Errorf("%d unexplained before the second reset ends", s.Unexplained)
	}
	f.startupEnds(90e7)
	rs = f.sink.byVerdict("crash-restart-confirmed")
	if len(rs) != 2 || rs[1].Trigger != nil || rs[1].Terminated != 1 {
		t.Errorf("second confirmed = %+v, want one with no culprit, 1 told to quit", rs[len(rs)-1])
	}
}

// The same race with a zombie already there: the kernel names that zombie,
// but the call reaps an older child that became a zombie as it began, and
// the next call reports both, the first one again. The two deaths were
// decided out of PostgreSQL's order, and the count says so.
func TestReapNamedAtTheWrongWaitIsCounted(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	older := psqlExit()
	younger := childExit(50e7+5e5, task(305, 35, 45, "psql"), 2<<8, 299)
	f.agent.Handle(younger)
	f.agent.Handle(older)
	f.agent.Handle(reapOf(younger)) // named at the call that reaped the older one
	f.fanOut(50e7+1e6, 101)
	f.agent.Handle(reapedLate(older, 50e7+2e6))
	f.agent.Handle(reapOf(younger)) // still a zombie at the next call
	if n := len(f.sink.byVerdict("crash-restart")) + len(f.sink.byVerdict("casualty")); n != 2 {
		t.Errorf("%d records of the two deaths, want one each: %+v", n, f.sink.records)
	}
	if s := f.agent.Stats(); s.ReapsMisordered != 1 {
		t.Errorf("reaps misordered = %d, want 1", s.ReapsMisordered)
	}
}

// A reap whose death was not seen (its event lost) is decided from the reap
// alone; a death whose reap was not seen is decided by the sweep.
func TestDeathsDecidedWithoutAllTheirEvents(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.agent.Handle(reapOf(psqlExit()))
	if rs := f.sink.byVerdict("crash-restart"); len(rs) != 1 || rs[0].NSPid != 9 || rs[0].PostgresLog == "" {
		t.Fatalf("records = %+v", f.sink.records)
	}
	f.startupEnds(60e7)
	f.agent.Handle(childExit(70e7, task(303, 33, 65, "psql"), 2<<8, 299))
	f.agent.mu.Lock()
	f.agent.settle(0)
	f.agent.mu.Unlock()
	if rs := f.sink.byVerdict("crash-restart"); len(rs) != 2 {
		t.Fatalf("records = %+v", f.sink.records)
	}
	if s := f.agent.Stats(); s.ReapsMissed != 0 {
		t.Errorf("reaps missed = %d: settling at stop is no miss", s.ReapsMissed)
	}
}

// An orphan killed during a fast shutdown: PostgreSQL, not yet resetting,
// logs it as a crash and stops. It is a crash-restart record (PostgreSQL's
// log has its line) that says PostgreSQL stops, and nothing is confirmed.
func TestCrashDuringAFastShutdown(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.agent.Handle(pgCtlStop(unix.SIGINT))
	ev := psqlExit()
	ev.Time, ev.Status = 61e7, event.ExitStatus(unix.SIGTERM)
	ev.Signal = event.Signal{Signo: uint32(unix.SIGTERM), SenderPID: 100, Generated: 60e7}
	f.die(ev)
	rs := f.sink.byVerdict("crash-restart")
	if len(rs) != 1 || rs[0].CrashRestart || !strings.Contains(rs[0].Summary, "stops instead of restarting") {
		t.Fatalf("records = %+v", f.sink.records)
	}
	f.startupEnds(70e7)
	if rs := f.sink.byVerdict("crash-restart-confirmed"); len(rs) != 0 {
		t.Errorf("a shutdown confirmed as a crash-restart: %+v", rs)
	}
}

// trace --duration ends right after a crash: Run decides what waits for
// its reaping before it returns.
func TestRunSettlesWaitingDeathsBeforeReturning(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	read := func(ctx context.Context, handle func(*event.Event), idle func()) error {
		handle(psqlExit())
		idle()
		return nil
	}
	if err := f.agent.Run(context.Background(), read); err != nil {
		t.Fatal(err)
	}
	if rs := f.sink.byVerdict("crash-restart"); len(rs) != 1 {
		t.Fatalf("crash-restart when Run returned: %+v", rs)
	}
}

// A smart shutdown (SIGTERM) of PostgreSQL 12-14 ends with a SIGQUIT to the
// statistics collector, possibly long after: still a shutdown.
func TestSignalAfterASmartShutdownIsNotConfirmed(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.agent.Handle(pgCtlStop(unix.SIGTERM))
	later := 60e7 + uint64(2*time.Hour)
	f.fanOut(later, 101)
	f.startupEnds(later + 1e8)
	if rs := f.sink.byVerdict("crash-restart-confirmed"); len(rs) != 0 {
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
// That is a shutdown, not a crash-restart, and the deaths are no crashes.
func TestImmediateShutdownIsNotACrash(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.agent.Handle(pgCtlStop(unix.SIGQUIT))
	f.agent.Handle(quitFromPostmaster(60e7+1e6, task(101, 101, 21, "postgres"), true))
	ev := psqlExit()
	ev.Time = 61e7
	f.die(childExit(61e7, task(101, 2, 21, "postgres"), 2<<8, 100), ev)
	f.startupEnds(70e7)
	for _, v := range []string{"crash-restart-confirmed", "crash-restart", "server-crash"} {
		if rs := f.sink.byVerdict(v); len(rs) != 0 {
			t.Errorf("an immediate shutdown reported as %s: %+v", v, rs)
		}
	}
}

// The postmaster's own crash handling kills backends: their deaths are not
// more crashes.
func TestBackendsKilledByThePostmasterAreNotReported(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.die(psqlExit())
	f.fanOut(50e7+1e6, 101)
	f.die(childExit(51e7, task(101, 2, 21, "postgres"), 2<<8, 100))
	if rs := f.sink.byVerdict("server-crash"); len(rs) != 0 {
		t.Errorf("a backend told to quit reported as a crash: %+v", rs)
	}
}

// A backend killed while PostgreSQL runs is a server crash.
func TestBackendKilledWhileRunningIsAServerCrash(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.die(childExit(51e7, task(101, 2, 21, "postgres"), event.ExitStatus(unix.SIGKILL), 100))
	if rs := f.sink.byVerdict("server-crash"); len(rs) != 1 || !rs[0].CrashRestart || rs[0].PostgresLog != "" {
		t.Errorf("records = %+v", f.sink.records)
	}
}

func TestDeadOrphanHandedToThePostmasterIsACrash(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	ev := &event.Event{Kind: event.KindAdoption, Time: 52e7, Status: event.ExitStatus(unix.SIGTERM), Flags: event.Dead}
	ev.Task, ev.Parent, ev.Previous = task(500, 12, 45, "job"), postmaster, task(499, 11, 44, "sh")
	ev.Parent.Flags = event.TaskNSReaper | event.TaskWatched
	f.die(ev)
	rs := f.sink.byVerdict("crash-restart")
	if len(rs) != 1 || rs[0].Signal != "SIGTERM" || rs[0].PreviousComm != "sh" || rs[0].PostgresLog == "" {
		t.Errorf("records = %+v", f.sink.records)
	}
}

// A second postmaster (pg_ctl start inside the container), adopted by the
// PID-1 one and killed: its own exit, and a crash of the PID-1 postmaster.
func TestSecondPostmasterKilledIsACrashOfTheFirst(t *testing.T) {
	f := newFixture(t, false)
	f.postmasterExec()
	f.proc.Add(procfstest.Proc{PID: 200, PPID: 100, Comm: "postgres", Start: 30, Exe: pgBin, Argv: []string{pgBin, "-D", "/data2"}, NSpid: []int{200, 20}, DataDir: "/data2", Major: 15})
	exec := &event.Event{Kind: event.KindExec, Time: 30e7, Task: task(200, 20, 30, "postgres"), Parent: task(199, 19, 29, "sh"), Flags: event.HasBirth}
	exec.Birth.Flags = event.BirthExeced
	copy(exec.Birth.Exe[:], pgBin)
	f.agent.Handle(exec)
	if _, ok := f.kernel.watched[200]; !ok {
		t.Fatal("the second postmaster is not watched")
	}
	f.die(childExit(50e7, task(200, 20, 30, "postgres"), event.ExitStatus(unix.SIGKILL), 199))
	if rs := f.sink.byVerdict("postmaster-exit"); len(rs) != 1 || rs[0].PID != 200 {
		t.Errorf("postmaster-exit = %+v", rs)
	}
	rs := f.sink.byVerdict("crash-restart")
	if len(rs) != 1 || rs[0].PID != 200 || rs[0].Postmaster.PID != 100 ||
		rs[0].PostgresLog != "server process (PID 20) was terminated by signal 9: Killed" {
		t.Errorf("crash-restart = %+v", rs)
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

// A container OOM-killed as a group (memory.oom.group=1 on cgroup v2, the
// Kubernetes default since 1.28): the kernel kills every process of the
// cgroup, the postmaster too unless its oom_score_adj is -1000. A recorded
// sequence, as cgroup v2 cannot be set up here: a backend, then the
// postmaster itself, chosen in the same group kill.
func TestGroupOOMKillIsNoCrashRestart(t *testing.T) {
	for _, protected := range []bool{false, true} {
		f := newFixture(t, false)
		if protected {
			if err := os.WriteFile(filepath.Join(f.proc.Root, "100", "oom_score_adj"), []byte("-1000\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		f.postmasterExec()
		backend := &event.Event{Kind: event.KindOOM, Time: 55e7, Flags: event.HasBirth, Task: task(101, 30, 21, "postgres"), Parent: postmaster}
		backend.Birth.Flags = event.BirthForked
		backend.Birth.Ancestry[0].PID = 100
		backend.OOM.Flags = event.OOMGroup | event.OOMMemcg
		f.agent.Handle(backend)
		rs := f.sink.byVerdict("oom-kill")
		if len(rs) != 1 || rs[0].OOM == nil || !rs[0].OOM.GroupKill || rs[0].CrashRestart != protected {
			t.Fatalf("protected %v: oom-kill = %+v, want a group kill with crash_restart %v", protected, rs, protected)
		}
		if !protected && !strings.Contains(rs[0].Summary, "the postmaster too") {
			t.Errorf("summary %q does not say the postmaster goes too", rs[0].Summary)
		}
		// The backend's SIGKILL exit is this incident, not another record.
		f.die(childExit(56e7, task(101, 30, 21, "postgres"), event.ExitStatus(unix.SIGKILL), 100))
		if n := len(f.sink.byVerdict("server-crash")); n != 0 {
			t.Errorf("protected %v: the OOM victim's exit reported again as a server crash", protected)
		}
	}
}

// A postmaster whose start event was lost (ring buffer full) is found by
// the next sweep: watched from then on, reported, and counted.
func TestSweepRediscoversAPostmasterWhoseStartWasLost(t *testing.T) {
	f := newFixture(t, false)
	if _, err := f.agent.Start(); err != nil {
		t.Fatal(err)
	}
	f.proc.Add(procfstest.Proc{PID: 200, PPID: 10, Comm: "postgres", Start: 30, Exe: pgBin, Argv: []string{pgBin, "-D", "/data2"}, NSpid: []int{200, 1}, DataDir: "/data2", Major: 15})
	f.agent.sweep()
	if f.kernel.watched[200] != 30 {
		t.Fatalf("kernel watches %v, want the rediscovered postmaster 200", f.kernel.watched)
	}
	if s := f.agent.Stats(); s.Rediscovered != 1 {
		t.Errorf("rediscovered = %d, want 1", s.Rediscovered)
	}
	if rs := f.sink.byVerdict("postmaster-pid1"); len(rs) != 1 || rs[0].PID != 200 || rs[0].Kind != "running" {
		t.Errorf("records = %+v", f.sink.records)
	}
	f.agent.sweep() // known now: not found again
	if s := f.agent.Stats(); s.Rediscovered != 1 {
		t.Errorf("rediscovered = %d after a second sweep, want 1", s.Rediscovered)
	}
}
