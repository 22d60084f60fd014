// Command genfiles copies the alert rules and the Grafana dashboard into
// the Helm chart; `go generate ./deploy/helm` runs it.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/orphanwatch/orphanwatch/deploy/helm"
)

func main() {
	root := flag.String("root", "../..", "the repository's top directory")
	flag.Parse()
	for _, c := range helm.Copies {
		if err := c.Write(*root); err != nil {
			fmt.Fprintf(os.Stderr, "genfiles: %v\n", err)
			os.Exit(1)
		}
	}
}
