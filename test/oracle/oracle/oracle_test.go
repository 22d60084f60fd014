package oracle

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestOracle is the bounded oracle `make test` runs: every family, at
// least 100 rounds on 3 workers with storms, PostgreSQL's log as the judge.
// ORACLE_SEED replays a seed; ORACLE_ROUNDS runs more rounds.
func TestOracle(t *testing.T) {
	testenv.RequirePostgres(t)
	testenv.RequireCommands(t, "cc", "script", "setsid")
	cfg := Config{Rounds: 100, Seed: rand.Uint64() >> 11, Round: -1, Workers: 3, PG: 15, Cluster: "namespace", Storms: true, Out: testWriter{t}}
	if s := os.Getenv("ORACLE_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ORACLE_SEED=%q: %v", s, err)
		}
		cfg.Seed = seed
	}
	if s := os.Getenv("ORACLE_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("ORACLE_ROUNDS=%q: want a positive number", s)
		}
		cfg.Rounds = n
	}
	t.Logf("seed %d (ORACLE_SEED=%d replays it)", cfg.Seed, cfg.Seed)
	began := time.Now()
	res, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var report testenv.Buffer
	res.Print(&report)
	t.Logf("%s", report.String())
	if res.Passed() {
		return
	}
	total := res.Stats[len(res.Stats)-1]
	switch res.ExitCode() {
	case 1:
		t.Errorf("orphanwatch disagrees with PostgreSQL's log: precision %s, recall %s, %d wrong postgres_log, %d mismatches (seed %d, %s)",
			percent(total.Matched, total.Records), percent(total.Matched, total.Lines), total.WrongLog, len(res.Mismatches), cfg.Seed, time.Since(began).Round(time.Second))
	default:
		t.Errorf("harness failure or inconclusive run, not a verdict on orphanwatch: %d harness failures, %d inconclusive (seed %d)",
			len(res.HarnessErrors), len(res.Inconclusive), cfg.Seed)
	}
}

// testWriter sends the oracle's progress to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}
