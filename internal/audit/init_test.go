package audit

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/orphanwatch/orphanwatch/internal/container"
	"github.com/orphanwatch/orphanwatch/internal/procfs/procfstest"
)

// fakeNamer names containers and tells their checks.
type fakeNamer struct {
	names  map[string]container.Names
	checks map[string]container.Checks
}

func (n fakeNamer) Names(ref container.Ref) container.Names   { return n.names[ref.ID] }
func (n fakeNamer) Checks(ref container.Ref) container.Checks { return n.checks[ref.ID] }

// behind adds a container whose PID 1 is init (argv), with the postmaster
// its child, pid 7 in the namespace; the init runs in initCgroup (the
// container's own, or another container's for a shared namespace).
func (h *fakeHost) behind(initCgroup string, pmParent int, argv ...string) {
	cg := "/system.slice/docker-" + containerID + ".scope"
	h.proc.Add(procfstest.Proc{PID: 90, PPID: 1, Comm: "containerd-shim", Start: 5, Exe: "/usr/bin/containerd-shim-runc-v2", Argv: []string{"containerd-shim"}})
	comm := filepath.Base(argv[0])
	h.proc.Add(procfstest.Proc{PID: 99, PPID: 90, Comm: comm, Start: 10, Exe: argv[0], Argv: argv, NSpid: []int{99, 1}, Cgroup: initCgroup})
	h.proc.Add(procfstest.Proc{PID: 100, PPID: pmParent, Comm: "postgres", Start: 20, Exe: pgBin, Argv: []string{"postgres"}, NSpid: []int{100, 7}, Cgroup: cg, DataDir: "/var/lib/postgresql/data", Major: 15})
	h.proc.Add(procfstest.Proc{PID: 101, PPID: 100, Comm: "postgres", Start: 21, Exe: pgBin, Argv: []string{"postgres: checkpointer "}, NSpid: []int{101, 8}, Cgroup: cg})
	h.file(h.cgroup, cg+"/memory.max", "max\n")
}

// zombie adds an exited, unreaped child of parent.
func (h *fakeHost) zombie(pid, parent int, comm string) {
	h.proc.Add(procfstest.Proc{PID: pid, PPID: parent, Comm: comm, Start: 40, Exe: "/bin/" + comm, NSpid: []int{pid, pid - 100}})
	data, err := os.ReadFile(filepath.Join(h.proc.Root, strconv.Itoa(pid), "stat"))
	if err != nil {
		h.t.Fatal(err)
	}
	h.file(h.proc.Root, strconv.Itoa(pid)+"/stat", strings.Replace(string(data), ") S ", ") Z ", 1))
}

func TestInitNamedInTheOKCase(t *testing.T) {
	own := "/system.slice/docker-" + containerID + ".scope"
	for _, tc := range []struct {
		name string
		argv []string
		says string
		kind string
	}{
		{"docker run --init", []string{"/sbin/docker-init", "--", "docker-entrypoint.sh", "postgres"}, "PID 1 there is docker-init (Docker's init, docker run --init: tini) (pid 99): orphans go to it, not to PostgreSQL, it reaps every one", "docker-init"},
		{"tini", []string{"/usr/bin/tini", "--", "docker-entrypoint.sh", "postgres"}, "PID 1 there is tini (pid 99): orphans go to it, not to PostgreSQL, it reaps every one", "tini"},
		{"dumb-init", []string{"/usr/bin/dumb-init", "--", "postgres"}, "PID 1 there is dumb-init (pid 99)", "dumb-init"},
		{"patroni", []string{"/usr/bin/python3", "/usr/local/bin/patroni", "/etc/patroni.yml"}, "PID 1 there is Patroni (as PID 1 it runs itself as a child and acts as init) (pid 99): orphans go to it, not to PostgreSQL, it reaps every one", "patroni"},
		{"cloudnative-pg", []string{"/controller/manager", "instance", "run", "--status-port-tls"}, "PID 1 there is CloudNativePG's instance manager (/controller/manager instance run) (pid 99): orphans go to it, not to PostgreSQL, but it reaps only processes named postgres", "cloudnative-pg"},
		{"a shell", []string{"/bin/bash", "-c", "setup; postgres"}, "PID 1 there is a shell (pid 99): orphans go to it, not to PostgreSQL, and a shell reaps orphans only while it waits", "shell"},
		{"other", []string{"/usr/local/bin/supervise", "postgres"}, `PID 1 there is supervise (pid 99, running "/usr/local/bin/supervise postgres"): orphans go to it, not to PostgreSQL, orphanwatch does not know whether it reaps them`, "other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(t)
			h.behind(own, 99, tc.argv...)
			r := h.host().Run(Selector{})
			pm := r.Postmasters[0]
			if pm.PID1 || pm.Init == nil || pm.Init.PID != 99 || pm.Init.Kind != tc.kind || pm.Init.SharedNamespace {
				t.Fatalf("postmaster %+v, init %+v; want init 99 of kind %s in the same container", pm, pm.Init, tc.kind)
			}
			if f := findingOf(t, r, 100, CheckPID1); f.Level != OK || !strings.Contains(f.Message, tc.says) {
				t.Errorf("pid1 = %+v\nwant it to say %q", f, tc.says)
			}
			for _, f := range r.Findings {
				if f.Check == CheckHealthcheck || f.Check == CheckZombies {
					t.Errorf("unexpected %+v", f)
				}
			}
		})
	}
}

// Kubernetes' shareProcessNamespace and docker run --pid container:NAME:
// PID 1 is another container's, found though the postmaster's parent is
// outside the namespace.
func TestInitOfASharedNamespace(t *testing.T) {
	pauseID := strings.Repeat("ab", 32)
	h := newFakeHost(t)
	// runc joined the namespace with setns: the postmaster's parent is the
	// shim, outside it.
	h.behind("/system.slice/docker-"+pauseID+".scope", 90, "/usr/bin/catatonit", "-P")
	host := h.host()
	host.Names = fakeNamer{names: map[string]container.Names{pauseID: {Container: "pause"}, containerID: {Container: "db"}}}
	r := host.Run(Selector{Container: "db"})
	pm := r.Postmasters[0]
	if pm.Init == nil || !pm.Init.SharedNamespace || pm.Init.ContainerID != pauseID || pm.Init.ContainerName != "pause" || pm.Init.Kind != "catatonit" {
		t.Fatalf("init = %+v", pm.Init)
	}
	want := "PID 1 there is catatonit (Podman's init and pause process) (pid 99) of container pause (abababababab): " +
		"the postmaster's container shares its PID namespace (docker run --pid container:pause): orphans go to it, not to PostgreSQL, it reaps every one"
	if f := findingOf(t, r, 100, CheckPID1); f.Level != OK || !strings.Contains(f.Message, want) {
		t.Errorf("pid1 = %q\nwant %q", f.Message, want)
	}
}

// CloudNativePG's instance manager leaves other orphans as zombies: each
// one still there after the settle time is reported.
func TestZombiesUnderPID1(t *testing.T) {
	h := newFakeHost(t)
	h.behind("/system.slice/docker-"+containerID+".scope", 99, "/controller/manager", "instance", "run")
	h.zombie(150, 99, "psql")
	h.zombie(151, 99, "sh")
	h.zombie(152, 100, "postgres") // the postmaster's: not PID 1's
	r := h.host().Run(Selector{})
	pm := r.Postmasters[0]
	if len(pm.Init.Zombies) != 2 || pm.Init.Zombies[0].PID != 150 || pm.Init.Zombies[0].NSPid != 50 {
		t.Errorf("zombies = %+v", pm.Init.Zombies)
	}
	f := findingOf(t, r, 100, CheckZombies)
	if f.Level != Warn || r.Status != Warn || !strings.Contains(f.Message, "2 processes exited under PID 1 manager (pid 99) and were never reaped: psql[150], sh[151]") ||
		!strings.Contains(f.Fix, "tini") {
		t.Errorf("zombies = %+v (status %s: %+v)", f, r.Status, r.Findings)
	}
}
