package oracle

import (
	"fmt"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// Tolerance is how far a record's time (the kernel's, of the exit) may be
// from the crash line's (when the postmaster logged it, in milliseconds).
const Tolerance = 3 * time.Second

// attributionSlack widens a round's window: a process may die a moment
// after the round stopped watching it (never late: rounds wait for every
// process they start), and the log's clock is the postmaster's.
const attributionSlack = 3 * time.Second

// CrashLine is a line PostgreSQL logged about a crash of a child, in one
// cluster instance's log.
type CrashLine struct {
	testenv.ChildExit
	Instance int
}

// Mismatch is one disagreement between PostgreSQL's log and orphanwatch.
type Mismatch struct {
	Kind     string // "unmatched crash line", "unmatched crash-restart record", "wrong postgres_log"
	Line     *CrashLine
	Record   *TraceRecord
	Round    *Round // nil when the pid belongs to no round
	Instance int
	Nearby   []TraceRecord // records of the same ns pid or time, for context
}

// FamilyStats is one row of the table.
type FamilyStats struct {
	Name          string
	Rounds        int
	ExpectCrash   int // rounds that did something PostgreSQL logs as a crash
	Silent        int // of those, rounds that got no crash line (another reset masked them)
	Lines         int
	Records       int
	Matched       int
	WrongLog      int
	HarnessErrors int
}

// CleanExitStats: lines are the exits 0 and 1 PostgreSQL logged; records
// the adopted records that predict a line, or that a line matched.
type CleanExitStats struct {
	Lines, Records, Matched, WrongLog int
}

// Precision is matched records over records.
func (s *FamilyStats) Precision() float64 { return ratio(s.Matched, s.Records) }

// Recall is matched lines over lines.
func (s *FamilyStats) Recall() float64 { return ratio(s.Matched, s.Lines) }

func ratio(a, b int) float64 {
	if b == 0 {
		return 1
	}
	return float64(a) / float64(b)
}

// Result is a judged run.
type Result struct {
	Config            Config
	Rounds            []*Round
	Instances         []*Instance
	Stats             []*FamilyStats // one per family, then "(no round)", then the total
	Mismatches        []Mismatch
	HarnessErrors     []string // the harness's own failures: not orphanwatch's
	OrphanwatchErrors []string // trace died, wrote a malformed line, did not stop
	Inconclusive      []string // nothing proven: a family logged no crash at all
	Unconfirmed       []TraceRecord
	// Unattributed are crash lines no round's process accounts for, matched
	// or not: a process the harness did not record.
	Unattributed []*CrashLine
	// CleanExits judges what PostgreSQL 18 also logs: an untracked
	// child's exit 0 or 1 ("untracked child process (PID n) exited with
	// exit code 0"), against the adopted records that predict a line
	// (postgres_log). Up to 17 there is neither.
	CleanExits CleanExitStats
	// ServerCrashes are crash lines of the postmaster's own server
	// processes (no round started them), each matched by a server-crash
	// record (pid, status, time): not an orphan's doing, so outside the
	// table. One example: a
	// backend told to quit by a reset's SIGQUIT exits 2 after the startup
	// process, too late for that SIGQUIT, ended the reset; PostgreSQL logs
	// it as a new crash.
	ServerCrashes []*CrashLine
	Counters      Counters
	TraceStderr   string
	Elapsed       time.Duration
}

// Passed: 100% precision and recall, every predicted log line right, and
// a run that proved something.
func (res *Result) Passed() bool { return res.ExitCode() == 0 }

// ExitCode: 0 passed; 1 orphanwatch disagreed with PostgreSQL; 2 the
// harness failed or the run proved nothing (never orphanwatch's fault).
func (res *Result) ExitCode() int {
	switch {
	case len(res.Mismatches) > 0 || len(res.OrphanwatchErrors) > 0:
		return 1
	case len(res.HarnessErrors) > 0 || len(res.Inconclusive) > 0:
		return 2
	}
	return 0
}

func judge(run *runner, rounds []*Round) *Result {
	res := &Result{Config: run.cfg, Rounds: rounds, Instances: run.instances}
	records := run.trace.snapshot()
	run.trace.mu.Lock()
	for _, line := range run.trace.malformed {
		res.OrphanwatchErrors = append(res.OrphanwatchErrors, "trace wrote a line that is not a record: "+line)
	}
	if run.trace.diedEarly {
		res.OrphanwatchErrors = append(res.OrphanwatchErrors, fmt.Sprintf("orphanwatch trace exited during the run (%v):\n%s", run.trace.exitErr, tail(run.trace.stderr.String(), 20)))
	}
	run.trace.mu.Unlock()
	res.HarnessErrors = append(res.HarnessErrors, run.harness...)

	stats := map[string]*FamilyStats{}
	row := func(name string) *FamilyStats {
		if stats[name] == nil {
			stats[name] = &FamilyStats{Name: name}
		}
		return stats[name]
	}
	for _, f := range run.families {
		row(f.Name)
	}
	const noRound = "(no round)"
	familyOf := func(r *Round) string {
		if r == nil {
			return noRound
		}
		return r.Family.Name
	}
	for _, r := range rounds {
		s := row(r.Family.Name)
		s.Rounds++
		if r.ExpectCrash {
			s.ExpectCrash++
		}
		if r.HarnessErr != nil {
			s.HarnessErrors++
			res.HarnessErrors = append(res.HarnessErrors, fmt.Sprintf("%s: %v (replay: %s)", r, r.HarnessErr, replay(run.cfg, r.Index)))
		}
	}

	linesOf := map[*Round]int{}
	for _, inst := range run.instances {
		var lines []*CrashLine
		for _, e := range testenv.CrashLines(inst.Log) {
			// The log has milliseconds: a line of the same millisecond
			// as the stop may still have been seen.
			if !run.traceStopped.IsZero() && e.Time.After(run.traceStopped.Truncate(time.Millisecond)) {
				res.HarnessErrors = append(res.HarnessErrors, fmt.Sprintf("cluster %d logged a crash after trace was stopped, not judged: %s", inst.Index, e.Text))
				continue
			}
			lines = append(lines, &CrashLine{ChildExit: e, Instance: inst.Index})
		}
		var mine, others, servers []*TraceRecord
		for i := range records {
			rec := &records[i]
			// The kernel reuses pids (the host's wrap every few seconds
			// under the storms) and a dead namespace's inode number: only
			// records of the instance's lifetime can be about it.
			if rec.Time.Before(inst.Started) || (!inst.Ended.IsZero() && rec.Time.After(inst.Ended)) {
				continue
			}
			ours := rec.Postmaster != nil && rec.Postmaster.PID == uint32(inst.PostmasterPID)
			// Only PID 1 adopts in the namespace (a second postmaster is
			// no subreaper): a crash-restart there naming no postmaster,
			// or another, is wrong all the same.
			if !ours && (rec.Verdict != "crash-restart" || rec.PidNS != inst.PidNS) {
				continue
			}
			others = append(others, rec)
			switch rec.Verdict {
			case "crash-restart":
				mine = append(mine, rec)
			case "server-crash": // verdict.OnDeath: one it took for a crash
				servers = append(servers, rec)
			}
			if rec.Verdict == "crash-restart-confirmed" && rec.Trigger == nil {
				res.Unconfirmed = append(res.Unconfirmed, *rec)
			}
		}
		res.judgeCleanExits(rounds, inst, others)
		pairs := match(lines, mine)
		var orphans []*CrashLine
		serverPairs := match(unpaired(lines, pairs), servers)
		for _, l := range lines {
			// Only for a process no round started: a round's processes
			// are all adoptees, and one taken for a server process is a
			// miss all the same.
			if serverPairs[l] != nil && attribute(rounds, inst.Index, l.NSPid, 0, l.Time) == nil {
				res.ServerCrashes = append(res.ServerCrashes, l)
			} else {
				orphans = append(orphans, l)
			}
		}
		lines = orphans
		matchedRec := map[*TraceRecord]*CrashLine{}
		for _, l := range lines {
			round := attribute(rounds, inst.Index, l.NSPid, 0, l.Time)
			if round == nil {
				res.Unattributed = append(res.Unattributed, l)
			}
			s := row(familyOf(round))
			s.Lines++
			linesOf[round]++
			rec := pairs[l]
			if rec == nil {
				res.Mismatches = append(res.Mismatches, Mismatch{Kind: "unmatched crash line", Line: l, Round: round, Instance: inst.Index,
					Nearby: nearby(others, l.NSPid, l.Time)})
				continue
			}
			matchedRec[rec] = l
			s.Matched++
			s.Records++
			if rec.PostgresLog != l.Message {
				s.WrongLog++
				res.Mismatches = append(res.Mismatches, Mismatch{Kind: "wrong postgres_log", Line: l, Record: rec, Round: round, Instance: inst.Index})
			}
		}
		for _, rec := range mine {
			if matchedRec[rec] != nil {
				continue
			}
			round := attribute(rounds, inst.Index, rec.NSPid, rec.PID, rec.Time)
			row(familyOf(round)).Records++
			res.Mismatches = append(res.Mismatches, Mismatch{Kind: "unmatched crash-restart record", Record: rec, Round: round, Instance: inst.Index,
				Nearby: nearby(others, rec.NSPid, rec.Time)})
		}
	}
	for _, r := range rounds {
		if r.ExpectCrash && linesOf[r] == 0 {
			row(r.Family.Name).Silent++
			// Alone, nothing can mask it: the family did not do what it
			// says (or PostgreSQL behaves otherwise than the family assumes).
			if r.Isolated && r.HarnessErr == nil {
				res.HarnessErrors = append(res.HarnessErrors, fmt.Sprintf("%s ran alone and was meant to crash the server, but PostgreSQL logged no crash for it (replay: %s)", r, replay(run.cfg, r.Index)))
			}
		}
	}

	total := &FamilyStats{Name: "total"}
	for _, f := range run.families {
		s := stats[f.Name]
		res.Stats = append(res.Stats, s)
		if s.ExpectCrash > 0 && s.Lines == 0 {
			res.Inconclusive = append(res.Inconclusive, fmt.Sprintf("family %s: %d round(s) meant to crash the server, but PostgreSQL logged no crash for any of them", s.Name, s.ExpectCrash))
		}
	}
	if s := stats[noRound]; s != nil {
		res.Stats = append(res.Stats, s)
	}
	for _, s := range res.Stats {
		total.Rounds += s.Rounds
		total.ExpectCrash += s.ExpectCrash
		total.Silent += s.Silent
		total.Lines += s.Lines
		total.Records += s.Records
		total.Matched += s.Matched
		total.WrongLog += s.WrongLog
		total.HarnessErrors += s.HarnessErrors
	}
	res.Stats = append(res.Stats, total)
	return res
}

// judgeCleanExits matches the exits 0 and 1 an instance logged (18:
// untracked children's) with its adopted records, as crash lines are
// matched with crash-restart records: same ns pid and exit code, within
// Tolerance. A line no record matches, or a record predicting a line that
// was not logged, is orphanwatch's miss; so is a wrong postgres_log.
func (res *Result) judgeCleanExits(rounds []*Round, inst *Instance, records []*TraceRecord) {
	var lines []*CrashLine
	for _, e := range testenv.ChildExits(testenv.ParseLog(inst.Log)) {
		if !e.Crash() && e.Subject == "untracked child process" {
			lines = append(lines, &CrashLine{ChildExit: e, Instance: inst.Index})
		}
	}
	var adopted []*TraceRecord
	for _, r := range records {
		if r.Verdict == "adopted" {
			adopted = append(adopted, r)
		}
	}
	pairs := match(lines, adopted)
	matched := map[*TraceRecord]bool{}
	s := &res.CleanExits
	for _, l := range lines {
		s.Lines++
		rec := pairs[l]
		round := attribute(rounds, inst.Index, l.NSPid, 0, l.Time)
		if rec == nil {
			res.Mismatches = append(res.Mismatches, Mismatch{Kind: "unmatched clean-exit line", Line: l, Round: round, Instance: inst.Index,
				Nearby: nearby(records, l.NSPid, l.Time)})
			continue
		}
		matched[rec] = true
		s.Records++
		s.Matched++
		if rec.PostgresLog != l.Message {
			s.WrongLog++
			res.Mismatches = append(res.Mismatches, Mismatch{Kind: "wrong postgres_log", Line: l, Record: rec, Round: round, Instance: inst.Index})
		}
	}
	for _, rec := range adopted {
		if matched[rec] || rec.PostgresLog == "" {
			continue
		}
		s.Records++
		res.Mismatches = append(res.Mismatches, Mismatch{Kind: "adopted record predicting a line not logged", Record: rec,
			Round: attribute(rounds, inst.Index, rec.NSPid, rec.PID, rec.Time), Instance: inst.Index, Nearby: nearby(records, rec.NSPid, rec.Time)})
	}
}

// match pairs crash lines with crash-restart records of the same
// postmaster: same ns pid, same status, times within Tolerance; closest
// pairs first, each line and record used once.
func match(lines []*CrashLine, records []*TraceRecord) map[*CrashLine]*TraceRecord {
	type pair struct {
		l  *CrashLine
		r  *TraceRecord
		dt time.Duration
	}
	var pairs []pair
	for _, l := range lines {
		for _, r := range records {
			if r.NSPid != l.NSPid || !sameStatus(l, r) {
				continue
			}
			if dt := absDuration(r.Time.Sub(l.Time)); dt <= Tolerance {
				pairs = append(pairs, pair{l, r, dt})
			}
		}
	}
	sort.SliceStable(pairs, func(i, j int) bool { return pairs[i].dt < pairs[j].dt })
	out := map[*CrashLine]*TraceRecord{}
	used := map[*TraceRecord]bool{}
	for _, p := range pairs {
		if out[p.l] == nil && !used[p.r] {
			out[p.l] = p.r
			used[p.r] = true
		}
	}
	return out
}

// unpaired: the lines match left without a record.
func unpaired(lines []*CrashLine, pairs map[*CrashLine]*TraceRecord) []*CrashLine {
	var out []*CrashLine
	for _, l := range lines {
		if pairs[l] == nil {
			out = append(out, l)
		}
	}
	return out
}

// sameStatus: the record's signal name or exit code is the line's.
func sameStatus(l *CrashLine, r *TraceRecord) bool {
	if l.Signal != 0 {
		return r.Signal != "" && int(unix.SignalNum(r.Signal)) == l.Signal
	}
	return r.Signal == "" && r.ExitCode != nil && *r.ExitCode == l.ExitCode
}

// attribute finds the round that started the process: same cluster, ns
// pid (and host pid when known) recorded by the round, and a time inside
// the round's window. ns pids wrap (pid_max 32768, storms use them), so
// never the pid alone.
func attribute(rounds []*Round, instance int, nsPid, hostPID uint32, at time.Time) *Round {
	var best *Round
	for _, r := range rounds {
		if r == nil || r.Instance != instance || at.Before(r.Start.Add(-attributionSlack)) || at.After(r.End.Add(attributionSlack)) {
			continue
		}
		for _, p := range r.Procs {
			if p.NSPid != nsPid || (hostPID != 0 && p.HostPID != 0 && uint32(p.HostPID) != hostPID) {
				continue
			}
			// Prefer the round whose own window holds the time.
			if best == nil || (!at.Before(r.Start) && !at.After(r.End)) {
				best = r
			}
		}
	}
	return best
}

// nearby are records of that postmaster for the same ns pid within a
// minute, or of any pid within Tolerance: what a reader needs beside a
// mismatch (a record with the wrong status, a late one, a duplicate).
func nearby(records []*TraceRecord, nsPid uint32, at time.Time) []TraceRecord {
	var out []TraceRecord
	for _, r := range records {
		dt := absDuration(r.Time.Sub(at))
		if (r.NSPid == nsPid && dt <= time.Minute) || (dt <= Tolerance && r.Verdict != "adoption") {
			out = append(out, *r)
		}
	}
	return out
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
