package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/orphanwatch/orphanwatch/internal/audit"
)

// check's exit statuses follow the monitoring-plugin convention, so it
// drops into Nagios/Icinga checks and CI as it is: 0 ok, 1 warning, 2
// failure (audit.Level.ExitCode), and 3 unknown, also for a usage error: the
// check could not be made.
const (
	checkOK      = 0
	checkUnknown = 3
)

func checkCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	var sel audit.Selector
	var pid uint32
	var names namerFlags
	fs.Func("pid", "only the postmaster with this `pid` (as the host sees it)", numberFlag(&pid, func(n uint64) bool { return n > 0 }, "must be a process id greater than 0"))
	fs.Func("container", "only the postmasters in this container: its `name or id` (or a prefix of the id), as docker ps or kubectl show them", func(s string) error {
		if _, err := audit.ContainerPrefix(s); err != nil {
			return err
		}
		sel.Container = s
		return nil
	})
	names.register(fs)
	jsonOut := fs.Bool("json", false, "print one JSON object with every postmaster and finding instead of the report")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: orphanwatch check [flags]

Audit every running postmaster (no BPF needed; reads /proc and /sys/fs/cgroup, as root or with CAP_SYS_PTRACE):
PID 1 of its PID namespace, or what is PID 1 instead and whether it reaps every orphan; when the postmaster is
PID 1, the Docker HEALTHCHECK (from --docker-root) and Kubernetes exec probes (with --kubernetes) that would
orphan processes to it; oom_score_adj of the postmaster and its server processes, the memory limit and
memory.oom.group of its cgroup, vm.overcommit_memory, and the orphans it has adopted right now.

Exit status: 0 all good, 1 warnings, 2 failures, 3 unknown (could not check, or a usage error).

Flags:
`)
		fs.PrintDefaults()
	}
	switch st := parseFlags(fs, args, stderr); st {
	case -1:
	case exitOK:
		return checkOK // -h
	default:
		return checkUnknown // 2 would read as a failure of the check
	}
	sel.PID = int(pid)
	if sel.PID != 0 && sel.Container != "" {
		fmt.Fprintln(stderr, "orphanwatch check: give --pid or --container, not both")
		return checkUnknown
	}

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	namer, closeNamer := names.namer(context.Background(), log)
	defer closeNamer()
	host := audit.Default()
	host.Names = namer
	r := host.Run(sel)
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(&r); err != nil {
			fmt.Fprintf(stderr, "orphanwatch check: writing the report: %v\n", err)
			return checkUnknown
		}
	} else if err := r.WriteText(stdout); err != nil {
		fmt.Fprintf(stderr, "orphanwatch check: writing the report: %v\n", err)
		return checkUnknown
	}
	return r.Status.ExitCode()
}
