package main

import (
	"bytes"
	"slices"
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

// --namespace, --pod and --container select by the names the namers give
// (Kubernetes or Docker), or a container's id or a prefix of it; each flag
// given must match.
func TestRecordFilterByPodAndContainer(t *testing.T) {
	id := strings.Repeat("3f1c", 16)
	records := []report.Record{
		{PID: 1, Namespace: "db", Pod: "pg-0", Container: "postgres", ContainerID: id},
		{PID: 2, Namespace: "db", Pod: "pg-1", Container: "postgres", ContainerID: strings.Repeat("ab", 32)},
		{PID: 3, Namespace: "web", Pod: "pg-0", Container: "sidecar", ContainerID: strings.Repeat("cd", 32)},
		{PID: 4, Container: "ow-seed-15", ContainerID: strings.Repeat("ef", 32)}, // Docker, no pod
		{PID: 5}, // the host
	}
	for _, tc := range []struct {
		filter recordFilter
		want   []uint32
	}{
		{recordFilter{namespaces: []string{"db"}}, []uint32{1, 2}},
		{recordFilter{pods: []string{"pg-0"}}, []uint32{1, 3}},
		{recordFilter{namespaces: []string{"db"}, pods: []string{"pg-0"}}, []uint32{1}},
		{recordFilter{namespaces: []string{"db", "web"}, containers: []string{"sidecar"}}, []uint32{3}},
		{recordFilter{containers: []string{"ow-seed-15"}}, []uint32{4}},
		{recordFilter{containers: []string{id[:12]}}, []uint32{1}},
		{recordFilter{containers: []string{"docker://" + strings.ToUpper(id)}}, []uint32{1}},
		{recordFilter{containers: []string{"postgres", "ow-seed-15"}}, []uint32{1, 2, 4}},
		{recordFilter{containers: []string{"nothing"}}, nil},
	} {
		var got []uint32
		f := tc.filter
		f.next = sinkFunc(func(r *report.Record) error { got = append(got, r.PID); return nil })
		for i := range records {
			f.Write(&records[i])
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("namespaces %v pods %v containers %v: got %v, want %v", tc.filter.namespaces, tc.filter.pods, tc.filter.containers, got, tc.want)
		}
	}
}

type sinkFunc func(*report.Record) error

func (f sinkFunc) Write(r *report.Record) error { return f(r) }
