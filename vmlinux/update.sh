#!/usr/bin/env bash
# Regenerates vmlinux_x86.h and vmlinux_arm64.h with bpftool from kernel BTF.
#   x86:   the running kernel's /sys/kernel/btf/vmlinux (run this on an x86_64 host).
#   arm64: the BTF embedded in Debian's signed arm64 kernel Image, downloaded with apt.
# Needs: bpftool, apt with the arm64 architecture enabled (dpkg --add-architecture arm64).
set -euo pipefail
cd "$(dirname "$0")"
arm64_pkg=${ARM64_KERNEL_PACKAGE:-linux-image-6.12.100+deb12-arm64}

[ "$(uname -m)" = x86_64 ] || { echo "run on an x86_64 host: the x86 header comes from the running kernel" >&2; exit 1; }
bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux_x86.h
echo "x86:   $(uname -r) -> vmlinux_x86.h"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "$arm64_pkg:arm64" >/dev/null)
dpkg-deb -x "$work"/*.deb "$work/x"
image=$(ls "$work"/x/boot/vmlinuz-*)
# The arm64 Image is not an ELF file, but the .BTF section is copied into it verbatim:
# find the BTF header (magic 0xeB9F, version 1, flags 0, hdr_len 24) and cut out
# hdr_len + str_off + str_len bytes, which bpftool reads as raw BTF.
offset=$(LC_ALL=C grep -obUaP '\x9f\xeb\x01\x00\x18\x00\x00\x00' "$image" | head -1 | tr -d '\0' | cut -d: -f1)
read -r hdr_len _ _ str_off str_len < <(od -An -w20 -t u4 -j $((offset + 4)) -N 20 "$image")
dd if="$image" of="$work/vmlinux.btf" iflag=skip_bytes,count_bytes skip="$offset" count=$((hdr_len + str_off + str_len)) status=none
bpftool btf dump file "$work/vmlinux.btf" format c > vmlinux_arm64.h
echo "arm64: $arm64_pkg -> vmlinux_arm64.h"
