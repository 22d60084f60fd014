package oracle

import (
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func crashLine(nsPid uint32, signal, code int, at time.Duration) *CrashLine {
	return &CrashLine{ChildExit: testenv.ChildExit{LogLine: testenv.LogLine{Time: t0.Add(at)}, NSPid: nsPid, Signal: signal, ExitCode: code}}
}

func crashRecord(pid, nsPid uint32, signal string, code *int, at time.Duration) *TraceRecord {
	return &TraceRecord{Record: report.Record{Time: t0.Add(at), Verdict: "crash-restart", PID: pid, NSPid: nsPid, Signal: signal, ExitCode: code}}
}

func TestMatchPairsSamePidSameStatusClosestFirst(t *testing.T) {
	two := 2
	lines := []*CrashLine{
		crashLine(9, 13, -1, 0),
		crashLine(9, 0, 2, 10*time.Second), // the pid reused later, exit 2
		crashLine(12, 9, -1, 0),
	}
	records := []*TraceRecord{
		crashRecord(100, 9, "SIGPIPE", nil, 5*time.Millisecond),
		crashRecord(200, 9, "", &two, 10*time.Second+20*time.Millisecond),
		crashRecord(300, 12, "SIGTERM", nil, 0),          // wrong status
		crashRecord(101, 9, "SIGPIPE", nil, time.Second), // a duplicate: left over
	}
	got := match(lines, records)
	if got[lines[0]] != records[0] || got[lines[1]] != records[1] || got[lines[2]] != nil || len(got) != 2 {
		t.Errorf("match = %v", got)
	}
	late := match([]*CrashLine{crashLine(9, 13, -1, 0)}, []*TraceRecord{crashRecord(100, 9, "SIGPIPE", nil, Tolerance+time.Millisecond)})
	if len(late) != 0 {
		t.Errorf("a record beyond the tolerance matched")
	}
}

// ns pids wrap: the same pid in two rounds is told apart by time.
func TestAttributeUsesTheRoundsWindowNotThePidAlone(t *testing.T) {
	fam := &Family{Name: "lone"}
	early := &Round{Index: 1, Family: fam, Start: t0, End: t0.Add(2 * time.Second), Procs: []*Proc{{NSPid: 40, HostPID: 1000}}}
	late := &Round{Index: 2, Family: fam, Start: t0.Add(60 * time.Second), End: t0.Add(62 * time.Second), Procs: []*Proc{{NSPid: 40, HostPID: 2000}}}
	other := &Round{Index: 3, Family: fam, Instance: 1, Start: t0, End: t0.Add(2 * time.Second), Procs: []*Proc{{NSPid: 40}}}
	rounds := []*Round{early, late, other}
	if r := attribute(rounds, 0, 40, 0, t0.Add(time.Second)); r != early {
		t.Errorf("got %v, want round 1", r)
	}
	if r := attribute(rounds, 0, 40, 0, t0.Add(61*time.Second)); r != late {
		t.Errorf("got %v, want round 2", r)
	}
	if r := attribute(rounds, 0, 40, 0, t0.Add(30*time.Second)); r != nil {
		t.Errorf("got %v between the rounds, want none", r)
	}
	if r := attribute(rounds, 0, 40, 2000, t0.Add(time.Second)); r != nil {
		t.Errorf("a record's host pid of another round matched round %v", r)
	}
	if r := attribute(rounds, 1, 40, 0, t0.Add(time.Second)); r != other {
		t.Errorf("got %v on cluster 1, want round 3", r)
	}
}

func TestRoundChoicesDependOnSeedAndIndexOnly(t *testing.T) {
	run := &runner{cfg: Config{Seed: 42}, families: Families}
	pick := func(i int) string {
		rng := roundRNG(42, i)
		f := run.familyFor(i, rng)
		return f.Name + " " + string(rune('a'+rng.IntN(26)))
	}
	seen := map[string]bool{}
	for i := range len(Families) {
		seen[run.familyFor(i, roundRNG(42, i)).Name] = true
		if pick(i) != pick(i) {
			t.Fatalf("round %d differs between two draws", i)
		}
	}
	if len(seen) != len(Families) {
		t.Errorf("the first %d rounds visit %d families, want all", len(Families), len(seen))
	}
}
