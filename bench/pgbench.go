package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

var tpsLine = regexp.MustCompile(`(?m)^tps = ([\d.]+)`)

// pgbenchRatio measures PostgreSQL's own throughput with a connection per
// transaction (pgbench -C: the postmaster forks a backend for each, which
// exits at its end), with and without serve, over the unix socket. The
// postmaster is PID 1 of its namespace, so serve records every backend's
// birth and reports its reaping: its costliest path, with the agent's user
// space competing for the same 2 CPUs. Each round runs pgbench without and
// with serve, back to back, in alternating order, and keeps the ratio:
// the machine's throughput drifts over minutes, so only adjacent runs
// compare.
func pgbenchRatio(db *testenv.Cluster, work string) ([]row, error) {
	script := filepath.Join(work, "select1.sql")
	if err := os.WriteFile(script, []byte("SELECT 1;\n"), 0o644); err != nil {
		return nil, err
	}
	bench := func() (float64, error) {
		out, err := exec.Command(filepath.Join(testenv.PGBin, "pgbench"), "-h", db.Socket, "-U", "postgres",
			"-n", "-C", "-c", "2", "-j", "2", "-T", strconv.Itoa(*pgSeconds), "-f", script, "postgres").CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("pgbench: %v: %s", err, out)
		}
		m := tpsLine.FindSubmatch(out)
		if m == nil {
			return 0, fmt.Errorf("pgbench printed no tps: %s", out)
		}
		return strconv.ParseFloat(string(m[1]), 64)
	}
	if _, err := bench(); err != nil { // warm the server's caches
		return nil, err
	}
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
			with, err = bench()
			t.stop()
			if err != nil {
				return nil, err
			}
		}
		ratios, bases = append(ratios, with/without), append(bases, without)
		say("pgbench -C round %d/%d: none %.1f tps, serve %.1f tps (%.3f)", r+1, *pgRounds, without, with, with/without)
	}
	slices.Sort(ratios)
	med, lo, hi := quartiles(ratios)
	return []row{
		{fmt.Sprintf("pgbench -C (select 1, 2 clients, unix socket), PID-1 postmaster, no tracer (median of %d runs of %ds)", *pgRounds, *pgSeconds),
			fmt.Sprintf("%.1f tps", medianF(bases)), "", ""},
		{fmt.Sprintf("pgbench -C TPS: serve / none (median of %d paired rounds)", *pgRounds),
			fmt.Sprintf("%.4f (IQR %.3f-%.3f)", med, lo, hi), ">= 0.99", pass(med >= 0.99)},
	}, nil
}
