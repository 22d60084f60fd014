package oracle

import "testing"

// The counters come from trace's summary, and the misordered reaps from
// its warning, printed only when there are some.
func TestCountersFromTraceSummary(t *testing.T) {
	summary := "orphanwatch: kernel saw 41 forks and 32 exits; lost events 1, malformed 0, birth records evicted 0, " +
		"orphans not reported (too many children) 0, table evictions 0, mispredicted adoptions 2, reaps missed 0, " +
		"postmasters rediscovered 0, unexplained crash-restarts 0\n"
	c := parseCounters(summary)
	if !c.Found || c.Forks != 41 || c.Lost != 1 || c.Mispredicted != 2 || c.Misordered != 0 {
		t.Errorf("counters = %+v", c)
	}
	c = parseCounters(summary + "orphanwatch: WARNING: 3 reaps misordered: the kernel named them at a waitpid that reaped another child\n")
	if c.Misordered != 3 {
		t.Errorf("misordered = %d, want 3", c.Misordered)
	}
}
