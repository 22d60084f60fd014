package testenv

import (
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// ProgramsNamed counts the BPF programs loaded in the kernel whose name
// starts with prefix (all orphanwatch's are named handle_*).
func ProgramsNamed(t testing.TB, prefix string) int {
	t.Helper()
	n := 0
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return n
		}
		if err != nil {
			t.Fatalf("listing BPF programs: %v", err)
		}
		id = next
		prog, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded meanwhile
		}
		info, err := prog.Info()
		prog.Close()
		if err == nil && strings.HasPrefix(info.Name, prefix) {
			n++
		}
	}
}

// SettledProgramsNamed is ProgramsNamed once the count has stopped
// changing: the kernel frees an exited agent's programs asynchronously.
func SettledProgramsNamed(t testing.TB, prefix string) int {
	t.Helper()
	n := ProgramsNamed(t, prefix)
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		next := ProgramsNamed(t, prefix)
		if next == n {
			return n
		}
		n = next
	}
	return n
}

var (
	stormOnce sync.Once
	stormPath string
	stormErr  error
)

// Storm compiles bench/storm/storm.c once and returns the binary's path.
func Storm(t testing.TB) string {
	t.Helper()
	RequireCommands(t, "cc")
	path, err := BuildStorm()
	if err != nil {
		t.Fatal(err)
	}
	return path
}
