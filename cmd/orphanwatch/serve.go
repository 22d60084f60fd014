package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/exporter-toolkit/web"

	"github.com/orphanwatch/orphanwatch/internal/agent"
	"github.com/orphanwatch/orphanwatch/internal/audit"
	"github.com/orphanwatch/orphanwatch/internal/exporter"
	"github.com/orphanwatch/orphanwatch/internal/pipeline"
	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/version"
)

// listenError is a listen address that is taken or invalid.
type listenError struct {
	addr string
	err  error
}

func (e *listenError) Error() string {
	if errors.Is(e.err, syscall.EADDRINUSE) {
		return fmt.Sprintf("cannot listen on %s: another process already uses that address; stop it or choose another with --web.listen-address", e.addr)
	}
	return fmt.Sprintf("cannot listen on %s (%v); choose another with --web.listen-address", e.addr, e.err)
}

func (e *listenError) Unwrap() error { return e.err }

// shutdownGrace bounds the wait for in-flight scrapes at SIGTERM, so the
// whole stop stays under 2 s (Kubernetes' default grace period is 30 s, a
// terminal user's patience shorter).
const shutdownGrace = time.Second

func serveCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var pf probeFlags
	pf.register(fs)
	var nf namerFlags
	nf.register(fs)
	var addrs []string
	fs.Func("web.listen-address", "address to serve metrics, /healthz and /readyz on; repeat for several (default "+exporter.DefaultListenAddress+")", func(s string) error {
		addrs = append(addrs, s)
		return nil
	})
	telemetryPath := fs.String("web.telemetry-path", "/metrics", "path under which to expose metrics")
	webConfig := fs.String("web.config.file", "", "exporter-toolkit web configuration file enabling TLS and basic auth (see https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md)")
	logLevel := fs.String("log.level", "info", "log level: debug, info, warn or error")
	logFormat := fs.String("log.format", "logfmt", "log format on stderr: logfmt or json")
	maxComms := fs.Int("metrics.max-comms", exporter.DefaultMaxComms, "distinct command names given a comm label of their own; others are counted as comm=\"other\"")
	maxSeries := fs.Int("metrics.max-series", exporter.DefaultMaxSeries, "series per record counter; past it, new containers are counted as container_id=\"other\"")
	kubeEvents := fs.Bool("kubernetes.events", true, "with --kubernetes, post Kubernetes Events on the PostgreSQL pod of each crash-restart, OOM kill and PID 1 postmaster; --kubernetes.events=false turns them off")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: orphanwatch serve [flags]\n\nRun the agent: Prometheus metrics on --web.listen-address, and each flagged record as a JSON line on stdout.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if st := parseFlags(fs, args, stderr); st >= 0 {
		return st
	}
	if len(addrs) == 0 {
		addrs = []string{exporter.DefaultListenAddress}
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	switch {
	case err != nil:
	case *maxComms <= 0 || *maxSeries <= 0:
		err = errors.New("--metrics.max-comms and --metrics.max-series must be positive")
	default:
		err = cmp.Or(checkWebFlags(*telemetryPath, *webConfig),
			needs(fs, "kubernetes", nf.kubernetes, "pods are named, and Events posted, from the Kubernetes API", "kubeconfig", "node-name", "kubernetes.events"))
	}
	if err != nil {
		fmt.Fprintf(stderr, "orphanwatch serve: %v\n", err)
		return exitUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Bind before loading anything into the kernel: a taken port fails at
	// once and leaves nothing attached.
	var listeners []net.Listener
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return failure(stderr, "serve", &listenError{addr: a, err: err})
		}
		listeners = append(listeners, l)
	}

	// One namer for records and metrics, so their container labels agree.
	names, closeNames := nf.namer(ctx, log)
	defer closeNames()
	metrics := exporter.New(exporter.Config{MaxComms: *maxComms, MaxSeries: *maxSeries, Names: names})
	registry := exporter.NewRegistry(metrics)
	registry.MustRegister(exporter.NewAuditCollector(func() audit.Report { return audit.Default().Run(audit.Selector{}) }, names))
	sinks := []agent.Sink{metrics, report.NewJSONWriter(stdout)}
	if *kubeEvents {
		events, err := nf.events(ctx, log)
		switch {
		case err != nil:
			log.Warn("no Kubernetes Events", "err", err)
		case events != nil:
			defer events.Close()
			sinks = append(sinks, events)
			registry.MustRegister(exporter.NewKubeEventsCollector(events.Stats))
		}
	}
	srv, err := exporter.NewServer(exporter.ServerConfig{
		Listeners: listeners, TelemetryPath: *telemetryPath, WebConfigFile: *webConfig,
		Registry: registry, Log: log,
	})
	if err != nil { // the flags were checked: this is not a usage error
		for _, l := range listeners {
			l.Close()
		}
		return failure(stderr, "serve", err)
	}
	// /healthz answers, and /readyz says not yet, while the programs load.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var serveErr error // set before served closes
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(); err != nil {
			serveErr = fmt.Errorf("serving HTTP: %w", err)
			cancel()
		}
	}()
	shutdown := func() {
		sctx, done := context.WithTimeout(context.Background(), shutdownGrace)
		defer done()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("stopping the HTTP server", "err", err)
		}
		<-served
	}

	pl, err := pipeline.Open(pipeline.Config{Probe: pf.config(), Sinks: sinks, Names: names, Log: log})
	if err != nil {
		shutdown()
		return failure(stderr, "serve", err)
	}
	detach := func() {
		if err := pl.Close(); err != nil {
			log.Warn("detaching the BPF programs", "err", err)
		}
	}
	metrics.Attach(exporter.Sources{Kernel: pl.Probe, Table: pl.Table, Agent: pl.Agent})
	log.Info("attached", "version", version.String(), "programs", pl.Probe.AttachSummary())
	for _, why := range pl.Probe.Unavailable() {
		log.Warn(why)
	}
	pid1 := 0
	for _, pm := range pl.Postmasters {
		if pm.PID1() {
			pid1++
			log.Warn("postmaster is PID 1 of its PID namespace: an orphan's abnormal death there will crash-restart PostgreSQL",
				"pid", pm.Key.PID, "data_dir", pm.DataDir, "container_id", pm.Container.ID)
		}
	}
	log.Info("postmasters running", "count", len(pl.Postmasters), "pid1", pid1)
	srv.Ready(pl.Probe.AttachSummary())

	runErr := pl.Run(ctx)
	shutdown()
	detach()
	switch {
	case serveErr != nil:
		return failure(stderr, "serve", serveErr)
	case runErr != nil && !errors.Is(runErr, context.Canceled):
		return failure(stderr, "serve", runErr)
	}
	log.Info("stopped: BPF programs detached")
	return exitOK
}

// checkWebFlags checks --web.telemetry-path and --web.config.file before
// anything is bound or loaded, so a mistake in either is a usage error.
func checkWebFlags(telemetryPath, webConfig string) error {
	if err := exporter.CheckTelemetryPath(telemetryPath); err != nil {
		return fmt.Errorf("--web.telemetry-path %q %w", telemetryPath, err)
	}
	if err := web.Validate(webConfig); err != nil { // nil for ""
		return fmt.Errorf("--web.config.file %s is not a usable web configuration: %v", webConfig, err)
	}
	return nil
}

// newLogger logs to stderr in Prometheus' formats: logfmt (slog's text
// handler) or json.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log.level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "logfmt", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log.format %q: want logfmt or json", format)
}
