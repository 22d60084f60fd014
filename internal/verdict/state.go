package verdict

import (
	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/event"
)

// Shutdown is how far a postmaster has been asked to stop: postmaster.c's
// Shutdown, raised by the signals pg_ctl stop sends and never lowered.
type Shutdown int

const (
	NoShutdown        Shutdown = iota
	SmartShutdown              // SIGTERM: wait for clients to leave
	FastShutdown               // SIGINT: end sessions, then stop
	ImmediateShutdown          // SIGQUIT: SIGQUIT every child, exit without checkpoint
)

// ShutdownFor is the shutdown a signal to the postmaster asks for.
func ShutdownFor(sig unix.Signal) Shutdown {
	switch sig {
	case unix.SIGTERM:
		return SmartShutdown
	case unix.SIGINT:
		return FastShutdown
	case unix.SIGQUIT:
		return ImmediateShutdown
	}
	return NoShutdown
}

// State is what a postmaster's reaper decides on (postmaster.c): whether
// it is recovering from a crash (FatalError) and how far it has been asked
// to stop (Shutdown). It is fed, in order, the reaps and signals the kernel
// reports; see the comment on Rules for the source.
type State struct {
	Major int // PostgreSQL major version, 0 while unknown
	// Resetting is FatalError: from a crash it acted on until crash
	// recovery is under way (RedoStarted, 15+) or over (up to 14).
	Resetting bool
	// Recovering: from a crash until its startup process ends crash
	// recovery, when it accepts connections again.
	Recovering bool
	Shutdown   Shutdown
	// ResetAt is when the last reset began (boot ns): the crash's reap, or
	// the SIGQUIT fan-out when the crash itself was not seen.
	ResetAt uint64
	// CrashReapedAt: the last reap of a crash status, acted on or ignored.
	CrashReapedAt uint64
	// Startup is the start (boot ns) of the startup process its pmsignal
	// named, 0 before one did. It stays the postmaster's StartupPID through
	// a crash acted on after that pmsignal, which SIGQUITs it: if it exits
	// 0 first, the postmaster commences normal operations all the same
	// (reaper(), "we were too late with the SIGQUIT").
	Startup uint64
}

// Child is what a reap tells about the child reaped.
type Child struct {
	Status event.ExitStatus
	// Tracked: the postmaster forked it (a server process), so it knows the
	// pid; an adoptee is untracked, logged as an unknown child.
	Tracked bool
	Start   uint64 // boot ns it started
	// ServerBinary: it runs the postgres binary, as the startup process does.
	ServerBinary bool
}

// Reaped is what the postmaster does about one reap.
type Reaped struct {
	// Crash: it takes the death for a crash and acts on it (logs it, tells
	// every server process to quit, resets or, shutting down, stops).
	Crash bool
	// Logged: it logs the death at LOG level (an untracked child's LogLine).
	Logged bool
	// RecoveryEnded: this was the startup process ending crash recovery:
	// PostgreSQL is running again.
	RecoveryEnded bool
	// Ignored: a crash status it ignores, because it is already resetting or
	// stopping immediately.
	Ignored bool
}

// Reap applies a child's death at (boot ns) as the postmaster's reaper
// does, and says what it did.
func (s *State) Reap(c Child, at uint64) Reaped {
	if Crashes(c.Status) {
		s.CrashReapedAt = at
		if s.Resetting || s.Shutdown == ImmediateShutdown {
			return Reaped{Ignored: true}
		}
		s.Resetting, s.Recovering, s.ResetAt = true, true, at
		return Reaped{Crash: true, Logged: true}
	}
	r := Reaped{Logged: !c.Tracked && RuleFor(s.Major).LogsCleanExit}
	// The startup process is forked once every child of the crash is gone,
	// runs the server binary, and exits 0 when recovery is done; during a
	// shutdown its exit does not clear FatalError.
	if s.Recovering && s.Shutdown == NoShutdown && c.Status == 0 && c.ServerBinary &&
		(c.Start > s.ResetAt || (s.Startup != 0 && c.Start == s.Startup)) {
		s.Resetting, s.Recovering = false, false
		r.RecoveryEnded = true
	}
	return r
}

// RedoStarted applies a pmsignal from a child that started at start (boot
// ns): from PostgreSQL 15 the first one of the startup process forked for
// this reset says WAL recovery began, and the postmaster acts on crashes
// again, unless a crash it reaped since that fork moved it out of
// PM_STARTUP (up to 17: HandleChildCrash changes pmState even when it
// ignores the crash; 18 returns first).
func (s *State) RedoStarted(start uint64) {
	if start > s.ResetAt {
		s.Startup = start
	}
	rule := RuleFor(s.Major)
	if !s.Resetting || s.Shutdown != NoShutdown || !rule.RedoStartEndsReset || start <= s.ResetAt ||
		(rule.IgnoredCrashLeavesStartup && s.CrashReapedAt > start) {
		return
	}
	s.Resetting = false
}

// Clean says what the postmaster does about a clean death (exit 0 or 1)
// without applying it: it means the same in every state, but for the
// startup process's, whose reap ends a reset, which Reap applies.
func (s State) Clean(c Child) Reaped {
	return Reaped{Logged: s.Reap(c, 0).Logged}
}

// Signal applies a signal the postmaster was sent.
func (s *State) Signal(sig unix.Signal) {
	s.Shutdown = max(s.Shutdown, ShutdownFor(sig))
}

// FanOut applies the postmaster's SIGQUIT (or SIGABRT) to its own children
// at (boot ns), and reports whether it began a reset no reaped crash
// explains: the crash itself was not seen. Immediate shutdowns fan out the
// same way; a smart shutdown on PostgreSQL 12-14 ends with a SIGQUIT to the
// statistics collector: neither is a crash.
func (s *State) FanOut(at uint64) (unexplained bool) {
	if s.Resetting || s.Shutdown != NoShutdown {
		return false
	}
	s.Resetting, s.Recovering, s.ResetAt = true, true, at
	return true
}
