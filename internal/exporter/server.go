package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/orphanwatch/orphanwatch/internal/version"
)

// DefaultListenAddress is orphanwatch's port. Exporters keep a fixed port so
// that Prometheus' instance label is stable; 9877 is also the port the
// container image exposes.
const DefaultListenAddress = ":9877"

// HTTP timeouts: a scrape reads a few maps and the process table, well
// under a second; these only bound slow or stuck clients.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	scrapeTimeout     = 20 * time.Second
)

// gathersInFlight bounds concurrent scrapes: past it, scrapes wait their
// turn rather than being refused (promhttp's MaxRequestsInFlight answers
// 503), so a burst of scrapers costs time, not errors, and never more memory
// than this many gathers.
const gathersInFlight = 8

// queued lets at most n requests into h at once; the others wait, until
// their own context ends.
func queued(n int, h http.Handler) http.Handler {
	slots := make(chan struct{}, n)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
			h.ServeHTTP(w, r)
		case <-r.Context().Done():
			http.Error(w, "gave up waiting for a scrape slot", http.StatusServiceUnavailable)
		}
	})
}

// ServerConfig sets up the HTTP server.
type ServerConfig struct {
	// Listeners are already bound: a taken port fails before anything is
	// loaded into the kernel.
	Listeners     []net.Listener
	TelemetryPath string // e.g. /metrics
	WebConfigFile string // exporter-toolkit web config: TLS, basic auth; "" for plain HTTP
	Registry      *prometheus.Registry
	Log           *slog.Logger
}

// Server serves the metrics, a landing page, /healthz and /readyz.
type Server struct {
	cfg ServerConfig
	// servers has one http.Server per listener: exporter-toolkit's Serve
	// sets the server's Handler (basic auth) and TLSConfig for the listener
	// it is given, so listeners sharing a server would race on those fields
	// and wrap basic auth once per listener.
	servers []*http.Server
	state   atomic.Pointer[readiness]
}

// CheckTelemetryPath says what is wrong with a metrics path, in words that
// follow the path: nil when it is a path of its own.
func CheckTelemetryPath(path string) error {
	if !strings.HasPrefix(path, "/") || path == "/" || path == "/healthz" || path == "/readyz" {
		return errors.New("must be a path of its own starting with /, such as /metrics (not /, /healthz or /readyz)")
	}
	return nil
}

type readiness struct {
	ready  bool
	detail string
}

// NewServer builds the server; it is not ready until Ready is called.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := CheckTelemetryPath(cfg.TelemetryPath); err != nil {
		return nil, fmt.Errorf("telemetry path %q %w", cfg.TelemetryPath, err)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg}
	s.NotReady("loading the BPF programs")

	landing, err := web.NewLandingPage(web.LandingConfig{
		Name:        "orphanwatch",
		Description: "Finds the orphaned processes that make a containerised PostgreSQL crash-restart",
		Version:     version.String(),
		Profiling:   "false",
		Links: []web.LandingLinks{
			{Address: cfg.TelemetryPath, Text: "Metrics"},
			{Address: "/healthz", Text: "Health", Description: "200 while the process serves"},
			{Address: "/readyz", Text: "Readiness", Description: "200 once every BPF program is attached"},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("building the landing page: %w", err)
	}
	metrics := promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(cfg.Log.Handler(), slog.LevelError),
		// A kernel map that cannot be read is logged and counted
		// (promhttp_metric_handler_errors_total); the crash counters are
		// still served.
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      cfg.Registry,
		Timeout:       scrapeTimeout,
	})
	mux := http.NewServeMux()
	mux.Handle(cfg.TelemetryPath, promhttp.InstrumentMetricHandler(cfg.Registry, queued(gathersInFlight, metrics)))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", s.readyz)
	mux.Handle("/", landing)
	for range cfg.Listeners {
		s.servers = append(s.servers, &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       readTimeout,
			WriteTimeout:      writeTimeout,
			IdleTimeout:       idleTimeout,
			ErrorLog:          slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug),
		})
	}
	return s, nil
}

// Ready marks the server ready; detail says what is attached.
func (s *Server) Ready(detail string) { s.state.Store(&readiness{true, detail}) }

// NotReady marks the server not ready, saying why.
func (s *Server) NotReady(why string) { s.state.Store(&readiness{false, why}) }

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	st := s.state.Load()
	if !st.ready {
		http.Error(w, "not ready: "+st.detail, http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready: "+st.detail)
}

// Serve serves on the listeners until Shutdown, with TLS and basic auth
// when the web config file asks for them. It returns nil after Shutdown; when
// one listener fails, it stops the others and returns that error.
func (s *Server) Serve() error {
	systemd := false
	errs := make(chan error, len(s.servers))
	for i, l := range s.cfg.Listeners {
		addrs := []string{l.Addr().String()}
		flags := &web.FlagConfig{WebListenAddresses: &addrs, WebSystemdSocket: &systemd, WebConfigFile: &s.cfg.WebConfigFile}
		go func() { errs <- web.Serve(l, s.servers[i], flags, s.cfg.Log) }()
	}
	var first error
	for range s.servers {
		err := <-errs
		if err == nil || errors.Is(err, http.ErrServerClosed) || first != nil {
			continue
		}
		first = err
		for _, h := range s.servers {
			h.Close()
		}
	}
	return first
}

// Shutdown stops accepting, lets running requests finish until ctx ends,
// then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.NotReady("shutting down")
	errs := make([]error, len(s.servers))
	var wg sync.WaitGroup
	for i, h := range s.servers {
		wg.Go(func() {
			if err := h.Shutdown(ctx); err != nil {
				errs[i] = errors.Join(err, h.Close())
			}
		})
	}
	wg.Wait()
	for _, l := range s.cfg.Listeners {
		l.Close() // in case Serve never ran
	}
	return errors.Join(errs...)
}
