package report

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/lineage"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

func wall(uint64) time.Time { return time.Time{} }

// postgres_log is the line the postmaster writes at its default log level
// (verdict.Reaped.Logged says when), in its version's wording; never for a
// server process, which it logs under a name the kernel does not know.
func TestPostgresLogOnlyWhenThePostmasterLogsIt(t *testing.T) {
	exit := func(status event.ExitStatus) *event.Event {
		ev := &event.Event{Kind: event.KindExit, Time: 2e9, Status: status}
		ev.Task = event.Task{PID: 500, NSPid: 12}
		return ev
	}
	tests := []struct {
		verdict verdict.Verdict
		major   int
		status  event.ExitStatus
		logged  bool
		want    string
	}{
		{verdict.CrashRestart, 15, event.ExitStatus(unix.SIGPIPE), true, "server process (PID 12) was terminated by signal 13: Broken pipe"},
		{verdict.CrashRestart, 18, event.ExitStatus(3 << 8), true, "untracked child process (PID 12) exited with exit code 3"},
		{verdict.Adopted, 15, event.ExitStatus(0), false, ""},
		{verdict.Adopted, 18, event.ExitStatus(1 << 8), true, "untracked child process (PID 12) exited with exit code 1"},
		{verdict.Casualty, 15, event.ExitStatus(2 << 8), false, ""},
		{verdict.ServerCrash, 15, event.ExitStatus(unix.SIGKILL), true, ""},
	}
	for _, tt := range tests {
		pm := &lineage.Postmaster{Key: event.ProcessKey{PID: 100}, NSPid: 1, Major: tt.major}
		r := Build(exit(tt.status), Facts{Decision: verdict.Decision{Verdict: tt.verdict, Flagged: true}, Postmaster: pm, Wall: wall, Logged: tt.logged})
		if r.PostgresLog != tt.want {
			t.Errorf("%s on %d (%v): postgres_log %q, want %q", tt.verdict, tt.major, tt.status, r.PostgresLog, tt.want)
		}
	}
}

// A live orphan's adoption record names no signal sender: a signal it
// survived long ago is not news. A dead one's does.
func TestAdoptionNamesASenderOnlyForTheDead(t *testing.T) {
	ev := &event.Event{Kind: event.KindAdoption, Time: 2e9, Flags: event.HasSignal, Status: event.ExitStatus(unix.SIGTERM)}
	ev.Task = event.Task{PID: 500, NSPid: 12}
	ev.Signal = event.Signal{Signo: uint32(unix.SIGTERM), SenderPID: 42}
	d := Facts{Decision: verdict.Decision{Verdict: verdict.Adoption, Flagged: true}, Wall: wall}
	if r := Build(ev, d); r.SignalSender != nil {
		t.Errorf("live orphan: sender %+v", r.SignalSender)
	}
	ev.Flags |= event.Dead
	if r := Build(ev, d); r.SignalSender == nil || r.SignalSender.PID != 42 {
		t.Errorf("dead orphan: sender %+v, want pid 42", r.SignalSender)
	}
}

// An orphan adopted before orphanwatch started has no birth record: the
// tree the kernel walks at its death starts at the postmaster, which is not
// its original parent.
func TestAdopteeWithoutBirthRecordHasNoInventedOriginalParent(t *testing.T) {
	ev := &event.Event{Kind: event.KindExit, Time: 2e9, Status: event.ExitStatus(unix.SIGPIPE), Flags: event.HasBirth}
	ev.Task = event.Task{PID: 500, NSPid: 12}
	ev.Birth.Flags = event.BirthWalked
	ev.Birth.Ancestry[0] = event.Ancestor{PID: 100}
	copy(ev.Birth.Ancestry[0].Comm[:], "postgres")
	proc := &lineage.Process{Key: event.ProcessKey{PID: 500}, Origin: verdict.OriginAdopted}
	r := Build(ev, Facts{Decision: verdict.Decision{Verdict: verdict.CrashRestart, Flagged: true}, Process: proc, Wall: wall})
	if r.OriginalParentPID != 0 || r.OriginalParentComm != "" {
		t.Errorf("original parent = %d %q, want unknown", r.OriginalParentPID, r.OriginalParentComm)
	}
}

// At an adoption the kernel's walk of the live tree starts at the parent
// that is dying: without a birth record, that is still the ancestry.
func TestAdoptionWithoutBirthRecordKeepsTheWalkedAncestry(t *testing.T) {
	ev := &event.Event{Kind: event.KindAdoption, Time: 2e9, Flags: event.HasBirth}
	ev.Task = event.Task{PID: 500, NSPid: 12}
	ev.Previous = event.Task{PID: 400}
	ev.Birth.Flags = event.BirthWalked
	for i, a := range []uint32{400, 300} {
		ev.Birth.Ancestry[i] = event.Ancestor{PID: a}
		copy(ev.Birth.Ancestry[i].Comm[:], "sh")
	}
	proc := &lineage.Process{Key: event.ProcessKey{PID: 500}, Origin: verdict.OriginAdopted}
	r := Build(ev, Facts{Decision: verdict.Decision{Verdict: verdict.Adoption, Flagged: true}, Process: proc, Wall: wall})
	if r.OriginalParentPID != 400 || len(r.Ancestry) != 2 || r.Ancestry[1].PID != 300 {
		t.Errorf("original parent %d, ancestry %+v; want 400 <- 300", r.OriginalParentPID, r.Ancestry)
	}
}
