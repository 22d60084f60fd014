package agent

import (
	"time"

	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/lineage"
	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
	"golang.org/x/sys/unix"
)

// How a crash-restart looks from the kernel (postmaster.c HandleChildCrash,
// PostgreSQL 12-18): the postmaster, itself unsignalled, sends SIGQUIT
// (SIGABRT with send_abort_for_crash, 16+) to every child, to its pid and to
// its process group, then SIGKILL to those still alive after 5 s, and once
// they are all gone forks a new startup process. An immediate shutdown fans
// out the same way, but the postmaster was sent SIGQUIT (pg_ctl stop -m
// immediate) first; with restart_after_crash = off it exits instead of
// forking. So a fan-out is confirmed only when the postmaster, not asked to
// shut down, forks again afterwards.
const (
	// fanOutWindow: the fan-out must start this soon after the trigger.
	fanOutWindow = 10 * time.Second
	// settle: the fan-out is counted this long after its first signal; the
	// postmaster signals all children in one loop.
	settle = time.Second
	// recheck: how often to look again for the postmaster's new child.
	recheck = 500 * time.Millisecond
	// giveUp: how long after the fan-out a restart may take to show: the
	// SIGKILL to recalcitrant children comes after 5 s.
	giveUp = 12 * time.Second
	// toldFor: how long a child told to quit counts as a consequence.
	toldFor = time.Minute
)

// confirmer turns a postmaster's fan-out into a crash-restart-confirmed
// record, naming the trigger when it saw one. It runs under the agent's
// lock: on the event loop, and on its own timers.
type confirmer struct {
	agent                   *Agent
	settle, recheck, giveUp time.Duration // the constants above; tests shorten them
	state                   map[event.ProcessKey]*fanOut
}

type fanOut struct {
	pm        *lineage.Postmaster
	trigger   *report.Trigger
	triggerAt uint64 // boot ns
	// shutdown: the postmaster was asked to stop (SIGTERM, SIGINT, SIGQUIT,
	// SIGKILL). Whatever it does until it exits is not a crash-restart; on
	// PostgreSQL 12-14 a smart shutdown ends with a SIGQUIT to the stats
	// collector, possibly hours later.
	shutdown bool
	// targets: the postmaster's own children it told to quit, the server
	// processes; its signals to their process groups reach their children too.
	targets map[uint32]bool
	first   uint64 // boot ns of the fan-out's first signal
	timer   *time.Timer
	// told: children the postmaster sent SIGQUIT/SIGABRT, by pid -> boot ns,
	// kept past the count so their deaths are known for consequences.
	told map[uint32]uint64
}

func newConfirmer(a *Agent) *confirmer {
	return &confirmer{agent: a, settle: settle, recheck: recheck, giveUp: giveUp, state: make(map[event.ProcessKey]*fanOut)}
}

func (c *confirmer) get(pm *lineage.Postmaster) *fanOut {
	f := c.state[pm.Key]
	if f == nil {
		f = &fanOut{pm: pm}
		c.state[pm.Key] = f
	}
	return f
}

// expect records a death, reported with verdict v, that should make pm
// crash-restart.
func (c *confirmer) expect(pm *lineage.Postmaster, ev *event.Event, v verdict.Verdict) {
	signal := ""
	if ev.Kind == event.KindOOM {
		signal = "SIGKILL"
	} else if ev.Status.Signaled() {
		signal = event.SignalName(ev.Status.Signal())
	}
	f := c.get(pm)
	if f.trigger != nil && since(ev.Time, f.triggerAt) < fanOutWindow {
		return // the first death is the one PostgreSQL reacts to
	}
	f.trigger = &report.Trigger{PID: ev.Task.PID, NSPid: ev.Task.NSPid, Comm: ev.Task.Comm.String(), Verdict: string(v), Signal: signal}
	f.triggerAt = ev.Time
}

// since is how long after then now is; 0 when events arrive out of order.
func since(now, then uint64) time.Duration {
	if now < then {
		return 0
	}
	return time.Duration(now - then)
}

// told reports whether pm told the process pid to quit (crash handling or
// immediate shutdown) in the last minute: its death is a consequence. This
// holds even when a later signal it handled replaced the SIGQUIT in the
// kernel's per-process record.
func (c *confirmer) told(pm *lineage.Postmaster, pid uint32, now uint64) bool {
	f := c.state[pm.Key]
	if f == nil {
		return false
	}
	at, ok := f.told[pid]
	return ok && since(now, at) < toldFor
}

// observe takes a signal event (sent by or to a postmaster).
func (c *confirmer) observe(ev *event.Event) {
	table := c.agent.cfg.Table
	sig := unix.Signal(ev.Signal.Signo)
	if pm := table.Postmaster(ev.Task.Key()); pm != nil {
		// Sent to the postmaster: pg_ctl stop (TERM smart, INT fast, QUIT immediate).
		if sig == unix.SIGQUIT || sig == unix.SIGTERM || sig == unix.SIGINT || sig == unix.SIGKILL {
			f := c.get(pm)
			f.shutdown = true
			if f.timer != nil {
				f.timer.Stop()
				f.timer = nil
			}
		}
		return
	}
	pm := table.Postmaster(ev.Parent.Key()) // a signal event's Parent is its sender
	if pm == nil || (sig != unix.SIGQUIT && sig != unix.SIGABRT) {
		return
	}
	f := c.get(pm)
	if f.told == nil {
		f.told = make(map[uint32]uint64)
	}
	for pid, at := range f.told {
		if since(ev.Time, at) > toldFor {
			delete(f.told, pid)
		}
	}
	f.told[ev.Task.PID] = ev.Time
	if f.shutdown {
		return // a shutdown, not a crash
	}
	if f.timer == nil {
		f.first = ev.Time
		f.targets = make(map[uint32]bool)
		c.schedule(f, c.settle, time.Now().Add(c.giveUp))
	}
	if ev.Signal.Flags&event.SignalToChild != 0 {
		f.targets[ev.Task.PID] = true
	}
}

// schedule looks for the postmaster's restart after d. The look at /proc
// reads every process's stat: it runs before the agent's lock is taken, so
// events keep flowing meanwhile.
func (c *confirmer) schedule(f *fanOut, d time.Duration, deadline time.Time) {
	key, first := f.pm.Key, f.first
	f.timer = time.AfterFunc(d, func() {
		seen := c.restarted(key, first)
		c.agent.locked(func() { c.check(key, first, seen, deadline) })
	})
}

// check acts on what restarted saw: confirmed when the postmaster forked
// again, dropped when it is gone or the deadline passed.
func (c *confirmer) check(key event.ProcessKey, first uint64, seen restart, deadline time.Time) {
	f := c.state[key]
	if f == nil || f.timer == nil || f.first != first {
		return // forgotten, or a shutdown began meanwhile
	}
	switch seen {
	case restartSeen:
		c.finish(f)
	case restartPending:
		if time.Now().Before(deadline) {
			c.schedule(f, c.recheck, deadline)
			return
		}
		c.agent.cfg.Log.Info("postmaster fanned out SIGQUIT but did not restart", "pid", key.PID, "told", len(f.targets))
		c.reset(f)
	case restartNever:
		c.reset(f)
	}
}

type restart int

const (
	restartPending restart = iota
	restartSeen
	restartNever // the postmaster is gone (restart_after_crash = off, or killed)
)

// restarted asks /proc whether the postmaster, still the same process, has
// a child that started after the fan-out began at first (boot ns): its new
// startup process, or what that started.
func (c *confirmer) restarted(pm event.ProcessKey, first uint64) restart {
	stats, err := c.agent.cfg.Proc.Stats()
	if err != nil {
		return restartPending
	}
	pid := int(pm.PID)
	if st, ok := stats[pid]; !ok || st.StartTicks != pm.StartTicks {
		return restartNever
	}
	from := event.StartTicks(first) // /proc start times are whole ticks, rounded down
	for _, s := range stats {
		if s.PPID == pid && s.StartTicks >= from {
			return restartSeen
		}
	}
	return restartPending
}

// reset starts over for the next crash, keeping who was told to quit.
func (c *confirmer) reset(f *fanOut) {
	c.state[f.pm.Key] = &fanOut{pm: f.pm, shutdown: f.shutdown, told: f.told}
}

func (c *confirmer) finish(f *fanOut) {
	c.reset(f)
	trigger := f.trigger
	if trigger != nil && (f.first < f.triggerAt || since(f.first, f.triggerAt) > fanOutWindow) {
		trigger = nil // that death was not what PostgreSQL reacted to
	}
	c.agent.cfg.Table.Describe(f.pm)
	r := report.Confirmed(f.pm, trigger, len(f.targets), c.agent.cfg.Wall(f.first))
	c.agent.addNames(&r)
	c.agent.emit(&r)
	c.agent.flush()
}

// settleNow decides every fan-out still waiting, at once: the agent is
// stopping. A restart already visible is confirmed; others are dropped.
func (c *confirmer) settleNow() {
	for _, f := range c.state {
		if f.timer == nil || !f.timer.Stop() {
			continue
		}
		if c.restarted(f.pm.Key, f.first) == restartSeen {
			c.finish(f)
		}
	}
}

// forget drops the state of a postmaster that exited.
func (c *confirmer) forget(key event.ProcessKey) {
	if f := c.state[key]; f != nil && f.timer != nil {
		f.timer.Stop()
	}
	delete(c.state, key)
}
