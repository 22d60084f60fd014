// SPDX-License-Identifier: MIT
// owthreads: a multi-threaded adoptee for orphanwatch's differential oracle.
// The kernel reports a process's exit when its last thread exits, and a
// leader that exits first stays a zombie until then: both are cases a
// tracer keyed on the leader's exit gets wrong.
//
//   owthreads wait THREADS            all threads block until a signal kills them
//   owthreads exit THREADS CODE MS    a non-leader thread calls exit(CODE) after MS
//   owthreads leader THREADS CODE MS  the leader calls pthread_exit() at once; a
//                                     thread calls exit(CODE) after MS, or, with
//                                     CODE -1, the threads block until killed
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int code = -1;
static long delay_ms;

static void *block(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

static void *exiter(void *arg)
{
	(void)arg;
	struct timespec ts = {delay_ms / 1000, (delay_ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
	if (code >= 0)
		exit(code);
	return block(NULL);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 64;
	const char *mode = argv[1];
	int threads = atoi(argv[2]);
	if (argc >= 5) {
		code = atoi(argv[3]);
		delay_ms = atol(argv[4]);
	}
	pthread_t t;
	for (int i = 0; i < threads; i++)
		if (pthread_create(&t, NULL, i == 0 && strcmp(mode, "wait") != 0 ? exiter : block, NULL) != 0)
			return 65;
	if (strcmp(mode, "leader") == 0)
		pthread_exit(NULL); // the process lives on in its threads
	block(NULL);
	return 0;
}
