// SPDX-License-Identifier: MIT
// storm: a fork/exit storm for orphanwatch's benchmarks and storm tests.
// Children exit at once: what the BPF programs pay per process shows up
// undiluted.
//
//   storm [-n total] [-c concurrency] [-f every] [-v | -x]
//       fork total children, at most concurrency alive; every f-th exits 2,
//       the rest 0 (f 0: all 0). -v uses vfork(): the same process lifecycle
//       through the same tracepoints, without copying the parent's page
//       tables, which costs ~0.9 ms in a VM with nested paging (concurrency
//       is then 1: vfork suspends the parent until the child exits).
//       -x: each child execs /bin/true, what a shell script's commands do
//       (/bin/false, exit 1, instead of exiting 2: an abnormal exit too).
//   storm -l live
//       keep live children until stdin closes, then kill them.
// Prints the elapsed seconds.
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int reap_one(void)
{
	for (;;) {
		if (waitpid(-1, NULL, __WALL) > 0)
			return 1;
		if (errno != EINTR)
			return 0;
	}
}

// spawn_vfork runs a child that exits with code at once. In its own
// function: after vfork() the child borrows this stack frame until _exit().
static __attribute__((noinline)) pid_t spawn_vfork(int code)
{
	pid_t pid = vfork();
	if (pid == 0)
		_exit(code);
	return pid;
}

static int sleeper(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

// live holds n children. They share the parent's memory (CLONE_VM), so
// creating thousands is quick; each gets a small stack of its own.
static int live(long n)
{
	enum { STACK = 16 * 1024 };
	pid_t *pids = calloc(n, sizeof(*pids));
	char *stacks = malloc((size_t)n * STACK);
	if (!pids || !stacks)
		return 1;
	for (long i = 0; i < n; i++) {
		pids[i] = clone(sleeper, stacks + (i + 1) * STACK, CLONE_VM | SIGCHLD, NULL);
		if (pids[i] < 0) {
			perror("clone");
			n = i;
			break;
		}
	}
	printf("ready %ld\n", n);
	fflush(stdout);
	char buf[64];
	while (read(0, buf, sizeof(buf)) > 0)
		;
	for (long i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	while (reap_one())
		;
	return 0;
}

int main(int argc, char **argv)
{
	long total = 20000, concurrency = 8, every = 3, hold = 0;
	int use_vfork = 0, use_exec = 0, opt;
	while ((opt = getopt(argc, argv, "n:c:f:l:vx")) != -1) {
		switch (opt) {
		case 'n': total = atol(optarg); break;
		case 'c': concurrency = atol(optarg); break;
		case 'f': every = atol(optarg); break;
		case 'l': hold = atol(optarg); break;
		case 'v': use_vfork = 1; break;
		case 'x': use_exec = 1; break;
		default:
			fprintf(stderr, "usage: %s [-n total] [-c concurrency] [-f every] [-v | -x] | -l live\n", argv[0]);
			return 2;
		}
	}
	if (hold > 0)
		return live(hold);

	double start = now();
	long alive = 0;
	for (long i = 0; i < total; i++) {
		int code = every > 0 && i % every == 0 ? 2 : 0;
		if (use_vfork) {
			pid_t pid = spawn_vfork(code);
			if (pid < 0 || waitpid(pid, NULL, 0) < 0) {
				perror("vfork");
				return 1;
			}
			continue;
		}
		if (alive >= concurrency && reap_one())
			alive--;
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			if (use_exec) {
				const char *prog = code ? "/bin/false" : "/bin/true";
				execl(prog, prog, (char *)NULL);
				_exit(127);
			}
			_exit(code);
		}
		alive++;
	}
	while (alive > 0 && reap_one())
		alive--;
	printf("%.6f\n", now() - start);
	return 0;
}
