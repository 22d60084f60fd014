package report

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/lineage"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

func seedRecord() Record {
	ev := &event.Event{Kind: event.KindExit, Time: 3e9, Status: event.ExitStatus(unix.SIGPIPE), Flags: event.HasBirth | event.Adopted | event.HasSignal}
	ev.Task = event.Task{PID: 8911, NSPid: 9, Start: 2e9, PidNS: 4026532000}
	copy(ev.Task.Comm[:], "psql")
	ev.Parent = event.Task{PID: 8900, NSPid: 1}
	copy(ev.Parent.Comm[:], "postgres")
	ev.Birth.Flags = event.BirthForked | event.BirthExeced
	for i, name := range []string{"sh", "nsenter", "bash"} {
		ev.Birth.Ancestry[i].PID = uint32(8910 - i)
		copy(ev.Birth.Ancestry[i].Comm[:], name)
	}
	argv := "psql\x00host=db password=hunter2\x00-c\x00select 1"
	copy(ev.Birth.Args[:], argv)
	ev.Birth.ArgsLen = uint16(len(argv))
	copy(ev.Birth.Exe[:], "/usr/bin/psql")
	ev.Signal = event.Signal{Signo: 13, SenderPID: 8911, Flags: event.SignalFromSelf | event.SignalNoInfo}
	copy(ev.Cgroup.Name[:], "docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope")
	pm := &lineage.Postmaster{Key: event.ProcessKey{PID: 8900}, NSPid: 1, Major: 15, DataDir: "/var/lib/postgresql/data"}
	proc := &lineage.Process{AdoptedAt: 2.5e9}
	return Build(ev, Facts{
		Decision: verdict.Decision{Verdict: verdict.CrashRestart, Flagged: true},
		Wall:     func(ns uint64) time.Time { return time.Unix(1700000000, int64(ns)) },
		Process:  proc, Postmaster: pm, CrashRestart: true, Logged: true,
	})
}

// The JSON contract: these keys are always present, with these types.
func TestJSONContract(t *testing.T) {
	r := seedRecord()
	var buf bytes.Buffer
	w := NewJSONWriter(&buf)
	if err := w.Write(&r); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Errorf("written before Flush: the agent flushes when the kernel is drained")
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if strings.Count(buf.String(), "\n") != 1 {
		t.Fatalf("not one line: %q", buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"time", "verdict", "pid", "ns_pid", "comm", "exe", "cmdline", "signal", "exit_code", "core_dumped",
		"parent_pid", "parent_ns_pid", "parent_comm", "original_parent_pid", "original_parent_comm", "ancestry", "adopted_at",
		"lifetime_ms", "pid_ns", "container_id"} {
		if _, ok := m[key]; !ok {
			t.Errorf("key %q missing", key)
		}
	}
	want := map[string]any{"verdict": "crash-restart", "pid": 8911.0, "ns_pid": 9.0, "comm": "psql", "signal": "SIGPIPE",
		"exit_code": nil, "parent_ns_pid": 1.0, "original_parent_comm": "sh", "lifetime_ms": 1000.0, "exe": "/usr/bin/psql",
		"container_id": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	if anc := m["ancestry"].([]any); len(anc) != 3 || anc[1].(map[string]any)["comm"] != "nsenter" {
		t.Errorf("ancestry = %v", m["ancestry"])
	}
	if strings.Contains(buf.String(), "hunter2") {
		t.Errorf("password in JSON: %s", buf.String())
	}
}

func TestPlainExitHasCodeAndNoSignal(t *testing.T) {
	ev := &event.Event{Kind: event.KindExit, Time: 2e9, Status: event.ExitStatus(3 << 8)}
	r := Build(ev, Facts{Decision: verdict.Decision{Verdict: verdict.Exit}, Wall: func(uint64) time.Time { return time.Time{} }})
	if r.Signal != "" || r.ExitCode == nil || *r.ExitCode != 3 || r.Ancestry == nil {
		t.Errorf("record = %+v", r)
	}
}

func TestTableAndStory(t *testing.T) {
	r := seedRecord()
	var buf bytes.Buffer
	w := NewTableWriter(&buf)
	if err := w.Write(&r); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"VERDICT", "crash-restart", "psql", "SIGPIPE", "postgres[8900] ns:1", "sh[8910]", "1s", "0123456789ab",
		"it wrote to a pipe whose reader had gone",
		"started by: sh[8910] <- nsenter[8909] <- bash[8908]",
		"PID 1 of its namespace, PostgreSQL 15",
		`"server process (PID 9) was terminated by signal 13: Broken pipe"`,
		"docker run --init",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hunter2") {
		t.Error("password in the table output")
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasSuffix(line, " ") {
			t.Errorf("trailing blanks: %q", line)
		}
	}
}
