package audit

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orphanwatch/orphanwatch/internal/procfs/procfstest"
)

const (
	pgBin       = "/usr/lib/postgresql/15/bin/postgres"
	containerID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	otherID     = "0123456789ab99990123456789abcdef0123456789abcdef0123456789abcdef"
	scope       = "/system.slice/docker-" + containerID + ".scope"
)

// fakeHost is a fake /proc and a pure cgroup v2 /sys/fs/cgroup.
type fakeHost struct {
	t      *testing.T
	proc   *procfstest.Tree
	cgroup string
}

func newFakeHost(t *testing.T) *fakeHost {
	h := &fakeHost{t: t, proc: procfstest.New(t), cgroup: t.TempDir()}
	h.file(h.proc.Root, "sys/vm/overcommit_memory", "0\n")
	h.file(h.cgroup, "cgroup.controllers", "cpuset cpu io memory pids\n")
	return h
}

func (h *fakeHost) host() Host {
	return Host{Proc: h.proc.FS(), CgroupRoot: h.cgroup, Privileged: true}
}

func (h *fakeHost) file(root, name, data string) {
	h.t.Helper()
	path := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// container adds docker's shim, a postmaster that is PID 1 of its
// namespace, its checkpointer, and a psql it adopted, with a password in
// its argv.
func (h *fakeHost) container(id string, pmPID int, pmAdj, childAdj int) {
	cg := "/system.slice/docker-" + id + ".scope"
	h.proc.Add(procfstest.Proc{PID: pmPID - 1, PPID: 1, Comm: "containerd-shim", Start: 10, Exe: "/usr/bin/containerd-shim-runc-v2", Argv: []string{"containerd-shim"}, Cgroup: "/system.slice/containerd.service"})
	h.proc.Add(procfstest.Proc{PID: pmPID, PPID: pmPID - 1, Comm: "postgres", Start: 20, Exe: pgBin, Argv: []string{"postgres"}, NSpid: []int{pmPID, 1}, Cgroup: cg, DataDir: "/var/lib/postgresql/data", Major: 15, OOMScoreAdj: pmAdj})
	h.proc.Add(procfstest.Proc{PID: pmPID + 1, PPID: pmPID, Comm: "postgres", Start: 21, Exe: pgBin, Argv: []string{"postgres: checkpointer "}, NSpid: []int{pmPID + 1, 2}, Cgroup: cg, OOMScoreAdj: childAdj})
	h.proc.Add(procfstest.Proc{PID: pmPID + 2, PPID: pmPID, Comm: "postgres", Start: 21, Exe: pgBin, Argv: []string{"postgres: walwriter "}, NSpid: []int{pmPID + 2, 3}, Cgroup: cg, OOMScoreAdj: childAdj})
	h.proc.Add(procfstest.Proc{PID: pmPID + 3, PPID: pmPID, Comm: "psql", Start: 30, Exe: "/usr/lib/postgresql/15/bin/psql", Argv: []string{"psql", "postgresql://app:s3cret@db/x", "-c", "select 1"}, NSpid: []int{pmPID + 3, 9}, Cgroup: cg})
	h.file(h.cgroup, cg+"/memory.max", "1073741824\n")
	h.file(h.cgroup, cg+"/memory.stat", "anon 104857600\nfile 734003200\nshmem 52428800\n")
}

func findingOf(t *testing.T, r Report, pid uint32, check Check) Finding {
	t.Helper()
	for _, f := range r.Findings {
		if f.Postmaster == pid && f.Check == check {
			return f
		}
	}
	t.Fatalf("no %s finding for %d in %+v", check, pid, r.Findings)
	return Finding{}
}

func TestRunAuditsAContainerisedPostmaster(t *testing.T) {
	h := newFakeHost(t)
	h.container(containerID, 100, 0, 0)
	h.proc.Add(procfstest.Proc{PID: 300, PPID: 1, Comm: "bash", Start: 50, Exe: "/bin/bash", Argv: []string{"bash"}})

	r := h.host().Run(Selector{})
	if r.Status != Fail || r.Status.ExitCode() != 2 {
		t.Errorf("status %s (exit %d), want fail (2)", r.Status, r.Status.ExitCode())
	}
	if len(r.Postmasters) != 1 {
		t.Fatalf("postmasters = %+v", r.Postmasters)
	}
	pm := r.Postmasters[0]
	if pm.PID != 100 || !pm.PID1 || pm.NSPid != 1 || pm.Version != 15 || pm.ParentComm != "containerd-shim" || pm.ContainerID != containerID || pm.ContainerRuntime != "docker" {
		t.Errorf("postmaster = %+v", pm)
	}
	if !strings.HasSuffix(pm.DataDir, "/var/lib/postgresql/data") {
		t.Errorf("data dir = %q", pm.DataDir)
	}
	if len(pm.ServerProcesses) != 2 || pm.ServerProcesses[0].PID != 101 {
		t.Errorf("server processes = %+v, want the checkpointer and walwriter, not psql", pm.ServerProcesses)
	}

	if f := findingOf(t, r, 100, CheckPID1); f.Level != Fail || !strings.Contains(f.Message, "container docker 0123456789ab") || !strings.Contains(f.Fix, "tini") {
		t.Errorf("pid1 = %+v", f)
	}
	if len(pm.Orphans) != 1 || pm.Orphans[0].PID != 103 || pm.Orphans[0].NSPid != 9 || !strings.Contains(pm.Orphans[0].Cmdline, "postgresql://app:***@db/x") {
		t.Errorf("orphans = %+v", pm.Orphans)
	}
	if f := findingOf(t, r, 100, CheckOrphan); f.Level != Warn || f.PID != 103 || strings.Contains(f.Message, "s3cret") || !strings.Contains(f.Fix, "do not kill it") {
		t.Errorf("orphan = %+v", f)
	}
	if f := findingOf(t, r, 100, CheckOOMScoreAdj); f.Level != Note {
		t.Errorf("oom_score_adj 0 everywhere = %+v, want a note", f)
	}
	m := pm.Memory
	if m.CgroupVersion != 2 || m.LimitBytes == nil || *m.LimitBytes != 1<<30 || m.UsedBytes != 150<<20 || m.Cgroup != scope || m.LimitCgroup != scope {
		t.Errorf("memory = %+v", m)
	}
	if f := findingOf(t, r, 100, CheckMemoryLimit); f.Level != OK || !strings.Contains(f.Message, "memory limit 1 GiB") || !strings.Contains(f.Message, "150 MiB") {
		t.Errorf("memory = %+v", f)
	}
	if r.OvercommitMemory == nil || *r.OvercommitMemory != 0 {
		t.Errorf("overcommit = %v", r.OvercommitMemory)
	}
	if f := findingOf(t, r, 0, CheckOvercommit); f.Level != Note {
		t.Errorf("overcommit = %+v", f)
	}

	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("s3cret")) {
		t.Errorf("the password is in the JSON: %s", data)
	}
	var back Report
	if err := json.Unmarshal(data, &back); err != nil || back.Status != Fail || back.Findings[0].Level != Fail {
		t.Errorf("JSON round trip: %v, %+v", err, back)
	}
}

func TestRunReadsTheEnvironmentForPGOOMAdjustOnly(t *testing.T) {
	h := newFakeHost(t)
	h.container(containerID, 100, -1000, 0)
	h.file(h.proc.Root, "100/environ", "POSTGRES_PASSWORD=hunter2\x00PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj\x00PG_OOM_ADJUST_VALUE=0\x00")
	r := h.host().Run(Selector{PID: 100})
	pm := r.Postmasters[0]
	if pm.OOMAdjustFile != "/proc/self/oom_score_adj" || pm.OOMAdjustValue != "0" {
		t.Errorf("environment = %q %q", pm.OOMAdjustFile, pm.OOMAdjustValue)
	}
	if f := findingOf(t, r, 100, CheckOOMScoreAdj); f.Level != OK {
		t.Errorf("protected postmaster = %+v, want OK", f)
	}
	data, _ := json.Marshal(r)
	if bytes.Contains(data, []byte("hunter2")) {
		t.Errorf("the environment leaked: %s", data)
	}
}

// A backend that exits while /proc is read loses its exe link before its
// stat: it must not be mistaken for an orphan; nor is a zombie orphan, whose
// fate is sealed, reported as a live one.
func TestVanishingChildrenAreNotOrphans(t *testing.T) {
	h := newFakeHost(t)
	h.container(containerID, 100, 0, 0)
	if err := os.Remove(filepath.Join(h.proc.Root, "102", "exe")); err != nil {
		t.Fatal(err)
	}
	r := h.host().Run(Selector{})
	if orphans := r.Postmasters[0].Orphans; len(orphans) != 1 || orphans[0].PID != 103 {
		t.Errorf("orphans = %+v, want only psql", orphans)
	}

	stat := filepath.Join(h.proc.Root, "103", "stat")
	data, err := os.ReadFile(stat)
	if err != nil {
		t.Fatal(err)
	}
	h.file(h.proc.Root, "103/stat", strings.Replace(string(data), ") S ", ") Z ", 1))
	r = h.host().Run(Selector{})
	if orphans := r.Postmasters[0].Orphans; len(orphans) != 0 {
		t.Errorf("orphans = %+v, want none: psql is a zombie", orphans)
	}
	for _, f := range r.Findings {
		if f.Check == CheckOrphan {
			t.Errorf("orphan finding for a zombie: %+v", f)
		}
	}
}

func TestSelector(t *testing.T) {
	h := newFakeHost(t)
	h.container(containerID, 100, 0, 0)
	h.container(otherID, 200, 0, 0)
	for _, tc := range []struct {
		name  string
		sel   Selector
		pids  []uint32
		level Level
		says  string
	}{
		{"all", Selector{}, []uint32{100, 200}, Fail, ""},
		{"by pid", Selector{PID: 200}, []uint32{200}, Fail, ""},
		{"a backend's pid", Selector{PID: 101}, nil, Unknown, "pid 101 is a child of the postmaster pid 100, not a postmaster (--pid 100)"},
		{"not postgres", Selector{PID: 99}, nil, Unknown, "pid 99 (containerd-shim) is not a running postmaster"},
		{"no such pid", Selector{PID: 4242}, nil, Unknown, "no process with pid 4242"},
		{"full id", Selector{Container: containerID}, []uint32{100}, Fail, ""},
		{"prefix", Selector{Container: "0123456789abcd"}, []uint32{100}, Fail, ""},
		{"kubernetes form", Selector{Container: "docker://" + otherID[:20]}, []uint32{200}, Fail, ""},
		{"ambiguous", Selector{Container: "0123456789ab"}, nil, Unknown, "matches several containers (0123456789ab99990123, 0123456789abcdef0123): give more of the id"},
		{"no match", Selector{Container: "ffff"}, nil, Unknown, `no running postmaster in a container whose id starts with "ffff"`},
		// An empty prefix would match every container (here: two, ambiguous;
		// with one container running, that one).
		{"scheme without an id", Selector{Container: "docker://"}, nil, Unknown, "no container id after docker://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.host().Run(tc.sel)
			var pids []uint32
			for _, pm := range r.Postmasters {
				pids = append(pids, pm.PID)
			}
			if r.Status != tc.level || len(pids) != len(tc.pids) || (len(pids) > 0 && pids[0] != tc.pids[0]) {
				t.Errorf("status %s, postmasters %v; want %s, %v", r.Status, pids, tc.level, tc.pids)
			}
			if tc.says != "" && (len(r.Findings) != 1 || !strings.Contains(r.Findings[0].Message, tc.says)) {
				t.Errorf("findings = %+v, want one saying %q", r.Findings, tc.says)
			}
		})
	}
}

func TestNoPostmaster(t *testing.T) {
	h := newFakeHost(t)
	h.proc.Add(procfstest.Proc{PID: 300, PPID: 1, Comm: "bash", Start: 50, Exe: "/bin/bash", Argv: []string{"bash"}})
	host := h.host()
	if r := host.Run(Selector{}); r.Status != OK || r.Findings[0].Message != "no running postmaster found" || r.OvercommitMemory != nil {
		t.Errorf("privileged, nothing running: %+v", r)
	}
	// Without the privilege to read other users' processes, seeing none
	// proves nothing.
	host.Privileged = false
	if r := host.Run(Selector{}); r.Status != Unknown || !strings.Contains(r.Findings[0].Message, "CAP_SYS_PTRACE") {
		t.Errorf("unprivileged, nothing visible: %+v", r)
	}
}

func TestUnreadableProcIsUnknown(t *testing.T) {
	r := Host{Proc: procfstest.New(t).FS(), CgroupRoot: t.TempDir(), Privileged: true}
	r.Proc.Root = filepath.Join(r.Proc.Root, "missing")
	rep := r.Run(Selector{})
	if rep.Status != Unknown || rep.Status.ExitCode() != 3 || !strings.Contains(rep.Findings[0].Message, "cannot read") {
		t.Errorf("report = %+v", rep)
	}
}

func TestStatusRanksFailThenUnknownThenWarn(t *testing.T) {
	for _, tc := range []struct {
		levels []Level
		want   Level
		exit   int
	}{
		{nil, OK, 0},
		{[]Level{OK, Note}, Note, 0},
		{[]Level{Note, Warn}, Warn, 1},
		{[]Level{Warn, Unknown}, Unknown, 3},
		{[]Level{Unknown, Fail, Warn}, Fail, 2},
	} {
		r := Report{}
		for _, l := range tc.levels {
			r.add(Finding{Level: l})
		}
		r.settle()
		if r.Status != tc.want || r.Status.ExitCode() != tc.exit {
			t.Errorf("%v: status %s exit %d, want %s %d", tc.levels, r.Status, r.Status.ExitCode(), tc.want, tc.exit)
		}
	}
	var l Level
	if err := l.UnmarshalText([]byte("bogus")); err == nil {
		t.Error("unknown level name accepted")
	}
}

func TestWriteText(t *testing.T) {
	h := newFakeHost(t)
	h.container(containerID, 100, 0, 0)
	r := h.host().Run(Selector{})
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"orphanwatch check: FAIL (1 failure, 1 warning, 2 notes): 1 postmaster\n",
		"\npostmaster pid 100: PID 1 of its namespace, PostgreSQL 15, ",
		"container docker 0123456789ab\n",
		"  FAIL    pid1              the postmaster (pid 100) is PID 1 of the PID namespace of container docker 0123456789ab: it adopts every orphan there",
		"                            fix: run an init as PID 1",
		"  WARN    orphan            orphan psql (pid 103, pid 9 in its namespace)",
		"  OK      memory_limit      memory limit 1 GiB on cgroup " + scope + " (v2); 150 MiB anonymous and shared memory in use (15%)\n",
		"\nhost\n  NOTE    overcommit_memory vm.overcommit_memory is 0",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "s3cret") {
		t.Errorf("password in the report:\n%s", out)
	}
	if strings.Count(out, "fix:") != 4 { // pid1, orphan, oom_score_adj note, overcommit note; none for OK
		t.Errorf("want 4 fixes:\n%s", out)
	}
}
