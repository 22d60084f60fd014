package audit

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/container"
	"github.com/orphanwatch/orphanwatch/internal/redact"
)

// The sources of orphans a postmaster that is PID 1 can be shown: the
// checks its container's runtime runs in it on a schedule (Docker's
// HEALTHCHECK, Kubernetes' exec probes). One whose command forks leaves its
// child to the postmaster when the runtime kills it at its timeout; the
// child's abnormal death then crash-restarts PostgreSQL (super-productivity
// #9695: pg_isready under a CMD-SHELL healthcheck, 50 crash-restarts).

// orphanSources lists the checks of the postmaster's container, each with
// whether it forks and the fix. Only for a postmaster that is PID 1: behind
// an init the orphans are the init's.
func (h Host) orphanSources(pm *Postmaster) []Finding {
	ref := pm.Container()
	if ref.IsZero() {
		return nil
	}
	var findings []Finding
	checks := container.ChecksOf(h.Names, ref)
	fs := containerFS{h: h, pid: int(pm.PID)}
	where := where(pm)
	if hc := checks.Healthcheck; hc != nil {
		findings = append(findings, healthcheckFinding(where, hc, forks(hc.Argv(), fs)))
	} else if h.Names != nil && ref.Runtime == container.RuntimeDocker && pm.ContainerName == "" {
		findings = append(findings, Finding{Check: CheckHealthcheck, Level: Note,
			Message: fmt.Sprintf("found no config.v2.json of %s under the Docker data root (--docker-root): its HEALTHCHECK, a source of orphans, was not checked", where)})
	}
	for i := range checks.Probes {
		p := &checks.Probes[i]
		findings = append(findings, probeFinding(p, forks(p.Command, fs)))
	}
	if h.Names != nil && ref.PodUID != "" && pm.Pod == "" && len(checks.Probes) == 0 {
		findings = append(findings, Finding{Check: CheckProbe, Level: Note,
			Message: fmt.Sprintf("%s is in Kubernetes pod %s, which orphanwatch could not look up: its exec probes, a source of orphans, were not checked "+
				"(run check with --kubernetes and --node-name, with RBAC to get pods)", where, ref.PodUID)})
	}
	return findings
}

// describeHealthcheck is how origin_detail names it: CMD-SHELL 'cmd', timeout 30s.
func describeHealthcheck(hc *container.Healthcheck) string {
	return fmt.Sprintf("%s %s, timeout %s", hc.Test[0], strings.TrimSpace(redact.Argv(hc.Test[1:])), hc.Timeout)
}

// HealthcheckFix is the advice for a HEALTHCHECK that forks: the exec form
// in a Dockerfile (%[1]s) and in Compose (%[2]s), and the shell form
// started with exec (%[3]s).
const HealthcheckFix = "give the HEALTHCHECK the exec form, which runs no shell: HEALTHCHECK CMD %[1]s in the Dockerfile, " +
	"test: %[2]s in Compose; docker run --health-cmd takes the shell form only: make it one command started with exec " +
	"(--health-cmd '%[3]s'), which replaces the shell; with a timeout longer than the check can take. " +
	"Or run the container with an init (docker run --init), which adopts and reaps what a check leaves"

func healthcheckFinding(where string, hc *container.Healthcheck, reasons []string) Finding {
	what := fmt.Sprintf("HEALTHCHECK of %s: %s", where, describeHealthcheck(hc))
	if len(reasons) == 0 {
		return Finding{Check: CheckHealthcheck, Level: OK,
			Message: what + ": it runs one program, in place of any shell: a timeout leaves no orphan"}
	}
	argv := cmpArgv(execForm(hc.Argv()), []string{"pg_isready", "-U", "postgres"})
	return Finding{Check: CheckHealthcheck, Level: Warn,
		Message: fmt.Sprintf("%s: it forks (%s): when Docker kills it at its timeout, its child is orphaned to the postmaster, "+
			"PID 1 here, and if that child then exits with code 2 or more or dies of a signal, PostgreSQL crash-restarts",
			what, strings.Join(reasons, "; ")),
		Fix: fmt.Sprintf(HealthcheckFix, jsonArgv(argv), jsonArgv(append([]string{"CMD"}, argv...)), "exec "+strings.TrimSpace(redact.Argv(argv)))}
}

// ProbeFix is the advice for a Kubernetes exec probe that forks; %s is the
// proposed command.
const ProbeFix = "make the exec probe run one program, without a shell (command: %s), and raise timeoutSeconds above what it can take; " +
	"or set shareProcessNamespace: true in the pod, so that the pause container adopts and reaps what a probe leaves"

func probeFinding(p *container.Probe, reasons []string) Finding {
	what := fmt.Sprintf("%s of container %s: %s, timeoutSeconds %d", p.Kind, p.Container, strings.TrimSpace(redact.Argv(p.Command)), p.TimeoutSeconds)
	if len(reasons) == 0 {
		return Finding{Check: CheckProbe, Level: OK, Message: what + ": it runs one program: a timeout leaves no orphan"}
	}
	return Finding{Check: CheckProbe, Level: Warn,
		Message: fmt.Sprintf("%s: it forks (%s): when the kubelet's exec times out, its child is orphaned to the postmaster, "+
			"PID 1 of the container, and if that child then exits with code 2 or more or dies of a signal, PostgreSQL crash-restarts",
			what, strings.Join(reasons, "; ")),
		Fix: fmt.Sprintf(ProbeFix, jsonArgv(cmpArgv(execForm(p.Command), []string{"pg_isready", "-U", "postgres"})))}
}

func cmpArgv(a, b []string) []string {
	if len(a) > 0 {
		return a
	}
	return b
}

// jsonArgv is ["pg_isready", "-U", "postgres"], as a Dockerfile or a pod
// spec writes an exec form.
func jsonArgv(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = strconv.Quote(a)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// defaultPath is what a container without PATH in its environment gets
// (Docker's default).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// scriptHead is how much of a file is read for its #! line.
const scriptHead = 256

// containerFS reads the container of a process through /proc/<pid>/root
// (checkFS). Symbolic links resolve inside the container's root (openat2
// RESOLVE_IN_ROOT, Linux 5.6+); what cannot be read is unknown.
type containerFS struct {
	h   Host
	pid int
}

func (c containerFS) root() string { return filepath.Join(c.h.Proc.Root, strconv.Itoa(c.pid), "root") }

// lookPath finds a program as the check's exec would: an absolute path,
// or along PATH from the process's environment.
func (c containerFS) lookPath(program string) []string {
	switch {
	case strings.HasPrefix(program, "/"):
		return []string{program}
	case strings.Contains(program, "/"):
		return nil // relative to the check's working directory
	}
	dirs := cmp.Or(c.h.env(c.pid, "PATH")["PATH"], defaultPath)
	var out []string
	for _, d := range strings.Split(dirs, ":") {
		if strings.HasPrefix(d, "/") {
			out = append(out, path.Join(d, program))
		}
	}
	return out
}

// Script implements checkFS: the program's #! line, when it names a shell.
func (c containerFS) Script(program string) (string, bool) {
	for _, p := range c.lookPath(program) {
		head, _, err := readInRoot(c.root(), p, scriptHead)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			continue
		}
		if err != nil {
			return "", false
		}
		return shellInterpreter(head)
	}
	return "", false
}

// Shell implements checkFS: what the shell's path is in the container, by
// the name of the file it resolves to (/bin/sh -> /usr/bin/dash: dash).
func (c containerFS) Shell(program string) string {
	for _, p := range c.lookPath(program) {
		_, target, err := readInRoot(c.root(), p, 0)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			continue
		}
		if err != nil {
			return ""
		}
		return path.Base(target)
	}
	return ""
}

// shellInterpreter reads a #! line naming a shell: #!/bin/sh,
// #!/usr/bin/env bash.
func shellInterpreter(head []byte) (string, bool) {
	line, ok := strings.CutPrefix(string(head), "#!")
	if !ok {
		return "", false
	}
	line, _, _ = strings.Cut(line, "\n")
	f := strings.Fields(line)
	if len(f) == 0 {
		return "", false
	}
	interp := path.Base(f[0])
	if interp == "env" && len(f) > 1 {
		interp = f[1]
	}
	if !slices.Contains(shells, interp) {
		return "", false
	}
	return strings.TrimSpace(line), true
}

// readInRoot reads the start of a file (n bytes) as a process whose root
// is root sees it, and tells the file it resolved to (its path as this
// process sees it).
func readInRoot(root, name string, n int) (head []byte, resolved string, err error) {
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", err
	}
	defer unix.Close(dir)
	fd, err := unix.Openat2(dir, strings.TrimPrefix(name, "/"), &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, "", err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, "", fmt.Errorf("%s: not a regular file", name)
	}
	resolved, err = os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return nil, "", err
	}
	buf := make([]byte, n)
	got, err := unix.Read(fd, buf)
	if err != nil {
		return nil, "", err
	}
	return buf[:got], resolved, nil
}
