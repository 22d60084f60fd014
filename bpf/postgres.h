/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/* PostgreSQL's rules the programs need. They are not written here: user
 * space sets them at load time from internal/verdict, which owns them. */
#pragma once

#include "immediate.h"

/* An exit code from this one up crashes a postmaster's child (postmaster.c:
 * anything but EXIT_STATUS_0 and EXIT_STATUS_1), as does any signal. */
const volatile __u32 crash_exit_code = 0;

/* The comms a server process runs under, as 16 NUL-padded bytes read in two
 * words: head is bytes 0-7; bytes 8-15 masked by tail_mask must equal tail
 * (the mask reaches the name's NUL, not the bytes after it, which kernels
 * before 6.2 do not clear). Every program asks this first of every process
 * it sees, so the patterns are immediates (immediate.h), not a map's memory.
 * Each takes three of them: IMM_SERVER_COMM + 3*i + 0, 1, 2. */
#define SERVER_COMMS 2
#define server_comm_matches(head, tail, i)                                           \
	((head) == immediate(IMM_SERVER_COMM, 3 * (i)) &&                              \
	 ((tail) & immediate(IMM_SERVER_COMM, 3 * (i) + 2)) == immediate(IMM_SERVER_COMM, 3 * (i) + 1))

/* Whether a comm is a server binary's: two loads and a compare each. */
static __always_inline bool comm_is_server(const char *comm)
{
	__u64 head = *(__u64 *)comm;
	__u64 tail = *(__u64 *)(comm + 8);
	_Static_assert(SERVER_COMMS == 2, "comm_is_server compares two patterns");
	return server_comm_matches(head, tail, 0) || server_comm_matches(head, tail, 1);
}

/* The wait(2) status says the postmaster crash-restarts. */
static __always_inline bool status_crashes(__u32 status)
{
	return (status & 0x7f) || ((status >> 8) & 0xff) >= crash_exit_code;
}
