// Package origin says where an orphan that a postmaster adopted came from:
// a docker exec or kubectl exec left it behind, a Docker HEALTHCHECK or a
// Kubernetes exec probe whose shell was killed at its timeout, the
// container's entrypoint started it before it exec'd the postmaster, or a
// server process forked it and died first. Each has a fix of its own. It
// reads the orphan's ancestry at birth, what its dying parent ran, and the
// container's checks; it is pure.
package origin

import (
	"fmt"
	"slices"
	"strings"

	"github.com/orphanwatch/orphanwatch/internal/container"
	"github.com/orphanwatch/orphanwatch/internal/redact"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

// Kind names an origin, in the words of the JSON contract and the metric
// label.
type Kind string

const (
	DockerExec    Kind = "docker-exec"    // docker exec into the container
	CRIExec       Kind = "cri-exec"       // kubectl exec, or another CRI exec
	Healthcheck   Kind = "healthcheck"    // a Docker HEALTHCHECK
	Probe         Kind = "probe"          // a Kubernetes exec probe
	Entrypoint    Kind = "entrypoint"     // the process that later exec'd the postmaster
	ServerProcess Kind = "server-process" // a PostgreSQL server process
	Unknown       Kind = "unknown"
)

// Kinds lists every kind.
var Kinds = []Kind{DockerExec, CRIExec, Healthcheck, Probe, Entrypoint, ServerProcess, Unknown}

// Ancestor is one process above the orphan at its birth.
type Ancestor struct {
	PID  uint32
	Comm string
}

// Facts is what is known about an orphan's beginnings.
type Facts struct {
	// Ancestry at birth, parent first, from the kernel's birth record;
	// empty when none was kept.
	Ancestry []Ancestor
	// Start is when the orphan started, PostmasterExec when the postmaster
	// exec'd the server (boot ns; 0 when not seen).
	Start, PostmasterExec uint64
	// FatherArgv is what the parent whose death orphaned it ran (the
	// command a runtime exec'd, a check's shell, ...); FatherTruncated
	// says the kernel kept only its start.
	FatherArgv      []string
	FatherTruncated bool
	// Postmaster is the adopter's pid (host).
	Postmaster uint32
	// Runtime is the container runtime (container.Runtime*); Container its
	// name, or its short id.
	Runtime   string
	Container string
	Checks    container.Checks
}

// Origin is where an orphan came from, said in words, and what to do.
type Origin struct {
	Kind   Kind
	Detail string
	Fix    string
}

// runtimeComms are the runtime processes an exec'd command's parent or
// grandparent is: the shims and runc's init, outside the container.
var runtimeComms = []string{"containerd-shim", "runc", "runc:[2:INIT]", "crun", "conmon", "docker-containe"}

// Of says where an orphan came from.
func Of(f Facts) Origin {
	var parent Ancestor
	if len(f.Ancestry) > 0 {
		parent = f.Ancestry[0]
	}
	switch {
	case parent.PID != 0 && parent.PID != f.Postmaster && verdict.IsServerBinary("", parent.Comm):
		return Origin{ServerProcess, fmt.Sprintf("forked by server process %s[%d] (archive_command, restore_command, COPY ... PROGRAM or a PL function), which died before it", parent.Comm, parent.PID),
			"make the command exit with its server process (no background children in archive_command, restore_command or COPY ... PROGRAM), and run an init as PID 1 of the container"}
	case f.PostmasterExec != 0 && f.Start != 0 && f.Start < f.PostmasterExec:
		// Older than the postmaster's exec: the pid that became the
		// postmaster forked it, and the postmaster inherited it.
		return Origin{Entrypoint, fmt.Sprintf("started by the container's entrypoint (pid %d) before it exec'd the postmaster", f.Postmaster),
			"make the entrypoint wait for the helpers it starts before it execs postgres (or start them in their own container), or run an init as PID 1 (tini -- docker-entrypoint.sh)"}
	}
	where := "container " + f.Container
	if hc, probe := f.Checks.Matching(f.FatherArgv, f.FatherTruncated); hc != nil {
		return Origin{Healthcheck, fmt.Sprintf("HEALTHCHECK of %s: %s %s, timeout %s", where, hc.Test[0], quote(hc.Test[1:]), hc.Timeout),
			`give the HEALTHCHECK the exec form, which forks no shell (HEALTHCHECK CMD ["pg_isready", "-U", "postgres"]), with a timeout longer than the check can take; or run the container with an init (docker run --init)`}
	} else if probe != nil {
		return Origin{Probe, fmt.Sprintf("%s of container %s: %s, timeoutSeconds %d", probe.Kind, probe.Container, quote(probe.Command), probe.TimeoutSeconds),
			`make the exec probe run one program, without a shell (command: ["pg_isready", "-U", "postgres"]), and raise timeoutSeconds; or set shareProcessNamespace: true in the pod, so that the pause container adopts orphans`}
	}
	if !f.fromRuntime() {
		return Origin{Unknown, "", verdict.InitFix}
	}
	command := "a command"
	if len(f.FatherArgv) > 0 {
		command = quote(f.FatherArgv)
	}
	if f.Runtime == container.RuntimeDocker {
		return Origin{DockerExec, fmt.Sprintf("docker exec into %s: %s", where, command),
			"run jobs in a container of their own (docker run --rm --network container:<db> ...), not through docker exec into the database container, and run the database container with an init (docker run --init)"}
	}
	return Origin{CRIExec, fmt.Sprintf("an exec into %s (kubectl exec or another CRI exec): %s", where, command),
		"run jobs in a pod or sidecar of their own, not through kubectl exec into the database container, and set shareProcessNamespace: true in the pod so that the pause container adopts orphans"}
}

// fromRuntime reports whether the orphan's parent was started from outside
// the container by its runtime: the parent's parent is a shim or runc.
func (f Facts) fromRuntime() bool {
	for _, a := range f.Ancestry[min(1, len(f.Ancestry)):] {
		if slices.Contains(runtimeComms, a.Comm) {
			return true
		}
	}
	return false
}

// quote prints a command line, shell-quoted and redacted.
func quote(argv []string) string {
	return strings.TrimSpace(redact.Argv(argv))
}
