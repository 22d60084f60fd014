// Package verdict owns PostgreSQL's semantics: which exit is a crash, which
// binary is a server, what a postmaster does when it reaps a child in each
// of its states (State mirrors postmaster.c), and what each verdict means
// for the packages that show and count it (the descriptor table). It is
// pure: plain values in, decisions out, so every rule is unit-tested
// without a kernel.
package verdict

// Verdict names what happened, in the words of the JSON contract.
type Verdict string

const (
	// CrashRestart: a process the postmaster did not fork died under it with
	// a status the postmaster treats as a crash, while running: PostgreSQL
	// logged it and resets (or, shutting down, stops).
	CrashRestart Verdict = "crash-restart"
	// CrashRestartConfirmed: the postmaster finished the crash recovery that
	// followed: PostgreSQL really did reset.
	CrashRestartConfirmed Verdict = "crash-restart-confirmed"
	// Adopted: an adoptee exited 0 or 1, which the postmaster ignores: a
	// latent hazard, the next one may not exit cleanly.
	Adopted Verdict = "adopted"
	// Casualty: an adoptee died of a crash status while PostgreSQL was
	// already resetting (or stopping immediately): the postmaster ignored
	// it, usually because the crash took its backend.
	Casualty Verdict = "casualty"
	// Adoption: an orphan was just handed to a postmaster (to another new
	// parent with --all).
	Adoption Verdict = "adoption"
	// PostmasterPID1: a postmaster is PID 1 of its namespace: it adopts every orphan there.
	PostmasterPID1 Verdict = "postmaster-pid1"
	// ServerCrash: a server process the postmaster forked died abnormally
	// while it was running: the server restarts (a backend crash, or kill -9
	// of a backend).
	ServerCrash Verdict = "server-crash"
	// OOMKill: the OOM killer chose a postmaster, a server process or an
	// adoptee of a postmaster.
	OOMKill Verdict = "oom-kill"
	// PostmasterExit: a postmaster exited: shutdown, or an outage.
	PostmasterExit Verdict = "postmaster-exit"
	// PostmasterStart: a postmaster started (not as PID 1).
	PostmasterStart Verdict = "postmaster-start"
	// Exit: anything else (shown with --all).
	Exit Verdict = "exit"
	// Signal: a terminating signal sent by or to a postmaster (shown with --all).
	Signal Verdict = "signal"
)

// Metric names the record counter a verdict feeds in the exporter.
type Metric int

const (
	NoMetric     Metric = iota
	AdopteeDeath        // orphanwatch_adopted_child_exits_total
	Restart             // orphanwatch_postmaster_crash_restarts_total
	OOMVictim           // orphanwatch_oom_kills_total
)

// Descriptor is what a verdict means to everything that shows or counts it.
type Descriptor struct {
	Verdict Verdict
	// Shown: reported by default, not only with --all. An adoption is shown
	// only when a postmaster is the new parent (Decision.Flagged says).
	Shown bool
	// Story: a terminal shows a few lines of explanation under it.
	Story bool
	// Adoptee: it is about a process a postmaster adopted: the story says
	// when and by whom.
	Adoptee bool
	Metric  Metric
	// Fix is the advice given with it; empty for context.
	Fix string
}

// InitFix is the advice for every orphan-caused crash-restart.
const InitFix = "run an init as PID 1 of the container so that it, not the postmaster, adopts orphans: " +
	"docker run --init, tini or dumb-init as the entrypoint, or shareProcessNamespace: true in the Kubernetes pod; " +
	"and run jobs (psql, scripts, cron) outside the database container"

// OOMFix is the advice for an OOM kill of PostgreSQL.
const OOMFix = "protect the postmaster with oom_score_adj=-1000 and let children reset theirs " +
	"(PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj, PG_OOM_ADJUST_VALUE=0), size shared_buffers and work_mem to the " +
	"container's memory limit, and consider vm.overcommit_memory=2; see docs/oom.md"

// All is every verdict's descriptor, in the order of README's verdict
// table: what crash-restarts PostgreSQL first, context last. trace's
// --verdict accepts these and lists them in this order; orphanwatch_records_total
// starts a series for each at 0.
var All = []Descriptor{
	{Verdict: CrashRestart, Shown: true, Story: true, Adoptee: true, Metric: AdopteeDeath, Fix: InitFix},
	{Verdict: CrashRestartConfirmed, Shown: true, Story: true, Metric: Restart, Fix: InitFix},
	{Verdict: Adopted, Shown: true, Adoptee: true, Metric: AdopteeDeath, Fix: InitFix},
	{Verdict: Casualty, Shown: true, Adoptee: true, Metric: AdopteeDeath},
	{Verdict: Adoption, Shown: true, Adoptee: true},
	{Verdict: PostmasterPID1, Shown: true, Story: true, Fix: InitFix},
	{Verdict: ServerCrash, Shown: true, Story: true},
	{Verdict: OOMKill, Shown: true, Story: true, Metric: OOMVictim, Fix: OOMFix},
	{Verdict: PostmasterExit, Shown: true},
	{Verdict: PostmasterStart},
	{Verdict: Exit},
	{Verdict: Signal},
}

// Describe returns a verdict's descriptor; the zero Descriptor for an
// unknown one.
func Describe(v Verdict) Descriptor {
	for _, d := range All {
		if d.Verdict == v {
			return d
		}
	}
	return Descriptor{}
}

// Decision is a verdict and whether it is worth an operator's attention
// (shown and counted by default) or only context (shown with --all).
type Decision struct {
	Verdict Verdict
	Flagged bool
}

// decide is the verdict as its descriptor says it is shown.
func decide(v Verdict) Decision { return Decision{v, Describe(v).Shown} }
