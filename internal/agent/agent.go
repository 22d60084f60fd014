// Package agent runs the pipeline shared by `trace` and `serve`: events
// from the probe update the lineage table, get a verdict, and the ones worth
// reporting are built into records for the sinks (table, JSON, metrics).
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
	"golang.org/x/sys/unix"
)

// Kernel is what the agent asks of the probe besides events.
type Kernel interface {
	Watch(event.ProcessKey) error // a postmaster appeared
	Unwatch(pid uint32) error     // it exited
}

// Sink receives every reported record, in order, one at a time (under the
// agent's lock).
type Sink interface {
	Write(*report.Record) error
}

// Config wires an agent.
type Config struct {
	Kernel Kernel
	Table  *lineage.Table
	Proc   procfs.FS
	Wall   func(bootNS uint64) time.Time
	Now    func() uint64 // boot clock, ns
	Sinks  []Sink
	All    bool // report every event, not only flagged ones
	Log    *slog.Logger
	// Names adds container and pod names to records (Docker, Kubernetes); may be nil.
	Names container.Namer
}

// Agent is the pipeline. Handle runs on the reader goroutine, the
// confirmer's checks on timers: mu makes them take turns, so the sinks and
// the confirmer's state see one thing at a time. Stats and the table may be
// read from other goroutines.
type Agent struct {
	cfg          Config
	mu           sync.Mutex
	stopped      bool     // Run returned: late timers write nothing
	unflushed    bool     // a record was written since the sinks were last flushed
	byVerdict    sync.Map // verdict.Verdict -> *atomic.Uint64, reported records
	byKind       [8]atomic.Uint64
	mispredicted atomic.Uint64
	sinkErrors   atomic.Uint64
	confirm      *confirmer
}

// New makes an agent.
func New(cfg Config) *Agent {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{cfg: cfg}
	a.confirm = newConfirmer(a)
	return a
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
	for _, pm := range postmasters {
		d := verdict.OnPostmasterStart(pm.NSPid)
		if !d.Flagged && !a.cfg.All {
			continue
		}
		ev := event.Event{Time: a.cfg.Now(), Kind: event.KindExec}
		ev.Task = event.Task{PID: pm.Key.PID, NSPid: pm.NSPid, PidNS: pm.PidNS, Start: pm.Key.StartTicks * (1e9 / event.TicksPerSecond)}
		copy(ev.Task.Comm[:], "postgres")
		r := a.build(&ev, report.Facts{Decision: d, Postmaster: pm, Container: pm.Container})
		r.Kind = "running" // seen at start, not started now
		r.Exe, r.Cmdline = pm.Exe, redact.Argv(pm.Argv)
		a.emit(&r)
	}
	a.flush()
}

// Run reads events until ctx ends, sweeping the table now and then for
// processes whose exits were not reported. read is the probe's Read. Before
// it returns, crash-restarts still being confirmed are decided and every
// record is flushed.
func (a *Agent) Run(ctx context.Context, read func(context.Context, func(*event.Event), func()) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		tick := time.NewTicker(time.Minute)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				a.sweep()
			}
		}
	}()
	err := read(ctx, a.Handle, func() { a.locked(a.flush) })
	a.locked(func() {
		a.confirm.settleNow()
		a.flush()
		a.stopped = true
	})
	return err
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
// ring buffer drops some).
func (a *Agent) sweep() {
	procs, postmasters := a.cfg.Table.Sweep()
	a.locked(func() {
		for _, pm := range postmasters {
			a.dropPostmaster(pm)
		}
	})
	if procs+len(postmasters) > 0 {
		a.cfg.Log.Debug("swept processes gone unreported", "processes", procs, "postmasters", len(postmasters))
	}
}

// dropPostmaster stops watching a postmaster that is gone (under the lock).
func (a *Agent) dropPostmaster(pm *lineage.Postmaster) {
	if err := a.cfg.Kernel.Unwatch(pm.Key.PID); err != nil {
		a.cfg.Log.Warn("unwatching postmaster", "pid", pm.Key.PID, "err", err)
	}
	a.confirm.forget(pm.Key)
}

// flusher is a sink that buffers.
type flusher interface{ Flush() error }

// flush writes out what buffering sinks hold: called, under the lock, when
// the kernel has nothing more for now.
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
	a.byKind[ev.Kind&7].Add(1)
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
	}
}

func (a *Agent) onExit(ev *event.Event) {
	proc, self := a.cfg.Table.Remove(ev.Task.Key())
	if proc != nil && proc.Origin == verdict.OriginAdopted && proc.AdoptedAt != 0 && proc.PPID != ev.Parent.PID {
		a.mispredicted.Add(1) // the kernel-side prediction of the new parent was wrong
	}
	if self != nil {
		a.dropPostmaster(self)
		a.report(ev, report.Facts{Decision: verdict.OnExit(verdict.ExitFacts{Status: ev.Status, IsPostmaster: true}), Postmaster: self, Process: proc})
		return
	}
	pm := a.cfg.Table.Postmaster(ev.Parent.Key())
	if pm == nil {
		if a.cfg.All {
			a.report(ev, report.Facts{Decision: verdict.Decision{Verdict: verdict.Exit}, Process: proc})
		}
		return
	}
	facts := verdict.ExitFacts{
		Status:             ev.Status,
		ParentIsPostmaster: true,
		PostmasterMajor:    pm.Major,
		Origin:             origin(ev, proc),
		IsServerBinary:     verdict.IsServerBinary(ev.Birth.ExePath(), ev.Task.Comm.String()),
		KilledByPostmaster: killedBy(ev, pm) || a.confirm.told(pm, ev.Task.PID, ev.Time),
		OOMKilled:          proc != nil && proc.OOMKilled,
	}
	d := verdict.OnExit(facts)
	if d.Flagged || a.cfg.All {
		a.cfg.Table.Describe(pm)
		crash := d.Verdict == verdict.CrashRestart || d.Verdict == verdict.ServerCrash
		a.report(ev, report.Facts{Decision: d, Postmaster: pm, Process: proc, CrashRestart: crash})
		if crash {
			a.confirm.expect(pm, ev, d.Verdict)
		}
	}
}

// origin: the kernel's birth record when there is one (adopted when the
// parent now is not the parent at birth; the OOM program, unlike the exit
// program, sets no Adopted flag), else the table's knowledge from /proc.
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

// killedBy reports whether the signal that ended the process was sent by the
// postmaster shortly before: its shutdown or crash handling, not a cause.
func killedBy(ev *event.Event, pm *lineage.Postmaster) bool {
	if ev.Flags&event.HasSignal == 0 || ev.Signal.SenderPID != pm.Key.PID {
		return false
	}
	switch unix.Signal(ev.Signal.Signo) {
	case unix.SIGQUIT, unix.SIGABRT, unix.SIGKILL, unix.SIGTERM, unix.SIGINT, unix.SIGUSR2:
		return ev.Time-ev.Signal.Generated < uint64(time.Minute)
	}
	return false
}

func (a *Agent) onAdoption(ev *event.Event) {
	pm := a.cfg.Table.Postmaster(ev.Parent.Key())
	proc := a.cfg.Table.NoteAdoption(ev)
	f := verdict.AdoptionFacts{
		NewParentIsPostmaster:    pm != nil,
		NewParentIsContainerInit: ev.Parent.Flags&event.TaskSubreaper != 0 || (ev.Parent.Flags&event.TaskNSReaper != 0 && ev.Parent.NSLevel > 0),
		Zombie:                   ev.Task.Flags&event.TaskZombie != 0,
		Status:                   ev.Status,
	}
	if pm != nil {
		f.PostmasterMajor = pm.Major
	}
	d := verdict.OnAdoption(f)
	if d.Flagged || a.cfg.All {
		if pm != nil {
			a.cfg.Table.Describe(pm)
		}
		a.report(ev, report.Facts{Decision: d, Postmaster: pm, Process: proc, CrashRestart: d.Verdict == verdict.CrashRestart})
		if d.Verdict == verdict.CrashRestart {
			a.confirm.expect(pm, ev, d.Verdict)
		}
	}
}

func (a *Agent) onExec(ev *event.Event) {
	if !verdict.IsServerBinary(ev.Birth.ExePath(), ev.Task.Comm.String()) {
		return
	}
	parentExe, _ := a.cfg.Proc.Exe(int(ev.Parent.PID))
	parentIsServer := verdict.IsServerBinary(parentExe, ev.Parent.Comm.String())
	pm, err := a.cfg.Table.AddPostmaster(int(ev.Task.PID), parentIsServer)
	if errors.Is(err, lineage.ErrNotPostmaster) || errors.Is(err, fs.ErrNotExist) {
		return // a run-once mode, or already gone
	}
	if err != nil {
		a.cfg.Log.Warn("a postmaster started but /proc could not tell about it: it is not watched", "pid", ev.Task.PID, "err", err)
		return
	}
	if err := a.cfg.Kernel.Watch(pm.Key); err != nil {
		a.cfg.Log.Warn("watching postmaster", "pid", pm.Key.PID, "err", err)
	}
	d := verdict.OnPostmasterStart(pm.NSPid)
	if d.Flagged || a.cfg.All {
		a.report(ev, report.Facts{Decision: d, Postmaster: pm})
	}
}

func (a *Agent) onOOM(ev *event.Event) {
	key := ev.Task.Key()
	role, pm := verdict.RoleOther, a.cfg.Table.Postmaster(key)
	if pm != nil {
		role = verdict.RolePostmaster
	} else if pm = a.cfg.Table.Postmaster(ev.Parent.Key()); pm != nil {
		role = verdict.RoleServer
		o := origin(ev, a.cfg.Table.Lookup(key))
		if o == verdict.OriginAdopted || (o == verdict.OriginUnknown && !verdict.IsServerBinary(ev.Birth.ExePath(), ev.Task.Comm.String())) {
			role = verdict.RoleAdopted
		}
	}
	d, crash := verdict.OnOOM(role)
	if role == verdict.RoleServer || role == verdict.RoleAdopted {
		a.cfg.Table.NoteOOMVictim(key) // its SIGKILL exit is this incident, not another
	}
	if d.Flagged || a.cfg.All {
		if pm != nil {
			a.cfg.Table.Describe(pm)
		}
		a.report(ev, report.Facts{Decision: d, Postmaster: pm, Process: a.cfg.Table.Lookup(key), CrashRestart: crash, OOMRole: role})
		if crash {
			a.confirm.expect(pm, ev, d.Verdict)
		}
	}
}

func (a *Agent) onSignal(ev *event.Event) {
	a.confirm.observe(ev)
	if a.cfg.All {
		a.report(ev, report.Facts{Decision: verdict.Decision{Verdict: verdict.Signal}})
	}
}

func (a *Agent) report(ev *event.Event, f report.Facts) {
	r := a.build(ev, f)
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
	return s
}
