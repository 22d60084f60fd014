package verdict

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/orphanwatch/orphanwatch/internal/event"
)

// How a postmaster treats the death of one of its children, from
// src/backend/postmaster/postmaster.c:
//
//   - PostgreSQL 12-17: reaper() matches the pid against its auxiliary
//     processes, then calls CleanupBackend(pid, exitstatus), which, before
//     even looking the pid up, calls HandleChildCrash() for any status that
//     is not EXIT_STATUS_0 or EXIT_STATUS_1, logging it as a "server
//     process". A process the postmaster never forked is handled exactly
//     like a crashed backend.
//   - PostgreSQL 18: process_pm_child_exit() looks the pid up with
//     FindPostmasterChildByPid(); an unknown pid with any status other than
//     0 or 1 calls HandleChildCrash(pid, exitstatus, "untracked child
//     process"), and 0 or 1 is logged at LOG level.
//
// HandleChildCrash() sends SIGQUIT (SIGABRT with send_abort_for_crash, 16+)
// to every child, SIGKILL to those left after 5 s, and the server restarts
// through crash recovery, or, with restart_after_crash = off, shuts down.
// Verified on PostgreSQL 15 here: SIGPIPE, SIGTERM and exit 3 of an adopted
// child crash-restart the server; exit 1 does not.

// Rule is what one range of PostgreSQL versions does.
type Rule struct {
	FirstMajor, LastMajor int
	// Crashes reports whether the exit of a child the postmaster did not
	// fork starts crash recovery.
	Crashes func(event.ExitStatus) bool
	// LogSubject is the postmaster's name for an unknown child in its log.
	LogSubject string
	// LogsCleanExit: an unknown child's exit 0 or 1 is logged at LOG level
	// (18); before, only at DEBUG2, which nobody's log shows.
	LogsCleanExit bool
	// Source names where the rule is in postmaster.c.
	Source string
}

// Rules is the table, newest first. Versions outside it are assumed to
// behave like the nearest one: the check has been the same since 9.x.
var Rules = []Rule{
	{18, 18, unlessExit0or1, "untracked child process", true, "process_pm_child_exit(): FindPostmasterChildByPid() fails -> HandleChildCrash unless exit 0/1, else LogChildExit(LOG)"},
	{12, 17, unlessExit0or1, "server process", false, "reaper() -> CleanupBackend(): LogChildExit(DEBUG2), then HandleChildCrash unless EXIT_STATUS_0/EXIT_STATUS_1"},
}

// unlessExit0or1: every signal and every exit code but 0 and 1.
func unlessExit0or1(status event.ExitStatus) bool { return status.Signaled() || status.Code() > 1 }

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

// ChildExitCrashes reports whether a postmaster of the given major version
// runs crash recovery when a child ends with status. Backends and most
// auxiliary processes follow the same check; the exceptions, restarted
// without a crash, are the logger (every version), the statistics collector
// (up to 14) and the archiver (up to 14), which the kernel cannot tell
// apart: the crash-restart-confirmed record says whether it happened.
func ChildExitCrashes(major int, status event.ExitStatus) bool {
	return RuleFor(major).Crashes(status)
}

// LogLine is what the postmaster logs at LOG level about the exit of a child
// it never forked, with nsPid the pid as the postmaster sees it (in its own
// namespace); "" where it logs nothing at that level (exit 0 or 1 before 18).
func LogLine(major int, nsPid uint32, status event.ExitStatus) string {
	rule := RuleFor(major)
	if !rule.Crashes(status) && !rule.LogsCleanExit {
		return ""
	}
	subject := rule.LogSubject
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
