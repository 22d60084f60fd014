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
#include "postgres.h"
#include "task.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

const struct btf_exports *unused_btf_exports __attribute__((unused));

/* Set by user space before loading. */
#define stream_all ((bool)immediate(IMM_STREAM_ALL, 0)) /* --all: every exit reaches user space */
const volatile __u32 max_children = 64; /* orphans reported per exiting thread */
/* With stream_all every exit is an event, and a wakeup per event would cost
 * user space a syscall each: wake it once wakeup_bytes are waiting (it also
 * polls every few milliseconds, see probe.Read). Go sets min(64 KiB, half the
 * ring buffer), so a small ring buffer still reaches it. Otherwise events
 * are rare and urgent: every one wakes it. */
const volatile __u32 wakeup_bytes = 64 << 10;
/* Set by user space once every program is attached: processes started
 * earlier have no birth record, and their exits are no evictions. */
volatile __u64 attached_at_ns = ~0ULL;
/* Set by user space: how many postmasters it watches. With none, no birth
 * can matter (and handle_exec_idle runs instead of handle_exec): read only
 * for a process in a PID namespace, after its level. */
volatile __u32 watching = 0;
#define MAX_CHILDREN_BOUND 256 /* probe.MaxChildrenBound: Go rejects a larger max_children */
#define MAX_SUBREAPER_DEPTH 16
#define MAX_THREADS_SCANNED 64
#define PF_EXITING 0x00000004 /* include/linux/sched.h, stable since 2.6: set by exit_signals() */

static __always_inline void submit_event(struct event *e)
{
	__u64 flags = 0;
	if (stream_all && bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) < wakeup_bytes)
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
	/* The level first: a host process's answer costs no map memory. */
	if (t->thread_pid->level == 0 || !watching)
		return false;
	struct task_ref scratch = {};
	struct pid_namespace *ns = read_ns(t, &scratch);
	if (!ns)
		return false;
	struct task_struct *init = BPF_CORE_READ(ns, child_reaper);
	return watch_of(BPF_CORE_READ(init, tgid), process_start_ns(init)) != 0;
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

/* Where births matter (in a watched postmaster's namespace, or everywhere
 * with stream_all) an exec is remembered: the program and the start of its
 * argv (the environment that follows argv is never read), for the command
 * line of whatever dies later. Starts of postgres binaries go to user space,
 * which decides whether it is a postmaster. */
static __always_inline void exec_seen(struct task_struct *task, struct linux_binprm *bprm, bool server, bool keep)
{
	/* After exec the task leads its group (de_thread keeps the leader's start). */
	struct proc_key key = { .tgid = task->tgid, .start_ns = task->start_boottime };
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
	if (keep)
		bpf_map_update_elem(&execs, &key, &x, BPF_ANY);
	if (!server)
		return;

	struct event *e = reserve_event(EVENT_EXEC);
	if (!e)
		return;
	read_task_ref(task, &e->task);
	read_task_ref(task->real_parent, &e->parent);
	read_cgroup(task, e);
	read_history(&key, bpf_map_lookup_elem(&births, &key), e);
	e->birth.exec = x;
	e->birth.fork.flags |= BIRTH_EXECED;
	e->flags |= EVENT_HAS_BIRTH;
	submit_event(e);
}

/* Attached while a postmaster is watched (always with stream_all). */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	bool server = comm_is_server(task->comm);
	bool keep = births_matter(task);
	if (server || keep)
		exec_seen(task, bprm, server, keep);
	return 0;
}

/* Attached instead of handle_exec while nothing is watched: then no birth
 * matters, and only a postgres binary's start does. It reads nothing but
 * the comm exec has just written: every exec on a node with no postmaster
 * pays this compare and nothing else (a pid's level, read by births_matter,
 * is a cold line: 150 ns more here). */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec_idle, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	if (comm_is_server(task->comm))
		exec_seen(task, bprm, true, false);
	return 0;
}

/* Orphans reported by a thread of a process in a group exit while another
 * of its threads had not reached do_exit() yet: that thread may still take
 * them over (see report_orphans) and must not report them again. Orphan ->
 * tgid of the dying process. Touched only by exiting threads with children. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct proc_key);
	__type(value, __u32);
} handed SEC(".maps");

/* find_alive_thread() (kernel/exit.c): a thread of the group that has not
 * reached do_exit() yet (no PF_EXITING) takes an exiting thread's children.
 * The group's threads hang off signal->thread_head by task->thread_node
 * (both since 3.14). Past MAX_THREADS_SCANNED, one of the rest is assumed live. */
static __always_inline bool has_live_thread(struct task_struct *t)
{
	struct signal_struct *sig = BPF_CORE_READ(t, signal);
	__u64 head = (__u64)&sig->thread_head;
	__u64 pos = (__u64)BPF_CORE_READ(sig, thread_head.next);
	__u64 node_off = bpf_core_field_offset(struct task_struct, thread_node);
	for (int i = 0; i < MAX_THREADS_SCANNED; i++) {
		if (pos == head)
			return false;
		struct task_struct *thread = (struct task_struct *)(pos - node_off);
		if (!(BPF_CORE_READ(thread, flags) & PF_EXITING))
			return true;
		pos = (__u64)BPF_CORE_READ((struct list_head *)pos, next);
	}
	return true;
}

/* The kernel's find_new_reaper() (kernel/exit.c) for the children of a
 * dying thread group (no live thread left to take them): the nearest
 * ancestor in the same pid namespace that is a subreaper and still alive,
 * else the namespace's child_reaper. Returns 0 when nobody adopts. */
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

/* Where the children of a dying process go when no thread of it is left to
 * take them (the nearest live subreaper, else the namespace's init), or 0
 * when its namespace is being killed with it. */
static __always_inline struct task_struct *reaper_after(struct task_struct *father, __u32 *event_flags)
{
	struct task_ref scratch = {};
	struct pid_namespace *ns = read_ns(father, &scratch);
	if (!ns)
		return 0;
	return predict_reaper(father, ns, event_flags);
}

/* Whether a process is watched as a postmaster. */
static __always_inline bool is_watched(struct task_struct *t)
{
	return watch_of(BPF_CORE_READ(t, tgid), process_start_ns(t)) != 0;
}

enum handover {
	HANDOVER_NONE = 0,  /* the orphan leaves the process now: just report it */
	HANDOVER_FINAL = 1, /* it leaves now, unless an earlier thread reported it */
	HANDOVER_MAYBE = 2, /* a live thread may take it over: report and remember it */
};

/* One adoption event per orphan. A global (non-inlined) function, so the
 * verifier checks it once rather than once per loop iteration; it takes
 * addresses as numbers, as global functions must. */
__noinline int report_orphan(__u64 child_addr, __u64 reaper_addr, __u32 flags, __u32 handover)
{
	struct task_struct *child = (struct task_struct *)child_addr;
	struct task_struct *reaper = (struct task_struct *)reaper_addr;
	struct task_struct *father = BPF_CORE_READ(child, real_parent);
	struct proc_key key = { .tgid = BPF_CORE_READ(child, tgid), .start_ns = process_start_ns(child) };

	if (handover != HANDOVER_NONE) {
		__u32 dying = BPF_CORE_READ(father, tgid);
		__u32 *by = bpf_map_lookup_elem(&handed, &key);
		if (by && *by == dying) {
			if (handover == HANDOVER_FINAL)
				bpf_map_delete_elem(&handed, &key);
			return 0;
		}
		if (handover == HANDOVER_MAYBE)
			bpf_map_update_elem(&handed, &key, &dying, BPF_ANY);
	}

	/* A dead or dying orphan (every thread past do_exit's decrement of
	 * signal->live; a leader that called pthread_exit while other threads
	 * run is not) goes to its new parent with a final status, which that
	 * parent reaps as if it had died in its care. Its own exit may have been
	 * traced while this father still looked alive, so it is reported here,
	 * unless its exit program already claimed it. */
	bool dead = BPF_CORE_READ(child, signal, live.counter) == 0;
	if (dead && !claim_death(&key))
		return 0;

	struct event *e = reserve_event(EVENT_ADOPTION);
	if (!e)
		return 0;
	e->flags |= flags;
	read_task_ref(child, &e->task);
	read_task_ref(reaper, &e->parent);
	read_task_ref(father, &e->previous);
	read_previous_exec(father, e);
	read_cgroup(child, e);
	if (dead) {
		e->flags |= EVENT_DEAD;
		e->exit_status = exit_status_of(child);
	}
	read_history(&key, bpf_map_lookup_elem(&births, &key), e);
	if (!(e->birth.fork.flags & BIRTH_FORKED))
		walk_ancestry(father, &e->birth.fork); /* the dying father is its parent */
	submit_event(e);
	return 0;
}

/* Walks an exiting thread's children: those it forked itself (a child is on
 * the list of the thread that forked it) and those earlier-exiting threads
 * of its group handed to it. forget_original_parent() hands them over later
 * in do_exit(), to a thread of the group without PF_EXITING if there is one
 * then. A thread that exits alone leaves them to its live siblings. In a
 * group exit (SIGNAL_GROUP_EXIT) every thread is about to set PF_EXITING and
 * the children leave the process whichever thread hands them out: they are
 * reported now, and the handed map keeps a sibling that still takes them
 * over from reporting them again. By default only adoptions by a watched
 * postmaster are reported: no other new parent crash-restarts anything. */
static __always_inline void report_orphans(struct task_struct *father)
{
	/* Orphans of a host process with no subreaper above it go to the host's
	 * init: decided before the threads and the namespace are read. */
	struct signal_struct *sig = father->signal;
	if (!stream_all && father->thread_pid->level == 0 &&
	    !BPF_CORE_READ_BITFIELD(sig, has_child_subreaper))
		return;

	bool live = has_live_thread(father);
	__u32 handover = HANDOVER_NONE;
	if (sig->flags & SIGNAL_GROUP_EXIT)
		handover = live ? HANDOVER_MAYBE : HANDOVER_FINAL;
	else if (live)
		return; /* a live thread takes them: nobody is adopted */

	__u32 flags = 0;
	struct task_struct *reaper = reaper_after(father, &flags);
	if (!reaper)
		return; /* the namespace is being killed */
	if (!stream_all && !is_watched(reaper))
		return;

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
		report_orphan(pos - sibling_off, (__u64)reaper, flags, handover);
		__u64 next = (__u64)BPF_CORE_READ((struct list_head *)pos, next);
		/* release_task() unlinks an auto-reaped child with list_del_init(),
		 * which points it at itself: the rest of the list is out of reach. */
		if (next == pos)
			return;
		pos = next;
	}
	if (pos != head)
		count(COUNTER_CHILDREN_TRUNCATED);
}

/* Every exiting thread, and the process exit when group_dead. Like fork, this
 * runs for every thread on the host: typed pointers are read directly, and
 * maps are touched only when the process can have entries. claim: two
 * threads may both take themselves for the last (before 6.16). */
static __always_inline int thread_exit(struct task_struct *task, bool group_dead, bool claim)
{
	/* One load for the common case of no children. */
	if (task->children.next != &task->children)
		report_orphans(task);
	if (!group_dead)
		return 0;

	struct proc_key key = { .tgid = task->tgid, .start_ns = task->group_leader->start_boottime };
	/* The wait(2) status: see exit_status_of. */
	struct signal_struct *sig = task->signal;
	__u32 status = (sig->flags & SIGNAL_GROUP_EXIT) ? sig->group_exit_code : task->exit_code;

	/* A host process (no birth record, never adopted by a postmaster: only
	 * a namespace's PID 1 can adopt, and a postmaster is never a
	 * subreaper) matters only as a postmaster, or as a postmaster's child:
	 * two comms tell, before anything else is read. */
	if (!stream_all && task->thread_pid->level == 0 && !comm_is_server(task->real_parent->group_leader->comm) &&
	    !comm_is_server(task->group_leader->comm)) {
		if (status & 0x7f)
			bpf_map_delete_elem(&signals, &key); /* see below */
		return 0;
	}

	struct birth_record *birth = 0;
	bool recorded = births_matter(task);
	if (recorded) {
		birth = bpf_map_lookup_elem(&births, &key);
		if (!birth && key.start_ns > attached_at_ns)
			count(COUNTER_BIRTHS_EVICTED);
	}
	struct task_struct *father = task->real_parent;
	struct task_struct *parent = father;
	__u32 event_flags = 0;
	/* The parent as typed loads read it: its tgid, start and comm. */
	__u32 parent_tgid = parent->tgid;
	__u64 parent_start = parent->group_leader->start_boottime;
	__u64 parent_comm[2] = { *(__u64 *)&parent->group_leader->comm[0], *(__u64 *)&parent->group_leader->comm[8] };
	/* Its parent is dying too (a process group killed at once): until the
	 * parent's exit_notify() it still reads as the parent, but this process,
	 * or its zombie, goes to the reaper find_new_reaper() picks, which is
	 * who sees this death. One load when the parent is not exiting. */
	if ((parent->flags & PF_EXITING) && !has_live_thread(parent)) {
		struct task_struct *reaper = reaper_after(parent, &event_flags);
		if (reaper) {
			parent = reaper; /* read with BPF_CORE_READ from here on */
			parent_tgid = BPF_CORE_READ(reaper, tgid);
			parent_start = process_start_ns(reaper);
			BPF_CORE_READ_INTO(&parent_comm, reaper, group_leader, comm);
			event_flags |= EVENT_PARENT_EXITING;
			claim = true; /* the parent's own exit may report this death */
		}
	}
	bool adopted = birth && birth->ancestry[0].tgid != parent_tgid; /* only fork writes births */
	/* The map is asked only when a comm says postgres. */
	struct watch *parent_watch = 0;
	if (comm_is_server((const char *)parent_comm))
		parent_watch = watch_of(parent_tgid, parent_start);
	bool crashes = status_crashes(status);
	bool send = stream_all || adopted;
	if (!send) {
		/* Postmasters, and children of postmasters that are not plain
		 * backend exits: crashes, every exit while it resets (its startup
		 * process ends the reset), and where a record should say whether it
		 * was adopted but none does (older than the agent, or evicted). */
		if (comm_is_server(task->group_leader->comm) && watch_of(key.tgid, key.start_ns))
			send = true;
		else if (parent_watch)
			send = crashes || (recorded && !birth) || resetting(parent_watch, parent_tgid);
	}
	if (parent_watch && crashes)
		begin_reset(parent_watch);
	/* A death the dying parent's walk may also report, or that a watched
	 * postmaster will reap, is claimed: whoever claims first reports it. */
	if (send && (claim || adopted || parent_watch) && !claim_death(&key))
		send = false;

	if (send) {
		struct event *e = reserve_event(EVENT_EXIT);
		if (e) {
			e->exit_status = status;
			e->flags |= event_flags;
			if (adopted)
				e->flags |= EVENT_ADOPTED;
			read_task_ref(task, &e->task);
			read_task_ref(parent, &e->parent);
			if (event_flags & EVENT_PARENT_EXITING) {
				read_task_ref(father, &e->previous);
				read_previous_exec(father, e);
			}
			read_cgroup(task, e);
			read_history(&key, birth, e);
			if (!(e->birth.fork.flags & BIRTH_FORKED))
				walk_ancestry(father, &e->birth.fork); /* not adopted: its parent is its own */
			submit_event(e);
		}
	}
	/* exec bumps self_exec_id past the parent_exec_id fork copied. */
	if (task->self_exec_id != task->parent_exec_id)
		bpf_map_delete_elem(&execs, &key);
	if (birth)
		bpf_map_delete_elem(&births, &key);
	/* Killed by a signal: its signal record, if any, is spent. Deleting it
	 * keeps dead processes from pushing live ones out of the LRU map. */
	if (status & 0x7f)
		bpf_map_delete_elem(&signals, &key);
	return 0;
}

/* Since 6.16 the tracepoint passes do_exit()'s own result of
 * atomic_dec_and_test(&signal->live): exactly one thread of a group sees
 * group_dead. User space loads this program where the kernel's BTF says so
 * (btf_trace_sched_process_exit), else handle_exit_live. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *task, bool group_dead)
{
	return thread_exit(task, group_dead, false);
}

/* Before 6.16 the tracepoint passes only the task. do_exit() has
 * decremented signal->live before it, so zero means the last thread; but
 * the threads of a group exit decrement concurrently, and two of them can
 * both read zero here: the deaths map lets only one report the exit. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit_live, struct task_struct *task)
{
	return thread_exit(task, task->signal->live.counter == 0, true);
}

#define MAX_CHILDREN_WALKED 1024

/* What report_if_reaped needs of the postmaster that waits. */
struct wait_ctx {
	struct task_ref pm;
};

/* A zombie noticed for this postmaster that is no longer one was reaped by
 * an earlier wait that did not see it yet (handle_wait): reported now. */
static long report_if_reaped(struct bpf_map *map, struct proc_key *key, struct zombie *z, struct wait_ctx *c)
{
	if (z->pm_tgid != c->pm.tgid || z->pm_start_ns != c->pm.start_ns)
		return 0;
	struct task_struct *t = (struct task_struct *)z->addr;
	if (BPF_CORE_READ(t, exit_state) == EXIT_ZOMBIE && BPF_CORE_READ(t, start_boottime) == key->start_ns)
		return 0;
	struct event *e = reserve_event(EVENT_REAP);
	if (e) {
		e->exit_status = z->status;
		e->flags |= EVENT_REAPED_EARLIER;
		e->task = z->task;
		e->parent = c->pm;
		bpf_ringbuf_submit(e, 0);
	}
	forget_zombie(key, c->pm.tgid);
	return 0;
}

/* A watched postmaster calls waitpid(-1) (its reaper loops on it). The
 * kernel's do_wait() hands out the first child in its children list that is
 * a zombie ready to reap (a leader waiting for its other threads is not):
 * found here the same way, that child is the one this call reaps. That is
 * the order in which PostgreSQL decides what deaths mean: the first crash
 * it reaps while running is the one it logs and acts on, and the rest of
 * the reset it ignores, whatever order they died in. Looked at only while a
 * child that matters is a zombie (signals.bpf.c notice_zombie): until a
 * call finds none, and while a noticed one is not reported. This
 * tracepoint runs before do_wait() takes the tasklist lock, so a child can
 * become a zombie in between and be the one reaped: the next call finds it
 * gone and reports it first. */
SEC("tp_btf/sched_process_wait")
int BPF_PROG(handle_wait, struct pid *pid)
{
	struct task_struct *pm = bpf_get_current_task_btf();
	if (!comm_is_server(pm->comm))
		return 0;
	struct watch *w = watch_of(pm->tgid, pm->group_leader->start_boottime);
	if (!w || !((w->flags & WATCH_ZOMBIES) || w->zombies) || pid)
		return 0; /* pid: waiting for one child, not the reaper's waitpid(-1) */

	if (w->zombies) {
		struct wait_ctx c = {};
		read_task_ref(pm, &c.pm);
		bpf_for_each_map_elem(&zombies, report_if_reaped, &c, 0);
	}

	__u64 pos = (__u64)BPF_CORE_READ(pm, children.next);
	__u64 head = (__u64)&pm->children;
	__u64 sibling_off = bpf_core_field_offset(struct task_struct, sibling);
	struct task_struct *zombie = 0;
	for (int i = 0; i < MAX_CHILDREN_WALKED && pos != head; i++) {
		struct task_struct *child = (struct task_struct *)(pos - sibling_off);
		if (BPF_CORE_READ(child, exit_state) == EXIT_ZOMBIE &&
		    BPF_CORE_READ(child, signal, nr_threads) <= 1) {
			zombie = child;
			break;
		}
		pos = (__u64)BPF_CORE_READ((struct list_head *)pos, next);
	}
	if (!zombie) {
		w->flags &= ~WATCH_ZOMBIES;
		if (w->flags & WATCH_PMSIGNAL_WAITS) {
			w->flags &= ~WATCH_PMSIGNAL_WAITS;
			struct event *e = reserve_event(EVENT_REAPED_ALL);
			if (e) {
				read_task_ref(pm, &e->parent);
				bpf_ringbuf_submit(e, 0);
			}
		}
		return 0;
	}
	struct proc_key key = { .tgid = BPF_CORE_READ(zombie, tgid), .start_ns = BPF_CORE_READ(zombie, start_boottime) };
	forget_zombie(&key, pm->tgid);
	__u32 status = exit_status_of(zombie);
	if (!status_crashes(status) && !resetting(w, pm->tgid))
		return 0; /* a clean exit while running changes nothing */
	struct event *e = reserve_event(EVENT_REAP);
	if (!e)
		return 0;
	e->exit_status = status;
	read_task_ref(zombie, &e->task);
	read_task_ref(pm, &e->parent);
	bpf_ringbuf_submit(e, 0);
	return 0;
}
