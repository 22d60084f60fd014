package probe

import "fmt"

// Counters are the kernel's own tallies, summed over CPUs.
type Counters struct {
	Lost              uint64 // events dropped: the ring buffer was full
	Forks             uint64 // processes forked since attach
	Exits             uint64 // processes exited since attach
	BirthsEvicted     uint64 // exits whose birth record the LRU map had evicted
	ChildrenTruncated uint64 // exiting parents (threads) with more children than --max-children
}

// Counters reads the per-CPU counters map. Safe for concurrent use.
func (p *Probe) Counters() (Counters, error) {
	var c Counters
	var perCPU []uint64
	for key, dst := range map[lifecycleCounter]*uint64{
		lifecycleCounterCOUNTER_RINGBUF_FULL:       &c.Lost,
		lifecycleCounterCOUNTER_FORKS:              &c.Forks,
		lifecycleCounterCOUNTER_EXITS:              &c.Exits,
		lifecycleCounterCOUNTER_BIRTHS_EVICTED:     &c.BirthsEvicted,
		lifecycleCounterCOUNTER_CHILDREN_TRUNCATED: &c.ChildrenTruncated,
	} {
		if err := p.lifecycle.Counters.Lookup(uint32(key), &perCPU); err != nil {
			return c, fmt.Errorf("reading counter %d: %w", key, err)
		}
		for _, n := range perCPU {
			*dst += n
		}
	}
	return c, nil
}
