package exporter

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/orphanwatch/orphanwatch/internal/kubeevents"
)

// Every reason has its series from the start, so that increase() and
// alerts see the first drop.
func TestKubeEventsCountersByReason(t *testing.T) {
	stats := make([]kubeevents.Stats, len(kubeevents.Reasons))
	for i, r := range kubeevents.Reasons {
		stats[i] = kubeevents.Stats{Reason: r}
	}
	stats[0] = kubeevents.Stats{Reason: kubeevents.ReasonCrashRestart, Recorded: 50, Written: 2, Dropped: 0, Errors: 1}
	stats[2].Dropped = 5
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewKubeEventsCollector(func() []kubeevents.Stats { return stats }))
	want := `
# HELP orphanwatch_kubernetes_events_dropped_total Kubernetes Event writes not made because the pod's budget (10 at once, then 1 every 1m0s) was spent, by reason.
# TYPE orphanwatch_kubernetes_events_dropped_total counter
orphanwatch_kubernetes_events_dropped_total{reason="PostgresCrashRestart"} 0
orphanwatch_kubernetes_events_dropped_total{reason="PostgresCrashRestartUnexplained"} 0
orphanwatch_kubernetes_events_dropped_total{reason="PostgresOOMKill"} 5
orphanwatch_kubernetes_events_dropped_total{reason="PostmasterIsPID1"} 0
# HELP orphanwatch_kubernetes_events_total Kubernetes Events recorded on PostgreSQL pods, by reason: every occurrence, repeats included (the Event's series counts them).
# TYPE orphanwatch_kubernetes_events_total counter
orphanwatch_kubernetes_events_total{reason="PostgresCrashRestart"} 50
orphanwatch_kubernetes_events_total{reason="PostgresCrashRestartUnexplained"} 0
orphanwatch_kubernetes_events_total{reason="PostgresOOMKill"} 0
orphanwatch_kubernetes_events_total{reason="PostmasterIsPID1"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "orphanwatch_kubernetes_events_total", "orphanwatch_kubernetes_events_dropped_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 4*len(kubeevents.Reasons) {
		t.Errorf("%d series (%v), want %d", n, err, 4*len(kubeevents.Reasons))
	}
}
