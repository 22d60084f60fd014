package probe

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// The markers of bpf/immediate.h: a 64-bit load of one of them in a program
// stands for a constant user space sets at load time, on the paths that run
// for every process, where reading .rodata would cost a cold page.
const (
	immMarker     = 0x6f77696d6d000000
	immMarkerMask = 0xffffffffff000000
	immStreamAll  = immMarker | 0x100 // + 0
	immServerComm = immMarker | 0x200 // + 3*i: head, tail, tail_mask
)

// serverCommImmediates are the values of the server comms' markers, which
// every object loads (bpf/postgres.h comm_is_server).
func serverCommImmediates() map[uint64]uint64 {
	values := map[uint64]uint64{}
	for i, comm := range serverComms() {
		values[immServerComm+3*uint64(i)] = comm.Head
		values[immServerComm+3*uint64(i)+1] = comm.Tail
		values[immServerComm+3*uint64(i)+2] = comm.TailMask
	}
	return values
}

// lifecycleImmediates adds the lifecycle object's own: --all.
func lifecycleImmediates(streamAll bool) map[uint64]uint64 {
	values := serverCommImmediates()
	values[immStreamAll] = 0
	if streamAll {
		values[immStreamAll] = 1
	}
	return values
}

// setImmediates writes each marker's value into the instructions that load
// it, in every program of spec. A marker with no value, or a value whose
// marker no program loads, means the objects and this code disagree: an
// error, never a program that runs with a marker for a constant.
func setImmediates(spec *ebpf.CollectionSpec, values map[uint64]uint64) error {
	loaded := make(map[uint64]bool, len(values))
	for name, prog := range spec.Programs {
		for i := range prog.Instructions {
			ins := &prog.Instructions[i]
			marker := uint64(ins.Constant)
			if !ins.IsConstantLoad(asm.DWord) || marker&immMarkerMask != immMarker {
				continue
			}
			value, ok := values[marker]
			if !ok {
				return fmt.Errorf("program %s loads immediate %#x, which this build does not set: the BPF objects are out of date (make generate)", name, marker)
			}
			ins.Constant = int64(value)
			loaded[marker] = true
		}
	}
	for marker := range values {
		if !loaded[marker] {
			return fmt.Errorf("no program loads immediate %#x: the BPF objects are out of date (make generate)", marker)
		}
	}
	return nil
}

// serverComm is how bpf/postgres.h matches a comm: its first 8 bytes, and
// the next 8 masked up to and including the NUL that ends the name.
type serverComm struct{ Head, Tail, TailMask uint64 }
