package exporter

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

// Cardinality caps. Record counters keep a series per label set forever
// (a counter must not vanish while an alert window still looks at it), so
// without caps a node that runs many short-lived containers, or orphans with
// ever-new names, would grow the exporter without bound.
const (
	// DefaultMaxComms is how many distinct command names get a comm label
	// value of their own; others are counted as comm="other".
	DefaultMaxComms = 32
	// DefaultMaxSeries is how many series one record counter holds; past it
	// a new label set is counted in an overflow series whose comm and
	// container_id read "other".
	DefaultMaxSeries = 1000
	// DefaultEvictAfter: when a cap is reached, the least recently used
	// comm or series is dropped to make room, if it has not changed for
	// this long. It is longer than any alert window in
	// deploy/prometheus/orphanwatch.rules.yml, so an alert never loses the
	// series it is looking at.
	DefaultEvictAfter = time.Hour
)

// other is the label value that stands for everything past a cap.
const other = "other"

// containerLabels name the container a series is about. namespace, pod and
// container are names, empty when no runtime or API could tell them.
var containerLabels = []string{"container_id", "namespace", "pod", "container"}

// keySep joins label values into a map key. 0xff never occurs in valid
// UTF-8, and label values are made valid UTF-8 first.
const keySep = "\xff"

// recordCounters counts reported records. Write may be called from the
// agent's read loop and from its confirmer's timer at once.
type recordCounters struct {
	mu         sync.Mutex
	now        func() time.Time
	evictAfter time.Duration
	comms      usage // command names with a comm value of their own

	adoptedExits  *cappedVec
	crashRestarts *cappedVec
	unexplained   *cappedVec
	oomKills      *cappedVec
	adoptions     *cappedVec
	recovery      prometheus.Histogram

	folded  *prometheus.CounterVec
	evicted *prometheus.CounterVec
}

func newRecordCounters(maxComms, maxSeries int, evictAfter time.Duration, now func() time.Time) *recordCounters {
	return &recordCounters{
		now:        now,
		evictAfter: evictAfter,
		comms:      newUsage(maxComms),
		adoptedExits: newCappedVec(maxSeries, prometheus.CounterOpts{
			Name: "orphanwatch_adopted_child_exits_total",
			Help: "Deaths of processes a postmaster adopted but never started. verdict=\"crash-restart\": it died of a signal " +
				"or exited with code 2 or more while PostgreSQL ran, so PostgreSQL crash-restarted; verdict=\"adopted\": it " +
				"exited 0 or 1, which PostgreSQL ignores; verdict=\"casualty\": it died so while PostgreSQL was already " +
				"resetting, and was ignored. signal is empty for an exit. origin is where it came from (docker-exec, " +
				"cri-exec, healthcheck, probe, entrypoint, server-process, unknown). comm is capped (--metrics.max-comms); " +
				"comm and container_id read \"other\" past the caps.",
		}, append([]string{"verdict", "signal", "comm", "origin"}, containerLabels...)),
		crashRestarts: newCappedVec(maxSeries, prometheus.CounterOpts{
			Name: "orphanwatch_postmaster_crash_restarts_total",
			Help: "Crash-restarts PostgreSQL really performed, seen in the kernel: the postmaster took a death for a crash " +
				"(or, unasked to stop, told its server processes to quit), and its startup process then finished crash " +
				"recovery. Series start at 0 for every running postmaster.",
		}, containerLabels),
		unexplained: newCappedVec(maxSeries, prometheus.CounterOpts{
			Name: "orphanwatch_unexplained_crash_restarts_total",
			Help: "Crash-restarts PostgreSQL performed whose culprit orphanwatch did not see: the death it reacted to " +
				"never reached orphanwatch (lost events, or a bug to report). Series start at 0 for every running postmaster.",
		}, containerLabels),
		oomKills: newCappedVec(maxSeries, prometheus.CounterOpts{
			Name: "orphanwatch_oom_kills_total",
			Help: "OOM-killer victims by role: postmaster (the server goes down), server or adopted (PostgreSQL " +
				"crash-restarts), other (only with --all).",
		}, append([]string{"role"}, containerLabels...)),
		adoptions: newCappedVec(maxSeries, prometheus.CounterOpts{
			Name: "orphanwatch_adoptions_total",
			Help: "Orphans handed to a postmaster as their new parent: each is a crash-restart waiting to happen. " +
				"Series start at 0 for every running postmaster.",
		}, containerLabels),
		recovery: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "orphanwatch_postgres_recovery_seconds",
			Help: "How long PostgreSQL was down per crash-restart: from the crash to the end of crash recovery " +
				"(its startup process's exit), while it refused connections.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		folded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orphanwatch_records_folded_total",
			Help: "Records counted under \"other\" because a cardinality cap was reached (reason max-comms or max-series).",
		}, []string{"metric", "reason"}),
		evicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orphanwatch_series_evicted_total",
			Help: "Series of a record counter dropped to make room under a cap, after an hour or more without change.",
		}, []string{"metric"}),
	}
}

// Write counts one record.
func (c *recordCounters) Write(r *report.Record) error {
	where := containerValues(r.ContainerID, r.Namespace, r.Pod, r.Container)
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch verdict.Describe(verdict.Verdict(r.Verdict)).Metric {
	case verdict.AdopteeDeath:
		comm := c.comm(r.Comm, now)
		c.inc(c.adoptedExits, now, append([]string{r.Verdict, labelValue(r.Signal), comm, labelValue(r.Origin)}, where...))
	case verdict.Restart:
		c.inc(c.crashRestarts, now, where)
		if r.Trigger == nil {
			c.inc(c.unexplained, now, where)
		}
		if r.RecoveryMS != nil {
			c.recovery.Observe(float64(*r.RecoveryMS) / 1e3)
		}
	case verdict.OOMVictim:
		role := string(verdict.RoleOther)
		if r.OOM != nil {
			role = labelValue(r.OOM.Role)
		}
		c.inc(c.oomKills, now, append([]string{role}, where...))
	}
	// The adopter is the record's parent; a container's init adopting is
	// reported too, without a postmaster.
	if r.Kind == "adoption" && r.Postmaster != nil && r.ParentPID == r.Postmaster.PID {
		c.inc(c.adoptions, now, where)
	}
	return nil
}

func (c *recordCounters) inc(v *cappedVec, now time.Time, values []string) {
	counter, folded := c.series(v, now, values)
	if folded {
		c.folded.WithLabelValues(v.name, "max-series").Inc()
	}
	counter.Inc()
}

func (c *recordCounters) series(v *cappedVec, now time.Time, values []string) (prometheus.Counter, bool) {
	counter, folded, evicted := v.counter(now, c.evictAfter, values)
	if evicted {
		c.evicted.WithLabelValues(v.name).Inc()
	}
	return counter, folded
}

// comm returns the comm label value for a command name.
func (c *recordCounters) comm(name string, now time.Time) string {
	name = labelValue(name)
	ok, gone, evicted := c.comms.admit(name, now, c.evictAfter)
	if evicted {
		if n := c.adoptedExits.deleteWhere("comm", gone); n > 0 {
			c.evicted.WithLabelValues(c.adoptedExits.name).Add(float64(n))
		}
	}
	if !ok {
		c.folded.WithLabelValues(c.adoptedExits.name, "max-comms").Inc()
		return other
	}
	return name
}

// expectPostmasters makes the series of running postmasters' containers
// exist at 0, so that the first crash-restart or adoption in a container is
// an increase Prometheus can see (a series born at 1 has no increase()).
func (c *recordCounters) expectPostmasters(where [][]string) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range where {
		c.series(c.crashRestarts, now, w)
		c.series(c.unexplained, now, w)
		c.series(c.adoptions, now, w)
		for _, role := range []verdict.OOMRole{verdict.RolePostmaster, verdict.RoleServer, verdict.RoleAdopted} {
			c.series(c.oomKills, now, append([]string{string(role)}, w...))
		}
	}
}

func (c *recordCounters) collectors() []prometheus.Collector {
	return []prometheus.Collector{c.adoptedExits.vec, c.crashRestarts.vec, c.unexplained.vec, c.oomKills.vec, c.adoptions.vec,
		c.recovery, c.folded, c.evicted}
}

// containerValues are the container labels' values.
func containerValues(id, namespace, pod, name string) []string {
	return []string{labelValue(id), labelValue(namespace), labelValue(pod), labelValue(name)}
}

// labelValue makes a string a valid label value: command names come from
// the kernel as raw bytes.
func labelValue(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// cappedVec is a counter vector holding at most max series besides its
// overflow series.
type cappedVec struct {
	name   string
	vec    *prometheus.CounterVec
	labels []string
	series usage // keys: label values joined by keySep
}

func newCappedVec(max int, opts prometheus.CounterOpts, labels []string) *cappedVec {
	return &cappedVec{name: opts.Name, vec: prometheus.NewCounterVec(opts, labels), labels: labels, series: newUsage(max)}
}

// counter returns the series for values, or the overflow series when the
// vector is full and nothing in it is idle enough to evict.
func (v *cappedVec) counter(now time.Time, evictAfter time.Duration, values []string) (c prometheus.Counter, folded, evicted bool) {
	key := strings.Join(values, keySep)
	ok, gone, evicted := v.series.admit(key, now, evictAfter)
	if evicted {
		v.vec.DeleteLabelValues(strings.Split(gone, keySep)...)
	}
	if !ok {
		return v.vec.WithLabelValues(v.overflow(values)...), true, evicted
	}
	return v.vec.WithLabelValues(values...), false, evicted
}

// overflow is the label set everything past the cap is counted under: the
// same verdict, signal and role, no comm and no container.
func (v *cappedVec) overflow(values []string) []string {
	out := make([]string, len(values))
	for i, l := range v.labels {
		switch l {
		case "comm", "container_id":
			out[i] = other
		case "namespace", "pod", "container":
			out[i] = ""
		default:
			out[i] = values[i]
		}
	}
	return out
}

// deleteWhere drops the series whose label has value, and returns how many.
func (v *cappedVec) deleteWhere(label, value string) int {
	i := 0
	for i < len(v.labels) && v.labels[i] != label {
		i++
	}
	n := 0
	for key := range v.series.last {
		if values := strings.Split(key, keySep); values[i] == value {
			v.series.forget(key)
			v.vec.DeleteLabelValues(values...)
			n++
		}
	}
	return n
}

// usage remembers when each of at most max keys was last used.
type usage struct {
	max  int
	last map[string]time.Time
}

func newUsage(max int) usage { return usage{max: max, last: make(map[string]time.Time)} }

// admit records a use of key and reports whether it may have a place: it
// has one, there is room, or the key used least recently had not been used
// for evictAfter and gave up its place (evicted, gone).
func (u *usage) admit(key string, now time.Time, evictAfter time.Duration) (ok bool, gone string, evicted bool) {
	if _, known := u.last[key]; known || len(u.last) < u.max {
		u.last[key] = now
		return true, "", false
	}
	var oldest time.Time
	found := false
	for k, t := range u.last {
		if !found || t.Before(oldest) {
			gone, oldest, found = k, t, true
		}
	}
	if !found || now.Sub(oldest) < evictAfter {
		return false, "", false
	}
	delete(u.last, gone)
	u.last[key] = now
	return true, gone, true
}

func (u *usage) forget(key string) { delete(u.last, key) }
