package agent

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/lineage"
	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

// A postmaster decides what a child's death means when it reaps it, in the
// state it is in then (verdict.State): the first crash it reaps while
// running is the one it logs and acts on, and later ones during the reset
// are ignored. The kernel reports deaths as they happen, which is the order
// the postmaster reaps them in, with one exception that is certain and
// common: an orphan dying together with its father (a process group killed
// at once), both the postmaster's children. exit_notify() hands the orphan
// over and makes the father a zombie under one lock, and the postmaster,
// reaping in the order of its children list, reaps the older child, the
// father, first. The kernel flags such an orphan (FatherCrashed); its death
// is held until its father's is decided.

// holdFor is how long an orphan's death waits for its father's before the
// sweep decides it anyway (the father's exit event was lost).
const holdFor = 10 * time.Second

// maxHeld bounds the deaths a postmaster holds.
const maxHeld = 4096

// run is what the agent follows of one postmaster.
type run struct {
	pm    *lineage.Postmaster
	state verdict.State
	// culprit is the death that began the current reset; nil when the reset
	// began with a fan-out whose cause was not seen.
	culprit *report.Trigger
	// told: server processes the postmaster told to quit in this reset.
	told map[uint32]bool
	// held: deaths waiting for their father's, by the father.
	held map[event.ProcessKey][]*death
	// decided: deaths decided lately (boot ns), for a father decided
	// before its orphan's event arrived.
	decided map[event.ProcessKey]uint64
}

// death is a child's death, with what is known about it.
type death struct {
	ev      event.Event // the exit, or the adoption of the dead
	proc    *lineage.Process
	adoptee bool
	oom     bool
}

func (a *Agent) run(pm *lineage.Postmaster) *run {
	r := a.runs[pm.Key]
	if r == nil {
		r = &run{pm: pm, held: make(map[event.ProcessKey][]*death), decided: make(map[event.ProcessKey]uint64)}
		a.runs[pm.Key] = r
	}
	r.state.Major = pm.Major
	return r
}

func (a *Agent) onExit(ev *event.Event) {
	proc, self := a.cfg.Table.Remove(ev.Task.Key())
	if proc != nil && proc.Origin == verdict.OriginAdopted && proc.AdoptedAt != 0 && proc.PPID != ev.Parent.PID {
		a.mispredicted.Add(1) // the kernel-side prediction of the new parent was wrong
	}
	if self != nil {
		a.dropPostmaster(self)
		a.report(ev, report.Facts{Decision: verdict.Decision{Verdict: verdict.PostmasterExit, Flagged: true}, Postmaster: self, Process: proc})
	}
	// A postmaster's death is also a child's death when another postmaster
	// adopted it (pg_ctl start inside the container).
	pm := a.cfg.Table.Postmaster(ev.Parent.Key())
	if pm == nil {
		if self == nil && a.cfg.All {
			a.report(ev, report.Facts{Decision: verdict.Decision{Verdict: verdict.Exit}, Process: proc})
		}
		return
	}
	a.childDied(pm, ev, proc)
}

func (a *Agent) onAdoption(ev *event.Event) {
	pm := a.cfg.Table.Postmaster(ev.Parent.Key())
	proc := a.cfg.Table.NoteAdoption(ev)
	if ev.Flags&event.Dead != 0 && pm != nil {
		// Dead already: its new parent reaps it as if it had died in its care.
		a.childDied(pm, ev, proc)
		return
	}
	d := verdict.OnAdoption(verdict.AdoptionFacts{NewParentIsPostmaster: pm != nil})
	if d.Flagged || a.cfg.All {
		if pm != nil {
			a.cfg.Table.Describe(pm)
		}
		a.report(ev, report.Facts{Decision: d, Postmaster: pm, Process: proc})
	}
}

// childDied takes the death of a postmaster's child: decided now, or held
// until its father's.
func (a *Agent) childDied(pm *lineage.Postmaster, ev *event.Event, proc *lineage.Process) {
	d := &death{
		ev:      *ev,
		proc:    proc,
		adoptee: verdict.IsAdoptee(origin(ev, proc), verdict.IsServerBinary(ev.Birth.ExePath(), ev.Task.Comm.String())),
		oom:     proc != nil && proc.OOMKilled,
	}
	r := a.run(pm)
	if father := ev.Previous.Key(); ev.Flags&event.FatherCrashed != 0 && r.decided[father] == 0 && len(r.held) < maxHeld {
		r.held[father] = append(r.held[father], d)
		return
	}
	a.reap(r, d)
}

// reap applies a death to the postmaster's state as its reaper does, reports
// it, and then the deaths that waited for it.
func (a *Agent) reap(r *run, d *death) {
	reaped := r.state.Reap(verdict.Child{
		Status: d.ev.Status, Tracked: !d.adoptee, Start: d.ev.Task.Start,
		ServerBinary: verdict.IsServerBinary("", d.ev.Task.Comm.String()),
	}, d.ev.Time)
	dec := verdict.OnDeath(verdict.DeathFacts{Adoptee: d.adoptee, OOMKilled: d.oom, Reaped: reaped}, d.ev.Status)
	if reaped.Crash {
		r.culprit, r.told = trigger(d, dec.Verdict), nil
	}
	if dec.Flagged || a.cfg.All {
		a.cfg.Table.Describe(r.pm)
		r.state.Major = r.pm.Major
		a.report(&d.ev, report.Facts{Decision: dec, Postmaster: r.pm, Process: d.proc, Logged: reaped.Logged,
			CrashRestart: reaped.Crash && r.state.Shutdown == verdict.NoShutdown, Shutdown: r.state.Shutdown})
	}
	if reaped.RecoveryEnded {
		a.recovered(r, d.ev.Time)
	}
	key := d.ev.Task.Key()
	r.decided[key] = d.ev.Time
	held := r.held[key]
	delete(r.held, key)
	for _, h := range held {
		a.reap(r, h)
	}
}

// trigger names the death that began a reset.
func trigger(d *death, v verdict.Verdict) *report.Trigger {
	t := &report.Trigger{PID: d.ev.Task.PID, NSPid: d.ev.Task.NSPid, Comm: d.ev.Task.Comm.String(), Verdict: string(v)}
	if d.oom {
		t.Verdict = string(verdict.OOMKill)
	}
	if d.ev.Status.Signaled() {
		t.Signal = event.SignalName(d.ev.Status.Signal())
	}
	return t
}

// recovered: the startup process ended crash recovery at (boot ns):
// PostgreSQL really crash-restarted.
func (a *Agent) recovered(r *run, at uint64) {
	if err := a.cfg.Kernel.EndReset(r.pm.Key, at); err != nil {
		a.cfg.Log.Warn("telling the kernel a reset ended", "pid", r.pm.Key.PID, "err", err)
	}
	if r.culprit == nil {
		a.unexplained.Add(1)
	}
	a.cfg.Table.Describe(r.pm)
	down := time.Duration(at - min(at, r.state.ResetAt))
	rec := report.Confirmed(r.pm, r.culprit, len(r.told), a.cfg.Wall(r.state.ResetAt), down)
	a.addNames(&rec)
	a.emit(&rec)
	r.culprit, r.told = nil, nil
}

func (a *Agent) onSignal(ev *event.Event) {
	sig := unix.Signal(ev.Signal.Signo)
	if pm := a.cfg.Table.Postmaster(ev.Task.Key()); pm != nil {
		a.run(pm).state.Signal(sig) // pg_ctl stop: TERM smart, INT fast, QUIT immediate
	} else if pm := a.cfg.Table.Postmaster(ev.Parent.Key()); pm != nil && (sig == unix.SIGQUIT || sig == unix.SIGABRT) &&
		ev.Signal.Flags&event.SignalToChild != 0 {
		// The postmaster tells its children to quit: a crash's fan-out (its
		// signals to their process groups reach their children too, which
		// are not server processes), or an immediate shutdown's.
		r := a.run(pm)
		if r.state.FanOut(ev.Time) {
			r.culprit, r.told = nil, nil // a crash whose cause was not seen
		}
		if r.state.Resetting {
			if r.told == nil {
				r.told = make(map[uint32]bool)
			}
			r.told[ev.Task.PID] = true
		}
	}
	if a.cfg.All {
		a.report(ev, report.Facts{Decision: verdict.Decision{Verdict: verdict.Signal}})
	}
}

// settle decides the deaths held longer than wait for their father's (all
// of them for 0: the agent is stopping), and forgets old decisions.
func (a *Agent) settle(wait time.Duration) {
	now := a.cfg.Now()
	for _, r := range a.runs {
		for father, held := range r.held {
			if wait > 0 && now < held[0].ev.Time+uint64(wait) {
				continue
			}
			delete(r.held, father)
			a.fathersMissed.Add(1)
			for _, d := range held {
				a.reap(r, d)
			}
		}
		for key, at := range r.decided {
			if now >= at+uint64(holdFor) {
				delete(r.decided, key)
			}
		}
	}
}

// origin: the kernel's birth record when there is one (adopted when the
// parent now is not the parent at birth), else the table's knowledge from
// /proc.
func origin(ev *event.Event, proc *lineage.Process) verdict.Origin {
	if ev.Flags&event.HasBirth != 0 && ev.Birth.Flags&event.BirthForked != 0 {
		if ev.Birth.Ancestry[0].PID != ev.Parent.PID {
			return verdict.OriginAdopted
		}
		return verdict.OriginForked
	}
	if proc != nil {
		return proc.Origin
	}
	return verdict.OriginUnknown
}
