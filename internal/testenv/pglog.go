package testenv

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// LogLine is one entry of a PostgreSQL server log written with the default
// log_line_prefix '%m [%p] ' (a timestamp in milliseconds, the pid in the
// server's own PID namespace), e.g.
//
//	2026-12-02 10:00:00.000 UTC [1] LOG:  server process (PID 9) was terminated by signal 13: Broken pipe
type LogLine struct {
	Number  int // 1-based line number in the log
	Time    time.Time
	PID     int    // the logging process, as PostgreSQL sees it
	Level   string // LOG, WARNING, FATAL, DETAIL, ...
	Message string // the text after "LEVEL:  "
	Text    string // the whole line
}

var logLineRE = regexp.MustCompile(`^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (\S+) \[(\d+)\] ([A-Z0-9]+):  (.*)$`)

// ParseLog returns the entries of a server log that carry the default
// prefix; continuation lines (tab-indented) and lines without it are skipped.
func ParseLog(text string) []LogLine {
	var out []LogLine
	for i, line := range strings.Split(text, "\n") {
		m := logLineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		at, ok := parseLogTime(m[1], m[2])
		if !ok {
			continue
		}
		pid, _ := strconv.Atoi(m[3])
		out = append(out, LogLine{Number: i + 1, Time: at, PID: pid, Level: m[4], Message: m[5], Text: line})
	}
	return out
}

// parseLogTime reads %m. The zone is log_timezone's abbreviation (initdb
// copies the system's zone; "UTC" here) or a numeric offset such as "+02";
// an abbreviation Go does not know is taken as UTC.
func parseLogTime(stamp, zone string) (time.Time, bool) {
	const layout = "2006-01-02 15:04:05.000"
	if zone == "UTC" || zone == "GMT" {
		t, err := time.ParseInLocation(layout, stamp, time.UTC)
		return t, err == nil
	}
	if zone[0] == '+' || zone[0] == '-' {
		for _, zl := range []string{"-07", "-0700", "-07:00"} {
			if t, err := time.Parse(layout+" "+zl, stamp+" "+zone); err == nil {
				return t, true
			}
		}
	}
	t, err := time.Parse(layout+" MST", stamp+" "+zone)
	return t, err == nil
}

// ChildExit is the postmaster's LOG line about a child process it reaped:
// what LogChildExit() prints, "server process (PID n) was terminated by
// signal s: ..." or "... exited with exit code c" (PostgreSQL 18 calls a
// child it did not fork an "untracked child process").
type ChildExit struct {
	LogLine
	Subject  string // "server process", "untracked child process"
	NSPid    uint32 // the child's pid in the postmaster's namespace
	Signal   int    // 0 for an exit
	ExitCode int    // -1 for a signal
}

// Crash reports whether the postmaster treats the exit as a crash: any
// signal, or an exit code other than 0 and 1.
func (e ChildExit) Crash() bool { return e.Signal != 0 || e.ExitCode >= 2 }

var childExitRE = regexp.MustCompile(`^(server process|untracked child process) \(PID (\d+)\) (?:was terminated by signal (\d+)(?:: .*)?|exited with exit code (\d+))$`)

// ChildExits returns the postmaster's LOG lines about server processes (or
// untracked children) that ended, crashes or not.
func ChildExits(lines []LogLine) []ChildExit {
	var out []ChildExit
	for _, l := range lines {
		if l.Level != "LOG" {
			continue
		}
		m := childExitRE.FindStringSubmatch(l.Message)
		if m == nil {
			continue
		}
		pid, _ := strconv.ParseUint(m[2], 10, 32)
		e := ChildExit{LogLine: l, Subject: m[1], NSPid: uint32(pid), ExitCode: -1}
		if m[3] != "" {
			e.Signal, _ = strconv.Atoi(m[3])
		} else {
			e.ExitCode, _ = strconv.Atoi(m[4])
		}
		out = append(out, e)
	}
	return out
}

// CrashLines returns the lines of a server log that report a child's death
// the postmaster treats as a crash (and so crash-restarts for).
func CrashLines(log string) []ChildExit {
	var out []ChildExit
	for _, e := range ChildExits(ParseLog(log)) {
		if e.Crash() {
			out = append(out, e)
		}
	}
	return out
}
