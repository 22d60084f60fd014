// Package audit answers "is my PostgreSQL protected, and is any hazard
// present right now?" from /proc and the cgroup tree, without BPF: for every
// running postmaster, whether it is PID 1 of its PID namespace (it adopts
// every orphan there) or what is PID 1 instead and whether that reaps every
// orphan, the sources of orphans its container's runtime runs in it (Docker
// HEALTHCHECKs, Kubernetes exec probes), its oom_score_adj against its
// server processes', the memory limit and memory.oom.group of its cgroup,
// the orphans it has adopted now, and the host's vm.overcommit_memory. The findings are plain values: `orphanwatch check`
// prints them and the exporter publishes them as gauges.
package audit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/container"
	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/lineage"
	"github.com/orphanwatch/orphanwatch/internal/procfs"
	"github.com/orphanwatch/orphanwatch/internal/redact"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

// Level is how serious a finding is, in order of severity.
type Level int

const (
	// OK: protected, nothing to do.
	OK Level = iota
	// Note: worth knowing, not a hazard on its own (the defaults, mostly).
	Note
	// Warn: a hazard present now, or a protection that does not work.
	Warn
	// Unknown: orphanwatch could not tell.
	Unknown
	// Fail: PostgreSQL will crash-restart when the next orphan dies badly.
	Fail
)

var levelNames = [...]string{OK: "ok", Note: "note", Warn: "warn", Unknown: "unknown", Fail: "fail"}

func (l Level) String() string {
	if l < OK || l > Fail {
		return fmt.Sprintf("level(%d)", int(l))
	}
	return levelNames[l]
}

func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

func (l *Level) UnmarshalText(b []byte) error {
	i := slices.Index(levelNames[:], string(b))
	if i < 0 {
		return fmt.Errorf("unknown level %q", b)
	}
	*l = Level(i)
	return nil
}

// ExitCode is the monitoring-plugin status: 0 ok (notes included), 1
// warning, 2 failure (critical), 3 unknown.
func (l Level) ExitCode() int {
	switch l {
	case OK, Note:
		return 0
	case Warn:
		return 1
	case Fail:
		return 2
	}
	return 3
}

// Check names what a finding is about.
type Check string

const (
	CheckDiscovery   Check = "discovery"         // finding the postmasters at all
	CheckPID1        Check = "pid1"              // PID 1 of its PID namespace
	CheckOrphan      Check = "orphan"            // a live orphan adopted by the postmaster
	CheckOOMScoreAdj Check = "oom_score_adj"     // the postmaster's against its server processes'
	CheckMemoryLimit Check = "memory_limit"      // its cgroup's memory limit and use
	CheckOvercommit  Check = "overcommit_memory" // the host's vm.overcommit_memory
	CheckZombies     Check = "zombies"           // exited processes PID 1 has not reaped
	CheckHealthcheck Check = "healthcheck"       // a Docker HEALTHCHECK, when the postmaster is PID 1
	CheckProbe       Check = "probe"             // a Kubernetes exec probe, when the postmaster is PID 1
	CheckOOMGroup    Check = "oom_group"         // memory.oom.group of its cgroup (v2)
)

// Finding is one answer of the audit.
type Finding struct {
	Check Check `json:"check"`
	Level Level `json:"level"`
	// Postmaster is the host pid of the postmaster concerned; 0 for the host.
	Postmaster uint32 `json:"postmaster_pid,omitempty"`
	// PID is the process the finding is about when it is not the
	// postmaster: an orphan.
	PID     uint32 `json:"pid,omitempty"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// Report is the whole audit: `orphanwatch check --json` prints it.
type Report struct {
	// Status is the most severe level found; its ExitCode is check's.
	Status Level `json:"status"`
	// OvercommitMemory is vm.overcommit_memory; nil when unreadable.
	OvercommitMemory *int         `json:"overcommit_memory"`
	Postmasters      []Postmaster `json:"postmasters"`
	Findings         []Finding    `json:"findings"`
}

// Postmaster is what the audit learnt about one running postmaster.
type Postmaster struct {
	PID   uint32 `json:"pid"`    // in the host's namespace
	NSPid uint32 `json:"ns_pid"` // in its own
	PID1  bool   `json:"pid1"`
	PidNS uint64 `json:"pid_ns"`
	// Parent started it: a container runtime's shim when it is PID 1, an
	// init (tini, docker-init) or a supervisor otherwise.
	ParentPID  uint32 `json:"parent_pid"`
	ParentComm string `json:"parent_comm"`
	Exe        string `json:"exe"`
	Version    int    `json:"version,omitempty"` // major; 0 when PG_VERSION was unreadable
	DataDir    string `json:"data_dir,omitempty"`

	ContainerRuntime string `json:"container_runtime,omitempty"`
	ContainerID      string `json:"container_id,omitempty"`
	PodUID           string `json:"pod_uid,omitempty"`
	// ContainerName, Namespace and Pod are the container's names, where
	// Docker's config or the Kubernetes API (check --kubernetes) tell them.
	ContainerName string `json:"container_name,omitempty"`
	Namespace     string `json:"namespace,omitempty"`
	Pod           string `json:"pod,omitempty"`
	// Init is PID 1 of its namespace when the postmaster is not: what
	// adopts orphans instead, and whether it reaps them.
	Init *Init `json:"init,omitempty"`

	OOMScoreAdj int `json:"oom_score_adj"`
	// OOMAdjustFile and OOMAdjustValue are PG_OOM_ADJUST_FILE and
	// PG_OOM_ADJUST_VALUE in its environment: with them every child the
	// postmaster forks writes the value to the file. Empty when unset (or
	// the environment was unreadable).
	OOMAdjustFile   string          `json:"pg_oom_adjust_file,omitempty"`
	OOMAdjustValue  string          `json:"pg_oom_adjust_value,omitempty"`
	ServerProcesses []ServerProcess `json:"server_processes"`

	Memory  Memory   `json:"memory"`
	Orphans []Orphan `json:"orphans"`
}

// Container is the container the postmaster runs in; zero when none was
// recognised.
func (p *Postmaster) Container() container.Ref {
	return container.Ref{Runtime: p.ContainerRuntime, ID: p.ContainerID, PodUID: p.PodUID}
}

// ServerProcess is a child the postmaster forked: a backend or an
// auxiliary process.
type ServerProcess struct {
	PID         uint32 `json:"pid"`
	OOMScoreAdj int    `json:"oom_score_adj"`
}

// Orphan is a live process the postmaster adopted and did not fork.
type Orphan struct {
	PID     uint32 `json:"pid"`
	NSPid   uint32 `json:"ns_pid"`
	Comm    string `json:"comm"`
	Exe     string `json:"exe"`
	Cmdline string `json:"cmdline"` // redacted
}

// Host is where the audit reads: a /proc mount (its sys/vm too) and the
// cgroup mount point. Tests point them at fake trees.
type Host struct {
	Proc       procfs.FS
	CgroupRoot string
	// Privileged: this process may read any process's /proc entries (root,
	// or CAP_SYS_PTRACE). Without it other users' postmasters can be
	// invisible, and finding none proves nothing.
	Privileged bool
	// Names names containers and tells their checks (HEALTHCHECK, exec
	// probes): Docker's config.v2.json files, the Kubernetes API. nil:
	// containers by id only, and their checks unknown.
	Names container.Namer
	// Settle is how long a zombie under PID 1 must stay one to be
	// reported: an init that reaps takes far less. 0 in tests.
	Settle time.Duration
}

// defaultSettle: tini and the like reap within microseconds of SIGCHLD.
const defaultSettle = 200 * time.Millisecond

// Default is this host: /proc, /sys/fs/cgroup, and this process's
// capabilities, with no names (set Names for them).
func Default() Host {
	return Host{Proc: procfs.Default, CgroupRoot: "/sys/fs/cgroup", Privileged: canTraceOthers(), Settle: defaultSettle}
}

// names looks a container's names up; none without a namer.
func (h Host) names(ref container.Ref) container.Names {
	if h.Names == nil || ref.IsZero() {
		return container.Names{}
	}
	return h.Names.Names(ref)
}

// Selector narrows the audit to one postmaster or one container's.
type Selector struct {
	PID int // host pid of a postmaster
	// Container is a container's id, a prefix of it (runtime:// prefixes
	// are ignored), or its name, resolved as docker inspect does: a whole
	// id, then a name, then an id prefix.
	Container string
}

// ContainerPrefix is the container id prefix a Selector's Container
// selects: lowercased, without a runtime:// scheme (containerd://<id>, as
// Kubernetes shows it). An empty id is an error: as a prefix it would match
// every container.
func ContainerPrefix(s string) (string, error) {
	prefix := strings.ToLower(s)
	if scheme, id, ok := strings.Cut(prefix, "://"); ok {
		if id == "" {
			return "", fmt.Errorf("no container id after %s://: give the id (or a prefix of it) as docker ps or kubectl show it", scheme)
		}
		prefix = id
	}
	if prefix == "" {
		return "", errors.New("empty container id: give the id (or a prefix of it) as docker ps or kubectl show it")
	}
	return prefix, nil
}

// Run audits the selected postmasters. It always returns a report: what
// stopped it is a finding of level Unknown.
func (h Host) Run(sel Selector) (r Report) {
	r = Report{Postmasters: []Postmaster{}, Findings: []Finding{}}
	defer r.settle() // on every return

	table := lineage.New(h.Proc, maxTableSize)
	found, err := table.Seed()
	if err != nil {
		r.add(Finding{Check: CheckDiscovery, Level: Unknown, Message: h.unreadable(err)})
		return r
	}
	selected, problem := h.pick(sel, found)
	if problem != "" {
		r.add(Finding{Check: CheckDiscovery, Level: Unknown, Message: problem})
		return r
	}
	if len(selected) == 0 {
		if !h.Privileged {
			r.add(Finding{Check: CheckDiscovery, Level: Unknown, Message: "found no running postmaster, but " + notPrivileged})
		} else {
			r.add(Finding{Check: CheckDiscovery, Level: OK, Message: "no running postmaster found"})
		}
		return r
	}

	procs, err := h.Proc.Stats()
	if err != nil {
		r.add(Finding{Check: CheckDiscovery, Level: Unknown, Message: h.unreadable(err)})
		return r
	}
	for _, lpm := range selected {
		pm, findings, ok := h.postmaster(lpm, table, procs)
		if !ok {
			continue // it exited while we looked
		}
		r.Postmasters = append(r.Postmasters, pm)
		r.add(findings...)
	}
	if len(r.Postmasters) == 0 {
		level := OK
		if sel != (Selector{}) {
			level = Unknown
		}
		r.add(Finding{Check: CheckDiscovery, Level: level, Message: "the postmaster exited while it was being checked"})
		return r
	}
	overcommit, f := h.overcommit()
	r.OvercommitMemory = overcommit
	r.add(f)
	return r
}

// maxTableSize bounds the process table; the audit holds one /proc snapshot.
const maxTableSize = 1 << 22

// notPrivileged explains the missing privilege: reading another user's
// /proc/<pid>/exe, cwd or environ needs CAP_SYS_PTRACE (ptrace_may_access),
// which root has unless a container runtime dropped it.
const notPrivileged = "orphanwatch check lacks CAP_SYS_PTRACE and cannot read other users' processes: " +
	"run it as root (sudo orphanwatch check), and in a container grant it CAP_SYS_PTRACE"

func (r *Report) add(fs ...Finding) { r.Findings = append(r.Findings, fs...) }

// settle sets Status: the most severe level, where a failure outranks
// an unknown (something definitely wrong is more actionable than something
// unreadable) and an unknown outranks a warning (it may hide worse).
func (r *Report) settle() {
	r.Status = OK
	for _, f := range r.Findings {
		r.Status = max(r.Status, f.Level)
	}
}

// unreadable explains an error reading /proc, naming the privilege missing.
func (h Host) unreadable(err error) string {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Sprintf("cannot read /proc (%v): %s", err, notPrivileged)
	}
	return fmt.Sprintf("cannot read %s: %v", h.Proc.Root, err)
}

// pick applies the selector. A problem (nothing matches, an ambiguous
// prefix) is returned as a message.
func (h Host) pick(sel Selector, found []*lineage.Postmaster) ([]*lineage.Postmaster, string) {
	switch {
	case sel.PID != 0:
		for _, pm := range found {
			if int(pm.Key.PID) == sel.PID {
				return []*lineage.Postmaster{pm}, ""
			}
		}
		if st, err := h.Proc.ReadStat(sel.PID); err == nil {
			for _, pm := range found {
				if int(pm.Key.PID) == st.PPID {
					return nil, fmt.Sprintf("pid %d is a child of the postmaster pid %d, not a postmaster (--pid %d)", sel.PID, st.PPID, st.PPID)
				}
			}
			return nil, fmt.Sprintf("pid %d (%s) is not a running postmaster", sel.PID, st.Comm)
		}
		return nil, fmt.Sprintf("no process with pid %d (give the postmaster's pid as the host sees it)", sel.PID)
	case sel.Container != "":
		return h.pickContainer(sel.Container, found)
	}
	return found, ""
}

// postmaster audits one postmaster; ok is false when it is gone.
func (h Host) postmaster(lpm *lineage.Postmaster, table *lineage.Table, procs map[int]procfs.Stat) (Postmaster, []Finding, bool) {
	pid := int(lpm.Key.PID)
	st, alive := procs[pid]
	if !alive || st.StartTicks != lpm.Key.StartTicks {
		return Postmaster{}, nil, false
	}
	adj, adjErr := h.Proc.OOMScoreAdj(pid)
	if errors.Is(adjErr, fs.ErrNotExist) {
		return Postmaster{}, nil, false
	}
	pm := Postmaster{
		PID: lpm.Key.PID, NSPid: lpm.NSPid, PID1: lpm.PID1(), PidNS: lpm.PidNS,
		ParentPID: uint32(st.PPID), ParentComm: procs[st.PPID].Comm,
		Exe: lpm.Exe, Version: lpm.Major, DataDir: lpm.DataDir,
		ContainerRuntime: lpm.Container.Runtime, ContainerID: lpm.Container.ID, PodUID: lpm.Container.PodUID,
		OOMScoreAdj:     adj,
		ServerProcesses: []ServerProcess{},
		Orphans:         []Orphan{},
	}
	env := h.env(pid, "PG_OOM_ADJUST_FILE", "PG_OOM_ADJUST_VALUE")
	pm.OOMAdjustFile, pm.OOMAdjustValue = env["PG_OOM_ADJUST_FILE"], env["PG_OOM_ADJUST_VALUE"]
	names := h.names(pm.Container())
	pm.ContainerName, pm.Namespace, pm.Pod = names.Container, names.Namespace, names.Pod
	pm.Init = h.initOf(&pm, procs)

	var findings []Finding
	add := func(f Finding) {
		f.Postmaster = pm.PID
		findings = append(findings, f)
	}
	add(pid1Finding(&pm))
	if pm.Init != nil && len(pm.Init.Zombies) > 0 {
		add(zombiesFinding(&pm))
	}
	if pm.PID1 {
		for _, f := range h.orphanSources(&pm) {
			add(f)
		}
	}

	for _, o := range table.Adopted() {
		if o.PPID != pm.PID || !h.stillOrphan(o, lpm, procs) {
			continue
		}
		orphan := Orphan{PID: o.Key.PID, NSPid: o.NSPid, Comm: o.Comm, Exe: o.Exe, Cmdline: redact.Argv(o.Argv)}
		pm.Orphans = append(pm.Orphans, orphan)
		add(orphanFinding(&pm, orphan))
	}

	for child, cst := range procs {
		if cst.PPID != pid {
			continue
		}
		p := table.Lookup(event.ProcessKey{PID: uint32(child), StartTicks: cst.StartTicks})
		if p == nil || p.Origin != verdict.OriginForked {
			continue // an orphan, or born after the table was seeded
		}
		if cadj, err := h.Proc.OOMScoreAdj(child); err == nil {
			pm.ServerProcesses = append(pm.ServerProcesses, ServerProcess{PID: uint32(child), OOMScoreAdj: cadj})
		}
	}
	slices.SortFunc(pm.ServerProcesses, func(a, b ServerProcess) int { return int(a.PID) - int(b.PID) })
	if adjErr != nil {
		add(Finding{Check: CheckOOMScoreAdj, Level: Unknown, Message: fmt.Sprintf("cannot read the postmaster's oom_score_adj: %v", adjErr)})
	} else {
		add(oomScoreAdjFinding(&pm))
	}

	mem, f := h.memoryFinding(pid)
	pm.Memory = mem
	add(f)
	if mem.OOMGroup != nil {
		add(oomGroupFinding(&pm))
	}
	return pm, findings, true
}

// stillOrphan rechecks an adoptee the table found. A backend that exits
// while /proc is read looks like one (its exe link is gone before its stat),
// and a zombie's fate is sealed: its status is already the postmaster's to
// judge, which trace reports.
func (h Host) stillOrphan(o *lineage.Process, pm *lineage.Postmaster, procs map[int]procfs.Stat) bool {
	st, ok := procs[int(o.Key.PID)]
	if !ok || st.StartTicks != o.Key.StartTicks || st.PPID != int(pm.Key.PID) || st.State == 'Z' {
		return false
	}
	exe, err := h.Proc.Exe(int(o.Key.PID))
	if errors.Is(err, fs.ErrPermission) {
		return true // another user's process: not a server process of this postmaster
	}
	return err == nil && exe != pm.Exe
}

// where names the postmaster's container; empty when it is in none
// orphanwatch recognises: "container db (docker 0123456789ab)", "container
// postgres of pod app/db-0 (containerd 0123456789ab)", or without names
// "container docker 0123456789ab".
func where(pm *Postmaster) string {
	ref := pm.Container()
	switch {
	case ref.ID != "" && pm.ContainerName != "":
		s := "container " + pm.ContainerName
		if pm.Pod != "" {
			s += fmt.Sprintf(" of pod %s/%s", pm.Namespace, pm.Pod)
		}
		return s + fmt.Sprintf(" (%s %s)", ref.Runtime, ref.Short())
	case ref.ID != "":
		s := fmt.Sprintf("container %s %s", ref.Runtime, ref.Short())
		if ref.PodUID != "" {
			s += " (pod " + ref.PodUID + ")"
		}
		return s
	case ref.PodUID != "":
		return "pod " + ref.PodUID
	}
	return ""
}

// namespaceOf names the postmaster's PID namespace by its container, else
// by its inode (as lsns and /proc/<pid>/ns/pid show it).
func namespaceOf(pm *Postmaster) string {
	if w := where(pm); w != "" {
		return "the PID namespace of " + w
	}
	return fmt.Sprintf("PID namespace %d", pm.PidNS)
}

func pid1Finding(pm *Postmaster) Finding {
	if pm.PID1 {
		return Finding{Check: CheckPID1, Level: Fail,
			Message: fmt.Sprintf("the postmaster (pid %d) is PID 1 of %s: it adopts every orphan there, "+
				"and an orphan that dies of a signal or exits with code 2 or more makes PostgreSQL crash-restart", pm.PID, namespaceOf(pm)),
			Fix: verdict.InitFix}
	}
	if pm.Init == nil {
		return Finding{Check: CheckPID1, Level: OK,
			Message: fmt.Sprintf("the postmaster is pid %d in its PID namespace, started by %s (pid %d): orphans go to the namespace's init, not to PostgreSQL",
				pm.NSPid, pm.ParentComm, pm.ParentPID)}
	}
	return Finding{Check: CheckPID1, Level: OK,
		Message: fmt.Sprintf("the postmaster is pid %d in its PID namespace, started by %s (pid %d); PID 1 there is %s: "+
			"orphans go to it, not to PostgreSQL, %s", pm.NSPid, pm.ParentComm, pm.ParentPID, describeInit(pm, pm.Init), reapingSays(pm.Init))}
}

// OrphanFix is the advice for a live orphan: killing it is the very thing
// to avoid.
const OrphanFix = "do not kill it: dying of a signal is what crash-restarts PostgreSQL; let it finish (exit 0 or 1 is harmless), " +
	"run such jobs outside the database container, and put an init as PID 1 of the container"

func orphanFinding(pm *Postmaster, o Orphan) Finding {
	cmd := o.Cmdline
	if cmd == "" {
		cmd = o.Comm
	}
	return Finding{Check: CheckOrphan, Level: Warn, PID: o.PID,
		Message: fmt.Sprintf("orphan %s (pid %d, pid %d in its namespace) was adopted by the postmaster and is running: \"%s\"; "+
			"if it dies of a signal or exits with code 2 or more, PostgreSQL crash-restarts", o.Comm, o.PID, o.NSPid, cmd),
		Fix: OrphanFix}
}

// env reads the named variables from a process's environment, and
// nothing else: the environment holds secrets (POSTGRES_PASSWORD in the
// official image). Those unset, or an unreadable environment, are absent.
func (h Host) env(pid int, names ...string) map[string]string {
	out := map[string]string{}
	data, err := os.ReadFile(filepath.Join(h.Proc.Root, strconv.Itoa(pid), "environ"))
	if err != nil {
		return out
	}
	for _, kv := range strings.Split(string(data), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok && slices.Contains(names, k) {
			out[k] = v
		}
	}
	return out
}
