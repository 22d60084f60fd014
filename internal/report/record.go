// Package report renders what orphanwatch found: one JSON object per line
// (the contract tests, log pipelines and the exporter rely on), a live table
// for a terminal, and for a crash-restart a short story an operator can act
// on. Command lines are redacted here, before anything leaves the process.
package report

import (
	"time"
)

// Record is one reported event. The JSON field names are a contract: add
// fields, never rename or remove them.
type Record struct {
	Time               time.Time  `json:"time"`
	Verdict            string     `json:"verdict"`
	Kind               string     `json:"kind"`
	PID                uint32     `json:"pid"`
	NSPid              uint32     `json:"ns_pid"`
	Comm               string     `json:"comm"`
	Exe                string     `json:"exe"`
	Cmdline            string     `json:"cmdline"`
	Signal             string     `json:"signal"`    // SIGPIPE; empty for a plain exit
	ExitCode           *int       `json:"exit_code"` // null when a signal ended it
	CoreDumped         bool       `json:"core_dumped"`
	ParentPID          uint32     `json:"parent_pid"`
	ParentNSPid        uint32     `json:"parent_ns_pid"`
	ParentComm         string     `json:"parent_comm"`
	OriginalParentPID  uint32     `json:"original_parent_pid"`
	OriginalParentComm string     `json:"original_parent_comm"`
	Ancestry           []Ancestor `json:"ancestry"`    // parent at birth first, up to 4
	AdoptedAt          *time.Time `json:"adopted_at"`  // null when not adopted, or adopted before orphanwatch started
	LifetimeMS         *int64     `json:"lifetime_ms"` // null when not an exit
	PidNS              uint64     `json:"pid_ns"`
	ContainerID        string     `json:"container_id"`

	ContainerRuntime string `json:"container_runtime,omitempty"`
	PodUID           string `json:"pod_uid,omitempty"`
	Namespace        string `json:"namespace,omitempty"` // Kubernetes namespace, with --kubernetes
	Pod              string `json:"pod,omitempty"`
	Container        string `json:"container,omitempty"` // container name

	// CrashRestart is true when the postmaster will (or did) reset: every
	// backend killed, crash recovery run.
	CrashRestart bool              `json:"crash_restart"`
	Postmaster   *PostmasterRecord `json:"postmaster,omitempty"`
	SignalSender *Sender           `json:"signal_sender,omitempty"`
	PreviousPID  uint32            `json:"previous_parent_pid,omitempty"` // adoption: the parent that died
	PreviousComm string            `json:"previous_parent_comm,omitempty"`
	PostgresLog  string            `json:"postgres_log,omitempty"` // what the postmaster logs about it
	// Origin says where an adopted process came from (origin.Kind:
	// docker-exec, cri-exec, healthcheck, probe, entrypoint,
	// server-process, unknown), OriginDetail the same in words.
	Origin       string     `json:"origin,omitempty"`
	OriginDetail string     `json:"origin_detail,omitempty"`
	OOM          *OOMRecord `json:"oom,omitempty"`
	Trigger      *Trigger   `json:"trigger,omitempty"`    // crash-restart-confirmed: what caused it
	Terminated   int        `json:"terminated,omitempty"` // crash-restart-confirmed: server processes told to quit
	// ServerProcessesKilled is Terminated, present (0 too) on every
	// crash-restart-confirmed record.
	ServerProcessesKilled *int `json:"server_processes_killed,omitempty"`
	// RecoveryMS: crash-restart-confirmed: from the crash to the end of
	// crash recovery, while PostgreSQL refused connections.
	RecoveryMS *int64 `json:"recovery_ms,omitempty"`
	Summary    string `json:"summary"`
	Fix        string `json:"fix,omitempty"`
}

// Ancestor is one step of the chain above a process at its birth.
type Ancestor struct {
	PID  uint32 `json:"pid"`
	Comm string `json:"comm"`
}

// PostmasterRecord is the postmaster involved.
type PostmasterRecord struct {
	PID     uint32 `json:"pid"`
	NSPid   uint32 `json:"ns_pid"`
	PID1    bool   `json:"pid1"`
	Version int    `json:"version,omitempty"` // major version
	DataDir string `json:"data_dir,omitempty"`
}

// Sender is who sent the signal that ended a process.
type Sender struct {
	PID  uint32 `json:"pid"`
	Comm string `json:"comm"`
	// Origin: process (kill(2) from another process), self (the process
	// signalled itself), kernel-for-self (kernel code acting for it, like a
	// write to a broken pipe), or kernel (e.g. the OOM killer).
	Origin string `json:"origin"`
}

// OOMRecord is what the OOM killer saw.
type OOMRecord struct {
	Role string `json:"role"` // postmaster, server, adopted, other
	// GroupKill: memory.oom.group: the OOM killer takes the victim's whole
	// cgroup, the postmaster too unless its oom_score_adj is -1000.
	GroupKill      bool   `json:"group_kill"`
	TotalVMBytes   uint64 `json:"total_vm_bytes"`
	AnonRSSBytes   uint64 `json:"anon_rss_bytes"`
	FileRSSBytes   uint64 `json:"file_rss_bytes"`
	ShmemRSSBytes  uint64 `json:"shmem_rss_bytes"`
	OOMScoreAdj    int32  `json:"oom_score_adj"`
	Constraint     string `json:"constraint"` // memcg or system
	MemoryCgroupID uint64 `json:"memory_cgroup_id"`
}

// Trigger names the death that made a postmaster crash-restart.
type Trigger struct {
	PID     uint32 `json:"pid"`
	NSPid   uint32 `json:"ns_pid"`
	Comm    string `json:"comm"`
	Verdict string `json:"verdict"`
	Signal  string `json:"signal"`
	Origin  string `json:"origin,omitempty"`
	// Fix is the advice given with the culprit's record.
	Fix string `json:"-"`
}
