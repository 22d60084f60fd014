package probe

// The BPF objects are compiled by bpf2go and committed, so building the agent
// needs no clang. `make generate` reruns this with the pinned compiler and
// flags (BPF2GO_CC, BPF2GO_CFLAGS, BPF2GO_STRIP); CI fails when the committed
// files differ from what it produces.

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type event -type event_kind -type task_flag -type event_flag -type birth_flag -type signal_flag -type oom_flag -type watch_flag -type watch -type counter lifecycle ../../bpf/lifecycle.bpf.c -- -I../../bpf -I../../vmlinux
//go:generate go tool bpf2go -tags linux -target amd64,arm64 -no-global-types signals ../../bpf/signals.bpf.c -- -I../../bpf -I../../vmlinux
//go:generate go tool bpf2go -tags linux -target amd64,arm64 -no-global-types oom ../../bpf/oom.bpf.c -- -I../../bpf -I../../vmlinux
