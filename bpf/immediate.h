/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/* Constants user space writes into the instructions themselves at load time
 * (internal/probe/immediate.go). The paths that run for every process on the
 * host read them: a load from .rodata or .bss there touches a page of map
 * memory that a process storm keeps cold, 150-300 ns a run measured here,
 * where an immediate costs nothing.
 *
 * immediate(IMM_X, n) compiles to one 64-bit load of a marker, IMM_X + n,
 * that asm volatile keeps clang from folding or sharing; user space replaces
 * each marker by its value and refuses to load a program that keeps one. */
#pragma once

#define IMM_MARKER 0x6f77696d6d000000ULL /* "owimm" in the top bytes: no real constant */
#define IMM_STREAM_ALL (IMM_MARKER | 0x100)  /* --all: bool */
#define IMM_SERVER_COMM (IMM_MARKER | 0x200) /* + 3*i: head, tail, tail_mask of server comm i */

#define immediate(base, n)                                                  \
	({                                                                  \
		__u64 __imm;                                                \
		asm volatile("%0 = %1 ll" : "=r"(__imm) : "i"((base) + (n))); \
		__imm;                                                      \
	})
