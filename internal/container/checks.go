package container

import (
	"path"
	"strings"
	"time"
)

// Checks are the commands a container's runtime runs in it on a schedule:
// Docker's HEALTHCHECK, Kubernetes' exec probes. A shell among them that is
// killed at its timeout leaves its children behind, and PID 1 adopts them.
type Checks struct {
	Healthcheck *Healthcheck // Docker; nil when the container has none
	Probes      []Probe      // Kubernetes exec probes of the container
}

// Healthcheck is a Docker HEALTHCHECK (config.v2.json's Config.Healthcheck).
type Healthcheck struct {
	// Test is ["CMD-SHELL", command] (run as /bin/sh -c command) or
	// ["CMD", argv...] (run as it is).
	Test    []string
	Timeout time.Duration // Docker's default is 30 s
}

// Argv is what the healthcheck runs, as its process's argv shows it.
func (h *Healthcheck) Argv() []string {
	if len(h.Test) < 2 {
		return nil
	}
	switch h.Test[0] {
	case "CMD-SHELL":
		return []string{"/bin/sh", "-c", h.Test[1]}
	case "CMD":
		return h.Test[1:]
	}
	return nil
}

// Probe is a Kubernetes exec probe.
type Probe struct {
	Kind           string // livenessProbe, readinessProbe or startupProbe
	Container      string
	Command        []string
	TimeoutSeconds int32 // Kubernetes' default is 1
}

// CheckSource tells a container's checks.
type CheckSource interface {
	Checks(Ref) Checks
}

// ChecksOf asks every namer that knows checks (Docker's files, the
// Kubernetes API) and merges what they say.
func ChecksOf(n Namer, ref Ref) Checks {
	var out Checks
	var sources []Namer
	if c, ok := n.(chain); ok {
		sources = c
	} else {
		sources = []Namer{n}
	}
	for _, s := range sources {
		cs, ok := s.(CheckSource)
		if !ok {
			continue
		}
		got := cs.Checks(ref)
		if out.Healthcheck == nil {
			out.Healthcheck = got.Healthcheck
		}
		out.Probes = append(out.Probes, got.Probes...)
	}
	return out
}

// Matching returns the check whose command is argv: the healthcheck, or a
// probe; nil when none is. truncated says argv was cut short (the kernel
// keeps only the start of a command line).
func (c Checks) Matching(argv []string, truncated bool) (hc *Healthcheck, probe *Probe) {
	if c.Healthcheck != nil && sameArgv(c.Healthcheck.Argv(), argv, truncated) {
		return c.Healthcheck, nil
	}
	for i := range c.Probes {
		if sameArgv(c.Probes[i].Command, argv, truncated) {
			return nil, &c.Probes[i]
		}
	}
	return nil, nil
}

// sameArgv compares a configured command with a recorded argv: the program
// may be named by its path (sh, /bin/sh), and a truncated argv may stop
// short, its last argument cut.
func sameArgv(want, got []string, truncated bool) bool {
	if len(got) == 0 || len(got) > len(want) || path.Base(want[0]) != path.Base(got[0]) {
		return false
	}
	for i := 1; i < len(got); i++ {
		if got[i] != want[i] {
			return truncated && i == len(got)-1 && strings.HasPrefix(want[i], got[i])
		}
	}
	return len(got) == len(want) || truncated
}
