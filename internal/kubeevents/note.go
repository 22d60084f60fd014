package kubeevents

import (
	"strings"
	"unicode/utf8"

	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

// The reasons of the Events orphanwatch posts, all of type Warning.
const (
	ReasonCrashRestart            = "PostgresCrashRestart"
	ReasonCrashRestartUnexplained = "PostgresCrashRestartUnexplained"
	ReasonOOMKill                 = "PostgresOOMKill"
	ReasonPostmasterIsPID1        = "PostmasterIsPID1"
)

// Reasons lists them, for metrics that start every series at 0.
var Reasons = []string{ReasonCrashRestart, ReasonCrashRestartUnexplained, ReasonOOMKill, ReasonPostmasterIsPID1}

// NoteLimit is the API server's limit on an Event's note, in bytes
// (events.k8s.io/v1 validation: "can have at most 1024 characters").
const NoteLimit = 1024

// occurrence is one Event to record: what happened, and in words.
type occurrence struct {
	reason string
	// action is what PostgreSQL did (events.k8s.io/v1 requires one).
	action string
	note   string
}

// occurrenceOf says which Event a record makes, if any. Notes are built
// from fields that are redacted already (the summary, origin detail and
// PostgreSQL's log line), never from the command line.
func occurrenceOf(r *report.Record) (occurrence, bool) {
	switch verdict.Verdict(r.Verdict) {
	case verdict.CrashRestart:
		var parts []string
		if r.PostgresLog != "" {
			parts = append(parts, `PostgreSQL logs "`+r.PostgresLog+`".`)
		}
		if r.Origin != "" {
			origin := "Origin: " + r.Origin
			if r.OriginDetail != "" {
				origin += " (" + r.OriginDetail + ")"
			}
			parts = append(parts, origin+".")
		}
		return occurrence{ReasonCrashRestart, "CrashRestart", note(r.Summary, r.Fix, parts...)}, true
	case verdict.CrashRestartConfirmed:
		if r.Trigger != nil {
			return occurrence{}, false // the culprit's crash-restart Event says it
		}
		return occurrence{ReasonCrashRestartUnexplained, "CrashRestart", note(r.Summary, "")}, true
	case verdict.OOMKill:
		return occurrence{ReasonOOMKill, "OOMKill", note(r.Summary, r.Fix)}, true
	case verdict.PostmasterPID1:
		return occurrence{ReasonPostmasterIsPID1, "Start", note(r.Summary, r.Fix)}, true
	}
	return occurrence{}, false
}

// note is the summary, the middle parts and the fix within NoteLimit. The
// summary and the fix are what an operator needs, so the middle gives way
// first, then the summary.
func note(summary, fix string, middle ...string) string {
	head := sentence(summary)
	tail := ""
	if fix != "" {
		tail = "Fix: " + sentence(fix)
	}
	room := NoteLimit - len(head) - len(tail) - 1 - len(middle)
	var mid []string
	for _, m := range middle {
		if room <= 0 {
			break
		}
		m = truncate(m, room)
		room -= len(m)
		mid = append(mid, m)
	}
	parts := []string{head}
	parts = append(parts, mid...)
	if tail != "" {
		parts = append(parts, tail)
	}
	s := strings.Join(parts, " ")
	if len(s) > NoteLimit { // the summary and fix alone are too long
		s = truncate(head, NoteLimit-len(tail)-1) + " " + tail
	}
	return truncate(s, NoteLimit)
}

// sentence ends s with a full stop.
func sentence(s string) string {
	s = strings.TrimSpace(s)
	if s == "" || strings.HasSuffix(s, ".") {
		return s
	}
	return s + "."
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut
// with an ellipsis.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	if n < len(ellipsis) {
		return ""
	}
	cut := n - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}
