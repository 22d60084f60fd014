package audit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/container"
)

// rootfs gives the fake postmaster 100 a root filesystem: /bin/sh is a
// symbolic link to dash, absolute as in Debian, and files are added.
func (h *fakeHost) rootfs(files map[string]string) {
	root := filepath.Join(h.proc.Root, "100", "root")
	for _, d := range []string{"usr/bin", "bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			h.t.Fatal(err)
		}
	}
	h.file(root, "usr/bin/dash", "\x7fELF")
	if err := os.Symlink("/usr/bin/dash", filepath.Join(root, "bin/sh")); err != nil {
		h.t.Fatal(err)
	}
	for name, data := range files {
		h.file(root, name, data)
	}
}

func TestHealthcheckThatForksIsListedWithItsFix(t *testing.T) {
	h := newFakeHost(t)
	h.container(containerID, 100, 0, 0)
	h.rootfs(nil)
	host := h.host()
	host.Names = fakeNamer{
		names: map[string]container.Names{containerID: {Container: "db"}},
		checks: map[string]container.Checks{containerID: {Healthcheck: &container.Healthcheck{
			Test: []string{"CMD-SHELL", "pg_isready -q -U postgres || exit 1"}, Timeout: 5 * time.Second}}},
	}
	r := host.Run(Selector{Container: "db"})
	f := findingOf(t, r, 100, CheckHealthcheck)
	if f.Level != Warn || r.Status != Fail ||
		!strings.Contains(f.Message, "HEALTHCHECK of container db (docker 0123456789ab): CMD-SHELL 'pg_isready -q -U postgres || exit 1', timeout 5s: it forks (|| makes the shell run the command before it as its child)") {
		t.Errorf("healthcheck = %+v", f)
	}
	for _, want := range []string{`HEALTHCHECK CMD ["pg_isready", "-q", "-U", "postgres"]`, `test: ["CMD", "pg_isready", "-q", "-U", "postgres"]`,
		`--health-cmd 'exec pg_isready -q -U postgres'`, "docker run --init"} {
		if !strings.Contains(f.Fix, want) {
			t.Errorf("fix lacks %q: %s", want, f.Fix)
		}
	}
}

// Even a single command forks under Debian's dash, found as /bin/sh in the
// container's root through its absolute symbolic link; the exec form, and
// exec in the shell form, do not.
func TestHealthcheckShellOfTheContainer(t *testing.T) {
	for _, tc := range []struct {
		test  []string
		level Level
		says  string
	}{
		{[]string{"CMD-SHELL", "pg_isready -U postgres"}, Warn, "the container's shell is dash, which runs even a single command as its child"},
		{[]string{"CMD-SHELL", "exec pg_isready -U postgres"}, OK, "it runs one program, in place of any shell: a timeout leaves no orphan"},
		{[]string{"CMD", "pg_isready", "-U", "postgres"}, OK, `CMD pg_isready -U postgres, timeout 30s: it runs one program`},
		{[]string{"CMD", "docker-healthcheck"}, Warn, "runs the script docker-healthcheck (#!/bin/sh -eu), whose shell runs its commands as children"},
	} {
		h := newFakeHost(t)
		h.container(containerID, 100, 0, 0)
		h.rootfs(map[string]string{"usr/local/bin/docker-healthcheck": "#!/bin/sh -eu\npg_isready\n"})
		host := h.host()
		host.Names = fakeNamer{checks: map[string]container.Checks{containerID: {Healthcheck: &container.Healthcheck{Test: tc.test, Timeout: 30 * time.Second}}}}
		if f := findingOf(t, host.Run(Selector{}), 100, CheckHealthcheck); f.Level != tc.level || !strings.Contains(f.Message, tc.says) {
			t.Errorf("%q: %+v\nwant %s saying %q", tc.test, f, tc.level, tc.says)
		}
	}
}

func TestExecProbesThatFork(t *testing.T) {
	h := newFakeHost(t)
	h.container(containerID, 100, 0, 0)
	host := h.host()
	host.Names = fakeNamer{
		names: map[string]container.Names{containerID: {Namespace: "app", Pod: "db-0", Container: "postgres"}},
		checks: map[string]container.Checks{containerID: {Probes: []container.Probe{
			{Kind: "livenessProbe", Container: "postgres", Command: []string{"bash", "-c", "pg_isready -U postgres && psql -Atc 'select 1'"}, TimeoutSeconds: 1},
			{Kind: "readinessProbe", Container: "postgres", Command: []string{"pg_isready", "-U", "postgres"}, TimeoutSeconds: 1},
		}}},
	}
	r := host.Run(Selector{Container: "app/db-0/postgres"})
	var probes []Finding
	for _, f := range r.Findings {
		if f.Check == CheckProbe {
			probes = append(probes, f)
		}
	}
	if len(probes) != 2 {
		t.Fatalf("probe findings = %+v", probes)
	}
	if f := probes[0]; f.Level != Warn || !strings.Contains(f.Message, `livenessProbe of container postgres: bash -c 'pg_isready -U postgres && psql -Atc '\''select 1'\''', timeoutSeconds 1: it forks (&& makes`) ||
		!strings.Contains(f.Fix, `command: ["pg_isready", "-U", "postgres"]`) || !strings.Contains(f.Fix, "shareProcessNamespace: true") {
		t.Errorf("liveness = %+v", f)
	}
	if f := probes[1]; f.Level != OK {
		t.Errorf("readiness = %+v", f)
	}
	if pm := r.Postmasters[0]; pm.ContainerName != "postgres" || pm.Pod != "db-0" || pm.Namespace != "app" {
		t.Errorf("names = %q %q %q", pm.Namespace, pm.Pod, pm.ContainerName)
	}
	if f := findingOf(t, r, 100, CheckPID1); !strings.Contains(f.Message, "container postgres of pod app/db-0 (docker 0123456789ab)") {
		t.Errorf("pid1 = %q", f.Message)
	}
}

// With names configured but the container unknown to them, check says what
// it could not see; behind an init it lists no checks at all.
func TestChecksNotSeen(t *testing.T) {
	h := newFakeHost(t)
	h.container(containerID, 100, 0, 0)
	host := h.host()
	host.Names = fakeNamer{}
	if f := findingOf(t, host.Run(Selector{}), 100, CheckHealthcheck); f.Level != Note || !strings.Contains(f.Message, "found no config.v2.json") {
		t.Errorf("unknown container = %+v", f)
	}

	h = newFakeHost(t)
	h.behind("/system.slice/docker-"+containerID+".scope", 99, "/usr/bin/tini", "--", "postgres")
	host = h.host()
	host.Names = fakeNamer{checks: map[string]container.Checks{containerID: {Healthcheck: &container.Healthcheck{
		Test: []string{"CMD-SHELL", "pg_isready || exit 1"}, Timeout: time.Second}}}}
	for _, f := range host.Run(Selector{}).Findings {
		if f.Check == CheckHealthcheck {
			t.Errorf("behind tini the healthcheck's orphans are tini's: %+v", f)
		}
	}
}
