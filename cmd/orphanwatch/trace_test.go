package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

// The filter selects records and hands the agent's flushes on: without that
// a buffered JSON line would never leave the process.
func TestRecordFilterSelectsAndFlushes(t *testing.T) {
	var out bytes.Buffer
	f := &recordFilter{comm: "psql", verdicts: []verdict.Verdict{verdict.CrashRestart}, next: report.NewJSONWriter(&out)}
	for _, r := range []report.Record{
		{Verdict: "crash-restart", Comm: "psql", PID: 1},
		{Verdict: "adopted", Comm: "psql", PID: 2},
		{Verdict: "crash-restart", Comm: "head", PID: 3},
	} {
		if err := f.Write(&r); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(out.String(), "\n"); lines != 1 || !strings.Contains(out.String(), `"pid":1,`) {
		t.Errorf("filtered output:\n%s", out.String())
	}
}

func TestUnknownCommandAndFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"bogus"}, &stdout, &stderr); code != exitUsage || !strings.Contains(stderr.String(), `unknown command "bogus"`) {
		t.Errorf("unknown command: %d %q", code, stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"trace", "--verdict", "nonsense"}, &stdout, &stderr); code != exitUsage || !strings.Contains(stderr.String(), `unknown verdict "nonsense"`) {
		t.Errorf("unknown verdict: %d %q", code, stderr.String())
	}
}
