package agent

import (
	"cmp"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/lineage"
	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

// A postmaster decides what a child's death means when it reaps it, in the
// state it is in then (verdict.State): the first crash it reaps while
// running is the one it logs and acts on, and the rest of the reset it
// ignores. Its reaper loops on waitpid(-1), which hands out the zombies in
// the order of its children list, older children first, whatever order
// they died in. The kernel reports each child's death as it begins (the
// exit, with the evidence), and each reap as the waitpid call that makes
// it (KindReap): deaths that matter wait for their reap, and are decided
// in the postmaster's order.

// reapWait is how long a death waits for its reaping before the sweep
// decides it anyway (an event was lost).
const reapWait = 10 * time.Second

// undecidedWait is how long a crash waits for the postmaster's next step
// (see arbitrate) before the sweep takes the reaping pass as first: that
// step follows within microseconds unless its event was lost.
const undecidedWait = time.Second

// maxDying bounds the deaths a postmaster keeps waiting.
const maxDying = 4096

// run is what the agent follows of one postmaster.
type run struct {
	pm    *lineage.Postmaster
	state verdict.State
	// culprit is the death that began the current reset; nil when the reset
	// began with a fan-out whose cause was not seen.
	culprit *report.Trigger
	// told: server processes the postmaster told to quit in this reset.
	told map[uint32]bool
	// dying: deaths that matter (a crash status, or any while it resets),
	// by pid in its namespace, until it reaps them.
	dying map[uint32]*death
	// redoPending: the start of the child whose pmsignal waits for the end
	// of the reaping pass (PostgreSQL 16+); 0 when none waits.
	redoPending uint64
	// undecided: a crash reaped while redoPending waits, which PostgreSQL
	// ignores if that pass came first and acts on if the pmsignal did;
	// decided by what the postmaster does next (see arbitrate).
	undecided   *death
	undecidedAt uint64 // its reap (boot ns)
	// fannedOut: the postmaster has told its children to quit since its
	// last reap or pmsignal (nil if not): a reap an earlier wait reports
	// (event.ReapedEarlier) came before that fan-out.
	fannedOut *fanOut
	// reaped: the last children whose reap was applied, so that a second
	// report of one (the kernel reaped another child at the call that
	// named it) changes nothing.
	reaped  [8]event.ProcessKey
	nReaped int
}

// fanOut is what the agent knew of a postmaster before a fan-out, and
// when the fan-out began.
type fanOut struct {
	before  verdict.State
	culprit *report.Trigger
	told    map[uint32]bool
	at      uint64
}

// death is a child's death, with what is known about it.
type death struct {
	ev      event.Event // the exit, the adoption of the dead, or only the zombie
	proc    *lineage.Process
	adoptee bool
	oom     bool
}

func (a *Agent) run(pm *lineage.Postmaster) *run {
	r := a.runs[pm.Key]
	if r == nil {
		r = &run{pm: pm, dying: make(map[uint32]*death)}
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

// childDied takes the death of a postmaster's child as it begins. A clean
// one means the same in every state and is reported now; one that matters
// to the postmaster's state waits for it to be reaped.
func (a *Agent) childDied(pm *lineage.Postmaster, ev *event.Event, proc *lineage.Process) {
	d := &death{
		ev:      *ev,
		proc:    proc,
		adoptee: verdict.IsAdoptee(joinedBy(ev, proc), verdict.IsServerBinary(ev.Birth.ExePath(), ev.Task.Comm.String())),
		oom:     proc != nil && proc.OOMKilled,
	}
	r := a.run(pm)
	crashes := verdict.Crashes(ev.Status)
	if !crashes {
		a.report1(r, d, r.state.Clean(d.child()))
	}
	if (crashes || r.state.Recovering) && len(r.dying) < maxDying {
		r.dying[ev.Task.NSPid] = d
	}
}

func (d *death) child() verdict.Child {
	return verdict.Child{Status: d.ev.Status, Tracked: !d.adoptee, Start: d.ev.Task.Start,
		ServerBinary: verdict.IsServerBinary("", d.ev.Task.Comm.String())}
}

// onReap: the postmaster's waitpid reaps a child now.
func (a *Agent) onReap(ev *event.Event) {
	pm := a.cfg.Table.Postmaster(ev.Parent.Key())
	if pm == nil {
		return
	}
	r := a.run(pm)
	a.arbitrate(r, false)
	key := ev.Task.Key()
	if slices.Contains(r.reaped[:], key) {
		// Reported again: the call that named it reaped another child, whose
		// report came since (event.ReapedEarlier), out of order.
		a.reapsMisordered.Add(1)
		return
	}
	r.reaped[r.nReaped%len(r.reaped)] = key
	r.nReaped++
	d := r.dying[ev.Task.NSPid]
	delete(r.dying, ev.Task.NSPid)
	if d == nil || d.ev.Task.Key() != key {
		// Not seen dying (its exit event lost, or a reused pid): the reap
		// says enough to decide.
		proc := a.cfg.Table.Lookup(ev.Task.Key())
		d = &death{ev: *ev, proc: proc, adoptee: verdict.IsAdoptee(joinedBy(ev, proc), verdict.IsServerBinary("", ev.Task.Comm.String()))}
		d.ev.Kind = event.KindExit
		d.oom = proc != nil && proc.OOMKilled
	}
	d.ev.Status = ev.Status
	fannedOut := r.fannedOut
	r.fannedOut = nil
	if ev.Flags&event.ReapedEarlier != 0 && fannedOut != nil {
		a.reapBefore(r, d, fannedOut)
		return
	}
	if r.redoPending != 0 && r.pmsignalOrderMatters(d.child()) {
		r.undecided, r.undecidedAt = d, ev.Time
		return
	}
	a.reap(r, d, ev.Time)
}

// reapBefore applies a reap whose waitpid came before the fan-out the
// kernel reported first (event.ReapedEarlier: the child became a zombie
// as that call began): in the state before the fan-out, which is then
// applied again. A crash that state acts on began the reset; the fan-out
// shows it was acted on, so a waiting pmsignal came first. The children
// told to quit count for the reset the fan-out is part of.
func (a *Agent) reapBefore(r *run, d *death, f *fanOut) {
	told := r.told
	r.state, r.culprit, r.told = f.before, f.culprit, f.told
	if r.redoPending != 0 && r.pmsignalOrderMatters(d.child()) {
		a.pmsignalFirst(r)
	}
	a.reap(r, d, f.at)
	if r.state.FanOut(f.at) {
		r.culprit = nil // a crash whose cause was not seen
	}
	r.told = told
}

// pmsignalOrderMatters: whether PostgreSQL takes the death for a crash if
// the waiting pmsignal was handled before this reaping pass, and not if
// it comes after. The kernel tells the order from where the postmaster
// takes the SIGCHLD, except when it takes it busy (neither asleep nor in
// its wait): then the pmsignal may be handled just before this pass or
// just after it.
func (r *run) pmsignalOrderMatters(c verdict.Child) bool {
	after, before := r.state, r.state
	before.RedoStarted(r.redoPending)
	return after.Reap(c, 0).Crash != before.Reap(c, 0).Crash
}

// arbitrate decides the undecided crash by what the postmaster does next,
// in its own context and so in order in the ring buffer: a crash it acts
// on is followed at once by its SIGQUIT (or SIGABRT) to every child
// (HandleChildCrash: the pmsignal had ended FatalError first), an ignored
// one by its next waitpid (FatalError still held: the pass came first).
func (a *Agent) arbitrate(r *run, fanOut bool) {
	d := r.undecided
	if d == nil {
		return
	}
	r.undecided = nil
	if fanOut {
		a.pmsignalFirst(r)
	}
	a.reap(r, d, r.undecidedAt)
}

// pmsignalFirst applies the waiting pmsignal before the reaping pass.
func (a *Agent) pmsignalFirst(r *run) {
	r.state.RedoStarted(r.redoPending)
	r.redoPending = 0
}

// onPMSignal: the postmaster takes its startup process's pmsignal, which
// from PostgreSQL 15 ends FatalError. Up to 15 its handler does that now;
// from 16 its main loop does it after the reaping pass it also has pending
// (pending_pm_child_exit is handled before pending_pm_pmsignal).
func (a *Agent) onPMSignal(ev *event.Event) {
	pm := a.cfg.Table.Postmaster(ev.Parent.Key())
	if pm == nil {
		return
	}
	r := a.run(pm)
	a.arbitrate(r, false)
	r.fannedOut = nil
	if ev.Flags&event.ZombiesPending != 0 && verdict.RuleFor(pm.Major).PMSignalAfterReaping {
		r.redoPending = ev.Task.Start
		return
	}
	r.state.RedoStarted(ev.Task.Start)
}

// onReapedAll: a reaping pass of the postmaster ended.
func (a *Agent) onReapedAll(ev *event.Event) {
	pm := a.cfg.Table.Postmaster(ev.Parent.Key())
	if pm == nil {
		return
	}
	r := a.run(pm)
	a.arbitrate(r, false)
	r.fannedOut = nil
	if r.redoPending != 0 {
		a.pmsignalFirst(r)
	}
}

// reap applies a death to the postmaster's state as its reaper does at
// (boot ns), and reports it when it matters (a clean one was reported when
// it died).
func (a *Agent) reap(r *run, d *death, at uint64) {
	reaped := r.state.Reap(d.child(), at)
	if verdict.Crashes(d.ev.Status) {
		a.report1(r, d, reaped)
	}
	if reaped.RecoveryEnded {
		a.recovered(r, at, d.ev.Time)
	}
}

// report1 reports one death as the postmaster took it, and follows the
// reset it begins.
func (a *Agent) report1(r *run, d *death, reaped verdict.Reaped) {
	dec := verdict.OnDeath(verdict.DeathFacts{Adoptee: d.adoptee, OOMKilled: d.oom, Reaped: reaped}, d.ev.Status)
	if reaped.Crash {
		r.culprit, r.told = trigger(d, dec.Verdict), nil
	}
	if dec.Flagged || a.cfg.All || reaped.Crash {
		a.cfg.Table.Describe(r.pm)
		r.state.Major = r.pm.Major
		rec := a.build(&d.ev, report.Facts{Decision: dec, Postmaster: r.pm, Process: d.proc, Logged: reaped.Logged,
			CrashRestart: reaped.Crash && r.state.Shutdown == verdict.NoShutdown, Shutdown: r.state.Shutdown})
		a.addOrigin(&rec, &d.ev, d.proc, r.pm)
		if reaped.Crash {
			r.culprit.Origin, r.culprit.Fix = rec.Origin, rec.Fix
		}
		if dec.Flagged || a.cfg.All {
			a.emit(&rec)
		}
	}
}

// trigger names the death that began a reset.
func trigger(d *death, v verdict.Verdict) *report.Trigger {
	t := &report.Trigger{PID: d.ev.Task.PID, NSPid: d.ev.Task.NSPid, Comm: d.ev.Task.Comm.String(), Verdict: string(v),
		Fix: verdict.Describe(v).Fix}
	if d.oom {
		t.Verdict = string(verdict.OOMKill)
	}
	if d.ev.Status.Signaled() {
		t.Signal = event.SignalName(d.ev.Status.Signal())
	}
	return t
}

// recovered: the startup process, which exited at exited (boot ns), ended
// crash recovery when reaped at at: PostgreSQL really crash-restarted.
func (a *Agent) recovered(r *run, at, exited uint64) {
	// The kernel is told the exit, not the reap: a child that crashes in
	// between is reaped after it, a new crash to PostgreSQL, and the
	// kernel's own reset for it (begun at that child's exit) must stay on,
	// or it would no longer note the pmsignal or the clean exits that end it.
	if err := a.cfg.Kernel.EndReset(r.pm.Key, exited); err != nil {
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
		a.arbitrate(r, true)
		if r.fannedOut == nil {
			r.fannedOut = &fanOut{before: r.state, culprit: r.culprit, told: r.told, at: ev.Time}
		}
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

// settle decides the deaths that waited for their reap longer than wait
// (all of them for 0: the agent is stopping), in the order they died: a
// reap event was lost, or the postmaster has not reaped them yet.
func (a *Agent) settle(wait time.Duration) {
	now := a.cfg.Now()
	for _, r := range a.runs {
		// No event followed the undecided crash (lost, or the postmaster
		// stopped): the pass is taken to have come first.
		if r.undecided != nil && (wait == 0 || now >= r.undecidedAt+uint64(undecidedWait)) {
			a.arbitrate(r, false)
		}
		var late []*death
		for nsPid, d := range r.dying {
			if wait == 0 || now >= d.ev.Time+uint64(wait) {
				delete(r.dying, nsPid)
				late = append(late, d)
			}
		}
		slices.SortFunc(late, func(x, y *death) int { return cmp.Compare(x.ev.Time, y.ev.Time) })
		for _, d := range late {
			if wait > 0 {
				a.reapsMissed.Add(1)
			}
			a.reap(r, d, d.ev.Time)
		}
	}
}

// joinedBy says how a child joined its postmaster: the kernel's birth
// record when there is one (adopted when the parent now is not the parent
// at birth), else the table's knowledge from /proc.
func joinedBy(ev *event.Event, proc *lineage.Process) verdict.Origin {
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
