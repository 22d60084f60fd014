package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// lossCounters are serve's counts of events it lost or recovered late: the
// kernel's (ring buffer full), and user space's (records it could not
// decode, reaps it did not see, postmasters its /proc sweep had to find
// because their start was not seen).
var lossCounters = []string{
	"orphanwatch_events_lost_total",
	"orphanwatch_events_malformed_total",
	"orphanwatch_reaps_missed_total",
	"orphanwatch_postmasters_rediscovered_total",
}

// lostAcrossSwitches starts and stops a postmaster that is PID 1 of its
// namespace, again and again, while a host storm runs. Where serve attaches
// its programs only while a postmaster is watched, each start and stop
// switches them with processes in flight. Besides serve's loss counters,
// each cycle must give the records that matter, for this postmaster: the
// postmaster as PID 1, an orphan it adopted, and its exit. The switches
// are serve's count (orphanwatch_program_switches_total) where it has one,
// else changes of orphanwatch_programs_attached sampled every 20 ms; with
// neither, everything stays attached and none happen.
func lostAcrossSwitches(storm string) ([]row, error) {
	// Other users' clusters keep the programs attached: give the ones of
	// their tests a moment to end.
	others := postmasters()
	for deadline := time.Now().Add(30 * time.Second); len(others) > 0 && time.Now().Before(deadline); others = postmasters() {
		time.Sleep(time.Second)
	}
	if len(others) > 0 {
		say("%d postmasters of other users running (%v): no attach/detach switch will happen", len(others), others)
	}
	t, err := startServe(true)
	if err != nil {
		return nil, err
	}
	defer t.stop()
	settle(t)
	before, err := t.scrape()
	if err != nil {
		return nil, err
	}
	_, hasGauge := before.sum("orphanwatch_programs_attached")

	// Sampled: the attached programs' changes, and the most postmasters
	// serve watched at once (more than ours, one at a time: other users').
	stopSampling, sampled := make(chan struct{}), make(chan [2]int)
	go func() {
		n, most, last := 0, 0, ""
		for {
			select {
			case <-stopSampling:
				sampled <- [2]int{n, most}
				return
			case <-time.After(20 * time.Millisecond):
			}
			if m, err := t.scrape(); err == nil {
				if s := attachedPrograms(m); s != last {
					if last != "" {
						n++
					}
					last = s
				}
				watched, _ := m.sum("orphanwatch_postmasters")
				most = max(most, int(watched))
			}
		}
	}()
	stopStorm, stormDone := make(chan struct{}), make(chan error)
	var stormed int
	go func() {
		for {
			select {
			case <-stopStorm:
				stormDone <- nil
				return
			default:
			}
			if _, err := runStorm(onHost, storm, vforkStorm, 5000); err != nil {
				stormDone <- err
				return
			}
			stormed += 5000
		}
	}()

	seen := map[string]int{}
	cycleErr := func() error {
		for i := range *switches {
			db, err := testenv.NewCluster(testenv.ClusterOptions{})
			if err != nil {
				return err
			}
			pm := db.PostmasterPID
			if waitRecord(t, func(r *switchRecord) bool { return r.Verdict == "postmaster-pid1" && r.PID == pm }) {
				seen["postmaster-pid1"]++
			}
			// An orphan the postmaster adopts, exiting 0 once adopted.
			if _, err := db.Exec(`sh -c '(sleep 0.2; exit 0) & exit'`); err != nil {
				db.Stop()
				return err
			}
			if waitRecord(t, func(r *switchRecord) bool { return r.Verdict == "adopted" && r.ParentPID == pm }) {
				seen["adopted"]++
			}
			if err := db.Stop(); err != nil {
				return err
			}
			if waitRecord(t, func(r *switchRecord) bool { return r.Verdict == "postmaster-exit" && r.PID == pm }) {
				seen["postmaster-exit"]++
			}
			say("switch cycle %d/%d: records %v", i+1, *switches, seen)
			time.Sleep(time.Second) // let serve detach, with the storm going on
		}
		return nil
	}()
	close(stopStorm)
	stormErr := <-stormDone
	close(stopSampling)
	s := <-sampled
	nSwitches, mostWatched := s[0], s[1]
	if cycleErr != nil {
		return nil, cycleErr
	}
	if stormErr != nil {
		return nil, stormErr
	}
	time.Sleep(500 * time.Millisecond) // let serve drain the ring buffer
	after, err := t.scrape()
	if err != nil {
		return nil, err
	}

	if a, ok := after.sum("orphanwatch_program_switches_total"); ok {
		b, _ := before.sum("orphanwatch_program_switches_total")
		nSwitches = int(a - b)
	}
	var lost float64
	var counts []string
	for _, name := range lossCounters {
		a, _ := after.sum(name)
		b, _ := before.sum(name)
		lost += a - b
		counts = append(counts, fmt.Sprintf("%s %.0f", strings.TrimSuffix(strings.TrimPrefix(name, "orphanwatch_"), "_total"), a-b))
	}
	missing := 0
	var got []string
	for _, verdict := range []string{"postmaster-pid1", "adopted", "postmaster-exit"} {
		missing += *switches - seen[verdict]
		got = append(got, fmt.Sprintf("%s %d/%d", verdict, seen[verdict], *switches))
	}
	switched, verdict := fmt.Sprintf("%d attach/detach switches", nSwitches), pass(lost == 0 && missing == 0)
	switch {
	case !hasGauge:
		switched = "no orphanwatch_programs_attached gauge: everything stays attached"
	case nSwitches == 0:
		// Attach by need, but nothing switched: the measure did not happen.
		switched, verdict = fmt.Sprintf("no switch: serve watched up to %d postmasters at once, ours one of them (other users' kept the programs attached)", mostWatched), "n/a"
	}
	return []row{{fmt.Sprintf("lost events across %d postmaster starts and stops (PID 1) during a host storm", *switches),
		fmt.Sprintf("%.0f (%s); records %s; %s; %d storm processes", lost+float64(missing), strings.Join(counts, ", "), strings.Join(got, ", "), switched, stormed),
		"0", verdict}}, nil
}

// switchRecord is the part of a JSON line the switches need.
type switchRecord struct {
	Verdict   string `json:"verdict"`
	PID       int    `json:"pid"`
	ParentPID int    `json:"parent_pid"`
}

// waitRecord reads serve's JSON lines until one matches, for up to 10 s.
func waitRecord(t *tracer, match func(*switchRecord) bool) bool {
	deadline := time.After(10 * time.Second)
	for {
		select {
		case line := <-t.lines:
			i := strings.LastIndexByte(string(line), ' ') // the time it was read
			var r switchRecord
			if json.Unmarshal(line[:i], &r) == nil && match(&r) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}
