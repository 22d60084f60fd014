//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/* OOM kills: the victim (oom:mark_victim), its memory, its oom_score_adj and
 * whether a memory cgroup's limit or the whole machine ran out. The victim's
 * death itself (SIGKILL from the kernel) arrives through lifecycle.bpf.c. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "events.h"
#include "maps.h"
#include "task.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define MEMCG_DEPTH 8
#define NEAR_LIMIT_PAGES 2048 /* 8 MiB of 4 KiB pages: a charge in flight and per-CPU stock */

/* The victim's memory cgroup (its css), 0 where there is no memory
 * controller. */
static __always_inline struct cgroup_subsys_state *memcg_css(struct task_struct *victim)
{
	if (!bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id))
		return 0;
	int id = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	struct css_set *cset = BPF_CORE_READ(victim, cgroups);
	struct cgroup_subsys_state *css = 0;
	if (id < 0 || id >= CGROUP_SUBSYS_COUNT)
		return 0;
	bpf_probe_read_kernel(&css, sizeof(css), &cset->subsys[id]);
	return css;
}

/* Whether a memory cgroup's limit, rather than the whole machine, ran out.
 * mark_victim does not say, and out_of_memory (which knows, oc->memcg) can
 * be hooked only with kprobes or fentry, which some kernels refuse. So look
 * at the victim's memory cgroup and its ancestors: a cgroup OOM happens when
 * a charge would push one of them past its limit, so its usage is within a
 * charge of that limit now. The root's max is PAGE_COUNTER_MAX, never near. */
static __always_inline bool memcg_at_limit(struct task_struct *victim)
{
	struct cgroup_subsys_state *css = memcg_css(victim);
	if (!css)
		return false;
	struct mem_cgroup *memcg = (void *)css - bpf_core_field_offset(struct mem_cgroup, css);
	struct page_counter *pc = &memcg->memory;
	for (int i = 0; i < MEMCG_DEPTH && pc; i++) {
		long usage = BPF_CORE_READ(pc, usage.counter);
		unsigned long max = BPF_CORE_READ(pc, max);
		unsigned long slack = max / 16 > NEAR_LIMIT_PAGES ? max / 16 : NEAR_LIMIT_PAGES;
		if (max < (1UL << 40) && usage > 0 && (unsigned long)usage + slack >= max)
			return true;
		pc = BPF_CORE_READ(pc, parent);
	}
	return false;
}

/* Whether memory.oom.group (cgroup v2, since 4.19) is set on the victim's
 * memory cgroup or an ancestor: then the OOM killer kills every process of
 * that cgroup, not only the victim (mem_cgroup_get_oom_group), except those
 * at oom_score_adj -1000. Kubernetes sets it on every container since 1.28.
 * On cgroup v1 it cannot be set and reads false. */
static __always_inline bool memcg_oom_group(struct task_struct *victim)
{
	if (!bpf_core_field_exists(struct mem_cgroup, oom_group))
		return false;
	struct cgroup_subsys_state *css = memcg_css(victim);
	__u64 css_off = bpf_core_field_offset(struct mem_cgroup, css);
	for (int i = 0; i < MEMCG_DEPTH && css; i++) {
		struct mem_cgroup *memcg = (void *)css - css_off;
		if (BPF_CORE_READ(memcg, oom_group))
			return true;
		css = BPF_CORE_READ(css, parent);
	}
	return false;
}

/* mm->rss_stat became percpu_counters in 6.2; before, atomic counters. */
struct mm_rss_stat___old {
	atomic_long_t count[4];
} __attribute__((preserve_access_index));
struct mm_struct___old {
	struct mm_rss_stat___old rss_stat;
} __attribute__((preserve_access_index));

/* Pages counted in mm->rss_stat[i], i of enum { MM_FILEPAGES, MM_ANONPAGES,
 * MM_SWAPENTS, MM_SHMEMPAGES }. A macro, so that i is a constant in each
 * read and CO-RE relocates the element's offset with the kernel's own
 * sizeof(struct percpu_counter), which varies with its config. The sum of
 * per-CPU deltas can dip below zero: read as 0. */
#define RSS_PAGES(mm, i) ({								\
	long __n;									\
	if (bpf_core_field_exists(((struct mm_struct___old *)(mm))->rss_stat.count))	\
		__n = BPF_CORE_READ((struct mm_struct___old *)(mm), rss_stat.count[i].counter); \
	else										\
		__n = BPF_CORE_READ((mm), rss_stat[i].count);				\
	(__u64)(__n > 0 ? __n : 0);							\
})

/* mark_victim passes (struct task_struct *, uid_t) since 6.9, (int pid) up
 * to 6.8: user space loads this only where the kernel's BTF
 * (btf_trace_mark_victim) has the task. */
SEC("tp_btf/mark_victim")
int BPF_PROG(handle_mark_victim, struct task_struct *victim)
{
	struct event *e = reserve_event(EVENT_OOM);
	if (!e)
		return 0;
	read_task_ref(victim, &e->task);
	read_task_ref(BPF_CORE_READ(victim, real_parent), &e->parent);
	read_cgroup(victim, e);
	struct mm_struct *mm = BPF_CORE_READ(victim, mm);
	if (mm) {
		e->oom.total_vm_pages = BPF_CORE_READ(mm, total_vm);
		e->oom.file_rss_pages = RSS_PAGES(mm, 0);
		e->oom.anon_rss_pages = RSS_PAGES(mm, 1);
		e->oom.shmem_rss_pages = RSS_PAGES(mm, 3);
	}
	e->oom.oom_score_adj = BPF_CORE_READ(victim, signal, oom_score_adj);
	if (memcg_at_limit(victim))
		e->oom.flags |= OOM_MEMCG;
	if (memcg_oom_group(victim))
		e->oom.flags |= OOM_GROUP;
	struct proc_key key = { .tgid = e->task.tgid, .start_ns = e->task.start_ns };
	read_history(&key, bpf_map_lookup_elem(&births, &key), e);
	bpf_ringbuf_submit(e, 0);
	return 0;
}
