// Package exporter is orphanwatch's Prometheus side: a collector that reads
// the kernel's counters, the process table and the agent's tallies at
// scrape time, a sink that counts reported records with bounded label
// cardinality, and the HTTP server (metrics, /healthz, /readyz, TLS and
// basic auth through exporter-toolkit).
package exporter

import (
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/orphanwatch/orphanwatch/internal/agent"
	"github.com/orphanwatch/orphanwatch/internal/container"
	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/lineage"
	"github.com/orphanwatch/orphanwatch/internal/probe"
	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
	"github.com/orphanwatch/orphanwatch/internal/version"
)

// Kernel is what the exporter reads from the loaded probe.
type Kernel interface {
	Counters() (probe.Counters, error)
	Malformed() uint64
	Programs() []probe.Attachment
	Switches() uint64
}

// Sources are read at scrape time once the probe is loaded.
type Sources struct {
	Kernel Kernel
	Table  *lineage.Table
	Agent  interface{ Stats() agent.Stats }
}

// Config sets up an Exporter. Zero values take the defaults.
type Config struct {
	// Names adds namespace, pod and container names to the gauges'
	// container labels, as the agent adds them to records; may be nil.
	Names      container.Namer
	MaxComms   int           // default DefaultMaxComms
	MaxSeries  int           // default DefaultMaxSeries
	EvictAfter time.Duration // default DefaultEvictAfter
	Now        func() time.Time
}

// Exporter is a prometheus.Collector and an agent.Sink.
type Exporter struct {
	names   container.Namer
	records *recordCounters
	sources atomic.Pointer[Sources]

	buildInfo         prometheus.Metric
	postmasters       *prometheus.Desc
	postmastersPID1   *prometheus.Desc
	adoptedProcesses  *prometheus.Desc
	trackedProcesses  *prometheus.Desc
	trackedEvicted    *prometheus.Desc
	events            *prometheus.Desc
	recordsByVerdict  *prometheus.Desc
	mispredicted      *prometheus.Desc
	recordWriteErrors *prometheus.Desc
	rediscovered      *prometheus.Desc
	reapsMissed       *prometheus.Desc
	reapsMisordered   *prometheus.Desc
	eventsLost        *prometheus.Desc
	eventsMalformed   *prometheus.Desc
	forks             *prometheus.Desc
	exits             *prometheus.Desc
	birthsEvicted     *prometheus.Desc
	childrenTruncated *prometheus.Desc
	programs          *prometheus.Desc
	switches          *prometheus.Desc
}

// New makes an exporter. Until Attach, it exposes only what records it has
// counted and its build.
func New(cfg Config) *Exporter {
	if cfg.MaxComms <= 0 {
		cfg.MaxComms = DefaultMaxComms
	}
	if cfg.MaxSeries <= 0 {
		cfg.MaxSeries = DefaultMaxSeries
	}
	if cfg.EvictAfter <= 0 {
		cfg.EvictAfter = DefaultEvictAfter
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &Exporter{
		names:   cfg.Names,
		records: newRecordCounters(cfg.MaxComms, cfg.MaxSeries, cfg.EvictAfter, cfg.Now),
		buildInfo: prometheus.MustNewConstMetric(
			desc("orphanwatch_build_info", "orphanwatch's version, VCS revision and Go version; always 1.",
				"version", "revision", "goversion", "goos", "goarch"),
			prometheus.GaugeValue, 1, version.String(), version.Revision(), runtime.Version(), runtime.GOOS, runtime.GOARCH),
		postmasters: desc("orphanwatch_postmasters",
			"PostgreSQL postmasters running now, by container.", containerLabels...),
		postmastersPID1: desc("orphanwatch_postmasters_pid1",
			"How many postmasters run now as PID 1 of their PID namespace, per container, from orphanwatch's live "+
				"process table: each adopts every orphan there, and an orphan's abnormal death crash-restarts "+
				"PostgreSQL. orphanwatch_postmaster_pid1 is the per-postmaster 0/1 gauge of the /proc audit.", containerLabels...),
		adoptedProcesses: desc("orphanwatch_adopted_processes",
			"Live processes whose parent is a postmaster that did not start them (orphans it adopted), by the "+
				"postmaster's container.", containerLabels...),
		trackedProcesses: desc("orphanwatch_tracked_processes",
			"Processes in orphanwatch's process table (children of postmasters, orphans), postmasters excluded."),
		trackedEvicted: desc("orphanwatch_tracked_processes_evicted_total",
			"Processes dropped from the process table because it was full."),
		events: desc("orphanwatch_events_total",
			"Events received from the kernel, by kind (exit, adoption, exec, signal, oom, reap, reaped-all, pmsignal).", "kind"),
		recordsByVerdict: desc("orphanwatch_records_total",
			"Records reported (JSON lines on stdout), by verdict.", "verdict"),
		mispredicted: desc("orphanwatch_adoptions_mispredicted_total",
			"Orphans that died under another parent than the kernel predicted at adoption."),
		recordWriteErrors: desc("orphanwatch_record_write_errors_total",
			"Records that could not be written to a sink (e.g. stdout closed)."),
		rediscovered: desc("orphanwatch_postmasters_rediscovered_total",
			"Postmasters found running by the periodic /proc sweep whose start was not seen (its event lost, or "+
				"/proc unreadable then): they were unwatched until then."),
		reapsMissed: desc("orphanwatch_reaps_missed_total",
			"Deaths of postmasters' children decided without seeing the postmaster reap them (an event was "+
				"lost): decided in the order they died, which may not be the postmaster's."),
		reapsMisordered: desc("orphanwatch_reaps_misordered_total",
			"Reaps the kernel reported at a waitpid that reaped another child (it became a zombie as the call "+
				"began): two deaths decided in the wrong order, which changes a verdict only when the postmaster "+
				"would decide them differently in the other."),
		eventsLost: desc("orphanwatch_events_lost_total",
			"Events the kernel dropped because the ring buffer was full: raise --ringbuf-size."),
		eventsMalformed: desc("orphanwatch_events_malformed_total",
			"Ring-buffer records that could not be decoded and were skipped."),
		forks: desc("orphanwatch_kernel_forks_total",
			"Tasks (processes and threads) created on the host since orphanwatch started, by the kernel's own "+
				"count (/proc/stat processes), whether or not the programs are attached."),
		exits: desc("orphanwatch_kernel_exits_total",
			"Tasks (processes and threads) that ended on the host since orphanwatch started: those created, "+
				"less the growth of the live count (/proc/loadavg)."),
		birthsEvicted: desc("orphanwatch_birth_records_evicted_total",
			"Exits whose birth record the kernel had evicted (more live processes than --max-processes): their "+
				"origin is judged from /proc instead."),
		childrenTruncated: desc("orphanwatch_children_truncated_total",
			"Dying parents with more children than --max-children: the orphans past that were not reported."),
		programs: desc("orphanwatch_programs_attached",
			"Whether each BPF program is attached now (1) or loaded and detached (0), by program and kernel hook: "+
				"all but the exec program attach only while a postmaster is watched on the node, unless --all.",
			"program", "hook"),
		switches: desc("orphanwatch_program_switches_total",
			"Times the programs that matter only to a postmaster were attached or detached, as the first "+
				"postmaster on the node appeared or the last one went."),
	}
}

// Write counts a record: it is the exporter's agent.Sink.
func (e *Exporter) Write(r *report.Record) error { return e.records.Write(r) }

// Attach starts reading the probe, table and agent at scrape time.
func (e *Exporter) Attach(s Sources) { e.sources.Store(&s) }

// Describe implements prometheus.Collector.
func (e *Exporter) Describe(ch chan<- *prometheus.Desc) {
	ch <- e.buildInfo.Desc()
	for _, d := range []*prometheus.Desc{
		e.postmasters, e.postmastersPID1, e.adoptedProcesses, e.trackedProcesses, e.trackedEvicted,
		e.events, e.recordsByVerdict, e.mispredicted, e.recordWriteErrors, e.rediscovered, e.reapsMissed, e.reapsMisordered,
		e.eventsLost, e.eventsMalformed, e.forks, e.exits, e.birthsEvicted, e.childrenTruncated, e.programs, e.switches,
	} {
		ch <- d
	}
	for _, c := range e.records.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	ch <- e.buildInfo
	if s := e.sources.Load(); s != nil {
		if s.Kernel != nil {
			e.collectKernel(ch, s.Kernel)
		}
		if s.Table != nil {
			e.collectTable(ch, s.Table) // before the record counters: it creates their series
		}
		if s.Agent != nil {
			e.collectAgent(ch, s.Agent.Stats())
		}
	}
	for _, c := range e.records.collectors() {
		c.Collect(ch)
	}
}

func (e *Exporter) collectKernel(ch chan<- prometheus.Metric, k Kernel) {
	c, err := k.Counters()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(e.eventsLost, err)
	} else {
		for _, m := range []struct {
			desc  *prometheus.Desc
			value uint64
		}{
			{e.eventsLost, c.Lost}, {e.forks, c.Forks}, {e.exits, c.Exits},
			{e.birthsEvicted, c.BirthsEvicted}, {e.childrenTruncated, c.ChildrenTruncated},
		} {
			ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.value))
		}
	}
	ch <- prometheus.MustNewConstMetric(e.eventsMalformed, prometheus.CounterValue, float64(k.Malformed()))
	for _, a := range k.Programs() {
		ch <- prometheus.MustNewConstMetric(e.programs, prometheus.GaugeValue, boolValue(a.Attached), a.Program, a.Hook)
	}
	ch <- prometheus.MustNewConstMetric(e.switches, prometheus.CounterValue, float64(k.Switches()))
}

// where is a container label set, as a map key.
type where [4]string

func (e *Exporter) where(ref container.Ref) where {
	var n container.Names
	if e.names != nil {
		n = e.names.Names(ref)
	}
	return where(containerValues(ref.ID, n.Namespace, n.Pod, n.Container))
}

// collectTable reports the postmasters and their adoptees by container, and
// starts the record counters of those containers at 0. The gauges need no
// cap: their series are the containers of postmasters running now.
func (e *Exporter) collectTable(ch chan<- prometheus.Metric, t *lineage.Table) {
	type tally struct{ postmasters, pid1, adopted int }
	byWhere := map[where]*tally{}
	byPID := map[uint32]where{}
	for _, pm := range t.Postmasters() {
		w := e.where(pm.Container)
		if byWhere[w] == nil {
			byWhere[w] = &tally{}
		}
		byWhere[w].postmasters++
		if pm.PID1() {
			byWhere[w].pid1++
		}
		byPID[pm.Key.PID] = w
	}
	for _, p := range t.Adopted() {
		if w, ok := byPID[p.PPID]; ok {
			byWhere[w].adopted++
		}
	}
	expected := make([][]string, 0, len(byWhere))
	for w, n := range byWhere {
		ch <- prometheus.MustNewConstMetric(e.postmasters, prometheus.GaugeValue, float64(n.postmasters), w[:]...)
		ch <- prometheus.MustNewConstMetric(e.postmastersPID1, prometheus.GaugeValue, float64(n.pid1), w[:]...)
		ch <- prometheus.MustNewConstMetric(e.adoptedProcesses, prometheus.GaugeValue, float64(n.adopted), w[:]...)
		expected = append(expected, w[:])
	}
	e.records.expectPostmasters(expected)
	ch <- prometheus.MustNewConstMetric(e.trackedProcesses, prometheus.GaugeValue, float64(t.Len()))
	ch <- prometheus.MustNewConstMetric(e.trackedEvicted, prometheus.CounterValue, float64(t.Evicted()))
}

func (e *Exporter) collectAgent(ch chan<- prometheus.Metric, s agent.Stats) {
	for _, k := range event.Kinds {
		ch <- prometheus.MustNewConstMetric(e.events, prometheus.CounterValue, float64(s.Events[k]), k.String())
	}
	for _, d := range verdict.All { // every verdict's series from the start, at 0
		ch <- prometheus.MustNewConstMetric(e.recordsByVerdict, prometheus.CounterValue, float64(s.Reported[d.Verdict]), string(d.Verdict))
	}
	ch <- prometheus.MustNewConstMetric(e.mispredicted, prometheus.CounterValue, float64(s.Mispredicted))
	ch <- prometheus.MustNewConstMetric(e.recordWriteErrors, prometheus.CounterValue, float64(s.SinkErrors))
	ch <- prometheus.MustNewConstMetric(e.rediscovered, prometheus.CounterValue, float64(s.Rediscovered))
	ch <- prometheus.MustNewConstMetric(e.reapsMissed, prometheus.CounterValue, float64(s.ReapsMissed))
	ch <- prometheus.MustNewConstMetric(e.reapsMisordered, prometheus.CounterValue, float64(s.ReapsMisordered))
}

// NewRegistry is a registry with the exporter and the standard Go and
// process collectors.
func NewRegistry(e *Exporter) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(e, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
