package testenv

import (
	"testing"
	"time"
)

func TestCrashLinesReadsWhatThePostmasterLogs(t *testing.T) {
	log := `2026-12-02 10:23:32.989 UTC [1] LOG:  starting PostgreSQL 15.18 (Debian 15.18-0+deb12u1) on x86_64-pc-linux-gnu
2026-12-02 10:23:41.223 UTC [1] LOG:  server process (PID 19) was terminated by signal 9: Killed
2026-12-02 10:23:41.223 UTC [1] LOG:  terminating any other active server processes
2026-12-02 10:23:41.224 UTC [20] STATEMENT:  select pg_sleep(30)
2026-12-02 10:24:17.076 UTC [1] LOG:  background worker "logical replication launcher" (PID 54) exited with exit code 1
2026-12-02 10:24:18.036 UTC [1] LOG:  server process (PID 57) exited with exit code 1
2026-12-02 10:24:19.000 UTC [1] LOG:  server process (PID 58) exited with exit code 2
	continuation line
2026-12-02 10:24:20.500 +02 [1] LOG:  untracked child process (PID 9) was terminated by signal 13: Broken pipe
2026-12-02 10:24:21.000 UTC [33] DETAIL:  server process (PID 7) was terminated by signal 9: Killed
`
	got := CrashLines(log)
	want := []struct {
		subject  string
		pid      uint32
		signal   int
		code     int
		line     int
		utcClock string
	}{
		{"server process", 19, 9, -1, 2, "10:23:41.223"},
		{"server process", 58, 0, 2, 7, "10:24:19.000"},
		{"untracked child process", 9, 13, -1, 9, "08:24:20.500"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d crash lines, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Subject != w.subject || g.NSPid != w.pid || g.Signal != w.signal || g.ExitCode != w.code || g.Number != w.line ||
			g.Time.UTC().Format("15:04:05.000") != w.utcClock || g.PID != 1 {
			t.Errorf("line %d = %+v, want %+v", i, g, w)
		}
	}
	if got[0].Message != "server process (PID 19) was terminated by signal 9: Killed" {
		t.Errorf("message %q", got[0].Message)
	}
	if want := time.Date(2026, 12, 2, 10, 23, 41, 223e6, time.UTC); !got[0].Time.Equal(want) {
		t.Errorf("time %v, want %v", got[0].Time, want)
	}
}
