package kubeevents

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

// The seed incident's record as the agent builds it in a pod.
func seedRecord() report.Record {
	return report.Record{
		Verdict: "crash-restart", Kind: "exit", PID: 14080, NSPid: 9, Comm: "psql", Signal: "SIGPIPE",
		Cmdline:     "psql postgresql://app:***@db/app -c 'select generate_series(1,3000000)'",
		ContainerID: strings.Repeat("ab", 32), Namespace: "db", Pod: "pg-0", Container: "postgres",
		Postmaster: &report.PostmasterRecord{PID: 14070, NSPid: 1, PID1: true, Version: 15},
		Summary: "psql (pid 14080, pid 9 in its namespace), adopted by the postmaster postgres (pid 14070, PID 1 of its namespace), " +
			"died of SIGPIPE (it wrote to a pipe whose reader had gone): PostgreSQL 15 treats it as a crashed server process and restarts, killing every connection",
		PostgresLog:  "server process (PID 9) was terminated by signal 13: Broken pipe",
		Origin:       "cri-exec",
		OriginDetail: "kubectl exec into container postgres: sh -c psql | head -c 10 >/dev/null & exit",
		Fix:          "run such jobs in a Job or a sidecar, not through kubectl exec into the database container; " + verdict.InitFix,
		CrashRestart: true,
	}
}

func TestCrashRestartNoteNamesCulpritHowOriginAndFix(t *testing.T) {
	r := seedRecord()
	o, ok := occurrenceOf(&r)
	if !ok || o.reason != ReasonCrashRestart || o.action != "CrashRestart" {
		t.Fatalf("occurrence %+v, %v; want %s", o, ok, ReasonCrashRestart)
	}
	for _, want := range []string{
		"psql (pid 14080, pid 9 in its namespace)", "died of SIGPIPE",
		`PostgreSQL logs "server process (PID 9) was terminated by signal 13: Broken pipe".`,
		"Origin: cri-exec (kubectl exec into container postgres: sh -c psql | head -c 10 >/dev/null & exit).",
		"Fix: run such jobs in a Job or a sidecar",
	} {
		if !strings.Contains(o.note, want) {
			t.Errorf("note lacks %q:\n%s", want, o.note)
		}
	}
	if strings.Contains(o.note, "generate_series") || strings.Contains(o.note, "postgresql://") {
		t.Errorf("note carries the command line:\n%s", o.note)
	}
	if !strings.HasSuffix(o.note, ".") || len(o.note) > NoteLimit {
		t.Errorf("note of %d bytes:\n%s", len(o.note), o.note)
	}
}

// A long origin detail gives way; the summary and the fix stay whole, and
// the note stays within the API's limit and valid UTF-8.
func TestNoteFitsTheAPILimit(t *testing.T) {
	r := seedRecord()
	r.OriginDetail = "docker exec into container pg: " + strings.Repeat("é", 2000)
	o, _ := occurrenceOf(&r)
	if len(o.note) > NoteLimit || !utf8.ValidString(o.note) {
		t.Fatalf("note of %d bytes (valid UTF-8: %v)", len(o.note), utf8.ValidString(o.note))
	}
	if !strings.HasPrefix(o.note, r.Summary) || !strings.HasSuffix(o.note, "Fix: "+r.Fix+".") || !strings.Contains(o.note, "…") {
		t.Errorf("summary or fix cut, or no mark of the cut:\n%s", o.note)
	}

	r.Summary = strings.Repeat("x", 3000)
	o, _ = occurrenceOf(&r)
	if len(o.note) > NoteLimit || !strings.HasSuffix(o.note, "Fix: "+r.Fix+".") {
		t.Errorf("an over-long summary: note of %d bytes:\n%s", len(o.note), o.note)
	}
}

func TestWhichRecordsMakeEvents(t *testing.T) {
	unexplained := report.Record{Verdict: "crash-restart-confirmed", Summary: "PostgreSQL (postmaster pid 7) crash-restarted: it told 5 server processes to quit; the culprit not seen"}
	explained := unexplained
	explained.Trigger = &report.Trigger{PID: 9, Comm: "psql", Verdict: "crash-restart", Signal: "SIGPIPE"}
	for _, tc := range []struct {
		r      report.Record
		reason string // "" for none
	}{
		{report.Record{Verdict: "oom-kill", Summary: "the OOM killer chose postgres", Fix: verdict.OOMFix}, ReasonOOMKill},
		{report.Record{Verdict: "postmaster-pid1", Summary: "postmaster postgres (pid 7) is PID 1", Fix: verdict.InitFix}, ReasonPostmasterIsPID1},
		{unexplained, ReasonCrashRestartUnexplained},
		{explained, ""}, // the culprit's PostgresCrashRestart says it
		{report.Record{Verdict: "adopted"}, ""},
		{report.Record{Verdict: "casualty"}, ""},
		{report.Record{Verdict: "adoption"}, ""},
		{report.Record{Verdict: "server-crash"}, ""},
		{report.Record{Verdict: "postmaster-exit"}, ""},
	} {
		o, ok := occurrenceOf(&tc.r)
		if ok != (tc.reason != "") || o.reason != tc.reason {
			t.Errorf("%s (trigger %v): Event %q, %v; want %q", tc.r.Verdict, tc.r.Trigger != nil, o.reason, ok, tc.reason)
		}
		if ok && (!strings.HasPrefix(o.note, tc.r.Summary) || (tc.r.Fix != "" && !strings.Contains(o.note, "Fix: "+tc.r.Fix))) {
			t.Errorf("%s: note %q", tc.r.Verdict, o.note)
		}
	}
}
