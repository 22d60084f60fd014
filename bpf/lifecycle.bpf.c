//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/* Process lifecycle: births (fork), what they run (exec), deaths (exit), and
 * the reparenting of orphans that a death causes, which has no tracepoint.
 *
 * fork and exit run for every process on the host, so they do as little as
 * they can: a map operation costs hundreds of nanoseconds where memory is
 * virtualised. Birth records are kept only where a postmaster can adopt
 * (births_matter), and only what can matter crosses to user space by
 * default; stream_all records and sends everything. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "events.h"
#include "maps.h"
#include "task.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

const struct btf_exports *unused_btf_exports __attribute__((unused));

/* Set by user space before loading. */
const volatile bool stream_all = false; /* --all: every exit reaches user space */
const volatile __u32 max_children = 64; /* orphans reported per dying parent */
/* Set by user space once every program is attached: processes started
 * earlier have no birth record, and their exits are no evictions. */
volatile __u64 attached_at_ns = ~0ULL;
#define MAX_CHILDREN_BOUND 256
#define MAX_SUBREAPER_DEPTH 16

/* With stream_all every exit is an event, and a wakeup per event would cost
 * user space a syscall each: wake it once WAKEUP_BYTES are waiting (it also
 * polls every few milliseconds, see probe.Read). Otherwise events are rare
 * and urgent: every one wakes it. */
#define WAKEUP_BYTES (64 << 10)
static __always_inline void submit_event(struct event *e)
{
	__u64 flags = 0;
	if (stream_all && bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) < WAKEUP_BYTES)
		flags = BPF_RB_NO_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

/* Whether a process's birth is worth a record. A postmaster adopts orphans
 * only as PID 1 of a namespace: find_new_reaper() hands an orphan to a live
 * subreaper ancestor (PostgreSQL never is one) or to the namespace's
 * child_reaper. So only processes in a non-initial PID namespace whose PID 1
 * is a postmaster need their original parent remembered; everyone else's
 * ancestry is read from the process tree when an event needs it. */
static __always_inline bool births_matter(struct task_struct *t)
{
	if (stream_all)
		return true;
	if (t->thread_pid->level == 0)
		return false;
	struct task_ref scratch = {};
	struct pid_namespace *ns = read_ns(t, &scratch);
	if (!ns)
		return false;
	__u32 init = BPF_CORE_READ(ns, child_reaper, tgid);
	return bpf_map_lookup_elem(&watched, &init) != 0;
}

/* A fork of a process (not a thread): where births matter, remember who its
 * parent was, and the chain above, while they still exist. This runs for
 * every fork on the host: it reads the typed tracepoint arguments directly
 * (plain loads, no helper calls) and writes one small record. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	/* CLONE_THREAD children share the parent's tgid. */
	if (child->pid != child->tgid)
		return 0;
	count(COUNTER_FORKS);
	if (!births_matter(child))
		return 0;

	struct birth_record b;
	b.time_ns = bpf_ktime_get_boot_ns();
	b.flags = BIRTH_FORKED;
	b._pad = 0;
	/* real_parent, not the forking thread: CLONE_PARENT makes them differ. */
	struct task_struct *t = child->real_parent;
	b.parent_start_ns = t->group_leader->start_boottime;
#pragma unroll
	for (int i = 0; i < ANCESTRY_LEN; i++) {
		struct ancestor *a = &b.ancestry[i];
		__u32 tgid = t->tgid;
		a->tgid = tgid;
		a->_pad = 0;
		if (!tgid) { /* pid 0, the idle task, is above every init */
			*(__u64 *)&a->comm[0] = 0;
			*(__u64 *)&a->comm[8] = 0;
			continue;
		}
		struct task_struct *leader = t->group_leader;
		*(__u64 *)&a->comm[0] = *(__u64 *)&leader->comm[0];
		*(__u64 *)&a->comm[8] = *(__u64 *)&leader->comm[8];
		t = t->real_parent;
	}

	struct proc_key key = { .tgid = child->tgid, .start_ns = child->start_boottime };
	bpf_map_update_elem(&births, &key, &b, BPF_ANY);
	return 0;
}

/* Executing a new program: remember the program and the start of its argv
 * (the environment that follows argv is never read). Starts of postgres
 * binaries go to user space, which decides whether it is a postmaster. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	/* After exec the task leads its group (de_thread keeps the leader's start). */
	struct proc_key key = { .tgid = task->tgid, .start_ns = task->start_boottime };
	/* Exec is rare and costly next to a map update: every process's exec
	 * record is kept, for the command line of whatever dies later. */
	struct exec_record x = {};
	bpf_probe_read_kernel_str(&x.exe, sizeof(x.exe), bprm->filename);
	/* The new mm is installed; its argv is [arg_start, arg_end). */
	struct mm_struct *mm = task->mm;
	if (mm) {
		__u64 start = mm->arg_start;
		__u64 len = mm->arg_end - start;
		if (len > ARGS_LEN)
			len = ARGS_LEN;
		if (bpf_probe_read_user(&x.args, len, (void *)start) == 0)
			x.args_len = len;
	}
	bpf_map_update_elem(&execs, &key, &x, BPF_ANY);

	/* "postgres" or "postmaster": an 8-byte and a 2-byte compare, cheap enough
	 * for every exec. */
	__u64 head = *(__u64 *)task->comm;
	bool postgres = head == *(__u64 *)"postgres" && task->comm[8] == 0;
	bool postmaster = head == *(__u64 *)"postmast" && task->comm[8] == 'e' &&
			  task->comm[9] == 'r' && task->comm[10] == 0;
	if (!postgres && !postmaster)
		return 0;

	struct event *e = reserve_event(EVENT_EXEC);
	if (!e)
		return 0;
	read_task_ref(task, &e->task);
	read_task_ref(task->real_parent, &e->parent);
	read_cgroup(task, e);
	read_history(&key, e);
	submit_event(e);
	return 0;
}

/* The kernel's find_new_reaper() (kernel/exit.c) for a dying thread group:
 * no live thread is left, so the nearest ancestor in the same pid namespace
 * that is a subreaper and still alive, else the namespace's child_reaper. */
static __always_inline struct task_struct *predict_reaper(struct task_struct *father,
							  struct pid_namespace *ns,
							  __u32 *event_flags)
{
	struct task_struct *reaper = BPF_CORE_READ(ns, child_reaper);

	if (BPF_CORE_READ(reaper, tgid) == BPF_CORE_READ(father, tgid))
		return 0; /* PID 1 of the namespace is dying: zap_pid_ns_processes() kills the rest */
	struct signal_struct *sig = BPF_CORE_READ(father, signal);
	if (!BPF_CORE_READ_BITFIELD_PROBED(sig, has_child_subreaper))
		return reaper;

	__u32 level = BPF_CORE_READ(father, thread_pid, level);
	struct task_struct *t = BPF_CORE_READ(father, real_parent);
	for (int i = 0; i < MAX_SUBREAPER_DEPTH; i++) {
		if (!t || BPF_CORE_READ(t, thread_pid, level) != level || BPF_CORE_READ(t, tgid) == 0)
			return reaper;
		sig = BPF_CORE_READ(t, signal);
		if (BPF_CORE_READ_BITFIELD_PROBED(sig, is_child_subreaper) &&
		    BPF_CORE_READ(sig, live.counter) > 0)
			return t;
		t = BPF_CORE_READ(t, real_parent);
	}
	*event_flags |= EVENT_REAPER_GUESSED;
	return reaper;
}

/* One adoption event per orphan. A global (non-inlined) function, so the
 * verifier checks it once rather than once per loop iteration; it takes
 * addresses as numbers, as global functions must. */
__noinline int report_orphan(__u64 child_addr, __u64 reaper_addr, __u32 flags)
{
	struct task_struct *child = (struct task_struct *)child_addr;
	struct task_struct *reaper = (struct task_struct *)reaper_addr;
	struct task_struct *father = BPF_CORE_READ(child, real_parent);

	struct event *e = reserve_event(EVENT_ADOPTION);
	if (!e)
		return 0;
	e->flags |= flags;
	read_task_ref(child, &e->task);
	read_task_ref(reaper, &e->parent);
	read_task_ref(father, &e->previous);
	read_cgroup(child, e);
	/* An unreaped zombie is handed over too: the new parent will reap it and
	 * see this status, as if the orphan had died in its care. */
	if (e->task.flags & TASK_ZOMBIE)
		e->exit_status = exit_status_of(child);
	struct proc_key key = { .tgid = e->task.tgid, .start_ns = e->task.start_ns };
	read_history(&key, e);
	if (!(e->birth.fork.flags & BIRTH_FORKED))
		walk_ancestry(father, &e->birth.fork); /* the dying father is its parent */
	submit_event(e);
	return 0;
}

/* Walks the dying process's children (all on this last thread's list: a
 * thread that exits earlier hands its children to a live sibling thread). */
static __always_inline void report_orphans(struct task_struct *father)
{
	struct task_ref scratch = {};
	struct pid_namespace *ns = read_ns(father, &scratch);
	if (!ns)
		return;
	__u32 flags = 0;
	struct task_struct *reaper = predict_reaper(father, ns, &flags);
	if (!reaper)
		return; /* nobody adopts: the children are being killed */

	/* Read as numbers: the first child's prev link is the list head. */
	__u64 pos = (__u64)BPF_CORE_READ(father, children.next);
	__u64 head = (__u64)BPF_CORE_READ((struct list_head *)pos, prev);
	__u64 sibling_off = bpf_core_field_offset(struct task_struct, sibling);
	__u32 limit = max_children;
	for (int i = 0; i < MAX_CHILDREN_BOUND; i++) {
		if (pos == head)
			return;
		if (i >= limit)
			break;
		report_orphan(pos - sibling_off, (__u64)reaper, flags);
		struct list_head *node = (struct list_head *)pos;
		pos = (__u64)BPF_CORE_READ(node, next);
	}
	if (pos != head)
		count(COUNTER_CHILDREN_TRUNCATED);
}

/* Whether a comm is "postgres" or "postmaster": two loads and compares. */
static __always_inline bool comm_is_postgres(const char *comm)
{
	__u64 head = *(__u64 *)comm;
	__u64 tail = *(__u64 *)(comm + 8);
	return (head == *(__u64 *)"postgres" && (tail & 0xff) == 0) ||
	       (head == *(__u64 *)"postmast" && (tail & 0xffffff) == ('e' | 'r' << 8));
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *task)
{
	/* do_exit() decrements signal->live just before this tracepoint: zero
	 * means this is the last thread, i.e. the process is gone. Like fork,
	 * this runs for every process: typed pointers are read directly, and
	 * maps are touched only when the process can have entries. */
	struct signal_struct *sig = task->signal;
	if (sig->live.counter != 0)
		return 0;
	count(COUNTER_EXITS);

	struct proc_key key = { .tgid = task->tgid, .start_ns = task->group_leader->start_boottime };
	struct birth_record *birth = 0;
	bool recorded = births_matter(task);
	if (recorded) {
		birth = bpf_map_lookup_elem(&births, &key);
		if (!birth && key.start_ns > attached_at_ns)
			count(COUNTER_BIRTHS_EVICTED);
	}

	if (task->children.next != &task->children)
		report_orphans(task);

	struct task_struct *parent = task->real_parent;
	__u32 parent_tgid = parent->tgid;
	bool adopted = birth && (birth->flags & BIRTH_FORKED) && birth->ancestry[0].tgid != parent_tgid;
	bool send = stream_all || adopted;
	if (!send) {
		/* Postmasters, and children of postmasters that are not plain
		 * backend exits: abnormal ones, and where a record should say whether
		 * it was adopted but none does (older than the agent, or evicted).
		 * The map is asked only when a comm says postgres; the start time
		 * check is left to user space. The wait(2) status: see
		 * exit_status_of. */
		__u32 status = (sig->flags & SIGNAL_GROUP_EXIT) ? sig->group_exit_code : task->exit_code;
		bool abnormal = (status & 0x7f) || ((status >> 8) & 0xff) >= 2;
		__u32 tgid = task->tgid;
		if (comm_is_postgres(task->group_leader->comm) && bpf_map_lookup_elem(&watched, &tgid))
			send = true;
		else if (comm_is_postgres(parent->group_leader->comm) && bpf_map_lookup_elem(&watched, &parent_tgid))
			send = abnormal || (recorded && !birth);
	}
	if (!send) {
		/* Anything whose parent is a container's init or a subreaper. */
		struct signal_struct *psig = parent->signal;
		if (BPF_CORE_READ_BITFIELD(psig, is_child_subreaper))
			send = true;
		else if (parent->thread_pid->level > 0) {
			struct task_ref scratch = {};
			struct pid_namespace *ns = read_ns(parent, &scratch);
			send = ns && BPF_CORE_READ(ns, child_reaper, tgid) == parent_tgid;
		}
	}

	if (send) {
		struct event *e = reserve_event(EVENT_EXIT);
		if (e) {
			e->exit_status = exit_status_of(task);
			if (adopted)
				e->flags |= EVENT_ADOPTED;
			read_task_ref(task, &e->task);
			read_task_ref(parent, &e->parent);
			read_cgroup(task, e);
			read_history(&key, e);
			if (!(e->birth.fork.flags & BIRTH_FORKED))
				walk_ancestry(parent, &e->birth.fork); /* not adopted: its parent is its own */
			submit_event(e);
		}
	}
	/* exec bumps self_exec_id past the parent_exec_id fork copied. */
	if (task->self_exec_id != task->parent_exec_id)
		bpf_map_delete_elem(&execs, &key);
	if (birth)
		bpf_map_delete_elem(&births, &key);
	return 0;
}
