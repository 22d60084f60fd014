// Command oracle is orphanwatch's differential oracle: seeded rounds of
// incidents against a real PostgreSQL whose postmaster is PID 1 of its
// namespace, judged by PostgreSQL's own log. See docs/accuracy.md.
//
//	go run ./test/oracle -rounds 1000 -seed 42 [-families a,b] [-round k] [-workers 3] [-v]
//
// Exit status: 0 all matched; 1 orphanwatch disagreed with PostgreSQL;
// 2 the harness failed or the run proved nothing; 3 it could not run.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
	"github.com/orphanwatch/orphanwatch/test/oracle/oracle"
)

func main() {
	cfg := oracle.Config{Out: os.Stdout}
	var families string
	var seed int64
	flag.IntVar(&cfg.Rounds, "rounds", 1000, "rounds to run")
	flag.Int64Var(&seed, "seed", -1, "seed (negative: a random one, printed)")
	flag.StringVar(&families, "families", "", "comma-separated families to run (default all): "+names())
	flag.IntVar(&cfg.Round, "round", -1, "replay only this round of the seed")
	flag.IntVar(&cfg.From, "from", 0, "the first round: run rounds from..from+rounds-1 of the seed")
	flag.IntVar(&cfg.Workers, "workers", 3, "rounds run at once against the same cluster")
	flag.IntVar(&cfg.PG, "pg", 15, "PostgreSQL major version")
	flag.StringVar(&cfg.Cluster, "cluster", "namespace", "kind of cluster")
	flag.BoolVar(&cfg.Storms, "storms", true, "fork storms on the host and inside the namespace during the rounds")
	flag.BoolVar(&cfg.Verbose, "v", false, "print every round")
	flag.StringVar(&cfg.Artifacts, "artifacts", "", "write the PostgreSQL logs, trace's output and the rounds to this directory")
	flag.Parse()
	if seed < 0 {
		seed = rand.Int64N(1 << 53)
	}
	cfg.Seed = uint64(seed)
	if families != "" {
		cfg.Families = strings.Split(families, ",")
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "oracle: needs root (BPF, PID namespaces)")
		os.Exit(3)
	}
	// The first Ctrl-C ends the run cleanly (clusters stopped, judged); a
	// second one kills it at once.
	interrupt := make(chan struct{})
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		close(interrupt)
		signal.Stop(signals)
	}()
	cfg.Interrupt = interrupt
	fmt.Printf("oracle: seed %d (replay a round with -seed %d -round N)\n", cfg.Seed, cfg.Seed)
	res, err := oracle.Run(cfg)
	testenv.RemoveBuilt()
	if err != nil {
		fmt.Fprintf(os.Stderr, "oracle: %v\n", err)
		os.Exit(3)
	}
	res.Print(os.Stdout)
	os.Exit(res.ExitCode())
}

func names() string {
	var out []string
	for _, f := range oracle.Families {
		out = append(out, f.Name)
	}
	return strings.Join(out, ",")
}
