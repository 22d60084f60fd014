package lineage

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/procfs/procfstest"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

const pgBin = "/usr/lib/postgresql/15/bin/postgres"
const dockerCgroup = "/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope"

// A container: shim -> postmaster (PID 1 of its namespace) -> backend, and a
// psql it adopted; plus an unrelated process.
func containerProc(t *testing.T) *procfstest.Tree {
	f := procfstest.New(t)
	f.Add(procfstest.Proc{PID: 50, PPID: 1, Comm: "containerd-shim", Start: 10, Exe: "/usr/bin/containerd-shim-runc-v2", Argv: []string{"containerd-shim"}})
	f.Add(procfstest.Proc{PID: 100, PPID: 50, Comm: "postgres", Start: 20, Exe: pgBin, Argv: []string{"postgres", "-D", "/var/lib/postgresql/data"}, NSpid: []int{100, 1}, Cgroup: dockerCgroup, DataDir: "/var/lib/postgresql/data", Major: 15})
	f.Add(procfstest.Proc{PID: 101, PPID: 100, Comm: "postgres", Start: 21, Exe: pgBin, Argv: []string{"postgres: checkpointer "}, NSpid: []int{101, 2}})
	f.Add(procfstest.Proc{PID: 102, PPID: 100, Comm: "psql", Start: 30, Exe: "/usr/lib/postgresql/15/bin/psql", Argv: []string{"psql", "postgresql://app:s3cret@db/x"}, NSpid: []int{102, 9}})
	f.Add(procfstest.Proc{PID: 200, PPID: 1, Comm: "postgres", Start: 40, Exe: "/usr/bin/postgres-exporter-not-really", Argv: []string{"x"}})
	return f
}

func TestSeedFindsPostmastersServersAndOrphans(t *testing.T) {
	f := containerProc(t)
	table := New(f.FS(), 100)
	pms, err := table.Seed()
	if err != nil {
		t.Fatal(err)
	}
	if len(pms) != 1 {
		t.Fatalf("found %d postmasters, want 1: %+v", len(pms), pms)
	}
	pm := pms[0]
	if pm.Key != (event.ProcessKey{PID: 100, StartTicks: 20}) || !pm.PID1() || pm.Major != 15 {
		t.Errorf("postmaster = %+v", pm)
	}
	if pm.DataDir != filepath.Join(f.Root, "fs", "/var/lib/postgresql/data") {
		t.Errorf("data dir = %q, want its working directory", pm.DataDir)
	}
	if pm.Container.Runtime != "docker" || !strings.HasPrefix(pm.Container.ID, "0123456789ab") {
		t.Errorf("container = %+v", pm.Container)
	}
	adopted := table.Adopted()
	if len(adopted) != 1 || adopted[0].Key.PID != 102 || adopted[0].NSPid != 9 || adopted[0].Argv[1] != "postgresql://app:s3cret@db/x" {
		t.Fatalf("adopted = %+v, want psql 102", adopted)
	}
	if backend := table.Lookup(event.ProcessKey{PID: 101, StartTicks: 21}); backend == nil || backend.Origin != verdict.OriginForked {
		t.Errorf("backend = %+v, want a forked server process", backend)
	}
}

// A postmaster found as it starts inherits the helpers its entrypoint
// started: they are learned with their command lines, as not forked by it.
func TestLearnChildrenOfAStartingPostmaster(t *testing.T) {
	f := containerProc(t)
	f.Add(procfstest.Proc{PID: 103, PPID: 100, Comm: "sh", Start: 15, Exe: "/usr/bin/dash", Argv: []string{"sh", "-c", "sleep 8; kill -TERM $$"}, NSpid: []int{103, 7}})
	table := New(f.FS(), 100)
	pm, err := table.AddPostmaster(100, false)
	if err != nil {
		t.Fatal(err)
	}
	table.LearnChildren(pm)
	helper := table.Lookup(event.ProcessKey{PID: 103, StartTicks: 15})
	if helper == nil || helper.Origin != verdict.OriginAdopted || helper.NSPid != 7 || len(helper.Argv) != 3 {
		t.Errorf("entrypoint helper = %+v, want it known, not forked, with its command", helper)
	}
	if backend := table.Lookup(event.ProcessKey{PID: 101, StartTicks: 21}); backend == nil || backend.Origin != verdict.OriginForked {
		t.Errorf("backend = %+v, want a forked server process", backend)
	}
}

func TestPIDReuseNeverMixesProcesses(t *testing.T) {
	f := containerProc(t)
	table := New(f.FS(), 100)
	if _, err := table.Seed(); err != nil {
		t.Fatal(err)
	}
	// pid 102 exits and a new process gets pid 102: its exit must not be
	// taken for the orphan's.
	reused := event.ProcessKey{PID: 102, StartTicks: 31}
	if p, pm := table.Remove(reused); p != nil || pm != nil {
		t.Errorf("Remove(reused pid) returned %+v %+v", p, pm)
	}
	if table.Lookup(event.ProcessKey{PID: 102, StartTicks: 30}) == nil {
		t.Error("the original orphan was forgotten")
	}
	// A new postmaster-less process with the postmaster's pid is no postmaster.
	if table.Postmaster(event.ProcessKey{PID: 100, StartTicks: 99}) != nil {
		t.Error("a recycled postmaster pid was taken for the postmaster")
	}
	p, pm := table.Remove(event.ProcessKey{PID: 100, StartTicks: 20})
	if pm == nil || p != nil {
		t.Errorf("postmaster exit returned %+v %+v", p, pm)
	}
	if len(table.Postmasters()) != 0 || len(table.Adopted()) != 0 {
		t.Error("postmaster still known after its exit")
	}
}

func adoption(orphan, orphanStart, prev, next int, nextStart uint64, at uint64) *event.Event {
	ev := &event.Event{Kind: event.KindAdoption, Time: at}
	ev.Task = event.Task{PID: uint32(orphan), NSPid: uint32(orphan), Start: uint64(orphanStart) * 1e7}
	copy(ev.Task.Comm[:], "job")
	ev.Previous = event.Task{PID: uint32(prev)}
	copy(ev.Previous.Comm[:], fmt.Sprintf("p%d", prev))
	ev.Parent = event.Task{PID: uint32(next), Start: nextStart * 1e7}
	return ev
}

func TestAdoptionChain(t *testing.T) {
	f := containerProc(t)
	f.Add(procfstest.Proc{PID: 300, PPID: 100, Comm: "job", Start: 50, Exe: "/bin/job", Argv: []string{"job", "--password", "pw"}})
	table := New(f.FS(), 100)
	if _, err := table.Seed(); err != nil {
		t.Fatal(err)
	}
	// job's parent dies: a subreaper (pid 60) adopts it; that one dies too:
	// the postmaster (pid 100) adopts it.
	table.NoteAdoption(adoption(300, 50, 70, 60, 5, 1000))
	p := table.NoteAdoption(adoption(300, 50, 60, 100, 20, 2000))
	if p.PPID != 100 || p.PreviousParent.PID != 60 || p.AdoptedAt != 2000 || p.Origin != verdict.OriginAdopted {
		t.Errorf("after two adoptions: %+v", p)
	}
	if p.Exe != "/bin/job" || len(p.Argv) != 3 {
		t.Errorf("adopted by a postmaster: command not read from /proc: %q %q", p.Exe, p.Argv)
	}
	adopted := table.Adopted()
	if len(adopted) != 2 { // the seeded psql and job
		t.Errorf("adopted = %d processes, want 2", len(adopted))
	}
}

func TestTableIsBounded(t *testing.T) {
	f := containerProc(t)
	table := New(f.FS(), 3)
	if _, err := table.Seed(); err != nil { // the backend and psql: 2 of 3
		t.Fatal(err)
	}
	for i := range 5 {
		table.NoteAdoption(adoption(1000+i, 1, 2, 100, 20, 1))
	}
	if table.Len() != 3 || table.Evicted() != 4 {
		t.Errorf("len %d evicted %d, want 3 and 4", table.Len(), table.Evicted())
	}
}

// Orphans adopted by anything but a postmaster (a host's init, a container's
// tini) are not the table's business: they must not crowd out the ones that are.
func TestOnlyAPostmastersAdopteesAreKept(t *testing.T) {
	f := containerProc(t)
	table := New(f.FS(), 100)
	if _, err := table.Seed(); err != nil {
		t.Fatal(err)
	}
	before := table.Len()
	p := table.NoteAdoption(adoption(5000, 1, 2, 1, 1, 1))
	if p == nil || p.PreviousParent.PID != 2 || table.Len() != before {
		t.Errorf("adoption by init: returned %+v, table %d -> %d entries", p, before, table.Len())
	}
}

// A child of a postmaster whose executable /proc cannot show is neither a
// server process nor an adoptee: it is left unknown, not called adopted.
func TestSeedLeavesUnreadableChildrenUnknown(t *testing.T) {
	f := containerProc(t)
	f.Add(procfstest.Proc{PID: 103, PPID: 100, Comm: "postgres", Start: 22, Exe: pgBin, NSpid: []int{103, 3}})
	if err := os.Remove(filepath.Join(f.Root, "103", "exe")); err != nil {
		t.Fatal(err)
	}
	table := New(f.FS(), 100)
	if _, err := table.Seed(); err != nil {
		t.Fatal(err)
	}
	if p := table.Lookup(event.ProcessKey{PID: 103, StartTicks: 22}); p != nil {
		t.Errorf("unreadable child recorded as %+v", p)
	}
	if adopted := table.Adopted(); len(adopted) != 1 || adopted[0].Key.PID != 102 {
		t.Errorf("adopted = %+v, want only psql", adopted)
	}
}

func TestDataDirFromArguments(t *testing.T) {
	for argv, want := range map[string]string{
		"postgres -D /a":                      "/a",
		"postgres -D/b -p 5432":               "/b",
		"postgres -c data_directory=/c":       "/c",
		"postgres -cdata_directory=/d":        "/d",
		"postgres --data-directory=/e":        "/e",
		"postgres --data_directory=/f":        "/f",
		"postgres -c shared_buffers=1GB":      "",
		"postgres --config-file=/etc/pg.conf": "",
		"postgres -D":                         "",
	} {
		if got := dataDirArg(strings.Fields(argv)); got != want {
			t.Errorf("dataDirArg(%q) = %q, want %q", argv, got, want)
		}
	}
}

func TestSweepForgetsVanishedProcesses(t *testing.T) {
	f := containerProc(t)
	table := New(f.FS(), 100)
	if _, err := table.Seed(); err != nil {
		t.Fatal(err)
	}
	before := table.Len()
	f.Remove(102)
	f.Remove(101)
	f.Add(procfstest.Proc{PID: 101, PPID: 100, Comm: "postgres", Start: 77, Exe: pgBin}) // pid reused
	if gone, pms := table.Sweep(); gone != 2 || len(pms) != 0 || table.Len() != before-2 {
		t.Errorf("Sweep removed %d and postmasters %+v (len %d -> %d), want 2 and none", gone, pms, before, table.Len())
	}
	// The postmaster's exit was lost (a full ring buffer): the sweep finds it.
	f.Remove(100)
	if _, pms := table.Sweep(); len(pms) != 1 || pms[0].Key.PID != 100 || len(table.Postmasters()) != 0 {
		t.Errorf("Sweep returned postmasters %+v, table still has %d", pms, len(table.Postmasters()))
	}
}
