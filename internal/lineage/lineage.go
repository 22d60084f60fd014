// Package lineage is orphanwatch's process table: the postmasters on the
// host, and the processes whose story matters (children of postmasters,
// orphans and who adopted them). The kernel's birth records cover processes
// born after attach; this table covers the ones that were already running,
// from /proc, and remembers what /proc could still tell about an orphan
// when a postmaster adopted it. It is bounded: past its size a random entry
// is evicted and counted.
package lineage

import (
	"errors"
	"io/fs"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/orphanwatch/orphanwatch/internal/container"
	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/procfs"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

// Process is what the table knows about a live process.
type Process struct {
	Key   event.ProcessKey
	NSPid uint32
	PPID  uint32 // parent when last seen
	Comm  string
	Exe   string
	Argv  []string // unredacted: redact before output
	// Origin says whether its current parent forked or adopted it.
	Origin verdict.Origin
	// Adoption, when Origin is OriginAdopted and it was seen happening.
	AdoptedAt      uint64 // boot clock ns; 0 when adopted before orphanwatch started
	PreviousParent event.Ancestor
	// PreviousExec is what the parent that died ran, as the kernel kept it
	// (HasPreviousExec): where the orphan came from.
	PreviousExec *event.Exec
	OOMKilled    bool // the OOM killer chose it
}

// Postmaster is a running PostgreSQL postmaster.
type Postmaster struct {
	Key       event.ProcessKey
	NSPid     uint32
	PidNS     uint64
	Exe       string
	Argv      []string
	DataDir   string // from its working directory, else -D
	Major     int    // from PG_VERSION; 0 until readable
	Container container.Ref
	// ExecAt is when it exec'd the server (boot ns); 0 when not seen (it
	// ran before orphanwatch started).
	ExecAt uint64
}

// PID1 reports whether it is PID 1 of its namespace, adopting every orphan there.
func (p *Postmaster) PID1() bool { return p.NSPid == 1 }

// Table is safe for concurrent use: the event loop writes, the exporter and
// the sweeper read. Pointers from Postmaster, Lookup and NoteAdoption are for
// the event loop, the only writer; Postmasters and Adopted return copies for
// everyone else.
type Table struct {
	mu          sync.Mutex
	fs          procfs.FS
	procs       map[event.ProcessKey]*Process
	postmasters map[uint32]*Postmaster // by host pid; Key.StartTicks guards against reuse
	max         int
	evicted     uint64
}

// New makes a table holding at most max processes besides postmasters.
func New(fs procfs.FS, max int) *Table {
	return &Table{
		fs:          fs,
		procs:       make(map[event.ProcessKey]*Process),
		postmasters: make(map[uint32]*Postmaster),
		max:         max,
	}
}

// Evicted counts processes dropped because the table was full.
func (t *Table) Evicted() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.evicted
}

// Len is the number of processes held (postmasters not included).
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.procs)
}

func (t *Table) put(p *Process) {
	if _, ok := t.procs[p.Key]; !ok && len(t.procs) >= t.max {
		for k := range t.procs { // map order is random: a random victim
			delete(t.procs, k)
			t.evicted++
			break
		}
	}
	t.procs[p.Key] = p
}

// Postmasters lists copies of the known postmasters.
func (t *Table) Postmasters() []*Postmaster {
	t.mu.Lock()
	defer t.mu.Unlock()
	list := make([]*Postmaster, 0, len(t.postmasters))
	for _, pm := range t.postmasters {
		c := *pm
		list = append(list, &c)
	}
	slices.SortFunc(list, func(a, b *Postmaster) int { return int(a.Key.PID) - int(b.Key.PID) })
	return list
}

// Postmaster returns the postmaster with that pid and start, or nil.
func (t *Table) Postmaster(key event.ProcessKey) *Postmaster {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.postmaster(key)
}

func (t *Table) postmaster(key event.ProcessKey) *Postmaster {
	if pm := t.postmasters[key.PID]; pm != nil && pm.Key == key {
		return pm
	}
	return nil
}

// Adopted lists copies of the live orphans whose parent is a postmaster.
func (t *Table) Adopted() []*Process {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*Process
	for _, p := range t.procs {
		if p.Origin == verdict.OriginAdopted && t.postmasters[p.PPID] != nil {
			c := *p
			out = append(out, &c)
		}
	}
	slices.SortFunc(out, func(a, b *Process) int { return int(a.Key.PID) - int(b.Key.PID) })
	return out
}

// Lookup returns what is known about a process, or nil. Allocates nothing.
func (t *Table) Lookup(key event.ProcessKey) *Process {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.procs[key]
}

// Remove forgets a process that exited and returns what was known. When it
// was a postmaster, that is returned too (and forgotten).
func (t *Table) Remove(key event.ProcessKey) (*Process, *Postmaster) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.procs[key]
	if p != nil {
		delete(t.procs, key)
	}
	pm := t.postmaster(key)
	if pm != nil {
		delete(t.postmasters, key.PID)
	}
	return p, pm
}

// NoteAdoption records that an orphan was handed to a new parent and
// returns what is known about it. Only a postmaster's adoptees are kept
// (and /proc read at once for what they run, while it is still there):
// they are what the table is for, and they must not be evicted to make
// room for the orphans of every daemon on the host.
func (t *Table) NoteAdoption(ev *event.Event) *Process {
	key := ev.Task.Key()
	t.mu.Lock()
	p := t.procs[key]
	if p == nil {
		p = &Process{Key: key}
	}
	p.NSPid, p.PPID, p.Comm = ev.Task.NSPid, ev.Parent.PID, ev.Task.Comm.String()
	p.Origin = verdict.OriginAdopted
	p.AdoptedAt = ev.Time
	p.PreviousParent = event.Ancestor{PID: ev.Previous.PID, Comm: ev.Previous.Comm}
	if ev.Flags&event.HasPreviousExec != 0 {
		x := ev.PreviousExec
		p.PreviousExec = &x
	}
	adopter := t.postmaster(ev.Parent.Key())
	if adopter != nil {
		t.put(p)
	} else {
		delete(t.procs, key) // adopted away from a postmaster: no longer ours
	}
	t.mu.Unlock()

	if adopter != nil && ev.Task.Flags&event.TaskZombie == 0 {
		t.readCommand(p)
	}
	return p
}

// readCommand fills Exe and Argv from /proc, if the process still exists and
// is the same one.
func (t *Table) readCommand(p *Process) {
	pid := int(p.Key.PID)
	st, err := t.fs.ReadStat(pid)
	if err != nil || st.StartTicks != p.Key.StartTicks {
		return
	}
	exe, _ := t.fs.Exe(pid)
	argv, _ := t.fs.Cmdline(pid)
	t.mu.Lock()
	defer t.mu.Unlock()
	p.Exe, p.Argv = exe, argv
}

// NoteOOMVictim marks a process the OOM killer chose.
func (t *Table) NoteOOMVictim(key event.ProcessKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.procs[key]; p != nil {
		p.OOMKilled = true
		return
	}
	t.put(&Process{Key: key, OOMKilled: true})
}

// ErrNotPostmaster means the process runs a server binary in another role.
var ErrNotPostmaster = errors.New("not a postmaster")

// AddPostmaster learns a postmaster from /proc, given its pid. It reads its
// namespace pid, command, data directory and version; pass ppidIsServer when
// the caller already knows (from /proc or the kernel) whether its parent is
// a server process.
func (t *Table) AddPostmaster(pid int, ppidIsServer bool) (*Postmaster, error) {
	st, err := t.fs.ReadStat(pid)
	if err != nil {
		return nil, err
	}
	exe, err := t.fs.Exe(pid)
	if err != nil {
		return nil, err
	}
	argv, _ := t.fs.Cmdline(pid)
	if !verdict.IsServerBinary(exe, st.Comm) || !verdict.IsPostmaster(argv, ppidIsServer) {
		return nil, ErrNotPostmaster
	}
	status, err := t.fs.ReadStatus(pid)
	if err != nil {
		return nil, err
	}
	pm := &Postmaster{
		Key:   event.ProcessKey{PID: uint32(pid), StartTicks: st.StartTicks},
		NSPid: uint32(status.NSPid()),
		Exe:   exe,
		Argv:  argv,
	}
	pm.PidNS, _ = t.fs.PidNamespace(pid)
	if cgroups, err := t.fs.Cgroups(pid); err == nil {
		pm.Container = container.FromCgroups(cgroups)
	}
	t.describe(pm)
	t.mu.Lock()
	t.postmasters[pm.Key.PID] = pm
	t.mu.Unlock()
	return pm, nil
}

// Describe rereads a postmaster's data directory and version (it changes
// into its data directory only once it has started).
func (t *Table) Describe(pm *Postmaster) {
	if pm.Major != 0 {
		return
	}
	t.describe(pm)
}

func (t *Table) describe(pm *Postmaster) {
	pid := int(pm.Key.PID)
	dir := dataDirArg(pm.Argv)
	if cwd, err := t.fs.Cwd(pid); err == nil && cwd != "/" {
		if _, err := t.fs.ReadFileIn(pid, "postmaster.pid"); err == nil {
			dir = cwd
		}
	}
	var major int
	if v, err := t.fs.ReadFileIn(pid, "PG_VERSION"); err == nil {
		major, _ = strconv.Atoi(strings.TrimSpace(string(v)))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if dir != "" {
		pm.DataDir = dir
	}
	pm.Major = major
}

// dataDirArg finds the data directory in a postmaster's argv: -D dir, -Ddir,
// or the data_directory setting as -c data_directory=dir, -cdata_directory=dir
// or --data-directory=dir (postgres turns a long option's dashes into
// underscores and takes any setting that way).
func dataDirArg(argv []string) string {
	for i, a := range argv {
		next := ""
		if i+1 < len(argv) {
			next = argv[i+1]
		}
		switch {
		case a == "-D":
			return next
		case strings.HasPrefix(a, "-D"):
			return a[2:]
		case a == "-c" && isDataDirSetting(next):
			return settingValue(next)
		case strings.HasPrefix(a, "-c") && isDataDirSetting(a[2:]):
			return settingValue(a[2:])
		case strings.HasPrefix(a, "--") && isDataDirSetting(a[2:]):
			return settingValue(a[2:])
		}
	}
	return ""
}

func isDataDirSetting(s string) bool {
	name, _, ok := strings.Cut(s, "=")
	return ok && strings.ReplaceAll(name, "-", "_") == "data_directory"
}

func settingValue(s string) string {
	_, v, _ := strings.Cut(s, "=")
	return v
}

// Seed learns from /proc the postmasters running now and their children:
// server processes they forked, and orphans they adopted (children that do
// not run the server binary). It returns the postmasters found.
func (t *Table) Seed() ([]*Postmaster, error) {
	stats, err := t.fs.Stats()
	if err != nil {
		return nil, err
	}
	found, err := t.discover(stats)
	if err != nil {
		return nil, err
	}
	for pid, st := range stats {
		if pm := t.Postmaster(event.ProcessKey{PID: uint32(st.PPID), StartTicks: stats[st.PPID].StartTicks}); pm != nil {
			t.learnChild(pm, pid, st)
		}
	}
	return found, nil
}

// LearnChildren learns from /proc the children a postmaster has as it is
// found starting: helpers its entrypoint started before it exec'd the
// server, which it inherits without forking them.
func (t *Table) LearnChildren(pm *Postmaster) {
	pids, err := t.fs.Children(int(pm.Key.PID))
	if err != nil {
		return
	}
	for _, pid := range pids {
		if st, err := t.fs.ReadStat(pid); err == nil {
			t.learnChild(pm, pid, st)
		}
	}
}

// learnChild adds a child of a postmaster known only from /proc: a server
// process it forked (same binary, no exec), or one it did not fork.
func (t *Table) learnChild(pm *Postmaster, pid int, st procfs.Stat) {
	p := &Process{Key: event.ProcessKey{PID: uint32(pid), StartTicks: st.StartTicks}, PPID: pm.Key.PID, Comm: st.Comm}
	var err error
	if p.Exe, err = t.fs.Exe(pid); err != nil {
		return // gone, or unreadable: its origin stays unknown
	}
	if p.Exe == pm.Exe {
		p.Origin = verdict.OriginForked
	} else {
		p.Origin = verdict.OriginAdopted
		p.Argv, _ = t.fs.Cmdline(pid)
		if status, err := t.fs.ReadStatus(pid); err == nil {
			p.NSPid = uint32(status.NSPid())
		}
	}
	t.mu.Lock()
	t.put(p)
	t.mu.Unlock()
}

// Discover finds postmasters running now that the table does not know: a
// lost start event, or a start /proc could not tell about then.
func (t *Table) Discover() ([]*Postmaster, error) {
	stats, err := t.fs.Stats()
	if err != nil {
		return nil, err
	}
	return t.discover(stats)
}

// discover adds the postmasters in stats the table does not know yet, and
// returns them by pid.
func (t *Table) discover(stats map[int]procfs.Stat) ([]*Postmaster, error) {
	isServer := func(pid int) bool {
		st, ok := stats[pid]
		if !ok || !verdict.IsServerBinary("", st.Comm) {
			return false
		}
		exe, err := t.fs.Exe(pid)
		return err == nil && verdict.IsServerBinary(exe, st.Comm)
	}
	var found []*Postmaster
	for pid, st := range stats {
		// Only read exe where comm says postgres: keeps a scan cheap.
		if !verdict.IsServerBinary("", st.Comm) || t.Postmaster(event.ProcessKey{PID: uint32(pid), StartTicks: st.StartTicks}) != nil {
			continue
		}
		pm, err := t.AddPostmaster(pid, isServer(st.PPID))
		if errors.Is(err, ErrNotPostmaster) || errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		found = append(found, pm)
	}
	slices.SortFunc(found, func(a, b *Postmaster) int { return int(a.Key.PID) - int(b.Key.PID) })
	return found, nil
}

// Forget drops a postmaster the kernel could not be told about, so that
// the next Discover finds it again.
func (t *Table) Forget(pm *Postmaster) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.postmasters[pm.Key.PID] == pm {
		delete(t.postmasters, pm.Key.PID)
	}
}

// OOMProtected reports whether the OOM killer spares the postmaster
// (oom_score_adj -1000), even in a group kill of its cgroup.
func (t *Table) OOMProtected(pm *Postmaster) bool {
	adj, err := t.fs.OOMScoreAdj(int(pm.Key.PID))
	return err == nil && adj == -1000
}

// Sweep forgets processes and postmasters that are gone without their exit
// being reported (the kernel only reports exits that can matter, and a full
// ring buffer drops events). It returns how many processes, and the
// postmasters, so that the caller stops watching them. A process /proc
// cannot read for another reason (EMFILE, EACCES) is kept.
func (t *Table) Sweep() (processes int, postmasters []*Postmaster) {
	t.mu.Lock()
	keys := slices.Collect(maps.Keys(t.procs))
	pms := slices.Collect(maps.Values(t.postmasters))
	t.mu.Unlock()
	for _, k := range keys {
		if t.gone(k) {
			t.mu.Lock()
			delete(t.procs, k)
			t.mu.Unlock()
			processes++
		}
	}
	for _, pm := range pms {
		if t.gone(pm.Key) {
			t.mu.Lock()
			if t.postmasters[pm.Key.PID] == pm {
				delete(t.postmasters, pm.Key.PID)
				postmasters = append(postmasters, pm)
			}
			t.mu.Unlock()
		}
	}
	return processes, postmasters
}

// gone reports whether /proc says the process no longer exists.
func (t *Table) gone(k event.ProcessKey) bool {
	st, err := t.fs.ReadStat(int(k.PID))
	return errors.Is(err, fs.ErrNotExist) || (err == nil && st.StartTicks != k.StartTicks)
}
