package exporter

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orphanwatch/orphanwatch/internal/kubeevents"
)

// KubeEventsCollector publishes what serve's Kubernetes Events did, by
// Event reason; every reason's series starts at 0.
type KubeEventsCollector struct {
	stats                             func() []kubeevents.Stats
	recorded, written, dropped, erred *prometheus.Desc
}

// NewKubeEventsCollector reads stats at scrape time (the Recorder's Stats).
func NewKubeEventsCollector(stats func() []kubeevents.Stats) *KubeEventsCollector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, []string{"reason"}, nil)
	}
	return &KubeEventsCollector{
		stats: stats,
		recorded: desc("orphanwatch_kubernetes_events_total",
			"Kubernetes Events recorded on PostgreSQL pods, by reason: every occurrence, repeats included (the Event's series counts them)."),
		written: desc("orphanwatch_kubernetes_event_writes_total",
			"Writes of Kubernetes Events the API server took (a create, or a patch of a series' count), by reason."),
		dropped: desc("orphanwatch_kubernetes_events_dropped_total", fmt.Sprintf(
			"Kubernetes Event writes not made because the pod's budget (%d at once, then 1 every %s) was spent, by reason.",
			kubeevents.Burst, kubeevents.Refill)),
		erred: desc("orphanwatch_kubernetes_event_write_errors_total",
			"Kubernetes Event writes that failed (refused by the API server, or it could not be reached), by reason."),
	}
}

func (c *KubeEventsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.recorded, c.written, c.dropped, c.erred} {
		ch <- d
	}
}

func (c *KubeEventsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.stats() {
		for _, m := range []struct {
			desc  *prometheus.Desc
			value uint64
		}{{c.recorded, s.Recorded}, {c.written, s.Written}, {c.dropped, s.Dropped}, {c.erred, s.Errors}} {
			ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.value), s.Reason)
		}
	}
}
