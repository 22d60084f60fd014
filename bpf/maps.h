/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/* Maps shared by the lifecycle, signals and oom objects. Each object declares
 * them; the loader creates them once (with the lifecycle object) and hands
 * the same maps to the others. Sizes here are defaults: user space resizes. */
#pragma once

#include "events.h"

/* Everything user space hears from the kernel. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* Birth records of live processes, deleted at exit. LRU so that a fork storm
 * evicts old records instead of failing; evictions show up as
 * COUNTER_BIRTHS_EVICTED. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct proc_key);
	__type(value, struct birth_record);
} births SEC(".maps");

/* Exec records of live processes, deleted at exit; LRU like births. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct proc_key);
	__type(value, struct exec_record);
} execs SEC(".maps");

/* Postmasters, written by user space: tgid -> its start time in /proc
 * ticks (so a recycled pid is not mistaken for it) and what user space knows
 * of its state. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct watch);
} watched SEC(".maps");

/* When user space saw each postmaster's last reset end (boot ns): a map of
 * its own, so that user space never rewrites a watch the programs update. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} reset_ends SEC(".maps");

/* Zombies of watched postmasters that matter (crash statuses, and every
 * exit while resetting), added at their SIGCHLD and removed when the wait
 * that reaps them is reported. A waitpid(-1) can reap a child that became
 * a zombie after its tracepoint looked (handle_wait): the next wait finds
 * it gone and reports that reap then, before its own. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct proc_key);
	__type(value, struct zombie);
} zombies SEC(".maps");

/* Deaths already reported, for the few cases where two programs (or two
 * threads) can each see the same death: a process and its parent dying at
 * once, and group exits before Linux 6.16. Whoever inserts first reports. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct proc_key);
	__type(value, __u32);
} deaths SEC(".maps");

/* The last terminating signal sent to each process (signal_generate), joined
 * to its exit. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct proc_key);
	__type(value, struct signal_info);
} signals SEC(".maps");

/* /proc/<pid>/stat reports start times in USER_HZ ticks (100 on x86 and
 * arm64); user space knows processes that predate it only that precisely. */
#define NSEC_PER_TICK 10000000ULL

/* The watch on a process, if it is a watched postmaster: its pid and its
 * start (boot ns) both match. */
static __always_inline struct watch *watch_of(__u32 tgid, __u64 start_ns)
{
	struct watch *w = bpf_map_lookup_elem(&watched, &tgid);
	if (w && w->start_ticks != start_ns / NSEC_PER_TICK)
		return 0;
	return w;
}

/* A crash begins a postmaster's reset, flagged here, in the kernel, so that
 * no clean exit slips through before user space hears of the crash. It
 * lasts until user space sees recovery end (reset_ends) after reset_at_ns,
 * the last crash. */
static __always_inline void begin_reset(struct watch *w)
{
	w->reset_at_ns = bpf_ktime_get_boot_ns();
	w->flags |= WATCH_RESETTING; /* racing CPUs set the same bit */
}

/* Whether a postmaster is resetting after a crash, as far as the kernel
 * knows: its children's clean exits matter then. */
static __always_inline bool resetting(struct watch *w, __u32 pm_tgid)
{
	if (!(w->flags & WATCH_RESETTING))
		return false;
	__u64 *end = bpf_map_lookup_elem(&reset_ends, &pm_tgid);
	return !end || *end < w->reset_at_ns;
}

/* Forgets a noticed zombie once its reap is reported (handle_wait). */
static __always_inline void forget_zombie(struct proc_key *key, __u32 pm_tgid)
{
	if (bpf_map_delete_elem(&zombies, key) == 0) {
		struct watch *w = bpf_map_lookup_elem(&watched, &pm_tgid);
		if (w)
			__sync_fetch_and_add(&w->zombies, -1); /* -mcpu=v1: an add whose result is unused */
	}
}

/* Claims the report of a death: true for the first caller only. */
static __always_inline bool claim_death(struct proc_key *key)
{
	__u32 one = 1;
	return bpf_map_update_elem(&deaths, key, &one, BPF_NOEXIST) == 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &which);
	if (n)
		(*n)++; /* per-CPU slot: no atomics needed */
}

/* Reserves an event, counting the loss when the ring buffer is full. */
static __always_inline struct event *reserve_event(__u32 kind)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_RINGBUF_FULL);
		return 0;
	}
	/* clang inlines a memset of at most 1 KiB, and merges adjacent ones:
	 * the event is zeroed in two parts with a barrier between. */
	__builtin_memset(e, 0, offsetof(struct event, birth));
	asm volatile("" ::: "memory");
	__builtin_memset(&e->birth, 0, sizeof(*e) - offsetof(struct event, birth));
	e->kind = kind;
	e->time_ns = bpf_ktime_get_boot_ns();
	return e;
}
