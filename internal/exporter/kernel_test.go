package exporter

import (
	"os/exec"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/orphanwatch/orphanwatch/internal/probe"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// The kernel's counters are read from the BPF map at scrape time: forks
// made between two scrapes show in the second.
func TestKernelCountersFromARealProbe(t *testing.T) {
	testenv.RequireRoot(t)
	p, err := probe.Load(probe.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	e := New(Config{})
	e.Attach(Sources{Kernel: p})
	reg := NewRegistry(e)

	before := gatherValue(t, reg, "orphanwatch_kernel_forks_total")
	for range 5 {
		if err := exec.Command("true").Run(); err != nil {
			t.Fatal(err)
		}
	}
	if after := gatherValue(t, reg, "orphanwatch_kernel_forks_total"); after < before+5 {
		t.Errorf("orphanwatch_kernel_forks_total went from %v to %v over 5 forks", before, after)
	}
	if lost := gatherValue(t, reg, "orphanwatch_events_lost_total"); lost != 0 {
		t.Errorf("orphanwatch_events_lost_total = %v on an idle probe", lost)
	}
	if n := testutil.CollectAndCount(e, "orphanwatch_program_info"); n != len(p.Attached()) || n < 6 {
		t.Errorf("orphanwatch_program_info has %d series, %d programs attached", n, len(p.Attached()))
	}
}

// gatherValue is the value of an unlabelled metric, as a scrape sees it.
func gatherValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s in the scrape", name)
	return 0
}
