// Command orphanwatch finds the orphaned processes that make a containerised
// PostgreSQL crash-restart. Subcommands:
//
//	trace   watch the kernel and report as it happens (a terminal session)
//	serve   the long-running agent: Prometheus metrics and JSON lines
//	check   audit running postmasters for the hazard, from /proc
//	version print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/orphanwatch/orphanwatch/internal/container"
	"github.com/orphanwatch/orphanwatch/internal/kubeevents"
	"github.com/orphanwatch/orphanwatch/internal/probe"
	"github.com/orphanwatch/orphanwatch/internal/version"
)

// Exit statuses. check has its own: 0 ok, 1 warnings, 2 failures, 3 unknown.
const (
	exitOK         = 0
	exitError      = 1 // anything not below
	exitUsage      = 2 // unknown flag, or a bad argument or value
	exitPermission = 3 // not root, or missing capabilities
	exitNoBTF      = 4 // the kernel has no BTF
	exitKernel     = 5 // kernel too old, feature missing, program rejected
	exitListen     = 6 // the listen address is taken or invalid
)

const usage = `orphanwatch finds the orphaned processes that make a containerised PostgreSQL crash-restart.

Usage:
  orphanwatch trace [flags]   watch the kernel now and report orphan deaths (Ctrl-C to stop)
  orphanwatch serve [flags]   run the agent: Prometheus metrics, alerts, JSON lines on stdout
  orphanwatch check [flags]   audit running postmasters for the hazard (no BPF needed)
  orphanwatch version

Run 'orphanwatch <command> -h' for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "trace":
		return traceCommand(args[1:], stdout, stderr)
	case "serve":
		return serveCommand(args[1:], stdout, stderr)
	case "check":
		return checkCommand(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "orphanwatch %s %s\n", version.String(), version.Revision())
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "orphanwatch: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// parseFlags parses a subcommand's flags; a non-negative status means stop
// and exit with it (help asked, or a usage error already explained).
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) int {
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage // the flag package has printed the error and usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "orphanwatch %s: unexpected argument %q (flags only; see -h)\n", fs.Name(), fs.Arg(0))
		return exitUsage
	}
	return -1
}

// failure prints an error in one sentence and picks its exit status.
func failure(stderr io.Writer, command string, err error) int {
	fmt.Fprintf(stderr, "orphanwatch %s: %v\n", command, err)
	var perr *probe.Error
	if errors.As(err, &perr) {
		switch perr.Problem {
		case probe.ProblemPermission:
			return exitPermission
		case probe.ProblemNoBTF:
			return exitNoBTF
		case probe.ProblemKernel:
			return exitKernel
		}
	}
	var lerr *listenError
	if errors.As(err, &lerr) {
		return exitListen
	}
	if errors.Is(err, probe.ErrBadOption) {
		return exitUsage
	}
	return exitError
}

// probeFlags are the kernel-side settings shared by trace and serve.
type probeFlags struct {
	cfg probe.Config
}

// refuseEnv names a BPF program to refuse, as a kernel without it would:
// only the end-to-end test of a missing kernel feature uses it, so it is an
// environment variable rather than a flag shown in every -h.
const refuseEnv = "ORPHANWATCH_REFUSE_PROGRAM"

func (p *probeFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&p.cfg.StreamAll, "all", false, "report every process exit, not only what can matter to PostgreSQL")
	fs.Func("max-processes", fmt.Sprintf("birth records kept in the kernel for live processes; beyond, the oldest are evicted and counted (default %d)", probe.DefaultMaxProcesses),
		numberFlag(&p.cfg.MaxProcesses, func(n uint64) bool { return n > 0 }, "must be a whole number greater than 0"))
	fs.Func("ringbuf-size", fmt.Sprintf("kernel-to-agent ring buffer in bytes, a power of two of at least a page (default %d)", probe.DefaultRingBufferBytes),
		numberFlag(&p.cfg.RingBufferBytes, probe.RingBufferSizeOK,
			fmt.Sprintf("must be a power of two and at least one page (%d bytes), in bytes without a unit, e.g. %d", os.Getpagesize(), probe.DefaultRingBufferBytes)))
	fs.Func("max-children", fmt.Sprintf("orphans reported per dying parent, 1 to %d (default %d)", probe.MaxChildrenBound, probe.DefaultMaxChildren),
		numberFlag(&p.cfg.MaxChildren, func(n uint64) bool { return n >= 1 && n <= probe.MaxChildrenBound }, fmt.Sprintf("must be a whole number from 1 to %d", probe.MaxChildrenBound)))
	fs.StringVar(&p.cfg.KernelBTF, "kernel-btf", os.Getenv("ORPHANWATCH_KERNEL_BTF"), "BTF file describing the running kernel (default /sys/kernel/btf/vmlinux; env ORPHANWATCH_KERNEL_BTF)")
}

func (p *probeFlags) config() probe.Config {
	cfg := p.cfg
	if name := os.Getenv(refuseEnv); name != "" {
		cfg.Refuse = []string{name}
	}
	return cfg
}

// numberFlag parses a decimal number strictly, so "64K" or "12abc" are
// refused where fmt.Sscan would read 64 and 12, and checks it with valid;
// want says what a valid value is, in the words of the flag's error.
func numberFlag(dst *uint32, valid func(uint64) bool, want string) func(string) error {
	return func(s string) error {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil || !valid(n) {
			return errors.New(want)
		}
		*dst = uint32(n)
		return nil
	}
}

// namerFlags choose where container names come from (trace and serve).
type namerFlags struct {
	kubernetes bool
	kubeconfig string
	nodeName   string
	dockerRoot string
	// kube is the Kubernetes namer once namer has started one.
	kube *container.KubernetesNamer
}

func (n *namerFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&n.kubernetes, "kubernetes", false, "name pods and containers from the Kubernetes API (in-cluster config, or --kubeconfig)")
	fs.StringVar(&n.kubeconfig, "kubeconfig", "", "kubeconfig file for --kubernetes (default: the in-cluster service account)")
	fs.StringVar(&n.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name for --kubernetes: only its pods are watched (default $NODE_NAME)")
	fs.StringVar(&n.dockerRoot, "docker-root", container.DefaultDockerRoot, "where Docker keeps container configs, for container names")
}

// namer builds the names lookup. Without a usable Kubernetes API it warns
// and carries on with Docker names and container ids. close stops it.
func (n *namerFlags) namer(ctx context.Context, log *slog.Logger) (names container.Namer, close func()) {
	namers := []container.Namer{}
	close = func() {}
	if n.kubernetes {
		k, err := container.NewKubernetesNamer(ctx, n.kubeconfig, n.nodeName, log)
		if err != nil {
			log.Warn("no Kubernetes names (nor Events): records carry container and pod ids only", "err", err)
		} else {
			namers = append(namers, k)
			close = k.Close
			n.kube = k
		}
	}
	namers = append(namers, container.NewDockerNamer(n.dockerRoot))
	return container.Chain(namers...), close
}

// events starts posting Kubernetes Events on the pods the namer knows,
// with the same credentials; nil when namer started no Kubernetes namer.
func (n *namerFlags) events(ctx context.Context, log *slog.Logger) (*kubeevents.Recorder, error) {
	if n.kube == nil {
		return nil, nil
	}
	cfg, err := container.RESTConfig(n.kubeconfig)
	if err != nil {
		return nil, err
	}
	client, err := kubeevents.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	return kubeevents.New(ctx, kubeevents.Config{Client: client, Node: n.nodeName, Pods: n.kube, Log: log})
}

// needs refuses flags set without the flag that gives them a meaning, so
// that a forgotten --kubernetes is an error rather than a silent no-op.
func needs(fs *flag.FlagSet, base string, on bool, why string, names ...string) error {
	if on {
		return nil
	}
	var set []string
	fs.Visit(func(f *flag.Flag) {
		if slices.Contains(names, f.Name) {
			set = append(set, "--"+f.Name)
		}
	})
	if len(set) == 0 {
		return nil
	}
	verb := "needs"
	if len(set) > 1 {
		verb = "need"
	}
	return fmt.Errorf("%s %s --%s (%s)", strings.Join(set, " and "), verb, base, why)
}
