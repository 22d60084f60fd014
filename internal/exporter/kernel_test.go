package exporter

import (
	"os"
	"os/exec"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/orphanwatch/orphanwatch/internal/event"
	"github.com/orphanwatch/orphanwatch/internal/probe"
	"github.com/orphanwatch/orphanwatch/internal/procfs"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// The kernel's counters are read at scrape time: forks made between two
// scrapes show in the second. The fork program runs only while a
// postmaster is watched, the exec program that only compares comms only
// while none is, and the scrape says which programs are attached.
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
	attached := func(program string) float64 {
		return gatherLabelled(t, reg, "orphanwatch_programs_attached", "program", program)
	}
	idle := func(when string) {
		t.Helper()
		if attached("handle_exec_idle") != 1 || attached("handle_exec") != 0 || attached("handle_fork") != 0 {
			t.Errorf("%s: handle_exec_idle attached %v, handle_exec %v, handle_fork %v; want 1, 0 and 0",
				when, attached("handle_exec_idle"), attached("handle_exec"), attached("handle_fork"))
		}
	}
	idle("nothing watched")

	// Any live process stands in for a postmaster here: the kernel only
	// keys on its pid and start.
	st, err := procfs.Default.ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	self := event.ProcessKey{PID: uint32(os.Getpid()), StartTicks: st.StartTicks}
	if err := p.Watch(self); err != nil {
		t.Fatal(err)
	}
	if attached("handle_fork") != 1 || attached("handle_exit") != 1 || attached("handle_exec") != 1 || attached("handle_exec_idle") != 0 {
		t.Errorf("a postmaster watched: fork attached %v, exit %v, handle_exec %v, handle_exec_idle %v; want 1, 1, 1 and 0",
			attached("handle_fork"), attached("handle_exit"), attached("handle_exec"), attached("handle_exec_idle"))
	}
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
	if n := testutil.CollectAndCount(e, "orphanwatch_programs_attached"); n != len(p.Programs()) || n < 6 {
		t.Errorf("orphanwatch_programs_attached has %d series, %d programs loaded", n, len(p.Programs()))
	}

	if err := p.Unwatch(self.PID); err != nil {
		t.Fatal(err)
	}
	idle("the last postmaster gone")
	if n := gatherValue(t, reg, "orphanwatch_program_switches_total"); n != 2 {
		t.Errorf("orphanwatch_program_switches_total = %v after one watch and unwatch, want 2", n)
	}
}

// gatherLabelled is the value of the series of a metric whose label has
// value.
func gatherLabelled(t *testing.T, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return 0
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
