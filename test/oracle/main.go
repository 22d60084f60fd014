// Command oracle is orphanwatch's differential oracle: seeded rounds of
// incidents against a real PostgreSQL whose postmaster is PID 1 of its
// namespace, judged by PostgreSQL's own log. See docs/accuracy.md.
//
//	go run ./test/oracle -rounds 1000 -seed 42 [-pg 13,15,17,18] [-families a,b] [-round k] [-workers 3] [-v]
//
// With several versions the same seed's rounds run against each in turn
// (the host's PostgreSQL in a PID namespace, the others in Docker
// containers), each judged by its own log, then a matrix is printed.
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
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
	"github.com/orphanwatch/orphanwatch/test/oracle/oracle"
)

func main() {
	cfg := oracle.Config{Out: os.Stdout}
	var families, versions, artifacts string
	var seed int64
	flag.IntVar(&cfg.Rounds, "rounds", 1000, "rounds to run (on each version)")
	flag.Int64Var(&seed, "seed", -1, "seed (negative: a random one, printed)")
	flag.StringVar(&families, "families", "", "comma-separated families to run (default all): "+names())
	flag.IntVar(&cfg.Round, "round", -1, "replay only this round of the seed")
	flag.IntVar(&cfg.From, "from", 0, "the first round: run rounds from..from+rounds-1 of the seed")
	flag.IntVar(&cfg.Workers, "workers", 3, "rounds run at once against the same cluster")
	flag.StringVar(&versions, "pg", strconv.Itoa(oracle.HostMajor()), "PostgreSQL major version(s), comma-separated: 13,15,17,18")
	flag.StringVar(&cfg.Cluster, "cluster", "auto", "kind of cluster: namespace (the host's PostgreSQL), docker, or auto (namespace for the host's major, docker for the others)")
	flag.BoolVar(&cfg.Storms, "storms", true, "fork storms on the host and inside the namespace during the rounds")
	flag.BoolVar(&cfg.Verbose, "v", false, "print every round")
	flag.StringVar(&artifacts, "artifacts", "", "write the PostgreSQL logs, trace's output and the rounds to this directory (pgN/ under it for each version of several)")
	flag.Parse()
	if seed < 0 {
		seed = rand.Int64N(1 << 53)
	}
	cfg.Seed = uint64(seed)
	if families != "" {
		cfg.Families = strings.Split(families, ",")
	}
	var majors []int
	for _, v := range strings.Split(versions, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			fmt.Fprintf(os.Stderr, "oracle: -pg %q: want major versions such as 13,15,17,18\n", versions)
			os.Exit(3)
		}
		majors = append(majors, n)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "oracle: needs root (BPF, PID namespaces, Docker)")
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
	var results []*oracle.Result
	for _, major := range majors {
		run := cfg
		run.PG = major
		run.Artifacts = artifacts
		if artifacts != "" && len(majors) > 1 {
			run.Artifacts = filepath.Join(artifacts, fmt.Sprintf("pg%d", major))
		}
		fmt.Printf("oracle: PostgreSQL %d\n", major)
		res, err := oracle.Run(run)
		if err != nil {
			testenv.RemoveBuilt()
			fmt.Fprintf(os.Stderr, "oracle: PostgreSQL %d: %v\n", major, err)
			os.Exit(3)
		}
		res.Print(os.Stdout)
		results = append(results, res)
		select {
		case <-interrupt:
			fmt.Println("oracle: interrupted: the versions left are not run")
		default:
			continue
		}
		break
	}
	testenv.RemoveBuilt()
	if len(results) > 1 {
		oracle.PrintMatrix(os.Stdout, results)
	}
	os.Exit(oracle.ExitCode(results))
}

func names() string {
	var out []string
	for _, f := range oracle.Families {
		out = append(out, f.Name)
	}
	return strings.Join(out, ",")
}
