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
	"github.com/orphanwatch/orphanwatch/internal/lineage"
	"github.com/orphanwatch/orphanwatch/internal/probe"
	"github.com/orphanwatch/orphanwatch/internal/procfs"
	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
	"github.com/orphanwatch/orphanwatch/internal/version"
)

// tableSize bounds the user-space process table.
const tableSize = 65536

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
	fs.Func("verdict", "only these verdicts, comma separated: "+joinVerdicts(), func(s string) error {
		for _, v := range strings.Split(s, ",") {
			if !slices.Contains(verdict.All, verdict.Verdict(v)) {
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

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Before loading: the Kubernetes namer may wait for the API, and
	// attached programs would fill the ring buffer meanwhile, unread.
	names, closeNames := nf.namer(ctx, log)
	defer closeNames()

	p, err := probe.Load(pf.config())
	if err != nil {
		return failure(stderr, "trace", err)
	}
	defer p.Close()

	var out agent.Sink = report.NewTableWriter(stdout)
	if *jsonOut {
		out = report.NewJSONWriter(stdout)
	}
	filter.next = out
	table := lineage.New(procfs.Default, tableSize)
	ag := agent.New(agent.Config{
		Kernel: p, Table: table, Proc: procfs.Default,
		Wall: p.Clock().Wall, Now: p.Clock().BootNow,
		Sinks: []agent.Sink{&filter}, All: pf.cfg.StreamAll,
		Log: log, Names: names,
	})
	postmasters, err := ag.Start()
	if err != nil {
		return failure(stderr, "trace", fmt.Errorf("learning the running postmasters from /proc: %w", err))
	}
	printHeader(stderr, p, postmasters)
	ag.ReportRunning(postmasters)

	start := time.Now()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	if err := ag.Run(ctx, p.Read); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return failure(stderr, "trace", err)
	}
	printSummary(stderr, ag, p, table, time.Since(start))
	return exitOK
}

func joinVerdicts() string {
	names := make([]string, len(verdict.All))
	for i, v := range verdict.All {
		names[i] = string(v)
	}
	return strings.Join(names, ", ")
}

// recordFilter passes on the records --pid, --comm and --verdict select.
type recordFilter struct {
	pid      uint32
	comm     string
	verdicts []verdict.Verdict
	next     agent.Sink
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
	return f.next.Write(r)
}

func printHeader(w io.Writer, p *probe.Probe, postmasters []*lineage.Postmaster) {
	hooks := make([]string, 0, len(p.Attached()))
	for _, a := range p.Attached() {
		hooks = append(hooks, a.Hook)
	}
	fmt.Fprintf(w, "orphanwatch %s: attached to %s\n", version.String(), strings.Join(hooks, ", "))
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

func printSummary(w io.Writer, ag *agent.Agent, p *probe.Probe, table *lineage.Table, elapsed time.Duration) {
	stats := ag.Stats()
	var parts []string
	for _, v := range verdict.All {
		if n := stats.Reported[v]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", v, n))
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
	fmt.Fprintf(w, "orphanwatch: kernel saw %d forks and %d exits; lost events %d, malformed %d, birth records evicted %d, orphans not reported (too many children) %d, table evictions %d, mispredicted adoptions %d\n",
		c.Forks, c.Exits, c.Lost, p.Malformed(), c.BirthsEvicted, c.ChildrenTruncated, table.Evicted(), stats.Mispredicted)
	if c.Lost > 0 {
		fmt.Fprintf(w, "orphanwatch: WARNING: %d events were lost because the ring buffer was full: raise --ringbuf-size\n", c.Lost)
	}
}
