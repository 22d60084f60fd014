// Command genrules writes deploy/kubernetes/prometheusrule.yaml from the
// Prometheus rules file; `go generate ./deploy/kubernetes` runs it.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/orphanwatch/orphanwatch/deploy/kubernetes"
)

func main() {
	rules := flag.String("rules", "../prometheus/orphanwatch.rules.yml", "the Prometheus rules file")
	out := flag.String("out", "prometheusrule.yaml", "the PrometheusRule to write")
	flag.Parse()
	if err := generate(*rules, *out); err != nil {
		fmt.Fprintf(os.Stderr, "genrules: %v\n", err)
		os.Exit(1)
	}
}

func generate(rulesPath, outPath string) error {
	rules, err := os.ReadFile(rulesPath)
	if err != nil {
		return err
	}
	pr, err := kubernetes.PrometheusRule(rules)
	if err != nil {
		return fmt.Errorf("%s: %w", rulesPath, err)
	}
	if old, err := os.ReadFile(outPath); err == nil && bytes.Equal(old, pr) {
		return nil // unchanged: keep the file's time stamp
	}
	return os.WriteFile(outPath, pr, 0o644)
}
