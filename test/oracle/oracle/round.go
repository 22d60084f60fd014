package oracle

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Round is one incident: a family, its random choices (from the run's seed
// and the round's index only, so `-seed s -round i` replays it) and what
// it started.
type Round struct {
	Index   int
	Family  *Family
	Variant string // the family's choices, e.g. "SIGPIPE" or "SIGKILL, 3 psqls"
	// ExpectCrash: the round does something PostgreSQL logs as a crash,
	// unless the server is already resetting (another round's crash).
	ExpectCrash bool
	Start, End  time.Time
	Instance    int // the cluster instance the round ran against
	Procs       []*Proc
	// HarnessErr is a failure of the harness (a script that did not run,
	// a process that never appeared), never of orphanwatch: a family
	// returns no other error.
	HarnessErr error
	// Isolated: the round runs alone and takes a variant sure to crash the
	// server, so that each family logs a crash (proves something) even
	// when concurrent resets mask all its other rounds. The first round of
	// each family is isolated.
	Isolated bool
	// EndsCluster: the round shut the server down on purpose.
	EndsCluster bool
	// Notes are facts worth showing beside a mismatch.
	Notes []string

	// A round runs on one goroutine: these need no lock.
	rng     *rand.Rand
	cluster Cluster
	run     *runner
	dir     string // the round's scratch directory (host path)
	pidsOff int64  // how much of the pid file has been read
	psql    string
}

// roundRNG derives round i's randomness from the seed alone.
func roundRNG(seed uint64, i int) *rand.Rand {
	return rand.New(rand.NewPCG(seed, uint64(i)^0x9e3779b97f4a7c15))
}

func (r *Round) String() string {
	return fmt.Sprintf("round %d (%s: %s)", r.Index, r.Family.Name, r.Variant)
}

// failf is a harness failure of the round.
func (r *Round) failf(format string, args ...any) error {
	return fmt.Errorf(format, args...)
}

// variant picks one of choices and records it.
func (r *Round) variant(choices ...string) string {
	v := choices[r.rng.IntN(len(choices))]
	r.setVariant(v)
	return v
}

// variantOf picks one of choices, except those that may not crash the
// server when the round is isolated.
func (r *Round) variantOf(choices []string, mayNotCrash ...string) string {
	if r.Isolated {
		choices = slices.DeleteFunc(slices.Clone(choices), func(c string) bool { return slices.Contains(mayNotCrash, c) })
	}
	return r.variant(choices...)
}

func (r *Round) setVariant(v string) {
	if r.Variant == "" {
		r.Variant = v
	} else {
		r.Variant += ", " + v
	}
}

// between is a random duration in [lo, hi).
func (r *Round) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.rng.Int64N(int64(hi-lo)))
}

// inside is a host path of the round's directory as the namespace sees it.
func (r *Round) inside(name string) string { return r.cluster.Inside(filepath.Join(r.dir, name)) }

// launch runs a script inside the namespace. It sees $RUN (ow-run: record
// the role, then exec), $PSQL, $PGBIN and $DIR (the round's directory);
// its output goes to $DIR/out so that background processes hold no pipe
// of the harness's (Exec would wait for them).
func (r *Round) launch(script string) error {
	preamble := fmt.Sprintf(`exec >>%[1]s/out 2>&1 </dev/null
export OW_PIDS=%[1]s/pids RUN=%[2]s PSQL=%[3]q PGBIN=%[4]s DIR=%[1]s SHELL=/bin/sh
`, r.cluster.Inside(r.dir), r.cluster.Inside(r.run.owRun), r.psql, r.cluster.PGBin())
	if out, err := r.cluster.Exec(preamble + script); err != nil {
		return r.failf("running the round's script: %v: %s\n%s\n(script output: %s)", err, out, script, r.output())
	}
	return nil
}

// output is what the round's scripts printed.
func (r *Round) output() string {
	data, _ := os.ReadFile(filepath.Join(r.dir, "out"))
	return strings.TrimSpace(string(data))
}

// collect reads the records ow-run appended since the last call and finds
// each new process's host pid.
func (r *Round) collect() {
	data, err := os.ReadFile(filepath.Join(r.dir, "pids"))
	if err != nil || int64(len(data)) <= r.pidsOff {
		return
	}
	data = data[r.pidsOff:]
	// Only whole lines: a record may be being written.
	data = data[:bytes.LastIndexByte(data, '\n')+1]
	r.pidsOff += int64(len(data))
	var fresh []*Proc
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		pid, err1 := strconv.ParseUint(f[1], 10, 32)
		start, err2 := strconv.ParseUint(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		fresh = append(fresh, &Proc{Role: f[0], NSPid: uint32(pid), StartTicks: start, Seen: time.Now(), pidfd: -1})
	}
	if len(fresh) == 0 {
		return
	}
	hosts := hostPIDs(r.run.pidNS)
	for _, p := range fresh {
		p.attach(hosts[p.NSPid])
	}
	r.Procs = append(r.Procs, fresh...)
}

// adopt records processes the harness found itself (a second postmaster's
// children), so that their deaths are attributed to the round.
func (r *Round) adopt(role string, hostPIDs []int) {
	for _, pid := range hostPIDs {
		s, err := readProcStat(pid)
		if err != nil {
			continue
		}
		p := &Proc{Role: role, NSPid: s.nsPid, StartTicks: s.startTicks, Seen: time.Now(), pidfd: -1}
		p.attach([]int{pid})
		r.Procs = append(r.Procs, p)
	}
}

// proc waits until a process of that role has been recorded.
func (r *Round) proc(role string) (*Proc, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		r.collect()
		for _, p := range r.Procs {
			if p.Role == role {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, r.failf("no process %q recorded within 15s (script output: %s)", role, r.output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// procs waits for several roles.
func (r *Round) procs(roles ...string) ([]*Proc, error) {
	var out []*Proc
	for _, role := range roles {
		p, err := r.proc(role)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// waitGone waits until the roles have been recorded (a background process
// may not have run ow-run yet when its script returns), then until every
// process the round recorded has exited. A process still alive after
// timeout is a harness failure (the family did not end what it started);
// it is then killed.
func (r *Round) waitGone(timeout time.Duration, roles ...string) error {
	if _, err := r.procs(roles...); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		r.collect()
		var alive []string
		for _, p := range r.Procs {
			if p.Alive() {
				alive = append(alive, p.String())
			}
		}
		if len(alive) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			for _, p := range r.Procs {
				p.Signal(syscall.SIGKILL)
			}
			return r.failf("still alive after %s, killed: %s", timeout, strings.Join(alive, ", "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ready waits until the server accepts connections: a round acts on a
// server that is running, though another round may crash it any moment.
func (r *Round) ready() error {
	if err := r.cluster.Ready(60 * time.Second); err != nil {
		return r.failf("waiting for the server: %v", err)
	}
	return nil
}

func (r *Round) sleep(lo, hi time.Duration) { time.Sleep(r.between(lo, hi)) }

// signal sends sig to p; a process already gone is not an error (it may
// have been killed by the crash handling of another round).
func (r *Round) signal(p *Proc, sig syscall.Signal) {
	if !p.Signal(sig) {
		r.note(fmt.Sprintf("%s already gone before %s", p.Role, sigName(sig)))
	}
}

// notes are facts about a round worth showing beside a mismatch.
func (r *Round) note(s string) {
	r.Notes = append(r.Notes, s)
}

func (r *Round) release() {
	for _, p := range r.Procs {
		p.release()
	}
}

// sigName is "SIGKILL" for 9.
func sigName(sig syscall.Signal) string {
	if n := signalNames[sig]; n != "" {
		return n
	}
	return "signal " + strconv.Itoa(int(sig))
}

var signalNames = map[syscall.Signal]string{
	syscall.SIGHUP: "SIGHUP", syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT", syscall.SIGKILL: "SIGKILL",
	syscall.SIGPIPE: "SIGPIPE", syscall.SIGTERM: "SIGTERM", syscall.SIGUSR1: "SIGUSR1", syscall.SIGUSR2: "SIGUSR2",
	syscall.SIGSTOP: "SIGSTOP", syscall.SIGCONT: "SIGCONT",
}

// owRun is the script every round's process starts through: it appends
// "role pid starttime" to $OW_PIDS and becomes the command (exec keeps the
// pid), so the harness knows the process even if it dies at once. No
// command substitution: that would fork a child of it.
const owRun = `#!/bin/sh
role=$1
shift
read -r stat </proc/$$/stat
field20() { shift 19; start=$1; }
field20 ${stat##*") "}
echo "$role $$ $start" >>"$OW_PIDS"
exec "$@"
`
