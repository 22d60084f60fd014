/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/* The records the BPF programs hand to user space, and the map values they
 * share. bpf2go turns these structs into Go types (internal/probe), so every
 * struct is naturally aligned (never packed) and its size is a multiple of 8. */
#pragma once

#define COMM_LEN 16
#define EXE_LEN 64
#define ARGS_LEN 160
#define ANCESTRY_LEN 4
#define CGROUP_NAME_LEN 160  /* kubepods-<qos>-pod<uid>.slice:cri-containerd:<64 hex> is 145 */
#define CGROUP_PARENT_LEN 96

enum event_kind {
	EVENT_EXIT = 1,     /* a process (its whole thread group) exited */
	EVENT_ADOPTION = 2, /* a process lost its parent; parent below is the predicted new one */
	EVENT_EXEC = 3,     /* a postgres/postmaster binary was executed */
	EVENT_SIGNAL = 4,   /* a terminating signal sent by or to a watched postmaster */
	EVENT_OOM = 5,      /* the OOM killer chose a victim (oom:mark_victim) */
	EVENT_REAP = 6,       /* a watched postmaster's waitpid(-1) is reaping this child now */
	EVENT_REAPED_ALL = 7, /* its waitpid found no zombie: the end of a reaping pass */
	EVENT_PMSIGNAL = 8,   /* it took delivery of a pmsignal from a child (task.start_ns: its start) */
};

/* task_ref.flags */
enum task_flag {
	TASK_NS_REAPER = 1 << 0,  /* child_reaper (PID 1) of its pid namespace */
	TASK_SUBREAPER = 1 << 1,  /* prctl(PR_SET_CHILD_SUBREAPER) */
	TASK_WATCHED = 1 << 2,    /* user space told us it is a postmaster */
	TASK_ZOMBIE = 1 << 3,     /* already dead, waiting to be reaped */
};

/* event.flags */
enum event_flag {
	EVENT_HAS_BIRTH = 1 << 0,       /* birth holds the fork/exec record */
	EVENT_HAS_SIGNAL = 1 << 1,      /* signal holds the last terminating signal sent to it */
	EVENT_ADOPTED = 1 << 2,         /* parent at death is not the parent at birth */
	EVENT_REAPER_GUESSED = 1 << 3,  /* adoption: subreaper walk hit its bound */
	EVENT_CGROUP_V1 = 1 << 4,       /* cgroup is the v1 memory controller's, not v2 */
	EVENT_PARENT_EXITING = 1 << 5,  /* exit: its parent was dying too; parent is the reaper it goes to */
	EVENT_DEAD = 1 << 6,            /* adoption: the orphan is dead or dying; exit_status is final */
	EVENT_HAS_PREVIOUS_EXEC = 1 << 7, /* previous_exec holds the dying parent's exec record */
	EVENT_ZOMBIES_PENDING = 1 << 8,   /* pmsignal: zombies awaited reaping when it was delivered */
	EVENT_REAPED_EARLIER = 1 << 9,    /* reap: by an earlier wait, whose tracepoint ran before it was a zombie */
};

/* watch.flags: a watched postmaster's state */
enum watch_flag {
	/* From a crash (a child dying of a crash status, or its SIGQUIT
	 * fan-out) until user space sees recovery end: its children's clean
	 * exits matter then, as its startup process's ends the reset. */
	WATCH_RESETTING = 1 << 0,
	/* A child that matters became a zombie: its waitpid calls are looked at
	 * until one finds no zombie left. */
	WATCH_ZOMBIES = 1 << 1,
	/* Its startup process sent it a pmsignal (SIGUSR1), not yet delivered. */
	WATCH_REDO_SIGNALLED = 1 << 2,
	/* The pmsignal was delivered while zombies awaited: the end of the
	 * reaping pass is reported (PostgreSQL 16+ handles it after). */
	WATCH_PMSIGNAL_WAITS = 1 << 3,
	/* The pmsignal was delivered with no reaping pass under way or due:
	 * whether one comes first is told by the next SIGCHLD's delivery. */
	WATCH_PMSIGNAL_HELD = 1 << 4,
};

/* birth.flags */
enum birth_flag {
	BIRTH_FORKED = 1 << 0, /* seen at fork: time and ancestry are real */
	BIRTH_EXECED = 1 << 1, /* seen at exec: exe and args are set */
	BIRTH_WALKED = 1 << 2, /* no record: ancestry read from the process tree for this event */
};

/* signal_info.flags */
enum signal_flag {
	SIGNAL_FROM_KERNEL = 1 << 0,  /* SEND_SIG_PRIV or SI_KERNEL: e.g. the OOM killer */
	SIGNAL_FROM_SELF = 1 << 1,    /* raised by the process itself: SIGPIPE, abort(), faults */
	SIGNAL_DEFAULT_ACTION = 1 << 2, /* delivered with SIG_DFL: the signal killed it */
	SIGNAL_NO_INFO = 1 << 3,  /* SEND_SIG_NOINFO: kernel code acting for the process, e.g. pipe_write's SIGPIPE */
	SIGNAL_TO_CHILD = 1 << 4, /* signal events: the sender is the target's parent */
};

/* oom_info.flags */
enum oom_flag {
	OOM_MEMCG = 1 << 0, /* a memory cgroup was at its limit: the OOM was that cgroup's */
	OOM_GROUP = 1 << 1, /* memory.oom.group is set above the victim: its whole cgroup is killed */
};

enum counter {
	COUNTER_RINGBUF_FULL = 0,       /* events lost: ring buffer reservation failed */
	COUNTER_BIRTHS_EVICTED = 1,     /* exits of processes born after attach with no birth record */
	COUNTER_CHILDREN_TRUNCATED = 2, /* exiting parents (threads) with more children than max_children */
	COUNTER_MAX = 3,
};

/* A process is identified by its tgid and the boot-time start of its group
 * leader: a reused pid never has the same start time. */
struct proc_key {
	__u32 tgid;
	__u32 _pad;
	__u64 start_ns;
};

/* A watched postmaster (the watched map's value). */
struct watch {
	__u64 start_ticks;    /* its start in /proc ticks: a recycled pid is not it */
	__u64 reset_at_ns;    /* boot ns of the last crash, which set WATCH_RESETTING */
	__u64 redo_sender_ns; /* start (boot ns) of the child whose pmsignal awaits delivery */
	__u64 held_sender_ns; /* WATCH_PMSIGNAL_HELD: that child's start */
	__u64 held_nvcsw;     /* WATCH_PMSIGNAL_HELD: the postmaster's voluntary switches then */
	__u32 flags;          /* enum watch_flag */
	__u32 zombies;        /* its entries in the zombies map (atomic) */
};

/* A process as seen at one moment. */
struct task_ref {
	__u64 start_ns; /* group leader's start_boottime */
	__u64 pid_ns;   /* inode number of its active pid namespace */
	__u32 tgid;     /* pid in the initial namespace */
	__u32 ns_pid;   /* pid in its own namespace */
	__u32 ns_level; /* 0 for the host namespace */
	__u32 flags;    /* enum task_flag */
	char comm[COMM_LEN];
};

/* A child of a watched postmaster that became a zombie that matters, from
 * its SIGCHLD until the wait that reaps it is reported. */
struct zombie {
	struct task_ref task; /* read at its SIGCHLD */
	__u64 addr;           /* its task_struct: exit_state says whether it was reaped */
	__u64 pm_start_ns;    /* with pm_tgid, its postmaster */
	__u32 pm_tgid;
	__u32 status;
};

struct ancestor {
	__u32 tgid;
	__u32 _pad; /* keeps comm 8-byte aligned: it is copied as two words */
	char comm[COMM_LEN];
};

/* What we learn when a process is born (fork). Kept in the births map for
 * the process's lifetime, where births matter (lifecycle.bpf.c). */
struct birth_record {
	__u64 time_ns;         /* fork time, boot clock */
	__u64 parent_start_ns; /* with ancestry[0].tgid, the original parent */
	__u32 flags;           /* enum birth_flag */
	__u32 _pad;
	struct ancestor ancestry[ANCESTRY_LEN]; /* [0] the parent, [1] its parent, ... */
};

/* What a process executes (exec). Kept in the execs map, written only at
 * exec: forks that do not exec never pay for it. */
struct exec_record {
	char exe[EXE_LEN];   /* the path given to execve */
	char args[ARGS_LEN]; /* the start of argv, never the environment */
	__u16 args_len;      /* bytes of args used, NUL separated */
	__u16 _pad[3];
};

/* Both, as an event carries them. */
struct birth {
	struct birth_record fork;
	struct exec_record exec;
};

/* The last terminating signal sent to a process: who sent it and whether it
 * was delivered with the default action. */
struct signal_info {
	__u64 generated_ns;
	__u64 delivered_ns;
	__u32 signo;
	__s32 code; /* si_code: SI_USER for kill(2), SI_KERNEL, ... */
	__u32 sender_tgid;
	__u32 flags; /* enum signal_flag */
	char sender_comm[COMM_LEN];
};

struct cgroup_ref {
	__u64 id; /* kernfs id: the cgroup directory's inode number */
	char name[CGROUP_NAME_LEN];     /* its kernfs name: docker-<id>.scope, <id>, ... */
	char parent[CGROUP_PARENT_LEN]; /* its parent's name: docker, kubepods-...-pod<uid>.slice, ... */
};

struct oom_info {
	__u64 total_vm_pages;
	__u64 anon_rss_pages;
	__u64 file_rss_pages;
	__u64 shmem_rss_pages;
	__s32 oom_score_adj;
	__u32 flags; /* enum oom_flag */
};

struct event {
	__u64 time_ns;      /* boot clock */
	__u32 kind;         /* enum event_kind */
	__u32 flags;        /* enum event_flag */
	__u32 exit_status;  /* as wait(2) reports it: (code << 8) | 0x80 core | signal */
	__u32 _pad;
	struct task_ref task;     /* the process the event is about */
	struct task_ref parent;   /* exit: parent at death; adoption: new parent; signal: sender;
				   * reap, reaped-all, pmsignal: the postmaster */
	struct task_ref previous; /* adoption, and exit with EVENT_PARENT_EXITING: the parent that died */
	struct cgroup_ref cgroup;
	struct signal_info signal;
	struct oom_info oom;
	struct birth birth;
	/* adoption, and exit with EVENT_PARENT_EXITING: what the parent that
	 * died ran (EVENT_HAS_PREVIOUS_EXEC), where the orphan came from */
	struct exec_record previous_exec;
};

/* Referenced once so the types stay in BTF and bpf2go can emit them for Go. */
struct btf_exports {
	struct event event;
	enum event_kind kind;
	enum task_flag task_flag;
	enum event_flag event_flag;
	enum birth_flag birth_flag;
	enum signal_flag signal_flag;
	enum oom_flag oom_flag;
	enum watch_flag watch_flag;
	struct watch watch;
	enum counter counter;
};
