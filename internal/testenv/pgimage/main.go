// Command pgimage builds orphanwatch's PostgreSQL test images on the private
// Docker Engine (started if need be), so CI and humans can build them
// before the tests: go run ./internal/testenv/pgimage 13 15 17 18
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintf(os.Stderr, "usage: pgimage VERSION... (known: %v)\n", testenv.PostgresSuites)
		os.Exit(2)
	}
	e, err := testenv.StartDocker()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgimage:", err)
		os.Exit(1)
	}
	// debootstrap is mostly waiting on the mirror: the versions build side by side.
	var wg sync.WaitGroup
	failed := make(chan error, len(os.Args))
	for _, arg := range os.Args[1:] {
		version, err := strconv.Atoi(arg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "pgimage: %q is not a major version\n", arg)
			os.Exit(2)
		}
		wg.Go(func() {
			start := time.Now()
			tag, err := testenv.BuildPostgresImage(e, version, prefixed{fmt.Sprintf("[%d] ", version)})
			if err != nil {
				failed <- fmt.Errorf("PostgreSQL %d: %w", version, err)
				return
			}
			fmt.Printf("%s ready (%s)\n", tag, time.Since(start).Round(time.Second))
		})
	}
	wg.Wait()
	close(failed)
	status := 0
	for err := range failed {
		fmt.Fprintln(os.Stderr, "pgimage:", err)
		status = 1
	}
	os.Exit(status)
}

type prefixed struct{ prefix string }

func (p prefixed) Write(b []byte) (int, error) {
	os.Stdout.WriteString(p.prefix + string(b))
	return len(b), nil
}
