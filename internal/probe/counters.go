package probe

import (
	"fmt"

	"github.com/orphanwatch/orphanwatch/internal/procfs"
)

// Counters are the kernel's own tallies, summed over CPUs.
type Counters struct {
	Lost              uint64 // events dropped: the ring buffer was full
	Forks             uint64 // tasks (processes and threads) the host created since Load
	Exits             uint64 // tasks that ended since Load
	BirthsEvicted     uint64 // exits whose birth record the LRU map had evicted
	ChildrenTruncated uint64 // exiting parents (threads) with more children than --max-children
}

// Counters reads the per-CPU counters map, and the host's task tallies.
// Safe for concurrent use.
func (p *Probe) Counters() (Counters, error) {
	var c Counters
	for key, dst := range map[lifecycleCounter]*uint64{
		lifecycleCounterCOUNTER_RINGBUF_FULL:       &c.Lost,
		lifecycleCounterCOUNTER_BIRTHS_EVICTED:     &c.BirthsEvicted,
		lifecycleCounterCOUNTER_CHILDREN_TRUNCATED: &c.ChildrenTruncated,
	} {
		n, err := p.counter(key)
		if err != nil {
			return c, err
		}
		*dst = n
	}
	// Forks and exits are the kernel's tallies, not the programs': counting
	// in the fork and exit programs cost every process on the node a
	// per-CPU map slot (150-300 ns here, docs/benchmarks.md).
	now, err := procfs.Default.ReadTasks()
	if err != nil {
		return c, fmt.Errorf("reading the host's task counts: %w", err)
	}
	c.Forks = now.Forked - p.tasksAtLoad.Forked
	// Those that ended: created, less those that are still more than at
	// Load. The two files are read apart, so a read can come out a few
	// under the last one: the counter never goes back.
	ended := int64(c.Forks) + int64(p.tasksAtLoad.Alive) - int64(now.Alive)
	for {
		last := p.exits.Load()
		if ended <= int64(last) {
			c.Exits = last
			break
		}
		if p.exits.CompareAndSwap(last, uint64(ended)) {
			c.Exits = uint64(ended)
			break
		}
	}
	return c, nil
}

// Lost reads only the count of events the ring buffer dropped: the agent
// asks after every drain of the ring buffer, too often to read /proc.
func (p *Probe) Lost() (uint64, error) {
	return p.counter(lifecycleCounterCOUNTER_RINGBUF_FULL)
}

// counter sums one of the programs' per-CPU counters.
func (p *Probe) counter(key lifecycleCounter) (uint64, error) {
	var perCPU []uint64
	if err := p.lifecycle.Counters.Lookup(uint32(key), &perCPU); err != nil {
		return 0, fmt.Errorf("reading counter %d: %w", key, err)
	}
	var n uint64
	for _, v := range perCPU {
		n += v
	}
	return n, nil
}
