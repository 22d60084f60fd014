// SPDX-License-Identifier: MIT
// storm: a fork/exit storm for orphanwatch's benchmarks and storm tests.
// fork() + _exit() is the cheapest real process lifecycle: what the BPF
// programs pay per process shows up undiluted.
//
//   storm [-n total] [-c concurrency] [-f every]   fork total children, at most
//                                                  concurrency alive; every f-th
//                                                  exits 2, the rest 0 (0: none)
//   storm -l live                                  keep live children until
//                                                  stdin closes, then kill them
// Prints the elapsed seconds.
#include <errno.h>
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
		if (waitpid(-1, NULL, 0) > 0)
			return 1;
		if (errno != EINTR)
			return 0;
	}
}

static int live(long n)
{
	pid_t *pids = calloc(n, sizeof(*pids));
	if (!pids)
		return 1;
	for (long i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			perror("fork");
			n = i;
			break;
		}
		if (pids[i] == 0) {
			pause();
			_exit(0);
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
	int opt;
	while ((opt = getopt(argc, argv, "n:c:f:l:")) != -1) {
		switch (opt) {
		case 'n': total = atol(optarg); break;
		case 'c': concurrency = atol(optarg); break;
		case 'f': every = atol(optarg); break;
		case 'l': hold = atol(optarg); break;
		default:
			fprintf(stderr, "usage: %s [-n total] [-c concurrency] [-f every] | -l live\n", argv[0]);
			return 2;
		}
	}
	if (hold > 0)
		return live(hold);

	double start = now();
	long alive = 0;
	for (long i = 0; i < total; i++) {
		if (alive >= concurrency && reap_one())
			alive--;
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0)
			_exit(every > 0 && i % every == 0 ? 2 : 0);
		alive++;
	}
	while (alive > 0 && reap_one())
		alive--;
	printf("%.6f\n", now() - start);
	return 0;
}
