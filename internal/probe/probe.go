// Package probe owns orphanwatch's BPF objects: it loads and attaches them,
// reads the ring buffer, decodes records into event.Event values, and tells
// the kernel which processes are postmasters. Close detaches everything.
package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/procfs"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

// Config sizes the probe. Zero values take the defaults.
type Config struct {
	StreamAll       bool   // send every process exit to user space, not only what can matter
	MaxProcesses    uint32 // birth records of live processes kept in the kernel (LRU beyond)
	RingBufferBytes uint32 // ring buffer size: a power of two, at least a page
	MaxChildren     uint32 // orphans reported per exiting thread, at most MaxChildrenBound
	KernelBTF       string // BTF file for this kernel; default /sys/kernel/btf/vmlinux
	// AttachAll keeps every program attached, as StreamAll does, instead of
	// attaching those that only matter to a postmaster while one is watched.
	AttachAll bool
	// ExitLive loads the exit program kernels before 6.16 need
	// (handle_exit_live) whatever this kernel offers: tests run it here.
	ExitLive bool
	// Refuse lists programs not to load, as a kernel without them would: used
	// to test that a missing kernel feature fails cleanly.
	Refuse []string
}

const (
	DefaultMaxProcesses    = 16384
	DefaultRingBufferBytes = 1 << 20
	DefaultMaxChildren     = 64
	MaxChildrenBound       = 256 // MAX_CHILDREN_BOUND in bpf/lifecycle.bpf.c: its loop's bound
	defaultKernelBTF       = "/sys/kernel/btf/vmlinux"
	maxWakeupBytes         = 64 << 10
)

// ErrBadOption is wrapped by Load's errors for a Config value out of range.
var ErrBadOption = errors.New("invalid probe option")

// RingBufferSizeOK reports whether a BPF ring buffer can be n bytes: a
// power of two, at least a page.
func RingBufferSizeOK(n uint64) bool {
	return n >= uint64(os.Getpagesize()) && n&(n-1) == 0
}

// validate rejects sizes the kernel programs cannot honour.
func (c *Config) validate() error {
	if n := c.RingBufferBytes; !RingBufferSizeOK(uint64(n)) {
		return fmt.Errorf("%w: ring buffer size %d: must be a power of two and at least %d bytes (one page)",
			ErrBadOption, n, os.Getpagesize())
	}
	if c.MaxChildren > MaxChildrenBound {
		return fmt.Errorf("%w: max children %d: at most %d orphans per exiting parent can be reported",
			ErrBadOption, c.MaxChildren, MaxChildrenBound)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.MaxProcesses == 0 {
		c.MaxProcesses = DefaultMaxProcesses
	}
	if c.RingBufferBytes == 0 {
		c.RingBufferBytes = DefaultRingBufferBytes
	}
	if c.MaxChildren == 0 {
		c.MaxChildren = DefaultMaxChildren
	}
	if c.KernelBTF == "" {
		c.KernelBTF = defaultKernelBTF
	}
}

// Attachment is one program and its kernel hook.
type Attachment struct {
	Program string // BPF program name, as bpftool lists it
	Hook    string // e.g. tp_btf/sched_process_exit
	// OnDemand: attached only while a postmaster is watched (and always
	// with StreamAll or AttachAll); Idle: only while none is (never with
	// StreamAll or AttachAll); the others stay attached.
	OnDemand, Idle bool
	Attached       bool // now
}

// hook is a loaded program, attached or not.
type hook struct {
	Attachment
	prog *ebpf.Program
	link link.Link
}

// lifecycleLoaded is the lifecycle object as loaded: one exit program, the
// one that fits this kernel's sched_process_exit, under the name handle_exit.
type lifecycleLoaded struct {
	lifecycleMaps
	lifecycleVariables
	HandleFork *ebpf.Program `ebpf:"handle_fork"`
	HandleExec *ebpf.Program `ebpf:"handle_exec"`
	// HandleExecIdle replaces HandleExec while nothing is watched.
	HandleExecIdle *ebpf.Program `ebpf:"handle_exec_idle"`
	HandleExit     *ebpf.Program `ebpf:"handle_exit"`
	HandleWait     *ebpf.Program `ebpf:"handle_wait"`
}

func (o *lifecycleLoaded) Close() error {
	return _LifecycleClose(o.HandleFork, o.HandleExec, o.HandleExecIdle, o.HandleExit, o.HandleWait, &o.lifecycleMaps)
}

// Probe is the loaded and attached set of programs.
type Probe struct {
	lifecycle   lifecycleLoaded
	signals     signalsObjects
	oom         oomObjects
	hooks       []*hook
	unavailable []string // what this kernel cannot trace, one sentence each
	// onDemand: the hooks marked so attach while watched is not empty.
	onDemand  bool
	mu        sync.Mutex          // guards hooks' links, watched and switches
	watched   map[uint32]struct{} // postmasters the kernel is told about, by pid
	switches  uint64              // times the on-demand hooks were attached or detached
	reader    *ringbuf.Reader
	clock     Clock
	pageSize  uint64
	batched   bool          // the kernel batches wakeups (StreamAll): poll for stragglers
	malformed atomic.Uint64 // records that could not be decoded
	// The host's task tallies at Load, and the most exits Counters has said.
	tasksAtLoad procfs.Tasks
	exits       atomic.Uint64
}

// Load checks the kernel, loads the programs and attaches them. On error
// nothing stays loaded or attached.
func Load(cfg Config) (_ *Probe, err error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &Probe{pageSize: uint64(os.Getpagesize()), batched: cfg.StreamAll,
		onDemand: !cfg.StreamAll && !cfg.AttachAll, watched: make(map[uint32]struct{})}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()

	kernelTypes, err := loadKernelBTF(cfg.KernelBTF)
	if err != nil {
		return nil, err
	}
	if err := checkKernel(); err != nil {
		return nil, err
	}
	if p.tasksAtLoad, err = procfs.Default.ReadTasks(); err != nil {
		return nil, fmt.Errorf("reading the host's task counts: %w", err)
	}
	p.clock, err = NewClock()
	if err != nil {
		return nil, err
	}

	lifecycle, err := loadLifecycle()
	if err != nil {
		return nil, fmt.Errorf("reading embedded lifecycle object: %w", err)
	}
	cfg.size(lifecycle)
	exitProg := chooseExitProgram(lifecycle, kernelTypes, cfg.ExitLive)
	if err := setVariables(lifecycle, map[string]any{
		lifecycleVarMaxChildren: cfg.MaxChildren,
		lifecycleVarWakeupBytes: min(maxWakeupBytes, cfg.RingBufferBytes/2),
	}, lifecycleImmediates(cfg.StreamAll)); err != nil {
		return nil, err
	}
	opts := &ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: kernelTypes}}
	if err := loadRefusing(lifecycle, &p.lifecycle, opts, cfg.Refuse); err != nil {
		return nil, classify("loading the lifecycle programs", err)
	}

	// The other objects use the lifecycle object's maps, not their own copies.
	opts.MapReplacements = map[string]*ebpf.Map{
		lifecycleMapEvents:    p.lifecycle.Events,
		lifecycleMapBirths:    p.lifecycle.Births,
		lifecycleMapExecs:     p.lifecycle.Execs,
		lifecycleMapWatched:   p.lifecycle.Watched,
		lifecycleMapSignals:   p.lifecycle.Signals,
		lifecycleMapCounters:  p.lifecycle.Counters,
		lifecycleMapDeaths:    p.lifecycle.Deaths,
		lifecycleMapResetEnds: p.lifecycle.ResetEnds,
		lifecycleMapZombies:   p.lifecycle.Zombies,
	}
	signals, err := loadSignals()
	if err != nil {
		return nil, fmt.Errorf("reading embedded signals object: %w", err)
	}
	cfg.size(signals)
	if err := setRules(signals, serverCommImmediates()); err != nil {
		return nil, err
	}
	if err := loadRefusing(signals, &p.signals, opts, cfg.Refuse); err != nil {
		return nil, classify("loading the signal programs", err)
	}
	// Only an exec program is needed to find a postmaster, and while none
	// is watched the one that only compares comms; the rest only matter
	// while one is watched (Watch attaches them), so a node without one pays
	// for nothing but that compare on exec.
	p.hooks = []*hook{
		{Attachment: Attachment{Program: "handle_exec_idle", Hook: "tp_btf/sched_process_exec", Idle: true}, prog: p.lifecycle.HandleExecIdle},
		{Attachment: Attachment{Program: "handle_fork", Hook: "tp_btf/sched_process_fork", OnDemand: true}, prog: p.lifecycle.HandleFork},
		{Attachment: Attachment{Program: "handle_exec", Hook: "tp_btf/sched_process_exec", OnDemand: true}, prog: p.lifecycle.HandleExec},
		{Attachment: Attachment{Program: exitProg, Hook: "tp_btf/sched_process_exit", OnDemand: true}, prog: p.lifecycle.HandleExit},
		{Attachment: Attachment{Program: "handle_wait", Hook: "tp_btf/sched_process_wait", OnDemand: true}, prog: p.lifecycle.HandleWait},
		{Attachment: Attachment{Program: "handle_signal_generate", Hook: "tp_btf/signal_generate", OnDemand: true}, prog: p.signals.HandleSignalGenerate},
		{Attachment: Attachment{Program: "handle_signal_deliver", Hook: "tp_btf/signal_deliver", OnDemand: true}, prog: p.signals.HandleSignalDeliver},
	}

	if args, ok := tracepointArgs(kernelTypes, "mark_victim"); !markVictimPassesTask(args) {
		why := "OOM kills are not traced: this kernel has no oom:mark_victim tracepoint"
		if ok {
			why = "OOM kills are not traced: this kernel's oom:mark_victim passes only a pid (later kernels, 6.9 on, pass the task)"
		}
		p.unavailable = append(p.unavailable, why)
	} else {
		oom, err := loadOom()
		if err != nil {
			return nil, fmt.Errorf("reading embedded oom object: %w", err)
		}
		cfg.size(oom)
		if err := loadRefusing(oom, &p.oom, opts, cfg.Refuse); err != nil {
			return nil, classify("loading the OOM programs", err)
		}
		p.hooks = append(p.hooks, &hook{Attachment: Attachment{Program: "handle_mark_victim", Hook: "tp_btf/mark_victim", OnDemand: true}, prog: p.oom.HandleMarkVictim})
	}

	if err := p.attach(!p.onDemand); err != nil {
		return nil, err
	}
	p.reader, err = ringbuf.NewReader(p.lifecycle.Events)
	if err != nil {
		return nil, classify("opening the ring buffer", err)
	}
	// Relocating against the kernel's types decoded megabytes of BTF that
	// nothing needs any more: give that memory back now, not at the next GC.
	debug.FreeOSMemory()
	return p, nil
}

// setVariables sets a collection's constants, and PostgreSQL's rules.
func setVariables(spec *ebpf.CollectionSpec, values map[string]any, immediates map[uint64]uint64) error {
	for name, value := range values {
		if err := spec.Variables[name].Set(value); err != nil {
			return fmt.Errorf("setting %s: %w", name, err)
		}
	}
	return setRules(spec, immediates)
}

// setRules hands the programs PostgreSQL's rules from internal/verdict: the
// exit code from which a child's exit is a crash, and the comms of the
// server binaries, as bpf/postgres.h compares them: immediates, with the
// object's own.
func setRules(spec *ebpf.CollectionSpec, immediates map[uint64]uint64) error {
	if err := setImmediates(spec, immediates); err != nil {
		return err
	}
	if err := spec.Variables[lifecycleVarCrashExitCode].Set(uint32(verdict.CrashExitCode)); err != nil {
		return fmt.Errorf("setting the crash exit code: %w", err)
	}
	return nil
}

// serverComms are the patterns of verdict.ServerBinaries.
func serverComms() []serverComm {
	comms := make([]serverComm, len(verdict.ServerBinaries))
	for i, name := range verdict.ServerBinaries {
		comms[i] = commPattern(name)
	}
	return comms
}

// commPattern is the serverComm of a binary's name.
func commPattern(name string) serverComm {
	var comm [16]byte
	n := copy(comm[:15], name)             // the kernel keeps 15 bytes and a NUL
	nul := max(n, 8) - 8                   // where the name's NUL is in the second word
	mask := uint64(1)<<(8*uint(nul+1)) - 1 // a shift by 64 is 0: all ones for nul 7
	return serverComm{
		Head:     binary.LittleEndian.Uint64(comm[:8]),
		Tail:     binary.LittleEndian.Uint64(comm[8:]) & mask,
		TailMask: mask,
	}
}

// size applies the configured sizes to the shared maps a collection
// declares: a map handed to another collection must match its spec there.
func (c *Config) size(spec *ebpf.CollectionSpec) {
	for name, entries := range map[string]uint32{
		lifecycleMapEvents: c.RingBufferBytes,
		lifecycleMapBirths: c.MaxProcesses,
		lifecycleMapExecs:  c.MaxProcesses,
	} {
		if m, ok := spec.Maps[name]; ok {
			m.MaxEntries = entries
		}
	}
}

// loadRefusing loads a collection into objs, failing the way a kernel
// without the program would when its name is in refuse.
func loadRefusing(spec *ebpf.CollectionSpec, objs any, opts *ebpf.CollectionOptions, refuse []string) error {
	for _, name := range refuse {
		if _, ok := spec.Programs[name]; ok {
			return fmt.Errorf("program %s refused on request (ORPHANWATCH_REFUSE_PROGRAM): %w", name, ebpf.ErrNotSupported)
		}
	}
	return spec.LoadAndAssign(objs, opts)
}

// chooseExitProgram keeps the exit program that fits the kernel's
// sched_process_exit (or handle_exit_live when live is set), under the name
// handle_exit, drops the other from spec, and returns the kept program's
// own name.
func chooseExitProgram(spec *ebpf.CollectionSpec, kernelTypes *btf.Spec, live bool) string {
	if args, _ := tracepointArgs(kernelTypes, "sched_process_exit"); exitPassesGroupDead(args) && !live {
		delete(spec.Programs, lifecycleProgHandleExitLive)
		return lifecycleProgHandleExit
	}
	spec.Programs[lifecycleProgHandleExit] = spec.Programs[lifecycleProgHandleExitLive]
	delete(spec.Programs, lifecycleProgHandleExitLive)
	return lifecycleProgHandleExitLive
}

// loadKernelBTF reads the kernel's type information, which CO-RE needs to
// relocate field offsets for this kernel.
func loadKernelBTF(path string) (*btf.Spec, error) {
	load := btf.LoadSpec
	if path == defaultKernelBTF {
		// Maps the kernel's BTF and decodes types lazily: far less memory.
		load = func(string) (*btf.Spec, error) { return btf.LoadKernelSpec() }
	}
	spec, err := load(path)
	if err == nil {
		return spec, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, &Error{ProblemNoBTF, fmt.Sprintf("no kernel BTF at %s: orphanwatch needs a kernel built with "+
			"CONFIG_DEBUG_INFO_BTF=y (most distributions since 2020), or --kernel-btf pointing at a BTF file "+
			"for kernel %s (BTFHub has them)", path, kernelRelease()), err}
	}
	if errors.Is(err, os.ErrPermission) {
		return nil, &Error{ProblemPermission, capabilityAdvice, err}
	}
	return nil, &Error{ProblemNoBTF, fmt.Sprintf("cannot read kernel BTF from %s", path), err}
}

// checkKernel fails early, with a reason, on kernels that cannot run the
// programs, and lifts RLIMIT_MEMLOCK where the kernel still charges BPF
// memory to it (before 5.11).
func checkKernel() error {
	if err := rlimit.RemoveMemlock(); err != nil {
		// An unprivileged user fails here on any kernel: only before 5.11
		// is the limit itself the problem.
		if errors.Is(err, unix.EPERM) && kernelBefore(5, 11) {
			return &Error{ProblemPermission, "this kernel (" + kernelRelease() + ") is older than 5.11 and charges BPF " +
				"memory to RLIMIT_MEMLOCK, which orphanwatch could not raise: run with CAP_SYS_RESOURCE, or " +
				"`ulimit -l unlimited` first", err}
		}
		return classify("raising RLIMIT_MEMLOCK", err)
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		return classify("creating a BPF ring buffer (Linux 5.8+)", err)
	}
	return nil
}

// wanted reports whether a hook is to be attached when demand says whether
// a postmaster is watched (always true with StreamAll or AttachAll).
func (h *hook) wanted(demand bool) bool {
	switch {
	case h.OnDemand:
		return demand
	case h.Idle:
		return !demand
	}
	return true
}

// attach makes the hooks attached those wanted with demand: it attaches
// the missing ones, then detaches the others. Attaching first leaves no
// exec unseen while the exec programs trade places; a postgres exec both
// see is reported twice, and the agent watches a postmaster once. The fork
// program goes before the rest, so that a process born once they run has
// its birth record; then, if a program that reads births came in, the
// kernel is told the time, before which a missing birth record is no
// eviction.
func (p *Probe) attach(demand bool) error {
	recording := false
	for _, h := range p.hooks {
		if h.link != nil || !h.wanted(demand) {
			continue
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: h.prog})
		if err != nil {
			return classify("attaching "+h.Hook, err)
		}
		h.link, h.Attached = l, true
		recording = recording || !h.Idle
	}
	if recording {
		if err := p.lifecycle.AttachedAtNs.Set(p.clock.BootNow()); err != nil {
			return fmt.Errorf("setting the attach time: %w", err)
		}
	}
	var first error
	for _, h := range p.hooks {
		if h.link == nil || h.wanted(demand) {
			continue
		}
		if err := h.link.Close(); err != nil && first == nil {
			first = fmt.Errorf("detaching %s: %w", h.Hook, err)
		}
		h.link, h.Attached = nil, false
	}
	return first
}

// Programs lists every loaded program, its hook and whether it is
// attached now.
func (p *Probe) Programs() []Attachment {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Attachment, len(p.hooks))
	for i, h := range p.hooks {
		out[i] = h.Attachment
	}
	return out
}

// Attached lists the programs attached now.
func (p *Probe) Attached() []Attachment {
	var out []Attachment
	for _, a := range p.Programs() {
		if a.Attached {
			out = append(out, a)
		}
	}
	return out
}

// AttachSummary says in a line which programs are attached and why.
func (p *Probe) AttachSummary() string {
	var now, later []string
	idle := false
	for _, a := range p.Programs() {
		switch {
		case a.Attached:
			now = append(now, a.Hook)
			idle = idle || a.Idle
		case a.OnDemand:
			later = append(later, a.Hook)
		}
	}
	// A hook whose idle program runs now gets its full one then: said apart.
	later = slices.DeleteFunc(later, func(hook string) bool { return slices.Contains(now, hook) })
	p.mu.Lock()
	watched := len(p.watched)
	p.mu.Unlock()
	attached := "attached to " + strings.Join(now, ", ")
	switch {
	case !p.onDemand:
		return attached + " (all of them, always: --all)"
	case !idle:
		return fmt.Sprintf("%s (all of them: %d postmaster(s) watched; when none is left, all detach but an exec program that only compares comms)", attached, watched)
	default:
		return fmt.Sprintf("%s (no postmaster on this node: an exec program that only compares comms; %s and the full exec program attach when one starts)", attached, strings.Join(later, ", "))
	}
}

// OnDemand reports whether the programs that only matter to a postmaster
// attach only while one is watched (not with StreamAll or AttachAll).
func (p *Probe) OnDemand() bool { return p.onDemand }

// Switches counts the times the on-demand programs were attached or
// detached.
func (p *Probe) Switches() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.switches
}

// Unavailable says, one sentence each, what this kernel cannot trace though
// the probe loaded: e.g. OOM kills on kernels before 6.9.
func (p *Probe) Unavailable() []string { return p.unavailable }

// Clock converts the kernel's boot-clock timestamps.
func (p *Probe) Clock() Clock { return p.clock }

// Read calls handle with each event until ctx ends or the probe is closed,
// and idle (if not nil) each time the ring buffer has been drained of the
// records it handed on. The event is reused: handle must copy what it
// keeps. Records that cannot be decoded are counted (Malformed) and skipped.
func (p *Probe) Read(ctx context.Context, handle func(*event.Event), idle func()) error {
	// Flush, not Close, interrupts the reader: it takes no lock, and the
	// ring stays mapped for the AvailableBytes call that may follow a read.
	stop := context.AfterFunc(ctx, func() { p.reader.Flush() })
	defer stop()
	var rec ringbuf.Record
	var ev event.Event
	handled := false // records handed on since the last drain
	drained := func() {
		if handled && idle != nil {
			idle()
		}
		handled = false
		// The deadline only matters while the reader waits, which it does
		// only once the ring buffer is empty.
		if p.batched {
			p.reader.SetDeadline(time.Now().Add(batchPoll))
		}
	}
	drained()
	done := ctx.Done()
	for {
		select {
		case <-done: // also under a storm that never lets the ring empty
			return ctx.Err()
		default:
		}
		if err := p.reader.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ringbuf.ErrFlushed) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				drained()
				continue
			}
			if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return ctx.Err()
			}
			return fmt.Errorf("reading the ring buffer: %w", err)
		}
		p.consume(rec.RawSample, &ev, handle)
		handled = true
		if p.reader.AvailableBytes() == 0 {
			drained()
		}
	}
}

// batchPoll bounds how long an event waits in the ring buffer when the
// kernel batches wakeups (StreamAll).
const batchPoll = 4 * time.Millisecond

// consume decodes one record into ev and hands it on; a record that cannot
// be decoded is counted and skipped.
func (p *Probe) consume(raw []byte, ev *event.Event, handle func(*event.Event)) {
	if err := Decode(raw, p.pageSize, ev); err != nil {
		p.malformed.Add(1)
		return
	}
	handle(ev)
}

// Malformed counts records Read skipped because they could not be decoded.
func (p *Probe) Malformed() uint64 { return p.malformed.Load() }

// Watch tells the kernel that a process is a postmaster: the exits of its
// children that matter are then reported, and signals it sends. The first
// one watched attaches the on-demand programs.
func (p *Probe) Watch(key event.ProcessKey) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	// A reset's end left by an earlier process of that pid must not end
	// this one's first reset.
	if err := p.lifecycle.ResetEnds.Delete(key.PID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("watching postmaster %d: %w", key.PID, err)
	}
	if err := p.lifecycle.Watched.Put(key.PID, lifecycleWatch{StartTicks: key.StartTicks}); err != nil {
		return fmt.Errorf("watching postmaster %d: %w", key.PID, err)
	}
	p.watched[key.PID] = struct{}{}
	if err := p.lifecycle.Watching.Set(uint32(len(p.watched))); err != nil {
		return fmt.Errorf("watching postmaster %d: %w", key.PID, err)
	}
	if p.onDemand && len(p.watched) == 1 {
		p.switches++
		if err := p.attach(true); err != nil {
			delete(p.watched, key.PID)
			p.lifecycle.Watched.Delete(key.PID)
			p.lifecycle.Watching.Set(uint32(len(p.watched))) // a .bss variable: cannot fail once loaded
			return fmt.Errorf("watching postmaster %d: %w", key.PID, err)
		}
	}
	return nil
}

// EndReset tells the kernel that a postmaster's crash recovery ended at
// (boot ns): its children's clean exits stop being reported. The kernel
// flags a reset itself when a crash happens, so a flag it set after at, for
// a new crash, is kept.
func (p *Probe) EndReset(key event.ProcessKey, at uint64) error {
	// A map of its own: rewriting the watch would undo what the programs
	// wrote to it meanwhile (a new reset, zombies noticed).
	if err := p.lifecycle.ResetEnds.Put(key.PID, at); err != nil {
		return fmt.Errorf("ending postmaster %d's reset: %w", key.PID, err)
	}
	return nil
}

// forgetZombies deletes the zombies noted for a postmaster that is gone:
// no wait of its will report them.
func (p *Probe) forgetZombies(pm uint32) {
	var (
		key   lifecycleProcKey
		z     lifecycleZombie
		stale []lifecycleProcKey
	)
	for it := p.lifecycle.Zombies.Iterate(); it.Next(&key, &z); {
		if z.PmTgid == pm {
			stale = append(stale, key)
		}
	}
	for _, k := range stale {
		p.lifecycle.Zombies.Delete(k) // gone already: nothing to do
	}
}

// Unwatch forgets a postmaster that exited. The last one gone detaches the
// on-demand programs.
func (p *Probe) Unwatch(pid uint32) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lifecycle.ResetEnds.Delete(pid) // nothing to do if absent
	p.forgetZombies(pid)
	err := p.lifecycle.Watched.Delete(pid)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unwatching postmaster %d: %w", pid, err)
	}
	_, was := p.watched[pid]
	delete(p.watched, pid)
	if err := p.lifecycle.Watching.Set(uint32(len(p.watched))); err != nil {
		return fmt.Errorf("unwatching postmaster %d: %w", pid, err)
	}
	if p.onDemand && was && len(p.watched) == 0 {
		p.switches++
		return p.attach(false)
	}
	return nil
}

// Close detaches every program and frees the maps. It returns the first error.
func (p *Probe) Close() error {
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	if p.reader != nil {
		keep(p.reader.Close())
	}
	p.mu.Lock()
	for _, h := range p.hooks {
		if h.link != nil {
			keep(h.link.Close())
			h.link, h.Attached = nil, false
		}
	}
	p.mu.Unlock()
	keep(p.oom.Close())
	keep(p.signals.Close())
	keep(p.lifecycle.Close())
	return first
}
