package report

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/container"
	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/lineage"
	"github.com/orphanwatch/orphanwatch/internal/redact"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

// Facts is what the agent knows about an event beyond the event itself.
type Facts struct {
	Decision   verdict.Decision
	Wall       func(bootNS uint64) time.Time
	Process    *lineage.Process    // the table's entry for the process, if any
	Postmaster *lineage.Postmaster // the postmaster involved: parent, adopter, or the process itself
	Container  container.Ref
	// CrashRestart: the postmaster resets (or, for an OOM kill, will).
	CrashRestart bool
	// Logged: the postmaster logs the death at LOG level (verdict.Reaped).
	Logged bool
	// Shutdown: how far the postmaster was asked to stop when it took a crash.
	Shutdown verdict.Shutdown
	OOM      verdict.OOMFacts
}

// Build turns an event into a record. It allocates: call it only for events
// that are reported.
func Build(ev *event.Event, f Facts) Record {
	if f.Container.IsZero() {
		f.Container = container.FromNames(ev.Cgroup.Names())
	}
	r := Record{
		Time:         f.Wall(ev.Time),
		Verdict:      string(f.Decision.Verdict),
		Kind:         ev.Kind.String(),
		PID:          ev.Task.PID,
		NSPid:        ev.Task.NSPid,
		Comm:         ev.Task.Comm.String(),
		ParentPID:    ev.Parent.PID,
		ParentNSPid:  ev.Parent.NSPid,
		ParentComm:   ev.Parent.Comm.String(),
		PidNS:        ev.Task.PidNS,
		ContainerID:  f.Container.ID,
		PodUID:       f.Container.PodUID,
		Ancestry:     []Ancestor{},
		CrashRestart: f.CrashRestart,
	}
	if f.Container.ID != "" {
		r.ContainerRuntime = f.Container.Runtime
	}

	r.Exe, r.Cmdline = command(ev, f.Process)
	birth := &ev.Birth
	// Without a birth record the kernel walks the live tree. At an adoption
	// the walk starts at the dying parent, which is right; at a later death
	// it starts at the adopter, which is not the original parent.
	adoptedUnrecorded := ev.Kind != event.KindAdoption && birth.Flags&event.BirthForked == 0 &&
		f.Process != nil && f.Process.Origin == verdict.OriginAdopted
	if birth.Flags&(event.BirthForked|event.BirthWalked) != 0 && !adoptedUnrecorded {
		r.OriginalParentPID = birth.Ancestry[0].PID
		r.OriginalParentComm = birth.Ancestry[0].Comm.String()
		for _, a := range birth.Ancestry {
			if a.PID == 0 {
				break
			}
			r.Ancestry = append(r.Ancestry, Ancestor{PID: a.PID, Comm: a.Comm.String()})
		}
	} else if p := f.Process; p != nil && p.PreviousParent.PID != 0 {
		// No birth record, and the tree above it now starts at its adopter:
		// the parent it lost is the best we know.
		r.OriginalParentPID, r.OriginalParentComm = p.PreviousParent.PID, p.PreviousParent.Comm.String()
	}

	switch ev.Kind {
	case event.KindExit:
		r.setStatus(ev.Status)
		if ev.Task.Start != 0 && ev.Time > ev.Task.Start {
			ms := int64(ev.Time-ev.Task.Start) / 1e6
			r.LifetimeMS = &ms
		}
		if p := f.Process; p != nil && p.AdoptedAt != 0 {
			at := f.Wall(p.AdoptedAt)
			r.AdoptedAt = &at
		}
	case event.KindAdoption:
		at := r.Time
		r.AdoptedAt = &at
		r.PreviousPID, r.PreviousComm = ev.Previous.PID, ev.Previous.Comm.String()
		if ev.Flags&event.Dead != 0 {
			r.setStatus(ev.Status)
		}
	case event.KindOOM:
		r.Signal = "SIGKILL"
		r.OOM = &OOMRecord{
			Role:           string(f.OOM.Role),
			GroupKill:      f.OOM.GroupKill,
			TotalVMBytes:   ev.OOM.TotalVMBytes,
			AnonRSSBytes:   ev.OOM.AnonRSSBytes,
			FileRSSBytes:   ev.OOM.FileRSSBytes,
			ShmemRSSBytes:  ev.OOM.ShmemRSSBytes,
			OOMScoreAdj:    ev.OOM.OOMScoreAdj,
			Constraint:     "system",
			MemoryCgroupID: ev.Cgroup.ID,
		}
		if ev.OOM.Flags&event.OOMMemcg != 0 {
			r.OOM.Constraint = "memcg"
		}
	case event.KindSignal:
		r.Signal = event.SignalName(unix.Signal(ev.Signal.Signo))
	}
	r.SignalSender = sender(ev)

	if pm := f.Postmaster; pm != nil {
		r.Postmaster = &PostmasterRecord{PID: pm.Key.PID, NSPid: pm.NSPid, PID1: pm.PID1(), Version: pm.Major, DataDir: pm.DataDir}
		if r.ContainerID == "" && !pm.Container.IsZero() {
			r.ContainerID, r.ContainerRuntime, r.PodUID = pm.Container.ID, pm.Container.Runtime, pm.Container.PodUID
		}
		// What the postmaster logs about a child it never forked. A server
		// process is logged under its own type (e.g. "client backend" on
		// 18), which the kernel does not know.
		if f.Logged && verdict.Describe(f.Decision.Verdict).Adoptee {
			r.PostgresLog = verdict.LogLine(pm.Major, ev.Task.NSPid, ev.Status)
		}
	}
	r.Fix = verdict.Describe(f.Decision.Verdict).Fix
	r.Summary = summary(&r, ev, f)
	return r
}

func (r *Record) setStatus(s event.ExitStatus) {
	if s.Signaled() {
		r.Signal = event.SignalName(s.Signal())
		r.CoreDumped = s.CoreDumped()
		return
	}
	code := s.Code()
	r.ExitCode = &code
}

// command is the executable and redacted command line: the kernel's record
// from exec, else what /proc showed while the process was alive.
func command(ev *event.Event, p *lineage.Process) (exe, cmdline string) {
	if ev.Flags&event.HasBirth != 0 && ev.Birth.Flags&event.BirthExeced != 0 {
		exe = ev.Birth.ExePath()
		cmdline = redact.Argv(ev.Birth.Argv())
	}
	// /proc was read earlier (at start, or at adoption): a later exec wins.
	if p != nil && exe == "" {
		exe = p.Exe
	}
	if p != nil && cmdline == "" && len(p.Argv) > 0 {
		cmdline = redact.Argv(p.Argv)
	}
	return exe, cmdline
}

// sender says who sent the signal that ended the process, when the kernel
// recorded one and it is the signal the process died of (for a signal
// event, the one being sent; for an OOM kill, the killer's SIGKILL).
func sender(ev *event.Event) *Sender {
	if ev.Flags&event.HasSignal == 0 {
		return nil
	}
	s := &ev.Signal
	switch ev.Kind {
	case event.KindSignal: // the signal being sent
	case event.KindOOM:
		if unix.Signal(s.Signo) != unix.SIGKILL {
			return nil
		}
	case event.KindAdoption:
		if ev.Flags&event.Dead == 0 {
			return nil // alive: an old signal it survived says nothing
		}
		fallthrough
	case event.KindExit:
		if !ev.Status.Signaled() || uint32(ev.Status.Signal()) != s.Signo {
			return nil
		}
	default:
		return nil
	}
	origin := "process"
	switch {
	case s.Flags&event.SignalFromKernel != 0:
		origin = "kernel"
	case s.Flags&event.SignalFromSelf != 0 && s.Flags&event.SignalNoInfo != 0:
		origin = "kernel-for-self" // e.g. pipe_write's SIGPIPE to the writer
	case s.Flags&event.SignalFromSelf != 0:
		origin = "self"
	}
	return &Sender{PID: s.SenderPID, Comm: s.SenderComm.String(), Origin: origin}
}

// summaries say what each verdict means for this record, in a sentence.
var summaries = map[verdict.Verdict]func(r *Record, who, parent, how string, f Facts) string{
	verdict.CrashRestart: func(r *Record, who, parent, how string, f Facts) string {
		s := fmt.Sprintf("%s, adopted by %s, %s: PostgreSQL%s treats it as a crashed server process", who, parent, how, version(r))
		if f.Shutdown != verdict.NoShutdown {
			return s + " and, as it was shutting down, stops instead of restarting"
		}
		return s + " and restarts, killing every connection"
	},
	verdict.Adopted: func(r *Record, who, parent, how string, _ Facts) string {
		return fmt.Sprintf("%s, adopted by %s, %s: ignored this time, but any signal or exit code above 1 would have crash-restarted PostgreSQL",
			who, parent, how)
	},
	verdict.Casualty: func(r *Record, who, parent, how string, _ Facts) string {
		return fmt.Sprintf("%s, adopted by %s, %s while PostgreSQL was already resetting after a crash (or stopping at once): "+
			"it ignored this death, which the crash most likely caused", who, parent, how)
	},
	verdict.Adoption: func(r *Record, who, parent, _ string, _ Facts) string {
		return fmt.Sprintf("%s lost its parent %s (pid %d) and was adopted by %s", who, r.PreviousComm, r.PreviousPID, parent)
	},
	verdict.ServerCrash: func(r *Record, who, _, how string, _ Facts) string {
		return fmt.Sprintf("server process %s %s: PostgreSQL%s restarts, killing every connection", who, how, version(r))
	},
	verdict.PostmasterPID1: func(_ *Record, who, _, _ string, _ Facts) string {
		return fmt.Sprintf("postmaster %s is PID 1 of its PID namespace: it adopts every orphan there, and an orphan's abnormal death will crash-restart PostgreSQL", who)
	},
	verdict.PostmasterStart: func(_ *Record, who, _, _ string, _ Facts) string {
		return fmt.Sprintf("postmaster %s started", who)
	},
	verdict.PostmasterExit: func(_ *Record, who, _, how string, _ Facts) string {
		return fmt.Sprintf("postmaster %s %s", who, how)
	},
	verdict.OOMKill: func(r *Record, who, _, _ string, f Facts) string {
		s := fmt.Sprintf("the OOM killer chose %s (%s, oom_score_adj %d, %s constraint)", who, r.OOM.Role, r.OOM.OOMScoreAdj, r.OOM.Constraint)
		switch {
		case r.CrashRestart:
			s += ": PostgreSQL will crash-restart"
		case r.OOM.Role == string(verdict.RolePostmaster):
			s += ": PostgreSQL goes down"
		case f.OOM.GroupKill && (r.OOM.Role == string(verdict.RoleServer) || r.OOM.Role == string(verdict.RoleAdopted)):
			s += ": a group OOM kill (memory.oom.group) takes the whole container, the postmaster too: PostgreSQL does not restart, the container does"
		}
		return s
	},
	verdict.Signal: func(r *Record, who, _, _ string, _ Facts) string {
		return fmt.Sprintf("%s sent %s to %s", r.ParentComm, r.Signal, who)
	},
}

func summary(r *Record, ev *event.Event, f Facts) string {
	who := fmt.Sprintf("%s (pid %d", r.Comm, r.PID)
	if r.NSPid != r.PID && r.NSPid != 0 {
		who += fmt.Sprintf(", pid %d in its namespace", r.NSPid)
	}
	who += ")"
	parent := fmt.Sprintf("%s (pid %d)", r.ParentComm, r.ParentPID)
	if pm := r.Postmaster; pm != nil && pm.PID == r.ParentPID {
		parent = fmt.Sprintf("the postmaster %s (pid %d", r.ParentComm, r.ParentPID)
		if pm.PID1 {
			parent += ", PID 1 of its namespace"
		}
		parent += ")"
	}
	how := howEnded(r)
	s := fmt.Sprintf("%s %s", who, how)
	if say, ok := summaries[verdict.Verdict(r.Verdict)]; ok {
		s = say(r, who, parent, how, f)
	}
	if ev.Kind == event.KindAdoption && ev.Flags&event.Dead != 0 {
		s += " (it was dead already when its parent died, and was handed over as a zombie)"
	}
	return s
}

func version(r *Record) string {
	if r.Postmaster != nil && r.Postmaster.Version != 0 {
		return fmt.Sprintf(" %d", r.Postmaster.Version)
	}
	return ""
}

// howEnded is "died of SIGPIPE (it wrote to a pipe whose reader had gone)",
// "exited with code 3", ...
func howEnded(r *Record) string {
	switch {
	case r.Signal != "" && r.Kind != "oom":
		s := "died of " + r.Signal
		if r.CoreDumped {
			s += " (core dumped)"
		}
		if snd := r.SignalSender; snd != nil {
			switch {
			case r.Signal == "SIGPIPE" && snd.Origin == "kernel-for-self":
				s += " (it wrote to a pipe whose reader had gone)"
			case snd.Origin == "self":
				s += " (sent by itself)"
			case snd.Origin == "kernel":
				s += " (sent by the kernel)"
			case snd.Origin == "process":
				s += fmt.Sprintf(" (sent by %s, pid %d)", snd.Comm, snd.PID)
			}
		}
		return s
	case r.ExitCode != nil:
		return fmt.Sprintf("exited with code %d", *r.ExitCode)
	}
	return "is alive"
}

// Confirmed is the record of a crash-restart PostgreSQL performed: pm told
// terminated server processes to quit at, after trigger died (nil when the
// cause was not seen), and was running again recovery later.
func Confirmed(pm *lineage.Postmaster, trigger *Trigger, terminated int, at time.Time, recovery time.Duration) Record {
	recoveryMS := recovery.Milliseconds()
	r := Record{
		Time:                  at,
		Verdict:               string(verdict.CrashRestartConfirmed),
		Kind:                  "signal",
		PID:                   pm.Key.PID,
		NSPid:                 pm.NSPid,
		Comm:                  "postgres",
		Exe:                   pm.Exe,
		Cmdline:               redact.Argv(pm.Argv),
		Ancestry:              []Ancestor{},
		PidNS:                 pm.PidNS,
		ContainerID:           pm.Container.ID,
		PodUID:                pm.Container.PodUID,
		CrashRestart:          true,
		Postmaster:            &PostmasterRecord{PID: pm.Key.PID, NSPid: pm.NSPid, PID1: pm.PID1(), Version: pm.Major, DataDir: pm.DataDir},
		Trigger:               trigger,
		Terminated:            terminated,
		ServerProcessesKilled: &terminated,
		RecoveryMS:            &recoveryMS,
	}
	if pm.Container.ID != "" {
		r.ContainerRuntime = pm.Container.Runtime
	}
	r.Summary = fmt.Sprintf("PostgreSQL (postmaster pid %d) crash-restarted: it told %d server processes to quit", pm.Key.PID, terminated)
	if trigger != nil {
		r.Summary += fmt.Sprintf(" after %s (pid %d) %s", trigger.Comm, trigger.PID, triggerHow(trigger))
		r.Fix = trigger.Fix
	} else {
		r.Summary += "; the culprit not seen: the death it reacted to never reached orphanwatch (lost events? see orphanwatch_events_lost_total), please report it"
	}
	r.Summary += fmt.Sprintf(", and was down for %s of crash recovery", recovery.Round(time.Millisecond))
	return r
}

func triggerHow(t *Trigger) string {
	switch {
	case t.Verdict == string(verdict.OOMKill):
		return "was killed by the OOM killer"
	case t.Signal != "":
		return "died of " + t.Signal
	}
	return "exited abnormally"
}
