package probe

import (
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"
)

// Every marker the objects load gets its value, and a mismatch between the
// objects and this code is an error, not a program run with a marker.
func TestSetImmediates(t *testing.T) {
	values := lifecycleImmediates(true)
	spec, err := loadLifecycle()
	if err != nil {
		t.Fatal(err)
	}
	if err := setImmediates(spec, values); err != nil {
		t.Fatalf("setImmediates: %v", err)
	}
	for name, prog := range spec.Programs {
		for _, ins := range prog.Instructions {
			if ins.IsConstantLoad(asm.DWord) && uint64(ins.Constant)&immMarkerMask == immMarker {
				t.Errorf("program %s still loads marker %#x", name, ins.Constant)
			}
		}
	}
	if !loadsConstant(spec.Programs["handle_exec"].Instructions, serverComms()[0].Head) {
		t.Errorf("handle_exec does not compare comms with %q's pattern", "postgres")
	}

	spec, _ = loadLifecycle()
	delete(values, immStreamAll)
	if err := setImmediates(spec, values); err == nil || !strings.Contains(err.Error(), "make generate") {
		t.Errorf("a marker with no value: err = %v, want one that says the objects are out of date", err)
	}
	spec, _ = loadLifecycle()
	values = lifecycleImmediates(false)
	values[immServerComm+3*5] = 1
	if err := setImmediates(spec, values); err == nil || !strings.Contains(err.Error(), "make generate") {
		t.Errorf("a value no program loads: err = %v, want one that says the objects are out of date", err)
	}
}

func loadsConstant(insns asm.Instructions, value uint64) bool {
	for _, ins := range insns {
		if ins.IsConstantLoad(asm.DWord) && uint64(ins.Constant) == value {
			return true
		}
	}
	return false
}

// What the kernel runs has the values, not the markers: every program of a
// loaded probe, as the kernel reports its instructions back.
func TestKernelRunsNoImmediateMarker(t *testing.T) {
	c := startProbe(t, Config{AttachAll: true})
	for _, h := range c.probe.hooks {
		info, err := h.prog.Info()
		if err != nil {
			t.Fatal(err)
		}
		insns, err := info.Instructions()
		if err != nil {
			t.Fatalf("%s: reading its instructions back: %v", h.Program, err)
		}
		if len(insns) == 0 {
			t.Fatalf("%s: the kernel returned no instructions", h.Program)
		}
		for _, ins := range insns {
			if ins.IsConstantLoad(asm.DWord) && uint64(ins.Constant)&immMarkerMask == immMarker {
				t.Errorf("%s runs with marker %#x", h.Program, ins.Constant)
			}
		}
	}
}
