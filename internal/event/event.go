// Package event holds what the kernel tells orphanwatch, as plain Go values:
// the probe produces them, lineage, verdict and report consume them. Names
// are kept as fixed-size arrays so that handling an event allocates nothing;
// they become strings only when an event is reported.
package event

import "bytes"

// Kind says what happened.
type Kind uint8

const (
	KindExit      Kind = 1 // a process (its whole thread group) exited
	KindAdoption  Kind = 2 // a process lost its parent and was handed to a new one
	KindExec      Kind = 3 // a postgres binary was executed
	KindSignal    Kind = 4 // a terminating signal sent by or to a postmaster
	KindOOM       Kind = 5 // the OOM killer chose a victim
	KindReap      Kind = 6 // a watched postmaster's waitpid(-1) reaps this child now
	KindReapedAll Kind = 7 // its waitpid found no zombie left: a reaping pass ended
	KindPMSignal  Kind = 8 // it took delivery of the pmsignal its startup process sent
)

func (k Kind) String() string {
	switch k {
	case KindExit:
		return "exit"
	case KindAdoption:
		return "adoption"
	case KindExec:
		return "exec"
	case KindSignal:
		return "signal"
	case KindOOM:
		return "oom"
	case KindReap:
		return "reap"
	case KindReapedAll:
		return "reaped-all"
	case KindPMSignal:
		return "pmsignal"
	}
	return "unknown"
}

// Kinds lists every kind, for counters keyed by kind.
var Kinds = [...]Kind{KindExit, KindAdoption, KindExec, KindSignal, KindOOM, KindReap, KindReapedAll, KindPMSignal}

// Comm is a task's command name (TASK_COMM_LEN bytes, NUL padded).
type Comm [16]byte

func (c Comm) String() string { return cString(c[:]) }

// Is compares without allocating.
func (c *Comm) Is(name string) bool {
	n := bytes.IndexByte(c[:], 0)
	if n < 0 {
		n = len(c)
	}
	return string(c[:n]) == name
}

func cString(b []byte) string {
	if n := bytes.IndexByte(b, 0); n >= 0 {
		b = b[:n]
	}
	return string(b)
}

// TicksPerSecond is USER_HZ, the unit of /proc/<pid>/stat's starttime. It is
// 100 on every architecture orphanwatch builds for (x86, arm64).
const TicksPerSecond = 100

// ProcessKey identifies a process across PID reuse: its host pid and the
// start time of its group leader, in the ticks /proc reports, so a key built
// from /proc and one built from a kernel event agree.
type ProcessKey struct {
	PID        uint32
	StartTicks uint64
}

// StartTicks converts a boot-clock start time in nanoseconds to /proc ticks.
func StartTicks(startNS uint64) uint64 { return startNS / (1e9 / TicksPerSecond) }

// Task is a process as seen at one moment.
type Task struct {
	PID     uint32 // host pid (the tgid)
	NSPid   uint32 // pid in its own namespace
	NSLevel uint32 // 0: the host namespace
	PidNS   uint64 // inode of its pid namespace
	Start   uint64 // boot-clock start of its group leader, ns
	Flags   TaskFlags
	Comm    Comm
}

// Key is the task's PID-reuse-proof identity.
func (t *Task) Key() ProcessKey { return ProcessKey{PID: t.PID, StartTicks: StartTicks(t.Start)} }

// TaskFlags mirror enum task_flag in bpf/events.h.
type TaskFlags uint32

const (
	TaskNSReaper  TaskFlags = 1 << 0 // PID 1 (child_reaper) of its pid namespace
	TaskSubreaper TaskFlags = 1 << 1 // prctl(PR_SET_CHILD_SUBREAPER)
	TaskWatched   TaskFlags = 1 << 2 // a postmaster orphanwatch told the kernel about
	TaskZombie    TaskFlags = 1 << 3 // dead, not yet reaped
)

// Flags mirror enum event_flag in bpf/events.h.
type Flags uint32

const (
	HasBirth      Flags = 1 << 0
	HasSignal     Flags = 1 << 1
	Adopted       Flags = 1 << 2 // parent at death differs from the parent at birth
	ReaperGuessed Flags = 1 << 3 // adoption: the subreaper walk hit its bound
	CgroupV1      Flags = 1 << 4 // the cgroup is the v1 memory controller's
	// ParentExiting: exit of a process whose parent was dying too; Parent is
	// the reaper it goes to, as the kernel's find_new_reaper() picks it.
	ParentExiting Flags = 1 << 5
	Dead          Flags = 1 << 6 // adoption: the orphan is dead or dying; Status is final
	// HasPreviousExec: PreviousExec holds what the parent that died ran.
	HasPreviousExec Flags = 1 << 7
	// ZombiesPending: pmsignal delivered while zombies awaited reaping.
	ZombiesPending Flags = 1 << 8
	// ReapedEarlier: a reap found at the postmaster's next wait, made by
	// one whose tracepoint ran before the child was a zombie.
	ReapedEarlier Flags = 1 << 9
)

// Ancestor is one step of the chain above a process at its birth.
type Ancestor struct {
	PID  uint32
	Comm Comm
}

// BirthFlags mirror enum birth_flag in bpf/events.h.
type BirthFlags uint32

const (
	BirthForked BirthFlags = 1 << 0 // seen at fork: time and ancestry are real
	BirthExeced BirthFlags = 1 << 1 // seen at exec: exe and args are set
	BirthWalked BirthFlags = 1 << 2 // no record: ancestry read from the process tree for the event
)

// Birth is what the kernel remembered from the process's fork and exec.
type Birth struct {
	Time        uint64 // fork, boot clock ns
	ParentStart uint64 // boot clock ns; with Ancestry[0].PID, the original parent
	Flags       BirthFlags
	Ancestry    [4]Ancestor // [0] the parent, [1] its parent, ...
	Exec
}

// OriginalParent is the parent the process was born to.
func (b *Birth) OriginalParent() ProcessKey {
	return ProcessKey{PID: b.Ancestry[0].PID, StartTicks: StartTicks(b.ParentStart)}
}

// Exec is what a process executed, as the kernel recorded it at exec.
type Exec struct {
	Exe     [64]byte
	Args    [160]byte // NUL-separated argv, possibly truncated
	ArgsLen uint16
}

// ExePath is the path given to execve, if the process executed one.
func (x *Exec) ExePath() string { return cString(x.Exe[:]) }

// Truncated reports whether the recorded arguments are cut short: the
// kernel keeps only the start of argv.
func (x *Exec) Truncated() bool { return int(x.ArgsLen) >= len(x.Args) }

// Argv returns the recorded arguments (allocates: for reporting only).
func (x *Exec) Argv() []string {
	n := min(int(x.ArgsLen), len(x.Args))
	raw := bytes.TrimRight(x.Args[:n], "\x00")
	if len(raw) == 0 {
		return nil
	}
	parts := bytes.Split(raw, []byte{0})
	argv := make([]string, len(parts))
	for i, p := range parts {
		argv[i] = string(p)
	}
	return argv
}

// SignalFlags mirror enum signal_flag in bpf/events.h.
type SignalFlags uint32

const (
	SignalFromKernel    SignalFlags = 1 << 0 // SEND_SIG_PRIV / SI_KERNEL, e.g. the OOM killer
	SignalFromSelf      SignalFlags = 1 << 1 // raised by the process itself (SIGPIPE, abort, faults)
	SignalDefaultAction SignalFlags = 1 << 2 // delivered with SIG_DFL: it killed the process
	SignalNoInfo        SignalFlags = 1 << 3 // sent by kernel code acting for the process: pipe_write's SIGPIPE
	SignalToChild       SignalFlags = 1 << 4 // signal events: the sender is the target's parent
)

// Signal is the last terminating signal sent to a process.
type Signal struct {
	Generated  uint64 // boot clock ns
	Delivered  uint64 // boot clock ns, 0 when not delivered with the default action
	Signo      uint32
	Code       int32 // si_code
	SenderPID  uint32
	Flags      SignalFlags
	SenderComm Comm
}

// Cgroup is the cgroup the process ran in (see bpf/task.h read_cgroup).
type Cgroup struct {
	ID     uint64
	Name   [160]byte // kernfs name of the cgroup directory
	Parent [96]byte  // kernfs name of its parent
}

// Names returns the cgroup's name and its parent's (allocates).
func (c *Cgroup) Names() (name, parent string) { return cString(c.Name[:]), cString(c.Parent[:]) }

// OOMFlags mirror enum oom_flag in bpf/events.h.
type OOMFlags uint32

const (
	OOMMemcg OOMFlags = 1 << 0 // a memory cgroup's limit was hit, not the machine's
	OOMGroup OOMFlags = 1 << 1 // memory.oom.group: the victim's whole cgroup is killed
)

// OOM is what the OOM killer saw of its victim.
type OOM struct {
	TotalVMBytes  uint64
	AnonRSSBytes  uint64
	FileRSSBytes  uint64
	ShmemRSSBytes uint64
	OOMScoreAdj   int32
	Flags         OOMFlags
}

// Event is one record from the kernel. Which parts are set depends on Kind.
type Event struct {
	Time     uint64 // boot clock ns
	Kind     Kind
	Flags    Flags
	Status   ExitStatus // exit; adoption of the dead
	Task     Task       // the process the event is about
	Parent   Task       // exit: parent at death; adoption: new parent; exec: parent; signal: sender; reap, reaped-all, pmsignal: the postmaster
	Previous Task       // adoption, and exit with ParentExiting: the parent that died
	Cgroup   Cgroup
	Signal   Signal
	OOM      OOM
	Birth    Birth
	// PreviousExec: adoption, and exit with ParentExiting: what the parent
	// that died ran (HasPreviousExec), where the orphan came from.
	PreviousExec Exec
}
