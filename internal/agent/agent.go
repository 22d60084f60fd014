// Package agent runs the pipeline shared by `trace` and `serve`: events
// from the probe update the lineage table and each postmaster's state (as
// its reaper sees it), get a verdict, and the ones worth reporting are built
// into records for the sinks (table, JSON, metrics).
package agent

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/container"
	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/lineage"
	"github.com/orphanwatch/orphanwatch/internal/procfs"
	"github.com/orphanwatch/orphanwatch/internal/redact"
	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

// Kernel is what the agent asks of the probe besides events.
type Kernel interface {
	Watch(event.ProcessKey) error // a postmaster appeared
	Unwatch(pid uint32) error     // it exited
	// EndReset tells the kernel a postmaster's crash recovery ended at
	// (boot ns): its children's clean exits stop mattering, unless it
	// crashed again since.
	EndReset(key event.ProcessKey, at uint64) error
}

// Sink receives every reported record, in order, one at a time (under the
// agent's lock).
type Sink interface {
	Write(*report.Record) error
}

// Config wires an agent.
type Config struct {
	Kernel Kernel
	// Lost reads the kernel's count of lost events (may be nil): when it
	// grows, the agent looks for postmasters whose start it missed.
	Lost  func() uint64
	Table *lineage.Table
	Proc  procfs.FS
	Wall  func(bootNS uint64) time.Time
	Now   func() uint64 // boot clock, ns
	Sinks []Sink
	All   bool // report every event, not only flagged ones
	Log   *slog.Logger
	// Names adds container and pod names to records (Docker, Kubernetes); may be nil.
	Names container.Namer
}

// sweepEvery is how often the table is checked against /proc: processes
// whose exits were not reported are forgotten, and postmasters whose start
// was missed are found.
const sweepEvery = time.Minute

// Agent is the pipeline. Handle runs on the reader goroutine, the sweep on
// a timer: mu makes them take turns, so the sinks and the postmasters'
// states see one thing at a time. Stats and the table may be read from
// other goroutines.
type Agent struct {
	cfg          Config
	mu           sync.Mutex
	stopped      bool     // Run returned: late timers write nothing
	unflushed    bool     // a record was written since the sinks were last flushed
	byVerdict    sync.Map // verdict.Verdict -> *atomic.Uint64, reported records
	byKind       [16]atomic.Uint64
	mispredicted atomic.Uint64
	sinkErrors   atomic.Uint64
	rediscovered atomic.Uint64
	unexplained  atomic.Uint64
	// reapsMissed: deaths decided without seeing the postmaster reap them.
	reapsMissed atomic.Uint64
	// reapsMisordered: reaps the kernel named one waitpid too early.
	reapsMisordered atomic.Uint64
	lostSeen        uint64 // the kernel's lost count when last looked at (reader goroutine)
	resweep         chan struct{}
	runs            map[event.ProcessKey]*run // per postmaster, under mu
}

// New makes an agent.
func New(cfg Config) *Agent {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Agent{cfg: cfg, resweep: make(chan struct{}, 1), runs: make(map[event.ProcessKey]*run)}
}

// Start learns the postmasters already running and tells the kernel about
// them.
func (a *Agent) Start() ([]*lineage.Postmaster, error) {
	found, err := a.cfg.Table.Seed()
	if err != nil {
		return nil, err
	}
	for _, pm := range found {
		if err := a.cfg.Kernel.Watch(pm.Key); err != nil {
			return nil, err
		}
	}
	return found, nil
}

// ReportRunning reports the postmasters found at start that are PID 1 of
// their namespace (and, with All, the others).
func (a *Agent) ReportRunning(postmasters []*lineage.Postmaster) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reportRunning(postmasters)
	a.flush()
}

func (a *Agent) reportRunning(postmasters []*lineage.Postmaster) {
	for _, pm := range postmasters {
		d := verdict.OnPostmasterStart(pm.NSPid)
		if !d.Flagged && !a.cfg.All {
			continue
		}
		ev := event.Event{Time: a.cfg.Now(), Kind: event.KindExec}
		ev.Task = event.Task{PID: pm.Key.PID, NSPid: pm.NSPid, PidNS: pm.PidNS, Start: pm.Key.StartTicks * (1e9 / event.TicksPerSecond)}
		copy(ev.Task.Comm[:], "postgres")
		r := a.build(&ev, report.Facts{Decision: d, Postmaster: pm, Container: pm.Container})
		r.Kind = "running" // seen running, not seen starting
		r.Exe, r.Cmdline = pm.Exe, redact.Argv(pm.Argv)
		a.emit(&r)
	}
}

// Run reads events until ctx ends, sweeping the table now and then (and
// soon after the kernel loses events). read is the probe's Read. Before it
// returns, deaths still waiting for their reaping are decided and every
// record is flushed.
func (a *Agent) Run(ctx context.Context, read func(context.Context, func(*event.Event), func()) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		tick := time.NewTicker(sweepEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			case <-a.resweep:
			}
			a.sweep()
		}
	}()
	err := read(ctx, a.Handle, a.idle)
	a.locked(func() {
		a.settle(0)
		a.flush()
		a.stopped = true
	})
	return err
}

// idle runs when the kernel has nothing more for now: records are flushed,
// and a sweep is asked for when events were lost (a postmaster's start may
// have been among them).
func (a *Agent) idle() {
	a.locked(a.flush)
	if a.cfg.Lost == nil {
		return
	}
	if lost := a.cfg.Lost(); lost != a.lostSeen {
		a.lostSeen = lost
		select {
		case a.resweep <- struct{}{}:
		default:
		}
	}
}

// locked runs fn under the agent's lock, unless Run has returned.
func (a *Agent) locked(fn func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.stopped {
		fn()
	}
}

// sweep forgets processes and postmasters that are gone without their exit
// being reported (the kernel reports only exits that can matter, and a full
// ring buffer drops some), watches postmasters whose start was not seen, and
// decides deaths whose reaping was not seen.
func (a *Agent) sweep() {
	procs, gone := a.cfg.Table.Sweep()
	found, err := a.cfg.Table.Discover()
	if err != nil {
		a.cfg.Log.Warn("looking for postmasters in /proc", "err", err)
	}
	a.locked(func() {
		for _, pm := range gone {
			a.dropPostmaster(pm)
		}
		for _, pm := range found {
			a.rediscovered.Add(1)
			a.cfg.Log.Warn("found a postmaster whose start was not seen (events lost?): watching it now", "pid", pm.Key.PID)
			a.watch(pm)
		}
		a.reportRunning(found)
		a.settle(reapWait)
		a.flush()
	})
	if procs+len(gone) > 0 {
		a.cfg.Log.Debug("swept processes gone unreported", "processes", procs, "postmasters", len(gone))
	}
}

// watch tells the kernel about a postmaster; a failure is retried at the
// next sweep, which finds it unwatched.
func (a *Agent) watch(pm *lineage.Postmaster) {
	if err := a.cfg.Kernel.Watch(pm.Key); err != nil {
		a.cfg.Log.Warn("watching postmaster: retried at the next sweep", "pid", pm.Key.PID, "err", err)
		a.cfg.Table.Forget(pm)
	}
}

// dropPostmaster stops watching a postmaster that is gone (under the lock).
func (a *Agent) dropPostmaster(pm *lineage.Postmaster) {
	if err := a.cfg.Kernel.Unwatch(pm.Key.PID); err != nil {
		a.cfg.Log.Warn("unwatching postmaster", "pid", pm.Key.PID, "err", err)
	}
	if r := a.runs[pm.Key]; r != nil {
		a.arbitrate(r, false) // nothing of it follows now
	}
	delete(a.runs, pm.Key)
}

// flusher is a sink that buffers.
type flusher interface{ Flush() error }

// flush writes out what buffering sinks hold (under the lock).
func (a *Agent) flush() {
	if !a.unflushed {
		return
	}
	a.unflushed = false
	for _, s := range a.cfg.Sinks {
		if f, ok := s.(flusher); ok {
			if err := f.Flush(); err != nil {
				a.sinkErrors.Add(1)
				a.cfg.Log.Warn("flushing records", "err", err)
			}
		}
	}
}

// Handle processes one event. For an ordinary exit (no postmaster involved)
// it allocates nothing.
func (a *Agent) Handle(ev *event.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.byKind[ev.Kind&15].Add(1)
	switch ev.Kind {
	case event.KindExit:
		a.onExit(ev)
	case event.KindAdoption:
		a.onAdoption(ev)
	case event.KindExec:
		a.onExec(ev)
	case event.KindOOM:
		a.onOOM(ev)
	case event.KindSignal:
		a.onSignal(ev)
	case event.KindReap:
		a.onReap(ev)
	case event.KindReapedAll:
		a.onReapedAll(ev)
	case event.KindPMSignal:
		a.onPMSignal(ev)
	}
}

func (a *Agent) onExec(ev *event.Event) {
	if !verdict.IsServerBinary(ev.Birth.ExePath(), ev.Task.Comm.String()) {
		return
	}
	// Both exec programs see an exec while they trade places (the probe
	// attaches one before it detaches the other): the second is no news.
	if a.cfg.Table.Postmaster(ev.Task.Key()) != nil {
		return
	}
	parentExe, _ := a.cfg.Proc.Exe(int(ev.Parent.PID))
	parentIsServer := verdict.IsServerBinary(parentExe, ev.Parent.Comm.String())
	pm, err := a.cfg.Table.AddPostmaster(int(ev.Task.PID), parentIsServer)
	if errors.Is(err, lineage.ErrNotPostmaster) || errors.Is(err, fs.ErrNotExist) {
		return // a run-once mode, or already gone
	}
	if err != nil {
		a.cfg.Log.Warn("a postmaster started but /proc could not tell about it: looked for again at the next sweep", "pid", ev.Task.PID, "err", err)
		return
	}
	pm.ExecAt = ev.Time
	a.watch(pm)
	a.cfg.Table.LearnChildren(pm)
	d := verdict.OnPostmasterStart(pm.NSPid)
	if d.Flagged || a.cfg.All {
		a.report(ev, report.Facts{Decision: d, Postmaster: pm})
	}
}

func (a *Agent) onOOM(ev *event.Event) {
	key := ev.Task.Key()
	f := verdict.OOMFacts{Role: verdict.RoleOther, GroupKill: ev.OOM.Flags&event.OOMGroup != 0}
	pm := a.cfg.Table.Postmaster(key)
	if pm != nil {
		f.Role = verdict.RolePostmaster
	} else if pm = a.cfg.Table.Postmaster(ev.Parent.Key()); pm != nil {
		f.Role = verdict.RoleServer
		if verdict.IsAdoptee(joinedBy(ev, a.cfg.Table.Lookup(key)), verdict.IsServerBinary(ev.Birth.ExePath(), ev.Task.Comm.String())) {
			f.Role = verdict.RoleAdopted
		}
		if f.GroupKill {
			f.PostmasterProtected, f.PostmasterShares = a.cfg.Table.OOMProtected(pm), sameCgroup(ev, pm)
		}
	}
	d, crash := verdict.OnOOM(f)
	if f.Role == verdict.RoleServer || f.Role == verdict.RoleAdopted {
		a.cfg.Table.NoteOOMVictim(key) // its SIGKILL exit is this incident, not another
	}
	if d.Flagged || a.cfg.All {
		if pm != nil {
			a.cfg.Table.Describe(pm)
		}
		a.report(ev, report.Facts{Decision: d, Postmaster: pm, Process: a.cfg.Table.Lookup(key), CrashRestart: crash, OOM: f})
	}
}

// sameCgroup reports whether the victim's cgroup is the postmaster's
// container: a group OOM kill takes that whole cgroup.
func sameCgroup(ev *event.Event, pm *lineage.Postmaster) bool {
	victim := container.FromNames(ev.Cgroup.Names())
	return victim.IsZero() || victim == pm.Container
}

func (a *Agent) report(ev *event.Event, f report.Facts) {
	r := a.build(ev, f)
	a.addOrigin(&r, ev, f.Process, f.Postmaster)
	a.emit(&r)
}

func (a *Agent) build(ev *event.Event, f report.Facts) report.Record {
	f.Wall = a.cfg.Wall
	r := report.Build(ev, f)
	a.addNames(&r)
	return r
}

// addNames adds the container's and pod's names, when a namer knows them.
func (a *Agent) addNames(r *report.Record) {
	if a.cfg.Names != nil {
		names := a.cfg.Names.Names(container.Ref{ID: r.ContainerID, PodUID: r.PodUID})
		r.Namespace, r.Pod, r.Container = names.Namespace, names.Pod, names.Container
	}
}

func (a *Agent) emit(r *report.Record) {
	a.counter(verdict.Verdict(r.Verdict)).Add(1)
	a.unflushed = true
	for _, s := range a.cfg.Sinks {
		if err := s.Write(r); err != nil {
			a.sinkErrors.Add(1)
			a.cfg.Log.Warn("writing a record", "verdict", r.Verdict, "err", err)
		}
	}
}

func (a *Agent) counter(v verdict.Verdict) *atomic.Uint64 {
	if c, ok := a.byVerdict.Load(v); ok {
		return c.(*atomic.Uint64)
	}
	c, _ := a.byVerdict.LoadOrStore(v, new(atomic.Uint64))
	return c.(*atomic.Uint64)
}

// Stats is a snapshot of what the agent has seen.
type Stats struct {
	Reported     map[verdict.Verdict]uint64 // records handed to the sinks, by verdict
	Events       map[event.Kind]uint64      // events handled, by kind
	Mispredicted uint64                     // adoptions where the orphan died under another parent than predicted
	SinkErrors   uint64                     // records a sink failed to write
	// Rediscovered: postmasters found by a sweep, their start not seen.
	Rediscovered uint64
	// Unexplained: crash-restarts PostgreSQL performed whose culprit was not seen.
	Unexplained uint64
	// ReapsMissed: deaths decided without seeing the postmaster reap them
	// (an event lost): in the order they died, which may not be its.
	ReapsMissed uint64
	// ReapsMisordered: reaps the kernel reported at a waitpid that reaped
	// another child (one became a zombie as the call began): those two
	// deaths were decided in the wrong order, which matters only when the
	// postmaster decides them differently in the other.
	ReapsMisordered uint64
}

func (a *Agent) Stats() Stats {
	s := Stats{Reported: map[verdict.Verdict]uint64{}, Events: map[event.Kind]uint64{}}
	a.byVerdict.Range(func(k, v any) bool {
		s.Reported[k.(verdict.Verdict)] = v.(*atomic.Uint64).Load()
		return true
	})
	for _, k := range event.Kinds {
		s.Events[k] = a.byKind[k].Load()
	}
	s.Mispredicted = a.mispredicted.Load()
	s.SinkErrors = a.sinkErrors.Load()
	s.Rediscovered = a.rediscovered.Load()
	s.Unexplained = a.unexplained.Load()
	s.ReapsMissed = a.reapsMissed.Load()
	s.ReapsMisordered = a.reapsMisordered.Load()
	return s
}
