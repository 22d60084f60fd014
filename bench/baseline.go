package main

import "fmt"

// today is what docs/benchmarks.md said before issue 14 (commit b45d29f),
// for each figure of its table that is orphanwatch's own cost: the changes
// for that issue must make none of them worse. Where the page gives a
// range over the day's runs, it is the range's worse end, as the page says;
// otherwise the table's figure. The machine's own figures (the storm with
// no tracer, the peer) are not orphanwatch's and have none. Lower is better
// for each.
var today = map[string]struct {
	value float64
	text  string
}{
	"host-overhead":       {1.035, "1.035 (1-3.5% over runs)"},
	"db-overhead":         {1.0603, "1.0603"},
	"db-bpf":              {1200, "1.1-1.2 µs"},
	"latency-default-p50": {0.754, "p50 754µs"},
	"latency-default-p99": {4.67, "p99 4.67ms"},
	"agent-cpu-default":   {0.01, "0.01 s"},
	"agent-hwm-default":   {25.1, "25.1 MiB"},
	"agent-idle-rss":      {24.0, "24.0 MiB"},
	"bpf-lifecycle":       {361, "328-361 ns"},
	"agent-cpu---all":     {0.86, "0.71-0.86 s"},
	"agent-hwm---all":     {27.4, "27.4 MiB"},
	"lost-all":            {0, "0"},
	"latency-all-p50":     {1.629, "p50 1.629ms"},
	"latency-all-p99":     {5.449, "p99 5.449ms"},
	"userspace-ns":        {107, "107 ns"},
	"userspace-allocs":    {0, "0 allocs"},
	"startup-median":      {716, "716ms"},
	"startup-max":         {727, "max 727ms"},
}

// noWorse adds the comparison with today's figure for key to a row's
// target, and misses the row if v is worse.
func (r row) noWorse(key string, v float64) row {
	base, ok := today[key]
	if !ok {
		panic("no figure of today for " + key)
	}
	was := fmt.Sprintf("today %s", base.text)
	if r.target == "" {
		r.target = "no worse: " + was
	} else {
		r.target += "; " + was
	}
	switch {
	case v > base.value:
		r.verdict = "MISS"
	case r.verdict == "":
		r.verdict = "PASS"
	}
	return r
}
