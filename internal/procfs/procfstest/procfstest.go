// Package procfstest builds fake /proc trees for tests of code that reads
// /proc: stat, status, cmdline, cgroup, and the exe, cwd and ns/pid links.
package procfstest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orphanwatch/orphanwatch/internal/procfs"
)

// Tree is a fake /proc in a temporary directory.
type Tree struct {
	t    testing.TB
	Root string
}

func New(t testing.TB) *Tree { return &Tree{t: t, Root: t.TempDir()} }

// FS reads the tree.
func (tr *Tree) FS() procfs.FS { return procfs.FS{Root: tr.Root} }

// Proc describes one process.
type Proc struct {
	PID, PPID   int
	Comm        string
	Start       uint64 // ticks
	Exe         string
	Argv        []string
	NSpid       []int  // outermost first; default {PID}
	Cgroup      string // v2 path
	OOMScoreAdj int
	// DataDir makes it look like a running postmaster of that major version:
	// its working directory holds PG_VERSION and postmaster.pid.
	DataDir string
	Major   int
}

// Add writes a process.
func (tr *Tree) Add(p Proc) {
	t := tr.t
	t.Helper()
	dir := filepath.Join(tr.Root, fmt.Sprint(p.PID))
	must(t, os.MkdirAll(filepath.Join(dir, "ns"), 0o755))
	write(t, filepath.Join(dir, "stat"), fmt.Sprintf("%d (%s) S %d %d %d 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 %d 0 0\n", p.PID, p.Comm, p.PPID, p.PID, p.PID, p.Start))
	nspid := p.NSpid
	if nspid == nil {
		nspid = []int{p.PID}
	}
	fields := make([]string, len(nspid))
	for i, n := range nspid {
		fields[i] = fmt.Sprint(n)
	}
	write(t, filepath.Join(dir, "status"), fmt.Sprintf("Name:\t%s\nUid:\t0\t0\t0\t0\nNSpid:\t%s\n", p.Comm, strings.Join(fields, "\t")))
	write(t, filepath.Join(dir, "cmdline"), strings.Join(p.Argv, "\x00")+"\x00")
	write(t, filepath.Join(dir, "cgroup"), "0::"+p.Cgroup+"\n")
	write(t, filepath.Join(dir, "oom_score_adj"), fmt.Sprintf("%d\n", p.OOMScoreAdj))
	must(t, os.Symlink(p.Exe, filepath.Join(dir, "exe")))
	must(t, os.Symlink(fmt.Sprintf("pid:[%d]", 4026531835+len(nspid)), filepath.Join(dir, "ns", "pid")))
	cwd := "/"
	if p.DataDir != "" {
		cwd = filepath.Join(tr.Root, "fs", p.DataDir)
		must(t, os.MkdirAll(cwd, 0o755))
		write(t, filepath.Join(cwd, "PG_VERSION"), fmt.Sprintf("%d\n", p.Major))
		write(t, filepath.Join(cwd, "postmaster.pid"), fmt.Sprintf("%d\n%s\n", nspid[len(nspid)-1], p.DataDir))
	}
	must(t, os.Symlink(cwd, filepath.Join(dir, "cwd")))
	// The parent's main thread lists it among its children.
	tasks := filepath.Join(tr.Root, fmt.Sprint(p.PPID), "task", fmt.Sprint(p.PPID))
	must(t, os.MkdirAll(tasks, 0o755))
	f, err := os.OpenFile(filepath.Join(tasks, "children"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	must(t, err)
	_, err = fmt.Fprintf(f, "%d ", p.PID)
	must(t, err)
	must(t, f.Close())
}

// Remove makes a process vanish.
func (tr *Tree) Remove(pid int) { must(tr.t, os.RemoveAll(filepath.Join(tr.Root, fmt.Sprint(pid)))) }

func write(t testing.TB, path, data string) { must(t, os.WriteFile(path, []byte(data), 0o644)) }

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
