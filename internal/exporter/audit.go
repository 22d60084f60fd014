package exporter

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orphanwatch/orphanwatch/internal/audit"
	"github.com/orphanwatch/orphanwatch/internal/container"
)

// auditCacheFor bounds how often a scrape re-reads /proc and the cgroup
// tree for `orphanwatch check`'s findings: many scrapers at once must not
// turn into as many /proc scans.
const auditCacheFor = 10 * time.Second

// AuditCollector publishes `orphanwatch check`'s findings as gauges, so the
// hazard alerts fire before the first crash.
type AuditCollector struct {
	run   func() audit.Report
	names container.Namer
	now   func() time.Time

	mu     sync.Mutex
	cached audit.Report
	at     time.Time

	status, findings, overcommit               *prometheus.Desc
	pid1, oomScoreAdj, memLimit, memUsed, orph *prometheus.Desc
}

// NewAuditCollector runs the audit with run (audit.Default().Run in serve).
func NewAuditCollector(run func() audit.Report, names container.Namer) *AuditCollector {
	// A postmaster is told apart by its container, data directory and PID
	// namespace: two outside any recognised container may share a data
	// directory path (in different mount namespaces) or have none known,
	// and a series per pid would churn with every restart. pid_ns is bounded
	// by the postmasters running now.
	labels := append(append([]string{}, containerLabels...), "data_dir", "pid_ns")
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &AuditCollector{
		run: run, names: names, now: time.Now,
		status: desc("orphanwatch_check_status",
			"The worst finding of `orphanwatch check` now, as its exit status: 0 ok, 1 warning, 2 failure, 3 unknown."),
		findings: desc("orphanwatch_check_findings",
			"Findings of `orphanwatch check` now, by check and level.", "check", "level"),
		overcommit: desc("orphanwatch_vm_overcommit_memory",
			"The host's vm.overcommit_memory (PostgreSQL recommends 2 on hosts dedicated to it)."),
		pid1: desc("orphanwatch_postmaster_pid1",
			"One series per running postmaster, from `orphanwatch check`'s audit of /proc: 1 when it is PID 1 of its "+
				"PID namespace (it adopts every orphan there), else 0. orphanwatch_postmasters_pid1 counts them per "+
				"container from the live process table instead.", labels...),
		oomScoreAdj: desc("orphanwatch_postmaster_oom_score_adj",
			"The postmaster's oom_score_adj (-1000: the OOM killer never chooses it).", labels...),
		memLimit: desc("orphanwatch_postmaster_memory_limit_bytes",
			"The tightest memory cgroup limit over the postmaster's cgroup and its ancestors; absent when unlimited.", labels...),
		memUsed: desc("orphanwatch_postmaster_memory_used_bytes",
			"Anonymous and shared memory charged to the cgroup that sets that limit.", labels...),
		orph: desc("orphanwatch_postmaster_orphans",
			"Live orphans the postmaster has adopted now: each is a crash-restart waiting to happen.", labels...),
	}
}

func (a *AuditCollector) report() audit.Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.at.IsZero() || a.now().Sub(a.at) >= auditCacheFor {
		a.cached, a.at = a.run(), a.now()
	}
	return a.cached
}

func (a *AuditCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{a.status, a.findings, a.overcommit, a.pid1, a.oomScoreAdj, a.memLimit, a.memUsed, a.orph} {
		ch <- d
	}
}

func (a *AuditCollector) Collect(ch chan<- prometheus.Metric) {
	r := a.report()
	ch <- prometheus.MustNewConstMetric(a.status, prometheus.GaugeValue, float64(r.Status.ExitCode()))
	counts := map[[2]string]int{}
	for _, f := range r.Findings {
		counts[[2]string{string(f.Check), f.Level.String()}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(a.findings, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	if r.OvercommitMemory != nil {
		ch <- prometheus.MustNewConstMetric(a.overcommit, prometheus.GaugeValue, float64(*r.OvercommitMemory))
	}
	for i := range r.Postmasters {
		pm := &r.Postmasters[i]
		ref := pm.Container()
		var n container.Names
		if a.names != nil {
			n = a.names.Names(ref)
		}
		labels := append(containerValues(ref.ID, n.Namespace, n.Pod, n.Container), labelValue(pm.DataDir), pidNamespace(pm.PidNS))
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
		}
		gauge(a.pid1, boolValue(pm.PID1))
		gauge(a.oomScoreAdj, float64(pm.OOMScoreAdj))
		gauge(a.orph, float64(len(pm.Orphans)))
		if pm.Memory.LimitBytes != nil {
			gauge(a.memLimit, float64(*pm.Memory.LimitBytes))
			gauge(a.memUsed, float64(pm.Memory.UsedBytes))
		}
	}
}

// pidNamespace is a PID namespace's inode number as a label value; empty
// when it was unreadable.
func pidNamespace(ns uint64) string {
	if ns == 0 {
		return ""
	}
	return strconv.FormatUint(ns, 10)
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
