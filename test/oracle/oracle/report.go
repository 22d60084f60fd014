package oracle

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// replay is the command that runs round i alone.
func replay(cfg Config, i int) string {
	return fmt.Sprintf("go run ./test/oracle -pg %d%s -seed %d -round %d%s", cfg.PG, clusterFlag(cfg), cfg.Seed, i, familiesFlag(cfg))
}

// replayAround runs round i with the rounds that ran beside it, on as many
// workers: a miss that needs a concurrent reset may need them.
func replayAround(cfg Config, i int) string {
	from := max(0, i-cfg.Workers)
	return fmt.Sprintf("go run ./test/oracle -pg %d%s -seed %d -from %d -rounds %d -workers %d%s", cfg.PG, clusterFlag(cfg), cfg.Seed, from, i-from+cfg.Workers+1, cfg.Workers, familiesFlag(cfg))
}

func familiesFlag(cfg Config) string {
	if len(cfg.Families) == 0 {
		return ""
	}
	return " -families " + strings.Join(cfg.Families, ",")
}

// clusterFlag names the kind of cluster when it is not the version's default.
func clusterFlag(cfg Config) string {
	if cfg.Cluster == "" || cfg.Cluster == AutoKind(cfg.PG) {
		return ""
	}
	return " -cluster " + cfg.Cluster
}

// Print writes the table, every mismatch with its context, orphanwatch's
// counters and the verdict.
func (res *Result) Print(w io.Writer) {
	cfg := res.Config
	fmt.Fprintf(w, "\norphanwatch differential oracle: seed %d, %d round(s), %d worker(s), PostgreSQL %d (%s cluster), %d cluster instance(s), storms %v, %s\n\n",
		cfg.Seed, len(res.Rounds), cfg.Workers, cfg.PG, cfg.Cluster, len(res.Instances), cfg.Storms, res.Elapsed.Round(time.Second))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "family\trounds\tmeant to crash\tmasked\tcrash lines\trecords\tmatched\tprecision\trecall\twrong log\tharness errors\t")
	for _, s := range res.Stats {
		if s.Rounds == 0 && s.Lines == 0 && s.Records == 0 {
			continue // a replay or a subset: the families that did not run
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%d\t%d\t\n", s.Name, s.Rounds, s.ExpectCrash, s.Silent, s.Lines, s.Records, s.Matched,
			percent(s.Matched, s.Records), percent(s.Matched, s.Lines), s.WrongLog, s.HarnessErrors)
	}
	tw.Flush()
	fmt.Fprintln(w, "\n(meant to crash: rounds that did something PostgreSQL logs as a crash; masked: of those, rounds with no crash line, the server being already in another round's reset)")
	if c := res.CleanExits; c.Lines > 0 || c.Records > 0 {
		fmt.Fprintf(w, "\nexits 0 and 1 of untracked children PostgreSQL logged (18+): %d lines, %d adopted records predicting one, %d matched, precision %s, recall %s, %d wrong log\n",
			c.Lines, c.Records, c.Matched, percent(c.Matched, c.Records), percent(c.Matched, c.Lines), c.WrongLog)
	}

	for i, m := range res.Mismatches {
		fmt.Fprintf(w, "\nMISMATCH %d: %s\n", i+1, m.Kind)
		if m.Line != nil {
			fmt.Fprintf(w, "  postgres (cluster %d, log line %d): %s\n", m.Instance, m.Line.Number, m.Line.Text)
		}
		if m.Record != nil {
			fmt.Fprintf(w, "  record: %s\n", m.Record.Line)
			if m.Kind == "wrong postgres_log" {
				fmt.Fprintf(w, "  postgres_log %q, PostgreSQL logged %q\n", m.Record.PostgresLog, m.Line.Message)
			}
		}
		if m.Round != nil {
			fmt.Fprintf(w, "  %s, %s to %s\n", m.Round, clock(m.Round.Start), clock(m.Round.End))
			var procs []string
			for _, p := range m.Round.Procs {
				procs = append(procs, p.String())
			}
			fmt.Fprintf(w, "    processes: %s\n", strings.Join(procs, ", "))
			for _, n := range m.Round.Notes {
				fmt.Fprintf(w, "    note: %s\n", n)
			}
			fmt.Fprintf(w, "    replay: %s\n", replay(res.Config, m.Round.Index))
			if res.Config.Workers > 1 {
				fmt.Fprintf(w, "    with its neighbours: %s\n", replayAround(res.Config, m.Round.Index))
			}
		} else {
			fmt.Fprintf(w, "  no round started this pid at that time (a storm's or the harness's process?)\n")
		}
		if len(m.Nearby) > 0 {
			fmt.Fprintf(w, "  nearby records of that postmaster:\n")
			for _, r := range m.Nearby {
				fmt.Fprintf(w, "    %s\n", shortRecord(&r))
				if m.Line != nil && r.Verdict == "crash-restart" && r.NSPid == m.Line.NSPid && sameStatus(m.Line, &r) {
					fmt.Fprintf(w, "      ^ same pid and status, %s from the line: beyond the %s tolerance, or matched to another line\n",
						r.Time.Sub(m.Line.Time).Round(time.Millisecond), Tolerance)
				}
			}
		} else if m.Kind != "wrong postgres_log" {
			fmt.Fprintf(w, "  no record of that postmaster nearby\n")
		}
	}

	for _, l := range res.ServerCrashes {
		fmt.Fprintf(w, "\nserver process crash (cluster %d, line %d), matched by a server-crash record, outside the table: %s\n", l.Instance, l.Number, l.Text)
	}
	for _, l := range res.Unattributed {
		fmt.Fprintf(w, "\ncrash line no round accounts for (cluster %d, line %d): %s\n", l.Instance, l.Number, l.Text)
	}
	fmt.Fprintf(w, "\norphanwatch counters: %s\n", res.Counters)
	if res.Counters.Lost > 0 {
		fmt.Fprintf(w, "  WARNING: %d events lost: a miss may be a loss, not a wrong rule\n", res.Counters.Lost)
	}
	for _, r := range res.Unconfirmed {
		fmt.Fprintf(w, "crash-restart-confirmed with no trigger (a restart whose culprit orphanwatch did not see): %s\n", r.Line)
	}
	for _, e := range res.OrphanwatchErrors {
		fmt.Fprintf(w, "ORPHANWATCH: %s\n", e)
	}
	for _, e := range res.HarnessErrors {
		fmt.Fprintf(w, "HARNESS FAILURE (not orphanwatch's): %s\n", e)
	}
	for _, e := range res.Inconclusive {
		fmt.Fprintf(w, "INCONCLUSIVE: %s\n", e)
	}
	total := res.Stats[len(res.Stats)-1]
	switch res.ExitCode() {
	case 0:
		fmt.Fprintf(w, "\nPASS: %d crash lines, %d crash-restart records, all matched (precision and recall 100%%)\n", total.Lines, total.Records)
	case 1:
		fmt.Fprintf(w, "\nFAIL: orphanwatch disagrees with PostgreSQL: precision %s, recall %s, %d wrong postgres_log, %d other orphanwatch error(s)\n",
			percent(total.Matched, total.Records), percent(total.Matched, total.Lines), total.WrongLog, len(res.OrphanwatchErrors))
	default:
		fmt.Fprintf(w, "\nHARNESS FAILURE or INCONCLUSIVE run (not a verdict on orphanwatch): %d harness failure(s), %d inconclusive\n",
			len(res.HarnessErrors), len(res.Inconclusive))
	}
}

// Summary is the mismatch on one line, for logs that keep only the first
// line of a message (CI's excerpt of a failed test).
func (m *Mismatch) Summary(cfg Config) string {
	s := m.Kind
	if m.Line != nil {
		s += fmt.Sprintf("; postgres (cluster %d, line %d): %s", m.Instance, m.Line.Number, m.Line.Text)
	}
	if m.Record != nil {
		s += "; record: " + shortRecord(m.Record)
	}
	if m.Round != nil {
		s += fmt.Sprintf("; %s, %s to %s, replay: %s", m.Round, clock(m.Round.Start), clock(m.Round.End), replay(cfg, m.Round.Index))
	} else {
		s += "; no round started this pid"
	}
	var near []string
	for _, r := range m.Nearby {
		near = append(near, shortRecord(&r))
	}
	if len(near) > 0 {
		s += "; nearby: " + strings.Join(near, " | ")
	}
	return s
}

func percent(a, b int) string {
	if b == 0 {
		return "-"
	}
	return strconv.FormatFloat(100*float64(a)/float64(b), 'f', 1, 64) + "%"
}

func clock(t time.Time) string { return t.UTC().Format("15:04:05.000") }

func shortRecord(r *TraceRecord) string {
	status := r.Signal
	if r.ExitCode != nil {
		status = "exit " + strconv.Itoa(*r.ExitCode)
	}
	s := fmt.Sprintf("%s %-24s pid %d ns:%d %s %s", clock(r.Time), r.Verdict, r.PID, r.NSPid, r.Comm, status)
	if r.PostgresLog != "" {
		s += fmt.Sprintf(" (%q)", r.PostgresLog)
	}
	return s
}

// PrintMatrix writes one row per PostgreSQL version run: the same seed's
// rounds judged by each version's own log.
func PrintMatrix(w io.Writer, results []*Result) {
	fmt.Fprintf(w, "\nversion matrix:\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "PostgreSQL\tcluster\trounds\tmeant to crash\tmasked\tcrash lines\trecords\tmatched\tprecision\trecall\twrong log\texit 0/1 lines\tmatched\tharness errors\tlost events\ttime\tverdict\t")
	for _, res := range results {
		t, c := res.Stats[len(res.Stats)-1], res.CleanExits
		verdict := map[int]string{0: "PASS", 1: "FAIL", 2: "HARNESS/INCONCLUSIVE"}[res.ExitCode()]
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t\n", res.Config.PG, res.Config.Cluster, t.Rounds, t.ExpectCrash, t.Silent,
			t.Lines, t.Records, t.Matched, percent(t.Matched, t.Records), percent(t.Matched, t.Lines), t.WrongLog+c.WrongLog, c.Lines, c.Matched,
			len(res.HarnessErrors), res.Counters.Lost, res.Elapsed.Round(time.Second), verdict)
	}
	tw.Flush()
}

// ExitCode is a multi-version run's: 1 when orphanwatch disagreed with any
// version's PostgreSQL, else 2 when any run failed its harness or proved
// nothing, else 0.
func ExitCode(results []*Result) int {
	code := 0
	for _, res := range results {
		switch c := res.ExitCode(); {
		case c == 1:
			return 1
		case c > code:
			code = c
		}
	}
	return code
}
