package origin

import (
	"strings"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/container"
)

func TestOf(t *testing.T) {
	shim := []Ancestor{{PID: 300, Comm: "sh"}, {PID: 200, Comm: "containerd-shim"}}
	healthcheck := container.Checks{Healthcheck: &container.Healthcheck{Test: []string{"CMD-SHELL", "pg_isready -U postgres || exit 1"}, Timeout: time.Second}}
	probes := container.Checks{Probes: []container.Probe{{Kind: "livenessProbe", Container: "postgres", Command: []string{"sh", "-c", "pg_isready -U postgres"}, TimeoutSeconds: 1}}}
	tests := []struct {
		name   string
		f      Facts
		kind   Kind
		detail string
	}{
		{"docker exec", Facts{Ancestry: shim, FatherArgv: []string{"sh", "-c", "psql -c 'select 1' | head & exit"}, Runtime: "docker", Container: "db", Postmaster: 100},
			DockerExec, `docker exec into container db: sh -c 'psql -c '\''select 1'\'' | head & exit'`},
		{"kubectl exec", Facts{Ancestry: shim, FatherArgv: []string{"sh", "-c", "backup.sh"}, Runtime: "containerd", Container: "postgres"},
			CRIExec, "an exec into container postgres (kubectl exec or another CRI exec): sh -c backup.sh"},
		{"a Docker HEALTHCHECK whose shell was killed", Facts{Ancestry: shim, FatherArgv: []string{"/bin/sh", "-c", "pg_isready -U postgres || exit 1"}, Runtime: "docker", Container: "db", Checks: healthcheck},
			Healthcheck, "HEALTHCHECK of container db: CMD-SHELL 'pg_isready -U postgres || exit 1', timeout 1s"},
		{"a Kubernetes exec probe", Facts{Ancestry: shim, FatherArgv: []string{"sh", "-c", "pg_isready -U postgres"}, Runtime: "containerd", Container: "postgres", Checks: probes},
			Probe, `livenessProbe of container postgres: sh -c 'pg_isready -U postgres', timeoutSeconds 1`},
		{"the entrypoint's helper", Facts{Start: 5, PostmasterExec: 10, Postmaster: 100},
			Entrypoint, "started by the container's entrypoint (pid 100) before it exec'd the postmaster"},
		{"archive_command's child", Facts{Ancestry: []Ancestor{{PID: 120, Comm: "postgres"}, {PID: 100, Comm: "postgres"}}, Postmaster: 100, Start: 50, PostmasterExec: 10},
			ServerProcess, "forked by server process postgres[120] (archive_command, restore_command, COPY ... PROGRAM or a PL function), which died before it"},
		{"nsenter: not a runtime", Facts{Ancestry: []Ancestor{{PID: 300, Comm: "sh"}, {PID: 299, Comm: "nsenter"}}}, Unknown, ""},
		{"no birth record", Facts{Postmaster: 100}, Unknown, ""},
	}
	for _, tt := range tests {
		o := Of(tt.f)
		if o.Kind != tt.kind || o.Detail != tt.detail || o.Fix == "" {
			t.Errorf("%s: %+v\nwant kind %s detail %q", tt.name, o, tt.kind, tt.detail)
		}
	}
}

// A secret on the command line never reaches the detail.
func TestOfRedacts(t *testing.T) {
	o := Of(Facts{Ancestry: []Ancestor{{PID: 3, Comm: "sh"}, {PID: 2, Comm: "containerd-shim"}}, Runtime: "docker", Container: "db",
		FatherArgv: []string{"sh", "-c", "psql postgresql://app:s3cret@db/app -c 'select 1' & exit"}})
	if strings.Contains(o.Detail, "s3cret") {
		t.Errorf("detail leaks the password: %q", o.Detail)
	}
}

// Each origin has its own fix.
func TestFixFollowsTheOrigin(t *testing.T) {
	seen := map[string]Kind{}
	for _, f := range []Facts{
		{Ancestry: []Ancestor{{1, "sh"}, {2, "containerd-shim"}}, Runtime: "docker"},
		{Ancestry: []Ancestor{{1, "sh"}, {2, "containerd-shim"}}, Runtime: "containerd"},
		{Start: 1, PostmasterExec: 2},
		{Ancestry: []Ancestor{{7, "postgres"}}, Postmaster: 9},
	} {
		o := Of(f)
		if k, ok := seen[o.Fix]; ok {
			t.Errorf("%s and %s share a fix", k, o.Kind)
		}
		seen[o.Fix] = o.Kind
	}
}
