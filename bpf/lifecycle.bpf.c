//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/* Process lifecycle: births (fork), what they run (exec), deaths (exit), and
 * the reparenting of orphans that a death causes, which has no tracepoint.
 *
 * Only what can matter crosses to user space by default; stream_all sends
 * every process exit. */
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

/* Room to build a birth record: it is too big for the 512-byte BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct birth);
} birth_scratch SEC(".maps");

/* A fork of a process (not a thread): remember who its parent was, and the
 * chain above, while they still exist. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	/* CLONE_THREAD children share the parent's tgid. */
	if (child->pid != child->tgid)
		return 0;
	count(COUNTER_FORKS);

	__u32 zero = 0;
	struct birth *b = bpf_map_lookup_elem(&birth_scratch, &zero);
	if (!b)
		return 0;
	b->time_ns = bpf_ktime_get_boot_ns();
	b->flags = BIRTH_FORKED;
	b->args_len = 0;
	b->exe[0] = 0;

	/* real_parent, not the forking thread: CLONE_PARENT makes them differ. */
	struct task_struct *t = child->real_parent;
	b->parent_start_ns = t->group_leader->start_boottime;
#pragma unroll
	for (int i = 0; i < ANCESTRY_LEN; i++) {
		__u32 tgid = t ? t->tgid : 0;
		b->ancestry[i].tgid = tgid;
		if (!tgid) { /* pid 0 (the idle task) is above every init */
			b->ancestry[i].comm[0] = 0;
			continue;
		}
		bpf_probe_read_kernel(&b->ancestry[i].comm, COMM_LEN, t->group_leader->comm);
		t = t->real_parent;
	}

	struct proc_key key = { .tgid = child->tgid, .start_ns = child->start_boottime };
	bpf_map_update_elem(&births, &key, b, BPF_ANY);
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
	struct birth *b = bpf_map_lookup_elem(&births, &key);
	if (!b) {
		/* Started before we attached: record it from here on. */
		__u32 zero = 0;
		struct birth *blank = bpf_map_lookup_elem(&birth_scratch, &zero);
		if (!blank)
			return 0;
		__builtin_memset(blank, 0, sizeof(*blank));
		bpf_map_update_elem(&births, &key, blank, BPF_NOEXIST);
		b = bpf_map_lookup_elem(&births, &key);
		if (!b)
			return 0;
	}
	b->flags |= BIRTH_EXECED;
	bpf_probe_read_kernel_str(&b->exe, sizeof(b->exe), bprm->filename);

	/* The new mm is installed; its argv is [arg_start, arg_end). */
	struct mm_struct *mm = task->mm;
	__u64 len = 0;
	if (mm) {
		__u64 start = mm->arg_start;
		len = mm->arg_end - start;
		if (len > ARGS_LEN)
			len = ARGS_LEN;
		if (bpf_probe_read_user(&b->args, len, (void *)start))
			len = 0;
	}
	b->args_len = len;

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
	e->birth = *b;
	e->flags |= EVENT_HAS_BIRTH;
	bpf_ringbuf_submit(e, 0);
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
	bpf_ringbuf_submit(e, 0);
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

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *task)
{
	/* do_exit() decrements signal->live just before this tracepoint: zero
	 * means this is the last thread, i.e. the process is gone. */
	if (task->signal->live.counter != 0)
		return 0;
	count(COUNTER_EXITS);

	struct proc_key key = { .tgid = task->tgid, .start_ns = task->group_leader->start_boottime };
	struct birth *birth = bpf_map_lookup_elem(&births, &key);
	if (!birth && key.start_ns > attached_at_ns)
		count(COUNTER_BIRTHS_EVICTED);

	if (task->children.next != &task->children)
		report_orphans(task);

	struct task_struct *parent = task->real_parent;
	__u32 parent_tgid = parent->tgid;
	bool adopted = birth && birth->ancestry[0].tgid != parent_tgid;
	bool send = stream_all || adopted;
	if (!send) {
		/* Children of postmasters that are not plain backend exits, and
		 * postmasters themselves. The start time check is left to user space. */
		__u32 status = exit_status_of(task);
		bool abnormal = (status & 0x7f) || ((status >> 8) & 0xff) >= 2;
		__u32 tgid = task->tgid;
		if (bpf_map_lookup_elem(&watched, &tgid))
			send = true;
		else if (bpf_map_lookup_elem(&watched, &parent_tgid))
			send = abnormal || !birth;
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
			bpf_ringbuf_submit(e, 0);
		}
	}
	if (birth)
		bpf_map_delete_elem(&births, &key);
	return 0;
}
