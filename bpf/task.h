/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/* Reading facts about a task. These helpers take pointers that may be plain
 * numbers (read with bpf_probe_read), so they use BPF_CORE_READ throughout;
 * the per-exit hot path in lifecycle.bpf.c reads its typed tp_btf arguments
 * directly instead, which costs a load rather than a helper call. */
#pragma once

#include "events.h"
#include "maps.h"

#define SIGNAL_GROUP_EXIT 0x00000004 /* include/linux/sched/signal.h, stable since 2.6 */
#define MAX_PID_NS_LEVEL 32

/* kernfs_node.parent was renamed __parent in 6.15 (RCU-protected). */
struct kernfs_node___new {
	struct kernfs_node *__parent;
} __attribute__((preserve_access_index));
struct kernfs_node___old {
	struct kernfs_node *parent;
} __attribute__((preserve_access_index));

static __always_inline struct kernfs_node *kernfs_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(struct kernfs_node___new, __parent))
		return BPF_CORE_READ((struct kernfs_node___new *)kn, __parent);
	return BPF_CORE_READ((struct kernfs_node___old *)kn, parent);
}

#define EXIT_ZOMBIE 0x20 /* task->exit_state, include/linux/sched.h */

static __always_inline __u64 process_start_ns(struct task_struct *t)
{
	return BPF_CORE_READ(t, group_leader, start_boottime);
}

/* The wait(2) status of a dead thread group: do_group_exit() stores the
 * group's status in signal->group_exit_code; a plain exit(2) of the last
 * thread leaves it in exit_code (kernel/exit.c, wait_task_zombie). */
static __always_inline __u32 exit_status_of(struct task_struct *t)
{
	if (BPF_CORE_READ(t, signal, flags) & SIGNAL_GROUP_EXIT)
		return BPF_CORE_READ(t, signal, group_exit_code);
	return BPF_CORE_READ(t, exit_code);
}

/* The thread group's struct pid, its level, and its number and namespace at
 * that level (task_active_pid_ns). signal->pids[PIDTYPE_TGID] exists since 4.19. */
static __always_inline struct pid_namespace *read_ns(struct task_struct *t, struct task_ref *ref)
{
	struct pid *pid = BPF_CORE_READ(t, signal, pids[PIDTYPE_TGID]);
	__u32 level = BPF_CORE_READ(pid, level);
	struct upid upid = {};

	if (level > MAX_PID_NS_LEVEL)
		return 0;
	bpf_probe_read_kernel(&upid, sizeof(upid), &pid->numbers[level]);
	ref->ns_level = level;
	ref->ns_pid = upid.nr;
	ref->pid_ns = BPF_CORE_READ(upid.ns, ns.inum);
	return upid.ns;
}

/* Fills a task_ref: identity, namespace view, reaper role and comm. */
static __always_inline void read_task_ref(struct task_struct *t, struct task_ref *ref)
{
	struct task_struct *leader = BPF_CORE_READ(t, group_leader);
	struct pid_namespace *ns;
	struct signal_struct *sig;
	__u64 start;

	ref->tgid = BPF_CORE_READ(t, tgid);
	ref->start_ns = start = BPF_CORE_READ(leader, start_boottime);
	BPF_CORE_READ_STR_INTO(&ref->comm, leader, comm);

	ns = read_ns(t, ref);
	if (ns && BPF_CORE_READ(ns, child_reaper, tgid) == ref->tgid)
		ref->flags |= TASK_NS_REAPER;
	sig = BPF_CORE_READ(t, signal);
	if (BPF_CORE_READ_BITFIELD_PROBED(sig, is_child_subreaper))
		ref->flags |= TASK_SUBREAPER;
	if (watch_of(ref->tgid, start))
		ref->flags |= TASK_WATCHED;
	if (BPF_CORE_READ(t, exit_state))
		ref->flags |= TASK_ZOMBIE;
}

/* The cgroup a container runtime put the task in. On a pure v2 host that is
 * the default hierarchy's cgroup. Where the memory controller sits on a v1
 * hierarchy of its own (v1 and hybrid hosts), runtimes using the cgroupfs
 * driver create the container's cgroup only there, while v2 shows the
 * runtime's service: then the memory cgroup wins, unless it is the root.
 * User space turns the names into a container id. */
static __always_inline void read_cgroup(struct task_struct *t, struct event *e)
{
	struct css_set *cset = BPF_CORE_READ(t, cgroups);
	struct cgroup *dfl = BPF_CORE_READ(cset, dfl_cgrp);
	struct kernfs_node *kn = BPF_CORE_READ(dfl, kn);

	if (bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id)) {
		int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
		struct cgroup_subsys_state *css = 0;

		if (id >= 0 && id < CGROUP_SUBSYS_COUNT)
			bpf_probe_read_kernel(&css, sizeof(css), &cset->subsys[id]);
		struct cgroup *memcg = BPF_CORE_READ(css, cgroup);
		if (memcg && BPF_CORE_READ(memcg, root) != BPF_CORE_READ(dfl, root)) {
			struct kernfs_node *mkn = BPF_CORE_READ(memcg, kn);
			if (kernfs_parent(mkn)) {
				kn = mkn;
				e->flags |= EVENT_CGROUP_V1;
			}
		}
	}
	struct kernfs_node *parent = kernfs_parent(kn);
	e->cgroup.id = BPF_CORE_READ(kn, id);
	bpf_probe_read_kernel_str(&e->cgroup.name, sizeof(e->cgroup.name), BPF_CORE_READ(kn, name));
	if (parent)
		bpf_probe_read_kernel_str(&e->cgroup.parent, sizeof(e->cgroup.parent),
					  BPF_CORE_READ(parent, name));
}

/* Copies the process's birth record b (from the births map, looked up by
 * the caller, which may have needed it already), its exec record and its
 * last terminating signal, if any. */
static __always_inline void read_history(struct proc_key *key, struct birth_record *b,
					 struct event *e)
{
	if (b)
		e->birth.fork = *b;
	struct exec_record *x = bpf_map_lookup_elem(&execs, key);
	if (x) {
		e->birth.exec = *x;
		e->birth.fork.flags |= BIRTH_EXECED;
	}
	if (b || x)
		e->flags |= EVENT_HAS_BIRTH;
	struct signal_info *s = bpf_map_lookup_elem(&signals, key);
	if (s) {
		e->signal = *s;
		e->flags |= EVENT_HAS_SIGNAL;
	}
}

/* Copies what the parent that died ran, if the execs map has it: the
 * command (a docker exec, a healthcheck, a probe, a script) whose exit left
 * its children to the new parent. */
static __always_inline void read_previous_exec(struct task_struct *father, struct event *e)
{
	struct proc_key key = { .tgid = BPF_CORE_READ(father, tgid), .start_ns = process_start_ns(father) };
	struct exec_record *x = bpf_map_lookup_elem(&execs, &key);
	if (x) {
		e->previous_exec = *x;
		e->flags |= EVENT_HAS_PREVIOUS_EXEC;
	}
}

/* Fills an ancestry from the live process tree, from parent up, when there
 * is no birth record: the chain as it is now, which for anything but an
 * orphan is the chain it was born into. */
static __always_inline void walk_ancestry(struct task_struct *parent, struct birth_record *b)
{
	struct task_struct *t = parent;
	b->parent_start_ns = process_start_ns(parent);
	b->flags |= BIRTH_WALKED;
	for (int i = 0; i < ANCESTRY_LEN; i++) {
		__u32 tgid = BPF_CORE_READ(t, tgid);
		if (!tgid) /* pid 0, the idle task, is above every init */
			break;
		b->ancestry[i].tgid = tgid;
		BPF_CORE_READ_STR_INTO(&b->ancestry[i].comm, t, group_leader, comm);
		t = BPF_CORE_READ(t, real_parent);
	}
}
