/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/* Picks the kernel type dump for the architecture bpf2go compiles for.
 * The dumps are generated: see vmlinux/README.md. */
#if defined(__TARGET_ARCH_x86)
#include "vmlinux_x86.h"
#elif defined(__TARGET_ARCH_arm64)
#include "vmlinux_arm64.h"
#else
#error "orphanwatch has kernel types for x86 and arm64 only: see vmlinux/README.md"
#endif
