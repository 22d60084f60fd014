package verdict

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/orphanwatch/orphanwatch/internal/event"
)

// How a postmaster treats the death of a child, from
// src/backend/postmaster/postmaster.c (line numbers of Debian's 13.16,
// 15.18 and 18.6 sources):
//
//   - PostgreSQL 12-17: reaper() (15: line 3008) matches the pid against its
//     auxiliary processes, then calls CleanupBackend(pid, exitstatus), which,
//     before even looking the pid up, calls HandleChildCrash() for any status
//     that is not EXIT_STATUS_0 or EXIT_STATUS_1 (15: line 3443; 13: 3419),
//     logging it as a "server process". A process the postmaster never
//     forked is handled exactly like a crashed backend.
//   - PostgreSQL 18: process_pm_child_exit() (line 2233) looks the pid up
//     with FindPostmasterChildByPid(); an unknown pid with any status other
//     than 0 or 1 calls HandleChildCrash(pid, exitstatus, "untracked child
//     process") (line 2530), and 0 or 1 is logged at LOG level (line 2532).
//
// HandleChildCrash() acts (logs, then sends SIGQUIT, or SIGABRT with
// send_abort_for_crash, to every child) only while !FatalError && Shutdown
// != ImmediateShutdown (15: line 3509; 13: 3485; 18: 2781), and then sets
// FatalError. Once every child is gone it forks the startup process for
// crash recovery. FatalError is cleared when that process exits 0 (15: line
// 3093; 18: 2314), or, from PostgreSQL 15, as soon as it begins WAL recovery:
// PerformWalRecovery() sends PMSIGNAL_RECOVERY_STARTED unconditionally
// (xlogrecovery.c, 15.18: line 1658; 18.6: 1719) and sigusr1_handler clears
// FatalError in PM_STARTUP (15: line 5160; 18: 3689); up to 14 the signal
// is sent only for archive recovery (13.16 xlog.c: line 7201), and a crash
// during crash recovery is ignored. State mirrors this.
// Verified on PostgreSQL 15 here: SIGPIPE, SIGTERM and exit 3 of an adopted
// child crash-restart the server; exit 1 does not.

// CrashExitCode is the lowest exit code that is a crash: anything but
// EXIT_STATUS_0 and EXIT_STATUS_1, and any signal.
const CrashExitCode = 2

// Rule is what one range of PostgreSQL versions does.
type Rule struct {
	FirstMajor, LastMajor int
	// LogSubject is the postmaster's name for an unknown child in its log.
	LogSubject string
	// LogsCleanExit: an unknown child's exit 0 or 1 is logged at LOG level
	// (18); before, only at DEBUG2, which nobody's log shows.
	LogsCleanExit bool
	// RedoStartEndsReset: FatalError ends when the startup process begins
	// WAL recovery (15+), not when it exits.
	RedoStartEndsReset bool
	// IgnoredCrashLeavesStartup: a crash HandleChildCrash ignores (during
	// the reset) still moves pmState from PM_STARTUP to PM_WAIT_BACKENDS
	// (15: line 3713), where PMSIGNAL_RECOVERY_STARTED is ignored; the
	// reset then lasts until the startup process exits. 18 returns from
	// HandleChildCrash first (line 2781).
	IgnoredCrashLeavesStartup bool
	// PMSignalAfterReaping: the main loop handles a pmsignal after the
	// children's exits it has pending (16+: ServerLoop checks
	// pending_pm_child_exit before pending_pm_pmsignal; up to 15 the
	// signal handlers run in the order the signals are delivered).
	PMSignalAfterReaping bool
	// Source names where the rule is in postmaster.c.
	Source string
}

// Rules is the table, newest first. Versions outside it are assumed to
// behave like the nearest one: the check has been the same since 9.x.
var Rules = []Rule{
	{18, 18, "untracked child process", true, true, false, true, "process_pm_child_exit(): FindPostmasterChildByPid() fails -> HandleChildCrash unless exit 0/1, else LogChildExit(LOG)"},
	{16, 17, "server process", false, true, true, true, "process_pm_child_exit() -> CleanupBackend(): LogChildExit(DEBUG2), then HandleChildCrash unless EXIT_STATUS_0/EXIT_STATUS_1"},
	{15, 15, "server process", false, true, true, false, "reaper() -> CleanupBackend(): LogChildExit(DEBUG2), then HandleChildCrash unless EXIT_STATUS_0/EXIT_STATUS_1"},
	{12, 14, "server process", false, false, false, false, "reaper() -> CleanupBackend(): as 15; PMSIGNAL_RECOVERY_STARTED only in archive recovery"},
}

// Crashes reports whether a postmaster takes a child's exit with status for
// a crash: every signal and every exit code from CrashExitCode up. The
// same for every version in Rules.
func Crashes(status event.ExitStatus) bool {
	return status.Signaled() || status.Code() >= CrashExitCode
}

// RuleFor returns the rule for a major version; 0 means unknown, treated as
// the oldest rule (the same decision, an older log wording).
func RuleFor(major int) Rule {
	for _, r := range Rules {
		if major >= r.FirstMajor && major <= r.LastMajor {
			return r
		}
	}
	if major > Rules[0].LastMajor {
		return Rules[0]
	}
	return Rules[len(Rules)-1]
}

// LogLine is what the postmaster logs at LOG level about the exit of a
// child it never forked, with nsPid the pid as the postmaster sees it (in
// its own namespace), when it logs it (Reaped.Logged says).
func LogLine(major int, nsPid uint32, status event.ExitStatus) string {
	subject := RuleFor(major).LogSubject
	if status.Signaled() {
		return fmt.Sprintf("%s (PID %d) was terminated by signal %d: %s", subject, nsPid, status.Signal(), signalDescription(status))
	}
	return fmt.Sprintf("%s (PID %d) exited with exit code %d", subject, nsPid, status.Code())
}

// signalDescription is strsignal(3)'s text, as pg_strsignal prints it.
func signalDescription(status event.ExitStatus) string {
	d := status.Signal().String() // Go's table: "broken pipe"
	if d == "" {
		return ""
	}
	return strings.ToUpper(d[:1]) + d[1:]
}

// ServerBinaries are the names a PostgreSQL server executable runs under.
var ServerBinaries = []string{"postgres", "postmaster"}

// IsServerBinary reports whether an executable path (or, without one, a
// comm) is a PostgreSQL server.
func IsServerBinary(exe, comm string) bool {
	name := comm
	if exe != "" {
		name = strings.TrimSuffix(filepath.Base(exe), " (deleted)")
	}
	return slices.Contains(ServerBinaries, name)
}

// Modes in which the server binary runs once and exits instead of becoming a
// postmaster (postgres --help lists them).
var oneShotFlags = []string{"--single", "--boot", "--check", "--describe-config", "-C", "-V", "--version", "-?", "--help"}

// IsPostmaster reports whether a postgres server process is a postmaster:
// its parent is not a server process (backends are forked by the postmaster
// without exec) and it is not one of the run-once modes.
func IsPostmaster(argv []string, parentIsServer bool) bool {
	if parentIsServer {
		return false
	}
	for _, a := range argv[min(1, len(argv)):] {
		flag, _, _ := strings.Cut(a, "=")
		if slices.Contains(oneShotFlags, flag) {
			return false
		}
	}
	return true
}
