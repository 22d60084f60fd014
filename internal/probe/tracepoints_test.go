package probe

import (
	"errors"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// kernelSpec builds a kernel BTF holding just the given btf_trace_* typedefs.
func kernelSpec(t *testing.T, tracepoints map[string][]btf.Type) *btf.Spec {
	t.Helper()
	b, err := btf.NewBuilder(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	void := &btf.Pointer{Target: (*btf.Void)(nil)}
	for name, args := range tracepoints {
		params := []btf.FuncParam{{Type: void}}
		for _, a := range args {
			params = append(params, btf.FuncParam{Type: a})
		}
		td := &btf.Typedef{Name: "btf_trace_" + name, Type: &btf.Pointer{Target: &btf.FuncProto{Return: (*btf.Void)(nil), Params: params}}}
		if _, err := b.Add(td); err != nil {
			t.Fatal(err)
		}
	}
	spec, err := b.Spec()
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

var (
	taskPtr  = &btf.Pointer{Target: &btf.Struct{Name: "task_struct"}}
	boolType = &btf.Int{Name: "_Bool", Size: 1, Encoding: btf.Bool}
	intType  = &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	uidType  = &btf.Typedef{Name: "uid_t", Type: &btf.Int{Name: "unsigned int", Size: 4}}
)

func TestTracepointShapes(t *testing.T) {
	newer := kernelSpec(t, map[string][]btf.Type{
		"sched_process_exit": {taskPtr, boolType}, // 6.16+
		"mark_victim":        {taskPtr, uidType},  // 6.9+
	})
	older := kernelSpec(t, map[string][]btf.Type{
		"sched_process_exit": {taskPtr},
		"mark_victim":        {intType},
	})
	none := kernelSpec(t, map[string][]btf.Type{"sched_switch": {boolType}})

	if args, ok := tracepointArgs(newer, "sched_process_exit"); !ok || !exitPassesGroupDead(args) {
		t.Errorf("6.16 sched_process_exit: %v %v, want group_dead", args, ok)
	}
	if args, ok := tracepointArgs(older, "sched_process_exit"); !ok || exitPassesGroupDead(args) {
		t.Errorf("older sched_process_exit: %v %v, want the task only", args, ok)
	}
	if args, ok := tracepointArgs(newer, "mark_victim"); !ok || !markVictimPassesTask(args) {
		t.Errorf("6.9 mark_victim: %v %v, want the task", args, ok)
	}
	if args, ok := tracepointArgs(older, "mark_victim"); !ok || markVictimPassesTask(args) {
		t.Errorf("older mark_victim: %v %v, want a pid only", args, ok)
	}
	if args, ok := tracepointArgs(none, "mark_victim"); ok || markVictimPassesTask(args) || exitPassesGroupDead(args) {
		t.Errorf("missing tracepoint: %v %v", args, ok)
	}
}

// The lifecycle object keeps one exit program, always named handle_exit.
func TestChooseExitProgram(t *testing.T) {
	for _, tc := range []struct {
		args []btf.Type
		want string
	}{
		{[]btf.Type{taskPtr, boolType}, lifecycleProgHandleExit},
		{[]btf.Type{taskPtr}, lifecycleProgHandleExitLive},
	} {
		spec, err := loadLifecycle()
		if err != nil {
			t.Fatal(err)
		}
		got := chooseExitProgram(spec, kernelSpec(t, map[string][]btf.Type{"sched_process_exit": tc.args}), false)
		if got != tc.want || spec.Programs[lifecycleProgHandleExit] == nil || spec.Programs[lifecycleProgHandleExit].Name != tc.want ||
			spec.Programs[lifecycleProgHandleExitLive] != nil {
			t.Errorf("%d arguments: chose %s, programs %v", len(tc.args), got, spec.Programs)
		}
	}
}

func TestOptionsOutOfRange(t *testing.T) {
	for _, cfg := range []Config{
		{MaxChildren: MaxChildrenBound + 1},
		{RingBufferBytes: 12345},
		{RingBufferBytes: 1024},
	} {
		cfg.setDefaults()
		if err := cfg.validate(); !errors.Is(err, ErrBadOption) {
			t.Errorf("%+v: %v, want ErrBadOption", cfg, err)
		}
	}
	cfg := Config{MaxChildren: MaxChildrenBound}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		t.Errorf("max children at the bound: %v", err)
	}
}

func TestReleaseBefore(t *testing.T) {
	for release, want := range map[string]bool{
		"5.10.0-28-amd64": true, "5.11.0": false, "6.18.2": false, "4.19": true, "": false, "garbage": false, "6": false,
	} {
		if got := releaseBefore(release, 5, 11); got != want {
			t.Errorf("releaseBefore(%q, 5.11) = %v, want %v", release, got, want)
		}
	}
}
