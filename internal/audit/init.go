package audit

import (
	"cmp"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/container"
	"github.com/orphanwatch/orphanwatch/internal/procfs"
	"github.com/orphanwatch/orphanwatch/internal/redact"
)

// Init is PID 1 of the postmaster's PID namespace when that is not the
// postmaster: the process that adopts the namespace's orphans instead.
type Init struct {
	PID     uint32 `json:"pid"` // in the host's namespace
	Comm    string `json:"comm"`
	Exe     string `json:"exe,omitempty"`
	Cmdline string `json:"cmdline"` // redacted
	// Kind is what orphanwatch recognises it as (initKinds): docker-init,
	// tini, dumb-init, catatonit, pause, patroni, cloudnative-pg, systemd,
	// shell, or other.
	Kind  string  `json:"kind"`
	Reaps Reaping `json:"reaps"`
	// The container it runs in, when not the postmaster's: the postmaster's
	// container joined another's PID namespace (a Kubernetes pod with
	// shareProcessNamespace: true, docker run --pid container:NAME), or
	// the host's.
	SharedNamespace  bool   `json:"shared_namespace"`
	ContainerRuntime string `json:"container_runtime,omitempty"`
	ContainerID      string `json:"container_id,omitempty"`
	ContainerName    string `json:"container_name,omitempty"`
	PodUID           string `json:"pod_uid,omitempty"`
	// Zombies are its children that exited and that it has not reaped,
	// still there after a short wait.
	Zombies []Zombie `json:"zombies"`
}

// Zombie is a process that exited and whose parent has not collected its
// status: it holds its pid until then.
type Zombie struct {
	PID   uint32 `json:"pid"`
	NSPid uint32 `json:"ns_pid"`
	Comm  string `json:"comm"`
}

// Reaping says which orphans an init collects (waitpid) when they exit.
type Reaping string

const (
	ReapsAll          Reaping = "all"           // every child: a real init
	ReapsPostgresOnly Reaping = "postgres-only" // only processes named postgres
	ReapsWhileWaiting Reaping = "while-waiting" // while it waits for a command of its own
	ReapsUnknown      Reaping = "unknown"
)

// initKind is what orphanwatch knows of one kind of PID 1.
type initKind struct {
	kind  string
	what  string // in words, as the report names it
	reaps Reaping
	// why says where the reaping behaviour comes from, for the kinds that
	// do not reap everything.
	why   string
	match func(comm, exe string, argv []string) bool
}

// named matches a PID 1 by its comm or the base name of its executable.
func named(names ...string) func(comm, exe string, argv []string) bool {
	return func(comm, exe string, argv []string) bool {
		return slices.Contains(names, comm) || exe != "" && slices.Contains(names, path.Base(exe))
	}
}

// initKinds: the kinds of PID 1 a containerised postmaster is found under.
// The first that matches wins.
var initKinds = []initKind{
	{kind: "docker-init", what: "docker-init (Docker's init, docker run --init: tini)", reaps: ReapsAll, match: named("docker-init")},
	{kind: "tini", what: "tini", reaps: ReapsAll, match: named("tini", "tini-static")},
	{kind: "dumb-init", what: "dumb-init", reaps: ReapsAll, match: named("dumb-init")},
	// catatonit reaps every child on SIGCHLD, also in pause mode (-P), the
	// pause process of Podman's pods (openSUSE/catatonit catatonit.c).
	{kind: "catatonit", what: "catatonit (Podman's init and pause process)", reaps: ReapsAll, match: named("catatonit")},
	// Kubernetes' pause reaps with waitpid(-1, WNOHANG) on SIGCHLD
	// (kubernetes build/pause/linux/pause.c).
	{kind: "pause", what: "pause (the pod's pause container)", reaps: ReapsAll, match: named("pause")},
	// CloudNativePG's instance manager is PID 1 of its pods' postgres
	// container; its PostgresOrphansReaper waits only for children whose
	// ppid is 1 and whose executable is postgres, and only while the
	// instance may be unavailable (cloudnative-pg
	// internal/cmd/manager/instance/run/lifecycle/reaper.go): any other
	// orphan it adopts stays a zombie.
	{kind: "cloudnative-pg", what: "CloudNativePG's instance manager (/controller/manager instance run)", reaps: ReapsPostgresOnly,
		why: "it reaps only processes named postgres (its PostgresOrphansReaper, cloudnative-pg internal/cmd/manager/instance/run/lifecycle/reaper.go)",
		match: func(comm, exe string, argv []string) bool {
			return len(argv) >= 3 && path.Base(argv[0]) == "manager" && argv[1] == "instance" && argv[2] == "run"
		}},
	// Patroni started as PID 1 runs itself as a child and acts as init:
	// forwards signals and reaps every child with waitpid(-1, WNOHANG)
	// (patroni/__main__.py main()).
	{kind: "patroni", what: "Patroni (as PID 1 it runs itself as a child and acts as init)", reaps: ReapsAll, match: isPatroni},
	{kind: "systemd", what: "systemd", reaps: ReapsAll, match: named("systemd", "init")},
	// A shell collects any child while it waits for a command of its own
	// (dash's waitproc and bash's waitchld wait for any pid), which it does
	// for as long as it runs the postmaster in the foreground.
	{kind: "shell", what: "a shell", reaps: ReapsWhileWaiting,
		why:   "a shell reaps orphans only while it waits for a command of its own (it does while the postmaster runs in the foreground)",
		match: named("sh", "bash", "dash", "ash", "ksh", "mksh", "zsh")},
}

func isPatroni(comm, exe string, argv []string) bool {
	if comm == "patroni" {
		return true
	}
	if !strings.HasPrefix(comm, "python") && !strings.HasPrefix(path.Base(exe), "python") {
		return false
	}
	for _, a := range argv[min(1, len(argv)):] {
		if b := path.Base(a); b == "patroni" || b == "patroni.py" {
			return true
		}
	}
	return false
}

func classify(comm, exe string, argv []string) initKind {
	for _, k := range initKinds {
		if k.match(comm, exe, argv) {
			return k
		}
	}
	return initKind{kind: "other", what: comm, reaps: ReapsUnknown}
}

// maxAncestry bounds the walk up from the postmaster to its namespace's
// PID 1.
const maxAncestry = 64

// findInit returns the host pid of PID 1 of the namespace pidNS, from its
// member pid: the nearest ancestor that is pid 1 in that namespace, or, when
// the walk leaves the namespace first (the postmaster's container joined
// another's namespace: setns, so its parent is outside), the process of the
// namespace whose pid there is 1. 0 when none is found.
func (h Host) findInit(pid int, pidNS uint64, procs map[int]procfs.Stat) int {
	isInit := func(p int) (init, inNS bool) {
		if ns, err := h.Proc.PidNamespace(p); err != nil || ns != pidNS {
			return false, false
		}
		st, err := h.Proc.ReadStatus(p)
		return err == nil && st.NSPid() == 1, true
	}
	for p, i := procs[pid].PPID, 0; p > 0 && i < maxAncestry; p, i = procs[p].PPID, i+1 {
		init, inNS := isInit(p)
		if init {
			return p
		}
		if !inNS {
			break
		}
	}
	for p := range procs {
		if init, _ := isInit(p); init {
			return p
		}
	}
	return 0
}

// initOf describes PID 1 of the postmaster's namespace; nil when the
// postmaster is PID 1 itself, or PID 1 cannot be found.
func (h Host) initOf(pm *Postmaster, procs map[int]procfs.Stat) *Init {
	if pm.PID1 {
		return nil
	}
	pid := h.findInit(int(pm.PID), pm.PidNS, procs)
	if pid == 0 {
		return nil
	}
	in := &Init{PID: uint32(pid), Comm: procs[pid].Comm, Zombies: []Zombie{}}
	in.Exe, _ = h.Proc.Exe(pid)
	argv, _ := h.Proc.Cmdline(pid)
	in.Cmdline = redact.Argv(argv)
	k := classify(in.Comm, in.Exe, argv)
	in.Kind, in.Reaps = k.kind, k.reaps
	if cgroups, err := h.Proc.Cgroups(pid); err == nil {
		ref := container.FromCgroups(cgroups)
		if ref.ID != pm.ContainerID {
			in.SharedNamespace = true
			in.ContainerRuntime, in.ContainerID, in.PodUID = ref.Runtime, ref.ID, ref.PodUID
			in.ContainerName = h.names(ref).Container
		}
	}
	in.Zombies = h.zombies(pid, procs)
	return in
}

// zombies lists the unreaped children of pid in the snapshot that are
// still zombies after h.Settle: an init that reaps collects them in far
// less.
func (h Host) zombies(parent int, procs map[int]procfs.Stat) []Zombie {
	var seen []procfs.Stat
	for _, st := range procs {
		if st.PPID == parent && st.State == 'Z' {
			seen = append(seen, st)
		}
	}
	if len(seen) == 0 {
		return []Zombie{}
	}
	if h.Settle > 0 {
		time.Sleep(h.Settle)
	}
	out := []Zombie{}
	for _, was := range seen {
		st, err := h.Proc.ReadStat(was.PID)
		if err != nil || st.State != 'Z' || st.PPID != parent || st.StartTicks != was.StartTicks {
			continue
		}
		z := Zombie{PID: uint32(st.PID), Comm: st.Comm}
		if status, err := h.Proc.ReadStatus(st.PID); err == nil {
			z.NSPid = uint32(status.NSPid())
		}
		out = append(out, z)
	}
	slices.SortFunc(out, func(a, b Zombie) int { return int(a.PID) - int(b.PID) })
	return out
}

// describeInit names PID 1 for the report: "tini (pid 4242)", with the
// container it runs in when the namespace is shared.
func describeInit(pm *Postmaster, in *Init) string {
	s := fmt.Sprintf("%s (pid %d)", kindNamed(in.Kind).what, in.PID)
	if in.Kind == "other" {
		s = fmt.Sprintf("%s (pid %d, running %q)", in.Comm, in.PID, in.Cmdline)
	}
	switch {
	case !in.SharedNamespace:
		return s
	case in.ContainerID == "" && in.PodUID == "":
		return s + ", outside any container: the postmaster's container shares the host's PID namespace (docker run --pid host, or hostPID: true)"
	case in.PodUID != "" && in.PodUID == pm.PodUID:
		return s + fmt.Sprintf(" of container %s of the same pod: the pod's containers share one PID namespace (shareProcessNamespace: true)",
			containerWord(in.ContainerName, in.ContainerID))
	}
	return s + fmt.Sprintf(" of container %s: the postmaster's container shares its PID namespace (docker run --pid container:%s)",
		containerWord(in.ContainerName, in.ContainerID), cmp.Or(in.ContainerName, container.Ref{ID: in.ContainerID}.Short()))
}

// kindNamed is the initKinds entry of a kind; "other" for none.
func kindNamed(kind string) initKind {
	for _, k := range initKinds {
		if k.kind == kind {
			return k
		}
	}
	return initKind{kind: "other", reaps: ReapsUnknown}
}

// containerWord is "db (0123456789ab)", or the short id alone.
func containerWord(name, id string) string {
	short := container.Ref{ID: id}.Short()
	if name == "" {
		return short
	}
	return fmt.Sprintf("%s (%s)", name, short)
}

// reapingSays completes the pid1 finding: whether the init collects every
// orphan it adopts.
func reapingSays(in *Init) string {
	switch in.Reaps {
	case ReapsAll:
		return "it reaps every one"
	case ReapsPostgresOnly:
		return "but " + kindNamed(in.Kind).why + ": any other orphan stays a zombie"
	case ReapsWhileWaiting:
		return "and " + kindNamed(in.Kind).why
	}
	return "orphanwatch does not know whether it reaps them (zombies it leaves are reported)"
}

// ZombieFix is the advice for zombies under PID 1.
const ZombieFix = "a zombie is gone once its parent reaps it or exits: restart the container at a quiet time; stop what leaves " +
	"processes behind in it (a docker exec or kubectl exec session that backgrounds commands, a check that forks), " +
	"or run an init that reaps every orphan (tini, dumb-init) as PID 1"

func zombiesFinding(pm *Postmaster) Finding {
	in := pm.Init
	list := make([]string, 0, len(in.Zombies))
	for _, z := range in.Zombies {
		list = append(list, fmt.Sprintf("%s[%d]", z.Comm, z.PID))
	}
	const maxListed = 10
	more := ""
	if len(list) > maxListed {
		more = fmt.Sprintf(" and %d more", len(list)-maxListed)
		list = list[:maxListed]
	}
	return Finding{Check: CheckZombies, Level: Warn, PID: in.PID,
		Message: fmt.Sprintf("%s exited under PID 1 %s (pid %d) and %s never reaped: %s%s. Each holds a pid: "+
			"at the container's pids limit (docker run --pids-limit, Kubernetes podPidsLimit) PostgreSQL cannot fork "+
			"a backend (\"could not fork new process for connection\")",
			processes(len(in.Zombies)), in.Comm, in.PID, wasWere(len(in.Zombies)), strings.Join(list, ", "), more),
		Fix: ZombieFix}
}

func processes(n int) string {
	if n == 1 {
		return "1 process"
	}
	return fmt.Sprintf("%d processes", n)
}

func wasWere(n int) string {
	if n == 1 {
		return "was"
	}
	return "were"
}
