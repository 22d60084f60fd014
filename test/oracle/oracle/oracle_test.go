package oracle

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestOracle is the bounded oracle `make test` runs, on every PostgreSQL
// major orphanwatch supports: every family, with storms, on 3 workers,
// PostgreSQL's log as the judge; the same seed's rounds on each version.
// The host's PostgreSQL runs 100 rounds in a PID namespace, the others
// (Docker containers of Debian's packages) 50 each. ORACLE_SEED replays a
// seed; ORACLE_ROUNDS runs that many rounds on each; ORACLE_PG picks the
// versions (default 13,15,17,18).
func TestOracle(t *testing.T) {
	seed := rand.Uint64() >> 11
	if s := os.Getenv("ORACLE_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ORACLE_SEED=%q: %v", s, err)
		}
		seed = n
	}
	rounds := 0
	if s := os.Getenv("ORACLE_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("ORACLE_ROUNDS=%q: want a positive number", s)
		}
		rounds = n
	}
	versions := []int{13, 15, 17, 18}
	if s := os.Getenv("ORACLE_PG"); s != "" {
		versions = nil
		for _, v := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("ORACLE_PG=%q: want major versions such as 13,15,17,18", s)
			}
			versions = append(versions, n)
		}
	}
	t.Logf("seed %d (ORACLE_SEED=%d replays it)", seed, seed)
	var results []*Result
	for _, version := range versions {
		t.Run(fmt.Sprintf("postgres%d", version), func(t *testing.T) {
			cfg := Config{Rounds: 50, Seed: seed, Round: -1, Workers: 3, PG: version, Cluster: AutoKind(version), Storms: true, Out: testWriter{t}}
			if cfg.Cluster == "namespace" {
				cfg.Rounds = 100
				testenv.RequirePostgres(t)
				testenv.RequireCommands(t, "script", "setsid")
			} else {
				testenv.RequireDocker(t)
				testenv.RequireCommands(t, "nsenter")
			}
			testenv.RequireCommands(t, "cc")
			if rounds > 0 {
				cfg.Rounds = rounds
			}
			res := runOracle(t, cfg)
			if res != nil {
				results = append(results, res)
			}
		})
	}
	if len(results) > 1 {
		var matrix testenv.Buffer
		PrintMatrix(&matrix, results)
		t.Logf("%s", matrix.String())
	}
}

// runOracle runs one version's oracle and fails the test unless it passed.
func runOracle(t *testing.T, cfg Config) *Result {
	began := time.Now()
	res, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var report testenv.Buffer
	res.Print(&report)
	t.Logf("%s", report.String())
	if res.Passed() {
		return res
	}
	total := res.Stats[len(res.Stats)-1]
	switch res.ExitCode() {
	case 1:
		t.Errorf("orphanwatch disagrees with PostgreSQL %d's log: precision %s, recall %s, %d wrong postgres_log, %d mismatches (seed %d, %s)",
			cfg.PG, percent(total.Matched, total.Records), percent(total.Matched, total.Lines), total.WrongLog, len(res.Mismatches), cfg.Seed, time.Since(began).Round(time.Second))
		for i, m := range res.Mismatches {
			t.Errorf("mismatch %d on PostgreSQL %d: %s", i+1, cfg.PG, m.Summary(cfg))
		}
		for _, e := range res.OrphanwatchErrors {
			t.Errorf("orphanwatch error on PostgreSQL %d: %s", cfg.PG, strings.ReplaceAll(e, "\n", " | "))
		}
	default:
		t.Errorf("harness failure or inconclusive run on PostgreSQL %d, not a verdict on orphanwatch: %d harness failures, %d inconclusive (seed %d)",
			cfg.PG, len(res.HarnessErrors), len(res.Inconclusive), cfg.Seed)
		for _, e := range append(res.HarnessErrors, res.Inconclusive...) {
			t.Errorf("on PostgreSQL %d: %s", cfg.PG, strings.ReplaceAll(e, "\n", " | "))
		}
	}
	return res
}

// testWriter sends the oracle's progress to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}
