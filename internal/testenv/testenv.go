// Package testenv is what orphanwatch's privileged tests share: the rule
// that they may skip only outside CI, a real PostgreSQL running as PID 1 of
// its own PID namespace (or behind an init), and the orphanwatch binary
// itself, run the way a user runs it.
package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// InCI reports whether the tests run in CI, where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require fails the test under CI and skips it, loudly, elsewhere, when ok
// is false. why says what is missing and how to get it.
func Require(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if InCI() {
		t.Fatalf("CI=true and this test cannot run: %s", why)
	}
	fmt.Fprintf(os.Stderr, "\n*** SKIPPED %s: %s (set CI=true to make this a failure)\n\n", t.Name(), why)
	t.Skipf("SKIPPED: %s", why)
}

// RequireRoot needs root, for BPF and namespaces.
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "needs root (BPF, PID namespaces): run `sudo make test`")
	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	Require(t, err == nil, "needs kernel BTF at /sys/kernel/btf/vmlinux")
}

// RequireCommands needs programs on PATH.
func RequireCommands(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		_, err := exec.LookPath(n)
		Require(t, err == nil, fmt.Sprintf("needs %s on PATH (see .ci/run for the packages)", n))
	}
}

// ModuleRoot is the repository's top directory.
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Main runs a test package and removes what testenv built for it.
func Main(m *testing.M) {
	code := m.Run()
	RemoveBuilt()
	os.Exit(code)
}

// RemoveBuilt removes what this process built: the binaries and the
// template cluster (39 MiB a run). Main calls it; the benchmark too.
func RemoveBuilt() {
	for _, dir := range builtDirs() {
		os.RemoveAll(dir)
	}
}

func builtDirs() []string {
	var dirs []string
	for _, path := range []string{binary, stormPath, templateDir} {
		if path != "" {
			dirs = append(dirs, filepath.Dir(path))
		}
	}
	return dirs
}

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// Binary builds cmd/orphanwatch once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	path, err := BuildBinary()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// Buffer collects output written from several goroutines (a child process's
// stdout and stderr, an agent's sinks).
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
