package probe

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Problem classifies why the probe could not start, so the command line can
// say what to do and exit with a status of its own.
type Problem int

const (
	ProblemOther      Problem = iota
	ProblemPermission         // not root / missing capabilities
	ProblemNoBTF              // no kernel BTF to relocate against
	ProblemKernel             // kernel too old, feature missing, program rejected
)

// Error is a failure to load or attach, with one sentence for the operator.
type Error struct {
	Problem Problem
	Advice  string // what is wrong and what to do
	Err     error  // the underlying error
}

func (e *Error) Error() string { return e.Advice + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

const capabilityAdvice = "loading BPF programs needs root, or the capabilities CAP_BPF, CAP_PERFMON and " +
	"CAP_SYS_RESOURCE (CAP_SYS_ADMIN before Linux 5.8): run it with sudo, or see docs/kubernetes.md for a container"

// classify turns a load or attach error into advice. what names the step.
func classify(what string, err error) error {
	var verr *ebpf.VerifierError
	switch {
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, os.ErrPermission):
		return &Error{ProblemPermission, capabilityAdvice, fmt.Errorf("%s: %w", what, err)}
	case errors.As(err, &verr):
		return &Error{ProblemKernel, fmt.Sprintf("the kernel's verifier rejected %s; this kernel (%s) is not supported yet, "+
			"please report it with the log below", what, kernelRelease()), fmt.Errorf("%s: %w", what, lastLines(verr, 8))}
	case errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) ||
		errors.Is(err, unix.ENOENT) || errors.Is(err, unix.E2BIG):
		return &Error{ProblemKernel, fmt.Sprintf("this kernel (%s) lacks a BPF feature orphanwatch needs for %s: "+
			"it needs Linux 5.13 or newer with BTF (BPF ring buffers, BTF tracepoints, bpf_for_each_map_elem)", kernelRelease(), what),
			fmt.Errorf("%s: %w", what, err)}
	}
	return &Error{ProblemOther, what + " failed", err}
}

// lastLines keeps the end of a verifier log, where the reason is.
func lastLines(verr *ebpf.VerifierError, n int) error {
	log := verr.Log
	if len(log) > n {
		log = log[len(log)-n:]
	}
	return fmt.Errorf("%v\n  %s", verr.Cause, strings.Join(log, "\n  "))
}

// kernelBefore reports whether the running kernel is older than
// major.minor; false when its release does not say.
func kernelBefore(major, minor int) bool { return releaseBefore(kernelRelease(), major, minor) }

func releaseBefore(release string, major, minor int) bool {
	var got [2]int
	if n, _ := fmt.Sscanf(release, "%d.%d", &got[0], &got[1]); n != 2 {
		return false
	}
	return got[0] < major || (got[0] == major && got[1] < minor)
}

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}
