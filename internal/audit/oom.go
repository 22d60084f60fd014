package audit

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// unkillable is OOM_SCORE_ADJ_MIN: the OOM killer never chooses a process
// with it (oom_badness() returns LONG_MIN).
const unkillable = -1000

// pgOOMAdjustFile is the only PG_OOM_ADJUST_FILE the audit understands:
// PostgreSQL's fork_process() writes PG_OOM_ADJUST_VALUE (default 0) there
// in every child it forks (PostgreSQL 9.4 and later, on Linux).
const pgOOMAdjustFile = "/proc/self/oom_score_adj"

// Advice for the two ways the OOM setup goes wrong.
const (
	ProtectPostmasterFix = "start the postmaster with oom_score_adj -1000 (docker run --oom-score-adj=-1000; in Kubernetes " +
		"the Guaranteed QoS class gives -997) and set PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj and PG_OOM_ADJUST_VALUE=0 " +
		"in its environment so that server processes go back to 0; see docs/oom.md"
	ResetChildrenFix = "set PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj and PG_OOM_ADJUST_VALUE=0 in the postmaster's environment " +
		"so that server processes go back to 0 and stay killable; see docs/oom.md"
)

// oomScoreAdjFinding judges the postmaster's oom_score_adj against its
// server processes', as PostgreSQL's documentation ("Linux Memory
// Overcommit") describes: the postmaster at -1000, never chosen, and its
// children at 0, so that the OOM killer takes one backend (a crash-restart)
// rather than the postmaster (an outage). Levels:
//
//   - the postmaster above some server process: Warn, it can be chosen first;
//   - a server process at -1000: Warn, inherited protection makes backends
//     unkillable, and a cgroup at its limit with nothing killable stalls;
//   - the postmaster below every server process: OK (at -1000, immune);
//   - all equal (0 by default, -997 in a Guaranteed pod): Note. The OOM
//     killer picks the largest process, nearly always a backend, but
//     nothing protects the postmaster.
func oomScoreAdjFinding(pm *Postmaster) Finding {
	f := Finding{Check: CheckOOMScoreAdj}
	p := pm.OOMScoreAdj
	if len(pm.ServerProcesses) == 0 {
		if p == unkillable {
			f.Level, f.Message = OK, "the postmaster has oom_score_adj -1000 (the OOM killer never chooses it); it has no server processes to compare"
		} else {
			f.Level, f.Message, f.Fix = Note, fmt.Sprintf("the postmaster has oom_score_adj %d and no server processes to compare: nothing protects it from the OOM killer", p), ProtectPostmasterFix
		}
		return f
	}
	lo := pm.ServerProcesses[0].OOMScoreAdj
	stuck := 0 // server processes at -1000
	for _, s := range pm.ServerProcesses {
		lo = min(lo, s.OOMScoreAdj)
		if s.OOMScoreAdj == unkillable {
			stuck++
		}
	}
	children := describeServerAdj(pm.ServerProcesses)
	switch {
	case p > lo:
		f.Level, f.Fix = Warn, ProtectPostmasterFix
		f.Message = fmt.Sprintf("the postmaster (oom_score_adj %d) can be chosen by the OOM killer before its server processes (%s): "+
			"killing it takes PostgreSQL down instead of ending one backend", p, children)
	case lo == unkillable:
		f.Level, f.Fix = Warn, ResetChildrenFix
		f.Message = fmt.Sprintf("%d of %d server processes have oom_score_adj -1000 (%s): the OOM killer can never choose them, "+
			"so it kills other processes instead, and a container at its memory limit with nothing else to kill stalls", stuck, len(pm.ServerProcesses), children)
	case p == unkillable:
		f.Level = OK
		f.Message = fmt.Sprintf("the postmaster has oom_score_adj -1000 (the OOM killer never chooses it) and its server processes %s: "+
			"the OOM killer takes a backend, not the postmaster", children)
	case p < lo:
		f.Level = OK
		f.Message = fmt.Sprintf("the postmaster (oom_score_adj %d) is chosen after every server process (%s); -1000 would make it immune", p, children)
	default:
		f.Level, f.Fix = Note, ProtectPostmasterFix
		f.Message = fmt.Sprintf("the postmaster and its server processes share oom_score_adj %d: the OOM killer takes the largest, "+
			"usually a backend, but nothing protects the postmaster; PostgreSQL recommends -1000 for it with server processes reset to 0", p)
	}
	f.Message += resetRefused(pm)
	return f
}

// describeServerAdj says "all 7 at 0", or "3 at 0, 4 at -1000".
func describeServerAdj(servers []ServerProcess) string {
	count := map[int]int{}
	for _, s := range servers {
		count[s.OOMScoreAdj]++
	}
	if len(count) == 1 {
		return fmt.Sprintf("all %d at %d", len(servers), servers[0].OOMScoreAdj)
	}
	values := make([]int, 0, len(count))
	for v := range count {
		values = append(values, v)
	}
	slices.Sort(values)
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = fmt.Sprintf("%d at %d", count[v], v)
	}
	return strings.Join(parts, ", ")
}

// resetRefused explains server processes that did not take
// PG_OOM_ADJUST_VALUE although the postmaster asks for it: PostgreSQL
// ignores a failed write, and without CAP_SYS_RESOURCE a process cannot go
// below the value a privileged writer (the container runtime) last set.
func resetRefused(pm *Postmaster) string {
	if pm.OOMAdjustFile != pgOOMAdjustFile {
		return ""
	}
	want, err := strconv.Atoi(pm.OOMAdjustValue)
	if pm.OOMAdjustValue == "" {
		want, err = 0, nil
	}
	if err != nil {
		return fmt.Sprintf(" (PG_OOM_ADJUST_VALUE=%q is not a number)", pm.OOMAdjustValue)
	}
	for _, s := range pm.ServerProcesses {
		if s.OOMScoreAdj != want {
			return fmt.Sprintf(" (PG_OOM_ADJUST_FILE is set with value %d, but server process %d has %d: the kernel refused the write; "+
				"without CAP_SYS_RESOURCE a process cannot go below the value its container runtime set, so choose a value at or above it)",
				want, s.PID, s.OOMScoreAdj)
		}
	}
	return ""
}

// overcommit reads vm.overcommit_memory. PostgreSQL's documentation
// recommends 2 on hosts dedicated to PostgreSQL: an allocation past the
// commit limit fails and one query reports "out of memory" instead of the
// OOM killer choosing a process. Levels: 2 OK; 0, the kernel's default
// heuristic, Note (right for shared hosts, and within a container's limit
// the cgroup's OOM killer acts whatever the sysctl says); 1, never refuse,
// Warn: every shortage goes to the OOM killer.
func (h Host) overcommit() (*int, Finding) {
	f := Finding{Check: CheckOvercommit}
	path := filepath.Join(h.Proc.Root, "sys", "vm", "overcommit_memory")
	data, err := os.ReadFile(path)
	if err != nil {
		f.Level, f.Message = Unknown, fmt.Sprintf("cannot read vm.overcommit_memory: %v", err)
		return nil, f
	}
	mode, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		f.Level, f.Message = Unknown, fmt.Sprintf("vm.overcommit_memory: %q in %s is not a mode", strings.TrimSpace(string(data)), path)
		return nil, f
	}
	const dedicated = "on a host dedicated to PostgreSQL: sysctl vm.overcommit_memory=2, with vm.overcommit_ratio or vm.overcommit_kbytes " +
		"sized so that the commit limit covers the memory PostgreSQL may use; see docs/oom.md"
	switch mode {
	case 2:
		f.Level = OK
		f.Message = "vm.overcommit_memory is 2 (strict): an allocation past the commit limit fails with \"out of memory\" in one query " +
			"instead of the OOM killer choosing a process (a container's memory limit is still enforced by its cgroup's OOM killer)"
	case 0:
		f.Level, f.Fix = Note, dedicated
		f.Message = "vm.overcommit_memory is 0 (heuristic, the kernel's default): only obviously excessive allocations fail, " +
			"a real shortage is settled by the OOM killer; PostgreSQL's documentation recommends 2 on hosts dedicated to it"
	case 1:
		f.Level, f.Fix = Warn, dedicated+" (or 0, the default, on a shared host)"
		f.Message = "vm.overcommit_memory is 1 (always overcommit): no allocation ever fails, so every memory shortage " +
			"is settled by the OOM killer, never by an \"out of memory\" error in one query"
	default:
		f.Level, f.Message = Unknown, fmt.Sprintf("vm.overcommit_memory is %d, not a mode this check knows", mode)
	}
	return &mode, f
}

// capSysPtrace is CAP_SYS_PTRACE's bit: with it, /proc/<pid>/exe, cwd and
// environ of any process are readable (ptrace_may_access, PTRACE_MODE_READ).
const capSysPtrace = 19

// canTraceOthers reports whether this process has CAP_SYS_PTRACE in its
// effective set (root normally has it).
func canTraceOthers() bool {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<capSysPtrace) != 0
		}
	}
	return false
}

// OOMGroupFix is the advice when a group OOM kill would take the postmaster.
const OOMGroupFix = "on Kubernetes 1.32+, singleProcessOOMKill: true in the kubelet configuration makes the OOM killer end one process " +
	"(usually a backend: a crash-restart, not an outage); else a group kill spares only processes at oom_score_adj -1000, which the postmaster " +
	"gets from the runtime (docker run --oom-score-adj=-1000) or, with CAP_SYS_RESOURCE added to the container, from its entrypoint " +
	"(choom -n -1000 -p $$ before exec postgres), never from Kubernetes' QoS classes (-997 at best); and size the memory limit with headroom; see docs/oom.md"

// oomGroupFinding judges memory.oom.group (cgroup v2). Set, the OOM killer
// kills every process of the cgroup but those at -1000: a backend's
// allocation at the limit takes the postmaster too, and PostgreSQL goes down
// with the container instead of crash-restarting; the postmaster's
// oom_score_adj, unless -1000, protects nothing then. Levels: set and the
// postmaster not at -1000, Warn (a protection that does not work); set and
// at -1000, OK (the server processes die, the postmaster restarts them); not
// set, OK.
func oomGroupFinding(pm *Postmaster) Finding {
	m := pm.Memory
	f := Finding{Check: CheckOOMGroup, Level: OK}
	switch {
	case !*m.OOMGroup:
		f.Message = fmt.Sprintf("memory.oom.group is 0 on its cgroup %s and its ancestors: the OOM killer ends one process, not the whole container", m.Cgroup)
	case pm.OOMScoreAdj == unkillable:
		f.Message = fmt.Sprintf("memory.oom.group is 1 on cgroup %s: an OOM kill there kills every process of it but the postmaster, "+
			"which is at oom_score_adj -1000: every server process dies and PostgreSQL crash-restarts", m.OOMGroupCgroup)
	default:
		f.Level, f.Fix = Warn, OOMGroupFix
		f.Message = fmt.Sprintf("memory.oom.group is 1 on cgroup %s (Kubernetes 1.28+ sets it on every container on cgroup v2): "+
			"an OOM kill there kills every process of it, the postmaster too (its oom_score_adj %d spares it only from being chosen; "+
			"a group kill spares only -1000): PostgreSQL does not crash-restart, it goes down with the container, which its restart policy "+
			"starts again with crash recovery", m.OOMGroupCgroup, pm.OOMScoreAdj)
	}
	return f
}
