package oracle

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Family is one kind of incident.
type Family struct {
	Name   string
	Weight float64
	// Exclusive families run alone: they end the cluster.
	Exclusive bool
	Run       func(r *Round) error
	Doc       string
}

// Families, in the order tables print them.
var Families = []*Family{
	{Name: "lone", Weight: 3, Run: lone,
		Doc: "a lone orphan: the seed incident (psql | head, SIGPIPE), a sleeper killed by SIGKILL or SIGTERM, or sh exiting 0, 1, 2 or 3"},
	{Name: "group", Weight: 2, Run: group,
		Doc: "a setsid process group (sh waiting on psqls and sleepers) orphaned, then killed at once with SIGKILL, SIGTERM or SIGHUP"},
	{Name: "pty", Weight: 2, Run: pty,
		Doc: "script(1) holding a pty session running psql | cat, orphaned; script is killed, the pty hangs up and the session leader gets SIGHUP"},
	{Name: "cascade", Weight: 2, Run: cascade,
		Doc: "2-4 orphaned psqls in pg_sleep; one crashes (SIGKILL, SIGTERM or a real SIGPIPE); the reset kills the others' backends and they exit 2 while PostgreSQL resets"},
	{Name: "threads", Weight: 2, Run: threads,
		Doc: "a multi-threaded adoptee killed by a signal, or one of its threads calling exit(0-3)"},
	{Name: "leader-exit", Weight: 2, Run: leaderExit,
		Doc: "an adoptee whose leader thread calls pthread_exit first; the last thread exits 0-3 or is killed"},
	{Name: "grandchildren", Weight: 2, Run: grandchildren,
		Doc: "an orphan with children (a chain 2-3 deep); some of the chain is killed close together, the rest exits with the child's status, a code, or before its child"},
	{Name: "second-postmaster", Weight: 1.5, Run: secondPostmaster,
		Doc: "a second postmaster (a copy of the template data directory) started and orphaned inside the namespace, sometimes with an orphaned psql of its own, then SIGKILLed, SIGQUIT (immediate), or stopped cleanly"},
	{Name: "fast-shutdown", Weight: 0.5, Exclusive: true, Run: shutdownCrash,
		Doc: "an orphan killed while the postmaster is in a fast or smart shutdown (held there by a stopped backend); PostgreSQL logs it; the cluster ends and a fresh one starts"},
	{Name: "after-recovery", Weight: 1, Run: afterRecovery,
		Doc: "an orphan crashes the server; once it accepts connections again, a second orphan crashes it again"},
}

// FamilyNamed returns the family of that name.
func FamilyNamed(name string) *Family {
	for _, f := range Families {
		if f.Name == name {
			return f
		}
	}
	return nil
}

var killSignals = map[string]syscall.Signal{"SIGKILL": syscall.SIGKILL, "SIGTERM": syscall.SIGTERM, "SIGHUP": syscall.SIGHUP,
	"SIGUSR1": syscall.SIGUSR1, "SIGPIPE": syscall.SIGPIPE, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT}

// seedIncident is the README's incident: psql | head, orphaned; head exits
// after 10 bytes and psql dies of SIGPIPE on its next write.
const seedIncident = `$RUN %[1]s $PSQL -c "select generate_series(1,3000000)" | $RUN %[2]s head -c 10 >/dev/null &`

func lone(r *Round) error {
	if err := r.ready(); err != nil {
		return err
	}
	r.ExpectCrash = true
	roles := []string{"sh"}
	switch v := r.variantOf([]string{"SIGPIPE", "SIGKILL", "SIGTERM", "exit 0", "exit 1", "exit 2", "exit 3"}, "exit 0", "exit 1"); v {
	case "SIGPIPE":
		roles = []string{"psql", "head"}
		if err := r.launch(fmt.Sprintf(seedIncident, "psql", "head") + " exit"); err != nil {
			return err
		}
	case "SIGKILL", "SIGTERM":
		if err := r.launch(`$RUN sleeper sleep 30 & exit`); err != nil {
			return err
		}
		p, err := r.proc("sleeper")
		if err != nil {
			return err
		}
		r.sleep(0, 300*time.Millisecond)
		r.signal(p, killSignals[v])
		return r.waitGone(60 * time.Second)
	default:
		code, _ := strconv.Atoi(strings.TrimPrefix(v, "exit "))
		r.ExpectCrash = code >= 2
		if err := r.launch(fmt.Sprintf(`$RUN sh sh -c 'sleep %.3f; exit %d' & exit`, r.between(0, 500*time.Millisecond).Seconds(), code)); err != nil {
			return err
		}
	}
	return r.waitGone(60*time.Second, roles...)
}

func group(r *Round) error {
	if err := r.ready(); err != nil {
		return err
	}
	sigName := r.variant("SIGKILL", "SIGTERM", "SIGHUP")
	n := 1 + r.rng.IntN(3)
	var members []string
	for i := range n {
		if r.rng.IntN(3) == 0 {
			members = append(members, fmt.Sprintf(`$RUN sleep-%d sleep 60 &`, i))
		} else {
			members = append(members, fmt.Sprintf(`$RUN psql-%d $PSQL -c "select pg_sleep(60)" &`, i))
		}
	}
	r.setVariant(fmt.Sprintf("%d members", n))
	r.ExpectCrash = true
	// setsid does not fork here (the shell's background child is not a group
	// leader): the leader keeps ow-run's pid, which is also the group's id.
	script := fmt.Sprintf(`$RUN leader setsid sh -c '%s wait' & exit`, strings.Join(members, " "))
	if err := r.launch(script); err != nil {
		return err
	}
	leader, err := r.proc("leader")
	if err != nil {
		return err
	}
	for i := range n {
		role := fmt.Sprintf("psql-%d", i)
		if strings.Contains(members[i], "sleep-") {
			role = fmt.Sprintf("sleep-%d", i)
		}
		if _, err := r.proc(role); err != nil {
			return err
		}
	}
	r.sleep(300*time.Millisecond, time.Second) // the psqls connect
	if !leader.SignalGroup(killSignals[sigName]) {
		r.note("the group's leader was gone before the kill")
	}
	return r.waitGone(60 * time.Second)
}

func pty(r *Round) error {
	if err := r.ready(); err != nil {
		return err
	}
	sigName := r.variantOf([]string{"SIGKILL", "SIGTERM", "SIGHUP"}, "SIGTERM", "SIGHUP")
	// script(1) catches SIGTERM and SIGHUP, ends its session and exits 0:
	// only SIGKILL is sure to leave an adoptee dying of a signal.
	r.ExpectCrash = sigName == "SIGKILL"
	// The session leader is the shell script(1) starts ($SHELL -c); exec
	// makes it ow-run, then sh running the pipeline. psql sleeps, writes
	// much more than the pty holds, then sleeps again: the hang-up finds it
	// sleeping or writing, never gone (a session that ended by itself
	// would leave script to exit 0).
	pause := r.between(100*time.Millisecond, time.Second).Seconds()
	session := fmt.Sprintf(`exec $RUN session sh -c '$RUN psql $PSQL -c "select pg_sleep(%.3f)" -c "select generate_series(1,300000)" -c "select pg_sleep(60)" | $RUN cat cat'`, pause)
	if err := r.launch(fmt.Sprintf(`$RUN script script -qec %s /dev/null >/dev/null & exit`, shellQuote(session))); err != nil {
		return err
	}
	ps, err := r.procs("script", "session", "psql", "cat")
	if err != nil {
		return err
	}
	r.sleep(200*time.Millisecond, 1500*time.Millisecond)
	r.signal(ps[0], killSignals[sigName])
	return r.waitGone(90 * time.Second)
}

func cascade(r *Round) error {
	if err := r.ready(); err != nil {
		return err
	}
	n := 2 + r.rng.IntN(3)
	how := r.variant("SIGKILL", "SIGTERM", "SIGPIPE (kill)", "SIGPIPE (pipe)")
	r.setVariant(fmt.Sprintf("%d psqls", n))
	r.ExpectCrash = true
	var script strings.Builder
	for i := 1; i < n; i++ {
		fmt.Fprintf(&script, `$RUN psql-%d $PSQL -c "select pg_sleep(30)" & `, i)
	}
	if how == "SIGPIPE (pipe)" {
		// The culprit sleeps with the others, then floods a closed pipe.
		fmt.Fprintf(&script, `$RUN psql-0 $PSQL -c "select pg_sleep(%.3f)" -c "select generate_series(1,3000000)" | $RUN head head -c 10 >/dev/null & `,
			r.between(500*time.Millisecond, 1500*time.Millisecond).Seconds())
	} else {
		script.WriteString(`$RUN psql-0 $PSQL -c "select pg_sleep(30)" & `)
	}
	script.WriteString("exit")
	if err := r.launch(script.String()); err != nil {
		return err
	}
	var psqls []*Proc
	for i := range n {
		p, err := r.proc(fmt.Sprintf("psql-%d", i))
		if err != nil {
			return err
		}
		psqls = append(psqls, p)
	}
	if how == "SIGPIPE (pipe)" {
		return r.waitGone(60*time.Second, "head")
	}
	r.sleep(500*time.Millisecond, 1200*time.Millisecond) // all connected and sleeping
	r.signal(psqls[0], killSignals[strings.TrimSuffix(how, " (kill)")])
	return r.waitGone(60 * time.Second)
}

func threads(r *Round) error {
	if err := r.ready(); err != nil {
		return err
	}
	n := 1 + r.rng.IntN(4)
	r.ExpectCrash = true
	how := r.variantOf([]string{"SIGKILL", "SIGTERM", "SIGHUP", "SIGUSR1", "thread exit 0", "thread exit 1", "thread exit 2", "thread exit 3"}, "thread exit 0", "thread exit 1")
	r.setVariant(fmt.Sprintf("%d threads", n))
	bin := r.cluster.Inside(r.run.threads)
	if code, ok := strings.CutPrefix(how, "thread exit "); ok {
		c, _ := strconv.Atoi(code)
		r.ExpectCrash = c >= 2
		ms := r.between(50*time.Millisecond, 500*time.Millisecond).Milliseconds()
		if err := r.launch(fmt.Sprintf(`$RUN threads %s exit %d %d %d & exit`, bin, n, c, ms)); err != nil {
			return err
		}
		return r.waitGone(30*time.Second, "threads")
	}
	if err := r.launch(fmt.Sprintf(`$RUN threads %s wait %d & exit`, bin, n)); err != nil {
		return err
	}
	p, err := r.proc("threads")
	if err != nil {
		return err
	}
	r.sleep(50*time.Millisecond, 400*time.Millisecond)
	r.signal(p, killSignals[how])
	return r.waitGone(30 * time.Second)
}

func leaderExit(r *Round) error {
	if err := r.ready(); err != nil {
		return err
	}
	n := 1 + r.rng.IntN(3)
	how := r.variantOf([]string{"exit 0", "exit 1", "exit 2", "exit 3", "SIGKILL", "SIGTERM"}, "exit 0", "exit 1")
	r.setVariant(fmt.Sprintf("%d threads", n))
	bin := r.cluster.Inside(r.run.threads)
	ms := r.between(50*time.Millisecond, 600*time.Millisecond).Milliseconds()
	if code, ok := strings.CutPrefix(how, "exit "); ok {
		c, _ := strconv.Atoi(code)
		r.ExpectCrash = c >= 2
		if err := r.launch(fmt.Sprintf(`$RUN threads %s leader %d %d %d & exit`, bin, n, c, ms)); err != nil {
			return err
		}
		return r.waitGone(30*time.Second, "threads")
	}
	r.ExpectCrash = true
	if err := r.launch(fmt.Sprintf(`$RUN threads %s leader %d -1 0 & exit`, bin, n)); err != nil {
		return err
	}
	p, err := r.proc("threads")
	if err != nil {
		return err
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	r.signal(p, killSignals[how]) // reaches the live threads through the zombie leader
	return r.waitGone(30 * time.Second)
}

func grandchildren(r *Round) error {
	if err := r.ready(); err != nil {
		return err
	}
	depth := 2 + r.rng.IntN(2)
	leaf := r.between(300*time.Millisecond, 1500*time.Millisecond)
	// Each level above the leaf is a shell script: it waits for its child
	// and exits with the child's status (128+signal for a signal), with a
	// code of its own, or exits before its child, orphaning it.
	var how []string
	var topCrashes bool // g0's own exit is a crash whatever else happens
	for i := depth - 1; i >= 0; i-- {
		file := filepath.Join(r.dir, fmt.Sprintf("g%d.sh", i))
		var text string
		if i == depth-1 {
			text = fmt.Sprintf("exec sleep %.3f\n", leaf.Seconds())
			how = append(how, fmt.Sprintf("g%d sleep %.1fs", i, leaf.Seconds()))
		} else {
			child := fmt.Sprintf("$RUN g%d sh %s &\n", i+1, r.inside(fmt.Sprintf("g%d.sh", i+1)))
			policy := []string{"status", "exit 0", "exit 2", "exit 3", "early"}[r.rng.IntN(5)]
			if r.Isolated && i == 0 && (policy == "status" || policy == "exit 0") {
				// A child below that exits early and cleanly can let g0
				// end cleanly before the kill: sure to crash all the same.
				policy = "exit 2"
			}
			switch policy {
			case "status":
				text = child + "wait $!\nexit $?\n"
				how = append(how, fmt.Sprintf("g%d exits with the child's status", i))
			case "early":
				code := r.rng.IntN(4)
				if r.Isolated && i == 0 {
					code = 2 + code%2 // it may be gone before the kill: sure to crash all the same
				}
				text = child + fmt.Sprintf("sleep %.3f\nexit %d\n", r.between(0, 400*time.Millisecond).Seconds(), code)
				how = append(how, fmt.Sprintf("g%d exits %d before its child", i, code))
				topCrashes = i == 0 && code >= 2
			default:
				text = child + "wait $!\n" + policy + "\n"
				how = append(how, fmt.Sprintf("g%d waits, then %s", i, policy))
				topCrashes = i == 0 && (policy == "exit 2" || policy == "exit 3")
			}
		}
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			return r.failf("%v", err)
		}
	}
	// Kill some of the chain, close together.
	type kill struct {
		level int
		sig   syscall.Signal
	}
	var kills []kill
	for _, level := range r.rng.Perm(depth) {
		if r.rng.IntN(2) == 0 {
			continue
		}
		sig := []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM, syscall.SIGHUP}[r.rng.IntN(3)]
		kills = append(kills, kill{level, sig})
		how = append(how, fmt.Sprintf("kill g%d %s", level, sigName(sig)))
	}
	if r.Isolated {
		// Sure to crash: g0 is killed first, before a child's death can
		// let it exit 0.
		kills = slices.DeleteFunc(kills, func(k kill) bool { return k.level == 0 })
		kills = append([]kill{{0, syscall.SIGKILL}}, kills...)
		how = append(how, "kill g0 SIGKILL first")
	}
	gap := r.between(0, 20*time.Millisecond)
	before := r.between(100*time.Millisecond, 250*time.Millisecond)
	r.setVariant(fmt.Sprintf("depth %d: %s; gap %s", depth, strings.Join(how, ", "), gap.Round(time.Millisecond)))
	// What PostgreSQL sees depends on who dies after its parent; only g0,
	// adopted from the start, is sure to end as a crash when it is killed
	// or exits with a code of 2 or more.
	r.ExpectCrash = topCrashes
	for _, k := range kills {
		r.ExpectCrash = r.ExpectCrash || k.level == 0
	}
	if err := r.launch(fmt.Sprintf(`$RUN g0 sh %s & exit`, r.inside("g0.sh"))); err != nil {
		return err
	}
	var chain []*Proc
	for i := range depth {
		p, err := r.proc(fmt.Sprintf("g%d", i))
		if err != nil {
			return err
		}
		chain = append(chain, p)
	}
	time.Sleep(before)
	for i, k := range kills {
		if i > 0 {
			time.Sleep(gap)
		}
		r.signal(chain[k.level], k.sig)
	}
	return r.waitGone(30 * time.Second)
}

func secondPostmaster(r *Round) error {
	if err := r.ready(); err != nil {
		return err
	}
	how := r.variantOf([]string{"SIGKILL", "SIGKILL", "SIGQUIT", "pg_ctl stop -m fast"}, "SIGQUIT", "pg_ctl stop -m fast")
	withPsql := r.rng.IntN(2) == 0
	if withPsql {
		r.setVariant("with an orphaned psql of its own")
	}
	r.ExpectCrash = how == "SIGKILL"
	data := filepath.Join(r.dir, "data2")
	if out, err := exec.Command("cp", "-a", r.run.template, data).CombinedOutput(); err != nil {
		return r.failf("copying the template data directory: %v: %s", err, out)
	}
	uid, gid := r.cluster.Owner()
	if out, err := exec.Command("chown", "-R", fmt.Sprintf("%d:%d", uid, gid), r.dir).CombinedOutput(); err != nil {
		return r.failf("chown: %v: %s", err, out)
	}
	asPostgres := "setpriv --reuid=postgres --regid=postgres --clear-groups"
	if err := r.launch(fmt.Sprintf(`$RUN postmaster2 %s $PGBIN/postgres -D %s -k $DIR -p 5433 -c listen_addresses= -c fsync=off -c logging_collector=off >$DIR/postmaster2.log 2>&1 & exit`,
		asPostgres, r.inside("data2"))); err != nil {
		return err
	}
	pm2, err := r.proc("postmaster2")
	if err != nil {
		return err
	}
	log2 := filepath.Join(r.dir, "postmaster2.log")
	if !waitFile(log2, "database system is ready to accept connections", 30*time.Second) {
		data, _ := os.ReadFile(log2)
		return r.failf("the second postmaster did not start:\n%s", data)
	}
	if withPsql {
		if err := r.launch(`$RUN psql2 psql -X -q -h $DIR -p 5433 -U postgres -d postgres -c "select pg_sleep(30)" & exit`); err != nil {
			return err
		}
		if _, err := r.proc("psql2"); err != nil {
			return err
		}
		r.sleep(300*time.Millisecond, 800*time.Millisecond)
	}
	// Its children (checkpointer, backends...) are orphaned when it dies
	// first: they are the round's too.
	if pm2.HostPID != 0 {
		r.adopt("postmaster2-child", childrenOf(pm2.HostPID))
	}
	switch how {
	case "pg_ctl stop -m fast":
		if err := r.launch(fmt.Sprintf(`%s $PGBIN/pg_ctl stop -m fast -w -D %s`, asPostgres, r.inside("data2"))); err != nil {
			return err
		}
	default:
		r.signal(pm2, killSignals[how])
	}
	err = r.waitGone(60 * time.Second)
	os.RemoveAll(data) // 39 MiB a round; its log stays
	return err
}

// shutdownCrash: PostgreSQL logs (and acts on) an adoptee's death during a
// smart or fast shutdown. A backend stopped with SIGSTOP holds the
// postmaster in the shutdown (it waits for its backends, and only a crash
// or an immediate shutdown escalates to SIGKILL) while the orphan dies.
func shutdownCrash(r *Round) error {
	if err := r.ready(); err != nil {
		return err
	}
	mode := r.variant("fast", "smart")
	sigName := r.variant("SIGTERM", "SIGKILL", "SIGHUP")
	r.ExpectCrash = true
	r.EndsCluster = true
	if err := r.launch(`$RUN orphan sleep 120 & exit`); err != nil {
		return err
	}
	orphan, err := r.proc("orphan")
	if err != nil {
		return err
	}
	backend, err := r.holdBackend()
	if err != nil {
		return err
	}
	for _, pid := range hostPIDs(r.run.pidNS)[backend.NSPid] {
		if s, err := readProcStat(pid); err == nil && s.ppid == r.cluster.PostmasterPID() {
			backend.StartTicks = s.startTicks
			backend.attach([]int{pid})
		}
	}
	if backend.HostPID == 0 {
		return r.failf("no backend with ns pid %d under the postmaster", backend.NSPid)
	}
	defer backend.release()
	logged := len(r.cluster.Log())
	backend.Signal(syscall.SIGSTOP)
	stop := syscall.SIGINT
	if mode == "smart" {
		stop = syscall.SIGTERM
	}
	if err := syscall.Kill(r.cluster.PostmasterPID(), stop); err != nil {
		return r.failf("signalling the postmaster: %v", err)
	}
	if !waitLogAfter(r.cluster, logged, "shutdown request", 10*time.Second) {
		backend.Signal(syscall.SIGKILL)
		return r.failf("PostgreSQL did not log the %s shutdown request", mode)
	}
	r.sleep(100*time.Millisecond, 400*time.Millisecond)
	r.signal(orphan, killSignals[sigName])
	if !waitLogAfter(r.cluster, logged, "terminating any other active server processes", 10*time.Second) {
		r.note("PostgreSQL did not react to the orphan's death within 10 s")
	}
	backend.Signal(syscall.SIGKILL)
	deadline := time.Now().Add(30 * time.Second)
	for !r.cluster.Exited() {
		if time.Now().After(deadline) {
			return r.failf("the postmaster did not exit within 30 s of its %s shutdown", mode)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The namespace died with its PID 1: everything in it is gone.
	return r.waitGone(30 * time.Second)
}

// holdBackend starts an orphaned psql sleeping in a backend, and finds the
// backend (by application_name, from another session). A psql that could
// not connect (the server was resetting) is started again.
func (r *Round) holdBackend() (*Proc, error) {
	backend := &Proc{Role: "backend", pidfd: -1}
	for attempt := 1; ; attempt++ {
		if err := r.ready(); err != nil {
			return nil, err
		}
		role := fmt.Sprintf("holder-%d", attempt)
		if err := r.launch(fmt.Sprintf(`PGAPPNAME=ow-hold $RUN %s $PSQL -c "select pg_sleep(120)" & exit`, role)); err != nil {
			return nil, err
		}
		holder, err := r.proc(role)
		if err != nil {
			return nil, err
		}
		deadline := time.Now().Add(15 * time.Second)
		for holder.Alive() && time.Now().Before(deadline) {
			out, err := r.cluster.Exec(r.psql + ` -At -c "select pid from pg_stat_activity where application_name = 'ow-hold'"`)
			if n, perr := strconv.ParseUint(strings.TrimSpace(out), 10, 32); err == nil && perr == nil {
				backend.NSPid = uint32(n)
				return backend, nil
			}
			time.Sleep(50 * time.Millisecond)
		}
		if attempt == 3 {
			return nil, r.failf("the holding psql's backend never showed in pg_stat_activity (script output: %s)", r.output())
		}
		holder.Signal(syscall.SIGKILL)
		r.note(fmt.Sprintf("%s could not hold a backend (the server was resetting?): started again", role))
	}
}

func afterRecovery(r *Round) error {
	first := r.variant("SIGKILL", "SIGTERM", "exit 3")
	second := r.variant("SIGKILL", "SIGPIPE", "exit 2")
	r.ExpectCrash = true
	for i, how := range []string{first, second} {
		if err := r.ready(); err != nil {
			return err
		}
		role := fmt.Sprintf("crash-%d", i+1)
		switch how {
		case "SIGPIPE":
			if err := r.launch(fmt.Sprintf(seedIncident, role, "head-2") + " exit"); err != nil {
				return err
			}
			if _, err := r.procs(role, "head-2"); err != nil {
				return err
			}
		case "exit 2", "exit 3":
			if err := r.launch(fmt.Sprintf(`$RUN %s sh -c 'sleep 0.2; exit %s' & exit`, role, strings.TrimPrefix(how, "exit "))); err != nil {
				return err
			}
			if _, err := r.proc(role); err != nil {
				return err
			}
		default:
			if err := r.launch(fmt.Sprintf(`$RUN %s sleep 30 & exit`, role)); err != nil {
				return err
			}
			p, err := r.proc(role)
			if err != nil {
				return err
			}
			r.sleep(50*time.Millisecond, 200*time.Millisecond)
			r.signal(p, killSignals[how])
		}
		if err := r.waitGone(60 * time.Second); err != nil {
			return err
		}
		// Let the postmaster reap it and begin its reset before asking
		// whether it is ready: it answers until it does.
		time.Sleep(300 * time.Millisecond)
	}
	return nil
}

// waitFile waits until a file contains s.
func waitFile(path, s string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(path); err == nil && strings.Contains(string(data), s) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// waitLogAfter waits until the server log, past its first `from` bytes,
// contains s.
func waitLogAfter(c Cluster, from int, s string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if log := c.Log(); len(log) > from && strings.Contains(log[from:], s) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// childrenOf lists a process's children, all its threads'.
func childrenOf(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		for _, f := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// shellQuote quotes s as one sh word.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
