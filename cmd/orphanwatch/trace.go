package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/agent"
	"github.com/orphanwatch/orphanwatch/internal/audit"
	"github.com/orphanwatch/orphanwatch/internal/lineage"
	"github.com/orphanwatch/orphanwatch/internal/pipeline"
	"github.com/orphanwatch/orphanwatch/internal/probe"
	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
	"github.com/orphanwatch/orphanwatch/internal/version"
)

func traceCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	var pf probeFlags
	pf.register(fs)
	var nf namerFlags
	nf.register(fs)
	jsonOut := fs.Bool("json", false, "one JSON object per line on stdout instead of the table")
	duration := fs.Duration("duration", 0, "stop after this long (default: until Ctrl-C)")
	var filter recordFilter
	fs.Func("pid", "only this process (host pid, or pid in its namespace)", numberFlag(&filter.pid, func(n uint64) bool { return n > 0 }, "must be a process id greater than 0"))
	fs.StringVar(&filter.comm, "comm", "", "only processes with this command name")
	fs.Func("namespace", "only records in these Kubernetes namespaces, comma separated (with --kubernetes)", listFlag(&filter.namespaces, "namespace"))
	fs.Func("pod", "only records in these Kubernetes pods, comma separated (with --kubernetes)", listFlag(&filter.pods, "pod name"))
	fs.Func("container", "only records in these containers, comma separated: a Kubernetes or Docker container name, or a container id or a prefix of it", func(s string) error {
		for _, c := range strings.Split(s, ",") {
			if _, err := audit.ContainerPrefix(c); err != nil {
				return err
			}
			filter.containers = append(filter.containers, c)
		}
		return nil
	})
	fs.Func("verdict", "only these verdicts, comma separated: "+joinVerdicts(), func(s string) error {
		for _, v := range strings.Split(s, ",") {
			if !isVerdict(v) {
				return fmt.Errorf("unknown verdict %q (known: %s)", v, joinVerdicts())
			}
			filter.verdicts = append(filter.verdicts, verdict.Verdict(v))
		}
		return nil
	})
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: orphanwatch trace [flags]\n\nWatch the kernel and report orphan deaths that crash-restart PostgreSQL, as they happen.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if st := parseFlags(fs, args, stderr); st >= 0 {
		return st
	}
	if err := needs(fs, "kubernetes", nf.kubernetes, "pods are named from the Kubernetes API", "kubeconfig", "node-name", "namespace", "pod"); err != nil {
		fmt.Fprintf(stderr, "orphanwatch trace: %v\n", err)
		return exitUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Before loading: the Kubernetes namer may wait for the API, and
	// attached programs would fill the ring buffer meanwhile, unread.
	names, closeNames := nf.namer(ctx, log)
	defer closeNames()

	var out agent.Sink = report.NewTableWriter(stdout)
	if *jsonOut {
		out = report.NewJSONWriter(stdout)
	}
	filter.next = out
	pl, err := pipeline.Open(pipeline.Config{Probe: pf.config(), Sinks: []agent.Sink{&filter}, Names: names, Log: log})
	if err != nil {
		return failure(stderr, "trace", err)
	}
	defer pl.Close()
	printHeader(stderr, pl.Probe, pl.Postmasters)

	start := time.Now()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	if err := pl.Run(ctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return failure(stderr, "trace", err)
	}
	printSummary(stderr, pl, time.Since(start))
	return exitOK
}

func joinVerdicts() string {
	names := make([]string, len(verdict.All))
	for i, d := range verdict.All {
		names[i] = string(d.Verdict)
	}
	return strings.Join(names, ", ")
}

// isVerdict reports whether a name is a verdict's.
func isVerdict(name string) bool { return verdict.Describe(verdict.Verdict(name)).Verdict != "" }

// recordFilter passes on the records --pid, --comm, --verdict,
// --namespace, --pod and --container select: each flag given must match,
// any of its values.
type recordFilter struct {
	pid        uint32
	comm       string
	verdicts   []verdict.Verdict
	namespaces []string
	pods       []string
	containers []string // names, ids or id prefixes
	next       agent.Sink
}

// listFlag takes a comma-separated list of non-empty values.
func listFlag(dst *[]string, what string) func(string) error {
	return func(s string) error {
		for _, v := range strings.Split(s, ",") {
			if v == "" {
				return fmt.Errorf("empty %s in %q", what, s)
			}
			*dst = append(*dst, v)
		}
		return nil
	}
}

// inContainer: a record is in a container named c, or whose id c is, or
// begins (as docker ps and kubectl show ids: short, or runtime://id).
func inContainer(r *report.Record, containers []string) bool {
	for _, c := range containers {
		if r.Container == c {
			return true
		}
		if prefix, err := audit.ContainerPrefix(c); err == nil && r.ContainerID != "" && strings.HasPrefix(r.ContainerID, prefix) {
			return true
		}
	}
	return false
}

// Flush passes the agent's flush on to a buffering writer.
func (f *recordFilter) Flush() error {
	if fl, ok := f.next.(interface{ Flush() error }); ok {
		return fl.Flush()
	}
	return nil
}

func (f *recordFilter) Write(r *report.Record) error {
	if f.pid != 0 && r.PID != f.pid && r.NSPid != f.pid {
		return nil
	}
	if f.comm != "" && r.Comm != f.comm {
		return nil
	}
	if len(f.verdicts) > 0 && !slices.Contains(f.verdicts, verdict.Verdict(r.Verdict)) {
		return nil
	}
	if len(f.namespaces) > 0 && !slices.Contains(f.namespaces, r.Namespace) ||
		len(f.pods) > 0 && !slices.Contains(f.pods, r.Pod) ||
		len(f.containers) > 0 && !inContainer(r, f.containers) {
		return nil
	}
	return f.next.Write(r)
}

func printHeader(w io.Writer, p *probe.Probe, postmasters []*lineage.Postmaster) {
	fmt.Fprintf(w, "orphanwatch %s: %s\n", version.String(), p.AttachSummary())
	for _, why := range p.Unavailable() {
		fmt.Fprintf(w, "orphanwatch: warning: %s\n", why)
	}
	fmt.Fprintf(w, "orphanwatch: %d postmaster(s) running", len(postmasters))
	pid1 := 0
	for _, pm := range postmasters {
		if pm.PID1() {
			pid1++
		}
	}
	if pid1 > 0 {
		fmt.Fprintf(w, ", %d of them PID 1 of a namespace (every orphan there is a crash waiting to happen)", pid1)
	}
	fmt.Fprintln(w)
	for _, pm := range postmasters {
		fmt.Fprintf(w, "  pid %d", pm.Key.PID)
		if pm.PID1() {
			fmt.Fprint(w, " (PID 1 of its namespace!)")
		} else {
			fmt.Fprintf(w, " (pid %d in its namespace)", pm.NSPid)
		}
		if pm.Major != 0 {
			fmt.Fprintf(w, " PostgreSQL %d", pm.Major)
		}
		if pm.DataDir != "" {
			fmt.Fprintf(w, " %s", pm.DataDir)
		}
		if pm.Container.ID != "" {
			fmt.Fprintf(w, " container %s %s", pm.Container.Runtime, pm.Container.Short())
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "orphanwatch: tracing; Ctrl-C to stop")
}

func printSummary(w io.Writer, pl *pipeline.Pipeline, elapsed time.Duration) {
	stats, p := pl.Agent.Stats(), pl.Probe
	var parts []string
	for _, d := range verdict.All {
		if n := stats.Reported[d.Verdict]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", d.Verdict, n))
		}
	}
	found := "nothing found"
	if len(parts) > 0 {
		found = "found " + strings.Join(parts, ", ")
	}
	fmt.Fprintf(w, "\norphanwatch: summary after %s: %s\n", elapsed.Round(time.Millisecond), found)
	c, err := p.Counters()
	if err != nil {
		fmt.Fprintf(w, "orphanwatch: reading the kernel counters: %v\n", err)
		return
	}
	fmt.Fprintf(w, "orphanwatch: kernel saw %d forks and %d exits; lost events %d, malformed %d, birth records evicted %d, orphans not reported (too many children) %d, table evictions %d, mispredicted adoptions %d, reaps missed %d, postmasters rediscovered %d, unexplained crash-restarts %d\n",
		c.Forks, c.Exits, c.Lost, p.Malformed(), c.BirthsEvicted, c.ChildrenTruncated, pl.Table.Evicted(), stats.Mispredicted,
		stats.ReapsMissed, stats.Rediscovered, stats.Unexplained)
	if c.Lost > 0 {
		fmt.Fprintf(w, "orphanwatch: WARNING: %d events were lost because the ring buffer was full: raise --ringbuf-size\n", c.Lost)
	}
	if stats.ReapsMisordered > 0 {
		fmt.Fprintf(w, "orphanwatch: WARNING: %d reaps misordered: the kernel named them at a waitpid that reaped another child, so two deaths were decided out of the postmaster's order\n", stats.ReapsMisordered)
	}
}
