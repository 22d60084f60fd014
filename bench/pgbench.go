package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

var (
	tpsLine          = regexp.MustCompile(`(?m)^tps = ([\d.]+)`)
	transactionsLine = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
)

// pgbenchRatio measures PostgreSQL's own throughput with a connection per
// transaction (pgbench -C: the postmaster forks a backend for each, which
// exits at its end), with and without serve, over the unix socket. The
// postmaster is PID 1 of its namespace, so serve records every backend's
// birth and reports its reaping: its costliest path, with the agent's user
// space competing for the same 2 CPUs. Each round runs pgbench without and
// with serve, back to back, in alternating order, and keeps the ratio:
// the machine's throughput drifts over minutes, so only adjacent runs
// compare. TPS drifts by several percent from run to run here, far more
// than serve can cost a 45-60 ms connection, so the rows also give serve's
// own cost per connection, which that drift does not move: the kernel's
// run time of its programs and the agent's CPU time over the transactions
// of its runs.
func pgbenchRatio(db *testenv.Cluster, work string) ([]row, error) {
	script := filepath.Join(work, "select1.sql")
	if err := os.WriteFile(script, []byte("SELECT 1;\n"), 0o644); err != nil {
		return nil, err
	}
	var transactions int
	bench := func() (float64, error) {
		out, err := exec.Command(filepath.Join(testenv.PGBin, "pgbench"), "-h", db.Socket, "-U", "postgres",
			"-n", "-C", "-c", "2", "-j", "2", "-T", strconv.Itoa(*pgSeconds), "-f", script, "postgres").CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("pgbench: %v: %s", err, out)
		}
		m, n := tpsLine.FindSubmatch(out), transactionsLine.FindSubmatch(out)
		if m == nil || n == nil {
			return 0, fmt.Errorf("pgbench printed no tps: %s", out)
		}
		transactions, _ = strconv.Atoi(string(n[1]))
		return strconv.ParseFloat(string(m[1]), 64)
	}
	if _, err := bench(); err != nil { // warm the server's caches
		return nil, err
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enabling BPF run-time statistics: %w", err)
	}
	defer stats.Close()
	var bpf, agentCPU time.Duration
	var served int // transactions with serve
	var ratios, bases []float64
	for r := range *pgRounds {
		var with, without float64
		for i := range 2 {
			var err error
			if (r+i)%2 == 0 {
				if without, err = bench(); err != nil {
					return nil, err
				}
				continue
			}
			t, err := startServe(false)
			if err != nil {
				return nil, err
			}
			time.Sleep(500 * time.Millisecond) // past start-up's /proc sweep
			progs0, perr := heldPrograms(t.pid)
			cpu0, uerr := cpuTime(t.pid)
			with, err = bench()
			progs1, perr1 := heldPrograms(t.pid)
			cpu1, uerr1 := cpuTime(t.pid)
			t.stop()
			if err = errors.Join(err, perr, uerr, perr1, uerr1); err != nil {
				return nil, err
			}
			bpf += progs1.since(progs0).total().runtime
			agentCPU += cpu1 - cpu0
			served += transactions
		}
		ratios, bases = append(ratios, with/without), append(bases, without)
		say("pgbench -C round %d/%d: none %.1f tps, serve %.1f tps (%.3f)", r+1, *pgRounds, without, with, with/without)
	}
	slices.Sort(ratios)
	med, lo, hi := quartiles(ratios)
	perConnection := time.Duration(float64(time.Second) / medianF(bases) * 2) // 2 clients
	return []row{
		{fmt.Sprintf("pgbench -C (select 1, 2 clients, unix socket), PID-1 postmaster, no tracer (median of %d runs of %ds)", *pgRounds, *pgSeconds),
			fmt.Sprintf("%.1f tps, %s per connection", medianF(bases), perConnection.Round(100*time.Microsecond)), "", ""},
		{fmt.Sprintf("pgbench -C TPS: serve / none (median of %d paired rounds)", *pgRounds),
			fmt.Sprintf("%.4f (IQR %.3f-%.3f)", med, lo, hi), ">= 0.99", pass(med >= 0.99)},
		{fmt.Sprintf("serve's own cost per pgbench -C connection (%d connections)", served),
			fmt.Sprintf("BPF %s (kernel's run_time_ns), agent CPU %s", (bpf / time.Duration(max(served, 1))).Round(100*time.Nanosecond),
				(agentCPU / time.Duration(max(served, 1))).Round(time.Microsecond)), "", ""},
	}, nil
}
