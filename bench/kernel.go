package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
)

// progStats is what the kernel counted for one program or several
// (BPF_ENABLE_STATS: run_time_ns and run_cnt).
type progStats struct {
	runtime time.Duration
	runs    uint64
}

func (s progStats) perRun() time.Duration {
	if s.runs == 0 {
		return 0
	}
	return s.runtime / time.Duration(s.runs)
}

// heldSnapshot is the kernel's counts of the programs a process holds, by
// program id, with their names.
type heldSnapshot map[ebpf.ProgramID]struct {
	name string
	progStats
}

// heldPrograms reads the counts of the BPF programs a process holds: those
// it loaded (bpf-prog file descriptors) and those its links attach
// (bpf_link; fdinfo names the program). Counting by holder, not by load
// order, keeps the programs of other users of a shared machine out, and
// serves bpftrace (the peer) and orphanwatch alike.
func heldPrograms(pid int) (heldSnapshot, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("the BPF programs of process %d: %w", pid, err)
	}
	snap := heldSnapshot{}
	for _, fd := range fds {
		target, err := os.Readlink(dir + "/" + fd.Name())
		if err != nil || (target != "anon_inode:bpf-prog" && target != "anon_inode:bpf_link") {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd.Name()))
		if err != nil {
			continue
		}
		id, ok := fdinfoField(string(info), "prog_id")
		if !ok {
			continue
		}
		if _, seen := snap[ebpf.ProgramID(id)]; seen {
			continue
		}
		prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
		if err != nil {
			continue // unloaded since
		}
		pinfo, ierr := prog.Info()
		stats, serr := prog.Stats()
		prog.Close()
		if ierr != nil || serr != nil {
			continue
		}
		e := snap[ebpf.ProgramID(id)]
		e.name, e.runtime, e.runs = pinfo.Name, stats.Runtime, stats.RunCount
		snap[ebpf.ProgramID(id)] = e
	}
	return snap, nil
}

func fdinfoField(info, key string) (uint64, bool) {
	for _, line := range strings.Split(info, "\n") {
		name, value, ok := strings.Cut(line, ":")
		if ok && name == key {
			n, err := strconv.ParseUint(strings.TrimSpace(value), 10, 32)
			return n, err == nil
		}
	}
	return 0, false
}

// byProgram is the kernel's counts over an interval, by program name.
type byProgram map[string]progStats

// since is what each program ran from before to s, by name. A program
// loaded in between counts from zero (a tracer that loads programs as it
// attaches them); one unloaded in between is lost, which heldPrograms'
// callers avoid by measuring while the tracer's state is steady.
func (s heldSnapshot) since(before heldSnapshot) byProgram {
	out := byProgram{}
	for id, now := range s {
		was := before[id]
		d := out[now.name]
		d.runtime += now.runtime - was.runtime
		d.runs += now.runs - was.runs
		out[now.name] = d
	}
	return out
}

// perRunByLoadOrder is what each program ran from before to s, in the
// order the programs were loaded (by id): for bpftrace, whose programs'
// names are cut to the same 15 characters, the script's order.
func (s heldSnapshot) perRunByLoadOrder(before heldSnapshot) []progStats {
	ids := make([]ebpf.ProgramID, 0, len(s))
	for id := range s {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]progStats, len(ids))
	for i, id := range ids {
		out[i] = progStats{s[id].runtime - before[id].runtime, s[id].runs - before[id].runs}
	}
	return out
}

func (b byProgram) total() progStats {
	var t progStats
	for _, s := range b {
		t.runtime += s.runtime
		t.runs += s.runs
	}
	return t
}

func (b byProgram) add(o byProgram) {
	for name, s := range o {
		d := b[name]
		d.runtime += s.runtime
		d.runs += s.runs
		b[name] = d
	}
}

func (b byProgram) names() []string {
	names := make([]string, 0, len(b))
	for name := range b {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// forksSoFar is the kernel's count of processes and threads created since
// boot (/proc/stat's "processes"): over a storm, it tells how many the rest
// of a shared machine made beside it.
func forksSoFar() uint64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "processes "); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// cpuTime is the CPU time a process's threads have run, in nanoseconds
// (the first field of each thread's schedstat): /proc/PID/stat's clock
// ticks are 10 ms, too coarse to share out among a run's connections.
func cpuTime(pid int) (time.Duration, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var total time.Duration
	for _, task := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, task.Name()))
		if err != nil {
			continue // exited since
		}
		if f := strings.Fields(string(data)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			total += time.Duration(ns)
		}
	}
	return total, nil
}

// postmasters lists the postmasters running on the node: postgres
// processes whose parent is not a postgres process.
func postmasters() []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !isPostgres(pid) {
			continue
		}
		if ppid := parentOf(pid); ppid > 0 && !isPostgres(ppid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func isPostgres(pid int) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil && strings.HasSuffix(exe, "/postgres")
}

func parentOf(pid int) int {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}
