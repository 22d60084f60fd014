package probe

import (
	"github.com/cilium/ebpf/btf"
)

// The arguments a tp_btf program may read are those of the kernel's
// btf_trace_<tracepoint> typedef: a pointer to func(void *ctx, args...). The
// verifier rejects a program reading an argument the kernel does not pass,
// so where a tracepoint changed shape the probe picks a program per shape.

// tracepointArgs returns the arguments the tracepoint passes after ctx, and
// false when the kernel's BTF has no such tracepoint. types is the kernel's
// BTF, the spec Load already holds for CO-RE.
func tracepointArgs(types *btf.Spec, tracepoint string) ([]btf.FuncParam, bool) {
	typ, err := types.AnyTypeByName("btf_trace_" + tracepoint)
	if err != nil {
		return nil, false
	}
	return protoArgs(typ)
}

// protoArgs reads a btf_trace_* typedef.
func protoArgs(typ btf.Type) ([]btf.FuncParam, bool) {
	td, ok := typ.(*btf.Typedef)
	if !ok {
		return nil, false
	}
	ptr, ok := td.Type.(*btf.Pointer)
	if !ok {
		return nil, false
	}
	proto, ok := ptr.Target.(*btf.FuncProto)
	if !ok || len(proto.Params) == 0 {
		return nil, false
	}
	return proto.Params[1:], true
}

// exitPassesGroupDead: sched_process_exit passes (struct task_struct *,
// bool group_dead) since 6.16, only the task before.
func exitPassesGroupDead(args []btf.FuncParam) bool { return len(args) >= 2 }

// markVictimPassesTask: mark_victim passes (struct task_struct *, uid_t)
// since 6.9, (int pid) up to 6.8.
func markVictimPassesTask(args []btf.FuncParam) bool {
	if len(args) == 0 {
		return false
	}
	ptr, ok := btf.UnderlyingType(args[0].Type).(*btf.Pointer)
	if !ok {
		return false
	}
	s, ok := btf.UnderlyingType(ptr.Target).(*btf.Struct)
	return ok && s.Name == "task_struct"
}
