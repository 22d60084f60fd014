package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
)

// BuildBinary builds cmd/orphanwatch once per process and returns its path:
// Binary without a test, for programs such as the differential oracle.
func BuildBinary() (string, error) {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "orphanwatch-bin-")
		if err != nil {
			buildErr = err
			return
		}
		os.Chmod(dir, 0o755) // tests also run it as an unprivileged user
		binary = filepath.Join(dir, "orphanwatch")
		cmd := exec.Command("go", "build", "-o", binary, "./cmd/orphanwatch")
		cmd.Dir = ModuleRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building orphanwatch: %v\n%s", err, out)
		}
	})
	return binary, buildErr
}

// BuildStorm compiles bench/storm/storm.c once per process and returns the
// binary's path: Storm without a test.
func BuildStorm() (string, error) {
	stormOnce.Do(func() {
		dir, err := os.MkdirTemp("", "orphanwatch-storm-")
		if err != nil {
			stormErr = err
			return
		}
		os.Chmod(dir, 0o755) // run inside the cluster's namespace too
		stormPath = filepath.Join(dir, "storm")
		out, err := exec.Command("cc", "-O2", "-o", stormPath, filepath.Join(ModuleRoot(), "bench", "storm", "storm.c")).CombinedOutput()
		if err != nil {
			stormErr = fmt.Errorf("compiling the storm driver: %v: %s", err, out)
		}
	})
	return stormPath, stormErr
}

// TemplateDataDir is the per-process initdb'd data directory that clusters
// are copied from, for tests that start a second postmaster of their own.
// Copy it (cp -a); never start a server on it.
func TemplateDataDir() (string, error) {
	pg, err := user.Lookup("postgres")
	if err != nil {
		return "", fmt.Errorf("the postgres user (apt-get install postgresql): %w", err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	return templateCluster(uid, gid)
}

// LeaderExitsProgram compiles a program whose main thread calls
// pthread_exit while a second thread sleeps on: a process whose leader
// thread ended is still alive.
func LeaderExitsProgram(t testing.TB) string {
	return CompileC(t, "leader", `#include <pthread.h>
#include <unistd.h>
static void *sleeper(void *arg) { (void)arg; sleep(60); return 0; }
int main(void) { pthread_t t; pthread_create(&t, 0, sleeper, 0); pthread_exit(0); }
`)
}

// CompileC compiles a C program (with cc, -pthread) into a directory of
// its own, readable by any user, and returns the binary's path; its name
// is its comm.
func CompileC(t testing.TB, name, src string) string {
	t.Helper()
	RequireCommands(t, "cc")
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	file := filepath.Join(dir, name+".c")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, name)
	if out, err := exec.Command("cc", "-pthread", "-o", bin, file).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v: %s", err, out)
	}
	return bin
}
