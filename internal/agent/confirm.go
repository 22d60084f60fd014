package agent

import (
	"sync"
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
// its process group, then SIGKILL to those still alive after 5 s. An
// immediate shutdown looks the same, except the postmaster was sent SIGQUIT
// (pg_ctl stop -m immediate) just before.
const (
	// fanOutWindow: the fan-out must start this soon after the trigger.
	fanOutWindow = 10 * time.Second
	// settle: the fan-out is counted this long after its first signal; the
	// postmaster signals all children in one loop.
	settle = time.Second
	// shutdownWindow: a signal to the postmaster this recent makes a fan-out
	// a shutdown, not a crash-restart.
	shutdownWindow = 30 * time.Second
)

// confirmer turns a postmaster's fan-out into a crash-restart-confirmed
// record, naming the trigger when it saw one.
type confirmer struct {
	agent *Agent
	mu    sync.Mutex
	state map[event.ProcessKey]*fanOut
}

type fanOut struct {
	pm        *lineage.Postmaster
	trigger   *report.Trigger
	triggerAt uint64 // boot ns
	signaled  uint64 // boot ns of the last shutdown signal sent to the postmaster
	targets   map[uint32]bool
	first     uint64
	timer     *time.Timer
	// told: children the postmaster sent SIGQUIT/SIGABRT, by pid -> boot ns,
	// kept past the count so their deaths are known for consequences.
	told map[uint32]uint64
}

func newConfirmer(a *Agent) *confirmer {
	return &confirmer{agent: a, state: make(map[event.ProcessKey]*fanOut)}
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
	c.mu.Lock()
	defer c.mu.Unlock()
	signal := ""
	if ev.Kind == event.KindOOM {
		signal = "SIGKILL"
	} else if ev.Status.Signaled() {
		signal = event.SignalName(ev.Status.Signal())
	}
	f := c.get(pm)
	if f.trigger != nil && ev.Time-f.triggerAt < uint64(fanOutWindow) {
		return // the first death is the one PostgreSQL reacts to
	}
	f.trigger = &report.Trigger{PID: ev.Task.PID, NSPid: ev.Task.NSPid, Comm: ev.Task.Comm.String(), Verdict: string(v), Signal: signal}
	f.triggerAt = ev.Time
}

// told reports whether pm told the process pid to quit (crash handling or
// immediate shutdown) in the last minute: its death is a consequence. This
// holds even when a later signal it handled replaced the SIGQUIT in the
// kernel's per-process record.
func (c *confirmer) told(pm *lineage.Postmaster, pid uint32, now uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.state[pm.Key]
	if f == nil {
		return false
	}
	at, ok := f.told[pid]
	return ok && now-at < uint64(time.Minute)
}

// observe takes a signal event (sent by or to a postmaster).
func (c *confirmer) observe(ev *event.Event) {
	table := c.agent.cfg.Table
	sig := unix.Signal(ev.Signal.Signo)
	c.mu.Lock()
	defer c.mu.Unlock()
	if pm := table.Postmaster(ev.Task.Key()); pm != nil {
		// Sent to the postmaster: pg_ctl stop (TERM smart, INT fast, QUIT immediate).
		if sig == unix.SIGQUIT || sig == unix.SIGTERM || sig == unix.SIGINT || sig == unix.SIGKILL {
			c.get(pm).signaled = ev.Time
		}
		return
	}
	pm := table.Postmaster(ev.Parent.Key())
	if pm == nil || (sig != unix.SIGQUIT && sig != unix.SIGABRT) {
		return
	}
	f := c.get(pm)
	if f.told == nil {
		f.told = make(map[uint32]uint64)
	}
	for pid, at := range f.told {
		if ev.Time-at > uint64(time.Minute) {
			delete(f.told, pid)
		}
	}
	f.told[ev.Task.PID] = ev.Time
	if f.signaled != 0 && ev.Time-f.signaled < uint64(shutdownWindow) {
		return // an immediate shutdown, not a crash
	}
	if f.timer == nil {
		f.first = ev.Time
		f.targets = make(map[uint32]bool)
		f.timer = time.AfterFunc(settle, func() { c.finish(pm.Key) })
	}
	f.targets[ev.Task.PID] = true
}

func (c *confirmer) finish(key event.ProcessKey) {
	c.mu.Lock()
	f := c.state[key]
	if f == nil {
		c.mu.Unlock()
		return
	}
	// Start over for the next crash, keeping who was told to quit.
	c.state[key] = &fanOut{pm: f.pm, signaled: f.signaled, told: f.told}
	trigger := f.trigger
	if trigger != nil && (f.first < f.triggerAt || f.first-f.triggerAt > uint64(fanOutWindow)) {
		trigger = nil // that death was not what PostgreSQL reacted to
	}
	c.mu.Unlock()

	c.agent.cfg.Table.Describe(f.pm)
	r := report.Confirmed(f.pm, trigger, len(f.targets), c.agent.cfg.Wall(f.first))
	if names := c.agent.cfg.Names; names != nil {
		n := names.Names(f.pm.Container)
		r.Namespace, r.Pod, r.Container = n.Namespace, n.Pod, n.Container
	}
	c.agent.emit(&r)
	c.agent.flush()
}

// forget drops the state of a postmaster that exited.
func (c *confirmer) forget(key event.ProcessKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.state[key]; f != nil && f.timer != nil {
		f.timer.Stop()
	}
	delete(c.state, key)
}
