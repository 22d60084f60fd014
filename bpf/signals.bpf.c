//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/* Who sent the signal that killed a process: recorded at signal_generate,
 * marked when it is delivered with the default action, joined to the exit by
 * lifecycle.bpf.c. Terminating signals sent by or to a postmaster are also
 * reported as they happen: that is how a crash-restart looks from outside.
 *
 * And what a watched postmaster's reaping depends on: the SIGCHLD of its
 * children that matter (then its waitpid calls are looked at, see
 * lifecycle.bpf.c handle_wait), and the pmsignal that, from PostgreSQL 15,
 * ends a crash reset early. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "events.h"
#include "maps.h"
#include "postgres.h"
#include "task.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Bit (n-1) is set when signal n terminates a process by default (signal(7),
 * asm-generic numbering, shared by x86 and arm64): 1-16, 24-27, 29-31 and
 * every real-time signal. SIGCHLD, SIGCONT, the stop signals, SIGURG and
 * SIGWINCH are left out, so the SIGCHLD of every exit costs one test. */
#define TERMINATING_SIGNALS 0xFFFFFFFFF780FFFFULL
#define SIGINT 2
#define SIGQUIT 3
#define SIGABRT 6
#define SIGKILL 9
#define SIGUSR1 10
#define SIGTERM 15
#define SIGCHLD 17 /* x86 and arm64 */
#define CLD_EXITED 1 /* include/uapi/asm-generic/siginfo.h */
#define CLD_KILLED 2
#define CLD_DUMPED 3
#define SI_KERNEL 0x80
#define SI_USER 0
#define SEND_SIG_PRIV ((struct kernel_siginfo *)1) /* include/linux/sched/signal.h */
/* enum trace_signal_action, include/trace/events/signal.h (since 3.7) */
#define TRACE_SIGNAL_IGNORED 1
#define TRACE_SIGNAL_ALREADY_PENDING 2 /* a non-realtime signal already pending: this one is dropped */
#define TRACE_SIGNAL_OVERFLOW_FAIL 3

static __always_inline bool terminates_by_default(int sig)
{
	return sig >= 1 && sig <= 64 && ((TERMINATING_SIGNALS >> (sig - 1)) & 1);
}

/* The signals a postmaster's shutdown and crash handling are made of
 * (postmaster.c: SIGQUIT to every child on a crash, SIGABRT with
 * send_abort_for_crash, SIGKILL after 5 s; SIGTERM/SIGINT/SIGQUIT from pg_ctl). */
static __always_inline bool shutdown_signal(int sig)
{
	return sig == SIGQUIT || sig == SIGABRT || sig == SIGKILL || sig == SIGTERM || sig == SIGINT;
}

/* A child of a watched postmaster became a zombie: do_notify_parent() is
 * sending it SIGCHLD with the child's status in the siginfo. When it is one
 * the postmaster takes for a crash, or the postmaster resets (the startup
 * process's clean exit ends that), the postmaster's next waitpid calls are
 * looked at (lifecycle.bpf.c handle_wait). One compare of the parent's comm
 * for everyone else. */
static __always_inline int notice_zombie(__u64 info_addr, struct task_struct *parent)
{
	struct watch *w = watch_of(parent->tgid, parent->group_leader->start_boottime);
	if (!w || !info_addr)
		return 0;
	struct kernel_siginfo *info = (struct kernel_siginfo *)info_addr;
	int code = BPF_CORE_READ(info, si_code);
	int value = BPF_CORE_READ(info, _sifields._sigchld._status);
	__u32 status;
	if (code == CLD_EXITED)
		status = (value & 0xff) << 8;
	else if (code == CLD_KILLED || code == CLD_DUMPED)
		status = value & 0x7f;
	else
		return 0; /* stopped or continued: no death */
	if (!status_crashes(status) && !resetting(w, parent->tgid))
		return 0;
	w->flags |= WATCH_ZOMBIES;
	/* The zombie is the current task's group leader when its own exit or
	 * its last thread's release notifies (not when its dying parent hands
	 * it over, reparent_leader(): then current is that parent). */
	struct task_struct *child = BPF_CORE_READ((struct task_struct *)bpf_get_current_task(), group_leader);
	if (BPF_CORE_READ(child, exit_state) != EXIT_ZOMBIE || BPF_CORE_READ(child, real_parent, tgid) != parent->tgid)
		return 0;
	struct proc_key key = { .tgid = BPF_CORE_READ(child, tgid), .start_ns = BPF_CORE_READ(child, start_boottime) };
	struct zombie z = { .addr = (__u64)child, .pm_start_ns = parent->group_leader->start_boottime,
			    .pm_tgid = parent->tgid, .status = status };
	read_task_ref(child, &z.task);
	if (bpf_map_update_elem(&zombies, &key, &z, BPF_NOEXIST) == 0)
		__sync_fetch_and_add(&w->zombies, 1);
	return 0;
}

/* A child signals a resetting postmaster (SIGUSR1, a "pmsignal"): from
 * PostgreSQL 15 the startup process's first one,
 * PMSIGNAL_RECOVERY_STARTED (xlogrecovery.c PerformWalRecovery), ends the
 * postmaster's FatalError when the postmaster handles it. Noted here with
 * the sender's start (user space tells which reset's startup process it
 * is), reported when delivered. */
static __always_inline int notice_pmsignal(struct task_struct *pm, struct task_struct *sender)
{
	if (!comm_is_server(pm->comm))
		return 0;
	struct watch *w = watch_of(pm->tgid, pm->group_leader->start_boottime);
	if (w && resetting(w, pm->tgid) && BPF_CORE_READ(sender, real_parent, tgid) == pm->tgid) {
		w->redo_sender_ns = process_start_ns(sender);
		w->flags |= WATCH_REDO_SIGNALLED;
	}
	return 0;
}

SEC("tp_btf/signal_generate")
int BPF_PROG(handle_signal_generate, int sig, struct kernel_siginfo *info,
	     struct task_struct *task, int group, int result)
{
	/* info is a pointer, or one of the special values 0 (SEND_SIG_NOINFO:
	 * kernel code signalling for the process, e.g. pipe_write's SIGPIPE) and
	 * 1 (SEND_SIG_PRIV). The verifier takes a tp_btf pointer argument for
	 * non-NULL and would drop the NULL branch: compare its value as a number. */
	__u64 info_addr = 0;
	if (sig == SIGCHLD) {
		/* Every exit's: one compare of the parent's comm for most. */
		if (!comm_is_server(task->comm))
			return 0;
		bpf_probe_read_kernel(&info_addr, sizeof(info_addr), &ctx[1]);
		return notice_zombie(info_addr > (__u64)SEND_SIG_PRIV ? info_addr : 0, task);
	}
	bpf_probe_read_kernel(&info_addr, sizeof(info_addr), &ctx[1]);
	/* A signal that is not queued must not overwrite the sender of the one
	 * that is. */
	if (!terminates_by_default(sig) || result == TRACE_SIGNAL_IGNORED ||
	    result == TRACE_SIGNAL_ALREADY_PENDING || result == TRACE_SIGNAL_OVERFLOW_FAIL)
		return 0;

	struct task_struct *sender = (struct task_struct *)bpf_get_current_task();
	struct signal_info s = {
		.generated_ns = bpf_ktime_get_boot_ns(),
		.signo = sig,
		.sender_tgid = BPF_CORE_READ(sender, tgid),
	};
	bpf_get_current_comm(&s.sender_comm, sizeof(s.sender_comm));
	if (info_addr == (__u64)SEND_SIG_PRIV)
		s.code = SI_KERNEL;
	else if (info_addr)
		s.code = BPF_CORE_READ((struct kernel_siginfo *)info_addr, si_code);
	else {
		s.code = SI_USER;
		s.flags |= SIGNAL_NO_INFO;
	}
	if (s.code == SI_KERNEL)
		s.flags |= SIGNAL_FROM_KERNEL;
	__u32 target = task->tgid;
	if (s.sender_tgid == target)
		s.flags |= SIGNAL_FROM_SELF;

	struct proc_key key = { .tgid = target, .start_ns = task->group_leader->start_boottime };
	bpf_map_update_elem(&signals, &key, &s, BPF_ANY);

	if (sig == SIGUSR1)
		return notice_pmsignal(task, sender);
	if (!shutdown_signal(sig))
		return 0;
	struct watch *by = watch_of(s.sender_tgid, BPF_CORE_READ(sender, group_leader, start_boottime));
	if (!by && !watch_of(target, key.start_ns))
		return 0;
	/* A postmaster signals each child and then its process group: this
	 * tells its own children from their descendants. */
	bool to_child = task->real_parent->tgid == s.sender_tgid;
	/* Its SIGQUIT (SIGABRT with send_abort_for_crash) to its children is a
	 * crash's fan-out, or an immediate shutdown's: either way, clean exits
	 * and reaps matter from now on. */
	if (by && to_child && (sig == SIGQUIT || sig == SIGABRT))
		begin_reset(by);
	struct event *e = reserve_event(EVENT_SIGNAL);
	if (!e)
		return 0;
	e->signal = s;
	if (to_child)
		e->signal.flags |= SIGNAL_TO_CHILD;
	e->flags |= EVENT_HAS_SIGNAL;
	read_task_ref(task, &e->task);
	read_task_ref(sender, &e->parent);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* The system calls a postmaster's reaping and main loop are made of: wait4(2),
 * which waitpid() calls in glibc and musl; the waits of WaitEventSetWait
 * (epoll, or poll where PostgreSQL was built without it). */
#if defined(__TARGET_ARCH_x86)
#define NR_WAIT4 61
#define NR_POLL 7
#define NR_EPOLL_WAIT 232
#define NR_PPOLL 271
#define NR_EPOLL_PWAIT 281
#define NR_EPOLL_PWAIT2 441
#elif defined(__TARGET_ARCH_arm64)
#define NR_WAIT4 260
#define NR_POLL -1000 /* arm64 has only ppoll and epoll_pwait: a number no call has */
#define NR_EPOLL_WAIT -1000
#define NR_PPOLL 73
#define NR_EPOLL_PWAIT 22
#define NR_EPOLL_PWAIT2 441
#endif

/* Where a task is on its way back to user space: the system call it is in
 * (-1 for none), what that returns, and the address it resumes at. */
struct user_regs {
	long nr, ret;
	__u64 ip;
};

/* Reads them (bpf_task_pt_regs, Linux 5.15); false where it cannot. */
static __always_inline bool read_user_regs(struct task_struct *task, struct user_regs *r)
{
#ifdef NR_WAIT4
	if (!bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_task_pt_regs))
		return false;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
#if defined(__TARGET_ARCH_x86)
	r->nr = BPF_CORE_READ(regs, orig_ax);
	r->ret = BPF_CORE_READ(regs, ax);
	r->ip = BPF_CORE_READ(regs, ip);
#else
	r->nr = BPF_CORE_READ(regs, syscallno);
	r->ret = BPF_CORE_READ(regs, regs[0]);
	r->ip = BPF_CORE_READ(regs, pc);
#endif
	return true;
#else
	return false;
#endif
}

/* Whether a postmaster takes a signal in its main loop's wait, where it is
 * back from handling what its signal handlers flagged: not when the signal
 * comes with a pmsignal taken on the same way out, whose handler entry the
 * kernel has just made the resume address. */
static __always_inline bool in_main_wait(struct task_struct *pm, struct user_regs *r)
{
	if (r->nr != NR_EPOLL_WAIT && r->nr != NR_EPOLL_PWAIT && r->nr != NR_EPOLL_PWAIT2 &&
	    r->nr != NR_POLL && r->nr != NR_PPOLL)
		return false;
	return r->ip != (__u64)pm->sighand->action[SIGUSR1 - 1].sa.sa_handler;
}

static __always_inline void report_pmsignal(struct watch *w, struct task_struct *pm, __u64 sender_ns, bool pending)
{
	struct event *e = reserve_event(EVENT_PMSIGNAL);
	if (!e)
		return;
	if (pending) {
		e->flags |= EVENT_ZOMBIES_PENDING;
		w->flags |= WATCH_PMSIGNAL_WAITS | WATCH_ZOMBIES;
	}
	e->task.start_ns = sender_ns;
	read_task_ref(pm, &e->parent);
	bpf_ringbuf_submit(e, 0);
}

/* A watched postmaster takes a child's pmsignal. Up to PostgreSQL 15 its
 * handler acts on it now. From 16 the handler only flags it, and the main
 * loop acts after the reaping pass it has under way or flagged for the
 * same turn (pending_pm_child_exit is handled before pending_pm_pmsignal):
 * the pmsignal is reported with zombies pending (user space waits for the
 * end of the next pass) when the pass is under way or flagged: a child
 * that matters is a zombie, and the signal is not taken on the way out of
 * the waitpid that ended a pass. With none, a child may still die before
 * the main loop gets there (the postmaster preempted, say): then its
 * SIGCHLD comes before the postmaster is back in its wait, and the
 * pmsignal is held until that SIGCHLD, or the next pmsignal, says which. */
static __always_inline int notice_pmsignal_delivery(void)
{
	struct task_struct *pm = bpf_get_current_task_btf();
	if (!comm_is_server(pm->comm))
		return 0;
	struct watch *w = watch_of(pm->tgid, pm->group_leader->start_boottime);
	if (!w || !(w->flags & WATCH_REDO_SIGNALLED))
		return 0;
	w->flags &= ~WATCH_REDO_SIGNALLED;
	if (w->flags & WATCH_PMSIGNAL_HELD) {
		/* No SIGCHLD since the held one: the main loop took it first. */
		w->flags &= ~WATCH_PMSIGNAL_HELD;
		report_pmsignal(w, pm, w->held_sender_ns, false);
	}
	struct user_regs r;
	if (!read_user_regs(pm, &r) || (r.nr == NR_WAIT4 && r.ret <= 0)) {
		report_pmsignal(w, pm, w->redo_sender_ns, false);
		return 0;
	}
	if (w->flags & WATCH_ZOMBIES) {
		report_pmsignal(w, pm, w->redo_sender_ns, true);
		return 0;
	}
	w->held_sender_ns = w->redo_sender_ns;
	w->held_nvcsw = pm->nvcsw;
	w->flags |= WATCH_PMSIGNAL_HELD;
	return 0;
}

/* A watched postmaster takes SIGCHLD while a pmsignal is held: if it has
 * been back in its main loop's wait since (it slept, or takes the signal
 * there), the main loop acted on the pmsignal before this child's exit;
 * else this exit's reaping pass comes first. */
static __always_inline void notice_sigchld_delivery(void)
{
	struct task_struct *pm = bpf_get_current_task_btf();
	if (!comm_is_server(pm->comm))
		return;
	struct watch *w = watch_of(pm->tgid, pm->group_leader->start_boottime);
	if (!w || !(w->flags & WATCH_PMSIGNAL_HELD))
		return;
	w->flags &= ~WATCH_PMSIGNAL_HELD;
	struct user_regs r;
	bool waited = pm->nvcsw != w->held_nvcsw || (read_user_regs(pm, &r) && in_main_wait(pm, &r));
	report_pmsignal(w, pm, w->held_sender_ns, !waited);
}

SEC("tp_btf/signal_deliver")
int BPF_PROG(handle_signal_deliver, int sig, struct kernel_siginfo *info, struct k_sigaction *ka)
{
	if (sig == SIGUSR1)
		notice_pmsignal_delivery(); /* and on: it may also kill (without a handler) */
	else if (sig == SIGCHLD) {
		notice_sigchld_delivery();
		return 0;
	}
	/* A handler means the signal does not kill by itself. */
	if (!terminates_by_default(sig) || ka->sa.sa_handler != 0 /* SIG_DFL */)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct proc_key key = { .tgid = BPF_CORE_READ(task, tgid), .start_ns = process_start_ns(task) };
	struct signal_info *s = bpf_map_lookup_elem(&signals, &key);
	if (!s)
		return 0;
	/* complete_signal() turns a fatal signal into a group exit when it is
	 * sent (signal->group_exit_code = sig), and get_signal() then traces the
	 * delivery as SIGKILL. Any group exit is traced so, exit_group(2) too:
	 * only one whose code is the signal on record delivers that signal. */
	if (s->signo != sig &&
	    (sig != SIGKILL || (BPF_CORE_READ(task, signal, group_exit_code) & 0x7f) != s->signo))
		return 0;
	s->delivered_ns = bpf_ktime_get_boot_ns();
	s->flags |= SIGNAL_DEFAULT_ACTION;
	return 0;
}
