package verdict

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/event"
)

const (
	exit0   = event.ExitStatus(0)
	exit1   = event.ExitStatus(1 << 8)
	exit2   = event.ExitStatus(2 << 8)
	exit3   = event.ExitStatus(3 << 8)
	sigpipe = event.ExitStatus(13)
	sigterm = event.ExitStatus(15)
	sigkill = event.ExitStatus(9)
	segvCor = event.ExitStatus(0x80 | 11)
)

// The rule PostgreSQL 12-18 apply to a child's exit (verified on
// PostgreSQL 15 here: SIGPIPE, SIGTERM and exit 3 crash-restart, exit 1 does not).
func TestCrashes(t *testing.T) {
	for status, want := range map[event.ExitStatus]bool{
		exit0: false, exit1: false, exit2: true, exit3: true,
		sigpipe: true, sigterm: true, sigkill: true, segvCor: true,
	} {
		if got := Crashes(status); got != want {
			t.Errorf("%v: crashes = %v, want %v", status, got, want)
		}
	}
	// Unknown or out-of-table versions fall back to the nearest rule.
	for major, want := range map[int]string{0: "server process", 11: "server process", 19: "untracked child process"} {
		if got := RuleFor(major).LogSubject; got != want {
			t.Errorf("RuleFor(%d) logs %q, want the nearest rule's %q", major, got, want)
		}
	}
	if RuleFor(15).LogsCleanExit || !RuleFor(18).LogsCleanExit {
		t.Error("exit 0/1 of an unknown child is logged at LOG level by 18 only")
	}
}

func TestLogLineWordingPerVersion(t *testing.T) {
	tests := []struct {
		major  int
		status event.ExitStatus
		want   string
	}{
		{15, sigpipe, "server process (PID 9) was terminated by signal 13: Broken pipe"},
		{12, sigterm, "server process (PID 9) was terminated by signal 15: Terminated"},
		{13, sigkill, "server process (PID 9) was terminated by signal 9: Killed"},
		{17, exit3, "server process (PID 9) exited with exit code 3"},
		{18, sigpipe, "untracked child process (PID 9) was terminated by signal 13: Broken pipe"},
		{18, exit3, "untracked child process (PID 9) exited with exit code 3"},
		{18, exit1, "untracked child process (PID 9) exited with exit code 1"},
	}
	for _, tt := range tests {
		if got := LogLine(tt.major, 9, tt.status); got != tt.want {
			t.Errorf("LogLine(%d, %v) = %q, want %q", tt.major, tt.status, got, tt.want)
		}
	}
}

// State follows postmaster.c: the first crash while running is acted on
// and logged, the rest of the reset is ignored, the startup process's
// clean exit ends the reset, and shutdowns change what a crash does.
func TestStateMirrorsThePostmastersReaper(t *testing.T) {
	adoptee := func(s event.ExitStatus) Child { return Child{Status: s} }
	startup := func(start uint64) Child { return Child{Status: exit0, Tracked: true, ServerBinary: true, Start: start} }

	var s State
	if r := s.Reap(adoptee(exit1), 10); r.Crash || r.Logged || r.Ignored || s.Resetting {
		t.Errorf("exit 1 while running: %+v, state %+v", r, s)
	}
	if r := s.Reap(adoptee(sigpipe), 20); !r.Crash || !r.Logged || !s.Resetting || s.ResetAt != 20 {
		t.Errorf("first crash: %+v, state %+v", r, s)
	}
	if r := s.Reap(adoptee(exit2), 21); r.Crash || r.Logged || !r.Ignored {
		t.Errorf("a casualty of the reset: %+v", r)
	}
	if r := s.Reap(Child{Status: exit2, Tracked: true, ServerBinary: true, Start: 5}, 22); !r.Ignored {
		t.Errorf("a backend told to quit: %+v", r)
	}
	// A backend that ended cleanly just before the crash, reaped during it,
	// started long before: not the startup process.
	if r := s.Reap(startup(5), 23); r.RecoveryEnded || !s.Resetting {
		t.Errorf("an old child's clean exit ended the reset: %+v", r)
	}
	if r := s.Reap(adoptee(exit0), 24); r.RecoveryEnded {
		t.Errorf("an adoptee's clean exit ended the reset: %+v", r)
	}
	if r := s.Reap(startup(25), 30); !r.RecoveryEnded || s.Resetting {
		t.Errorf("the startup process did not end the reset: %+v, state %+v", r, s)
	}
	if r := s.Reap(adoptee(sigterm), 40); !r.Crash || !r.Logged {
		t.Errorf("a new crash after recovery: %+v", r)
	}
}

func TestStateInShutdowns(t *testing.T) {
	// A fast shutdown still acts on a crash (and logs it), then stops.
	s := State{Major: 15}
	s.Signal(unix.SIGINT)
	if r := s.Reap(Child{Status: sigterm}, 10); !r.Crash || !r.Logged {
		t.Errorf("crash in a fast shutdown: %+v", r)
	}
	if r := s.Reap(Child{Status: exit0, Tracked: true, ServerBinary: true, Start: 11}, 12); r.RecoveryEnded {
		t.Error("a startup process's exit during a shutdown does not end a reset")
	}
	// An immediate shutdown ignores every death, and its fan-out is no crash.
	s = State{Major: 15}
	s.Signal(unix.SIGQUIT)
	if s.FanOut(10) || s.Resetting {
		t.Error("an immediate shutdown's fan-out taken for a crash")
	}
	if r := s.Reap(Child{Status: sigkill}, 11); r.Crash || !r.Ignored {
		t.Errorf("death during an immediate shutdown: %+v", r)
	}
	// Signals only raise the level.
	s = State{}
	s.Signal(unix.SIGQUIT)
	s.Signal(unix.SIGTERM)
	if s.Shutdown != ImmediateShutdown {
		t.Errorf("shutdown %v after QUIT then TERM", s.Shutdown)
	}
	// A smart shutdown of 12-14 ends with a SIGQUIT to the stats collector.
	s = State{}
	s.Signal(unix.SIGTERM)
	if s.FanOut(10) {
		t.Error("a smart shutdown's late SIGQUIT taken for a crash")
	}
}

func TestFanOutWithoutASeenCrashBeginsAReset(t *testing.T) {
	var s State
	if !s.FanOut(10) || !s.Resetting || s.ResetAt != 10 {
		t.Errorf("unexplained fan-out: %+v", s)
	}
	if s.FanOut(11) {
		t.Error("the rest of the fan-out is the same reset")
	}
}

// PostgreSQL 18 logs an untracked child's clean exit, in every state.
func TestCleanExitLoggedBy18(t *testing.T) {
	s := State{Major: 18}
	if r := s.Reap(Child{Status: exit1}, 1); !r.Logged || r.Crash {
		t.Errorf("18, exit 1: %+v", r)
	}
	s.Reap(Child{Status: sigkill}, 2)
	if r := s.Reap(Child{Status: exit0}, 3); !r.Logged {
		t.Errorf("18, exit 0 during a reset: %+v", r)
	}
	if r := s.Reap(Child{Status: exit0, Tracked: true}, 4); r.Logged {
		t.Errorf("18, a server process's exit 0: %+v", r)
	}
}

func TestOnDeath(t *testing.T) {
	crash, ignored := Reaped{Crash: true, Logged: true}, Reaped{Ignored: true}
	tests := []struct {
		name   string
		f      DeathFacts
		status event.ExitStatus
		want   Decision
	}{
		{"adoptee's crash while running", DeathFacts{Adoptee: true, Reaped: crash}, sigpipe, Decision{CrashRestart, true}},
		{"adoptee's crash during a reset", DeathFacts{Adoptee: true, Reaped: ignored}, exit2, Decision{Casualty, true}},
		{"adoptee exit 1", DeathFacts{Adoptee: true}, exit1, Decision{Adopted, true}},
		{"backend killed -9 while running", DeathFacts{Reaped: crash}, sigkill, Decision{ServerCrash, true}},
		{"backend told to quit", DeathFacts{Reaped: ignored}, exit2, Decision{Exit, false}},
		{"backend ends normally", DeathFacts{}, exit0, Decision{Exit, false}},
		{"OOM victim, already reported", DeathFacts{Adoptee: true, OOMKilled: true, Reaped: crash}, sigkill, Decision{Exit, false}},
	}
	for _, tt := range tests {
		if got := OnDeath(tt.f, tt.status); got != tt.want {
			t.Errorf("%s: OnDeath = %+v, want %+v", tt.name, got, tt.want)
		}
	}
	for o, want := range map[Origin]bool{OriginAdopted: true, OriginForked: false} {
		if IsAdoptee(o, true) != want {
			t.Errorf("IsAdoptee(%v)", o)
		}
	}
	if !IsAdoptee(OriginUnknown, false) || IsAdoptee(OriginUnknown, true) {
		t.Error("unknown origin: an adoptee unless it runs the server binary")
	}
}

// The default view is about postmasters: an adoption by anyone else is
// shown only with --all.
func TestOnAdoption(t *testing.T) {
	if d := OnAdoption(AdoptionFacts{NewParentIsPostmaster: true}); d != (Decision{Adoption, true}) {
		t.Errorf("to a postmaster: %+v", d)
	}
	if d := OnAdoption(AdoptionFacts{}); d.Flagged {
		t.Errorf("to a container's init: %+v", d)
	}
}

func TestPostmasterIdentification(t *testing.T) {
	tests := []struct {
		argv           []string
		parentIsServer bool
		want           bool
	}{
		{[]string{"/usr/lib/postgresql/15/bin/postgres", "-D", "/data"}, false, true},
		{[]string{"postgres"}, false, true},
		{[]string{"postgres: checkpointer"}, true, false}, // a backend: forked by the postmaster
		{[]string{"postgres", "--single", "-D", "/data", "db"}, false, false},
		{[]string{"postgres", "--boot", "-F"}, false, false},
		{[]string{"postgres", "-C", "data_directory"}, false, false},
		{[]string{"postgres", "-V"}, false, false},
		{[]string{"postgres", "--describe-config"}, false, false},
	}
	for _, tt := range tests {
		if got := IsPostmaster(tt.argv, tt.parentIsServer); got != tt.want {
			t.Errorf("IsPostmaster(%q, %v) = %v, want %v", tt.argv, tt.parentIsServer, got, tt.want)
		}
	}
	for exe, want := range map[string]bool{
		"/usr/lib/postgresql/15/bin/postgres": true, "/usr/local/bin/postmaster": true,
		"/usr/lib/postgresql/15/bin/postgres (deleted)": true, "/usr/bin/psql": false, "/usr/bin/postgres-exporter": false,
	} {
		if got := IsServerBinary(exe, ""); got != want {
			t.Errorf("IsServerBinary(%q) = %v", exe, got)
		}
	}
	if !IsServerBinary("", "postgres") || IsServerBinary("", "psql") {
		t.Error("IsServerBinary by comm")
	}
}

func TestOnPostmasterStartAndOOM(t *testing.T) {
	if d := OnPostmasterStart(1); d != (Decision{PostmasterPID1, true}) {
		t.Errorf("ns pid 1: %+v", d)
	}
	if d := OnPostmasterStart(7); d != (Decision{PostmasterStart, false}) {
		t.Errorf("ns pid 7: %+v", d)
	}
	for role, crash := range map[OOMRole]bool{RolePostmaster: false, RoleServer: true, RoleAdopted: true, RoleOther: false} {
		d, c := OnOOM(OOMFacts{Role: role})
		if d.Verdict != OOMKill || c != crash || d.Flagged != (role != RoleOther) {
			t.Errorf("OnOOM(%s) = %+v, %v", role, d, c)
		}
	}
	// A group OOM kill takes the postmaster too, unless it is at -1000:
	// then nothing restarts but the container.
	if _, c := OnOOM(OOMFacts{Role: RoleServer, GroupKill: true, PostmasterShares: true}); c {
		t.Error("group kill of an unprotected postmaster's container predicted a crash-restart")
	}
	if _, c := OnOOM(OOMFacts{Role: RoleServer, GroupKill: true, PostmasterShares: true, PostmasterProtected: true}); !c {
		t.Error("group kill sparing a -1000 postmaster: it reaps the backends and crash-restarts")
	}
}

// Every verdict has a descriptor, and the serious ones say what to do.
func TestDescriptors(t *testing.T) {
	seen := map[Verdict]bool{}
	for _, d := range All {
		if seen[d.Verdict] {
			t.Errorf("%s described twice", d.Verdict)
		}
		seen[d.Verdict] = true
		if d.Story && d.Verdict != ServerCrash && d.Fix == "" {
			t.Errorf("%s tells a story without a fix", d.Verdict)
		}
	}
	if Describe("no-such").Verdict != "" {
		t.Error("an unknown verdict has a descriptor")
	}
}

// From PostgreSQL 15 the startup process tells the postmaster when WAL
// recovery begins, which ends FatalError: a crash during the rest of crash
// recovery is acted on (seen by the oracle: "server process (PID 1960)
// exited with exit code 3" logged while recovery ran). Up to 14 it is not.
func TestRedoStartEndsTheResetFrom15(t *testing.T) {
	for major, acted := range map[int]bool{13: false, 14: false, 15: true, 17: true, 18: true} {
		s := State{Major: major}
		s.Reap(Child{Status: sigkill}, 10)
		s.RedoStarted(5) // a pmsignal from a child older than the crash: not this reset's startup process
		if !s.Resetting {
			t.Fatalf("%d: an old child's pmsignal ended the reset", major)
		}
		s.RedoStarted(20)
		if r := s.Reap(Child{Status: exit3}, 30); r.Crash != acted || !s.Recovering {
			t.Errorf("%d: crash during crash recovery: %+v (recovering %v), want acted on %v", major, r, s.Recovering, acted)
		}
	}
}

// Up to 17, a crash the postmaster ignores during the reset still moves it
// out of PM_STARTUP, and the startup process's pmsignal is then ignored
// (seen by the oracle: the reset lasted until its startup process was
// killed 5 s later). 18 leaves pmState alone.
func TestIgnoredCrashBlocksTheRedoSignalUpTo17(t *testing.T) {
	for major, blocked := range map[int]bool{15: true, 17: true, 18: false} {
		s := State{Major: major}
		s.Reap(Child{Status: sigkill}, 10)
		s.Reap(Child{Status: exit2}, 30) // a casualty, after the startup process (20) was forked
		s.RedoStarted(20)
		if s.Resetting != blocked {
			t.Errorf("%d: resetting %v after the pmsignal, want %v", major, s.Resetting, blocked)
		}
	}
}

// A crash acted on after the startup process's pmsignal SIGQUITs it; if it
// exits 0 first, the postmaster commences normal operations anyway (seen by
// the oracle: "ready to accept connections" right after the crash line, then
// a casualty's exit 2 logged as a new crash).
func TestStartupExitingCleanAfterALaterCrashEndsTheReset(t *testing.T) {
	s := State{Major: 15}
	s.Reap(Child{Status: sigkill}, 10)
	s.RedoStarted(20) // the startup process, forked at 20
	if r := s.Reap(Child{Status: exit2}, 30); !r.Crash {
		t.Fatalf("crash after the redo began: %+v, want acted on", r)
	}
	if r := s.Reap(Child{Status: 0, ServerBinary: true, Tracked: true, Start: 20}, 40); !r.RecoveryEnded {
		t.Fatalf("the startup process's exit 0 after the new crash: %+v, want the reset over", r)
	}
	if r := s.Reap(Child{Status: exit2}, 50); !r.Crash {
		t.Errorf("a casualty's exit 2 once running again: %+v, want a new crash", r)
	}
	// A server process older than the reset exiting 0 ends nothing.
	s = State{Major: 15}
	s.Reap(Child{Status: sigkill}, 10)
	if r := s.Reap(Child{Status: 0, ServerBinary: true, Tracked: true, Start: 5}, 20); r.RecoveryEnded || !s.Resetting {
		t.Errorf("an old server process's exit 0: %+v, want the reset on", r)
	}
}
