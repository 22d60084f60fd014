// Package verdict decides what an event means for PostgreSQL. It is pure:
// plain values in, a verdict out, so every rule is unit-tested without a
// kernel.
package verdict

import "github.com/orphanwatch/orphanwatch/internal/event"

// Verdict names what happened, in the words of the JSON contract.
type Verdict string

const (
	// CrashRestart: a process the postmaster did not fork died under it with
	// a status the postmaster treats as a crash: the server restarts.
	CrashRestart Verdict = "crash-restart"
	// Adopted: the same with exit 0 or 1, which the postmaster ignores: a
	// latent hazard, the next one may not exit cleanly.
	Adopted Verdict = "adopted"
	// Adoption: an orphan was just handed to a new parent.
	Adoption Verdict = "adoption"
	// PostmasterPID1: a postmaster is PID 1 of its namespace: it adopts every orphan there.
	PostmasterPID1 Verdict = "postmaster-pid1"
	// PostmasterStart: a postmaster started (not as PID 1).
	PostmasterStart Verdict = "postmaster-start"
	// PostmasterExit: a postmaster exited: shutdown, or an outage.
	PostmasterExit Verdict = "postmaster-exit"
	// ServerCrash: a server process the postmaster forked died abnormally:
	// the server restarts (a backend crash, or kill -9 of a backend).
	ServerCrash Verdict = "server-crash"
	// OOMKill: the OOM killer chose a postmaster, a server process or an
	// adoptee of a postmaster.
	OOMKill Verdict = "oom-kill"
	// CrashRestartConfirmed: the postmaster was seen terminating its children
	// after a crash: PostgreSQL really did reset.
	CrashRestartConfirmed Verdict = "crash-restart-confirmed"
	// Exit: anything else (shown with --all).
	Exit Verdict = "exit"
	// Signal: a terminating signal sent by or to a postmaster (shown with --all).
	Signal Verdict = "signal"
)

// Decision is a verdict and whether it is worth an operator's attention
// (shown and counted by default) or only context (shown with --all).
type Decision struct {
	Verdict Verdict
	Flagged bool
}

// Origin says how a process came to be a postmaster's child.
type Origin int

const (
	OriginUnknown Origin = iota // no birth record: started before orphanwatch, or evicted
	OriginForked                // its parent at death is its parent at birth
	OriginAdopted               // its parent at death adopted it
)

// ExitFacts is what is known when a process exits.
type ExitFacts struct {
	Status             event.ExitStatus
	IsPostmaster       bool // the process itself is a postmaster
	ParentIsPostmaster bool // its parent at death is a postmaster
	PostmasterMajor    int  // that postmaster's major version, 0 if unknown
	Origin             Origin
	IsServerBinary     bool // it runs the postgres binary (decides an unknown origin)
	// KilledByPostmaster: the signal that ended it was sent by its parent
	// postmaster (crash handling or shutdown), so its death is a consequence.
	KilledByPostmaster bool
	// OOMKilled: the OOM killer chose it; that was reported as oom-kill.
	OOMKilled bool
}

// OnExit decides an exit.
func OnExit(f ExitFacts) Decision {
	switch {
	case f.IsPostmaster:
		return Decision{PostmasterExit, true}
	case !f.ParentIsPostmaster:
		return Decision{Exit, false}
	case f.KilledByPostmaster || f.OOMKilled:
		return Decision{Exit, false}
	}
	adoptee := f.Origin == OriginAdopted || (f.Origin == OriginUnknown && !f.IsServerBinary)
	crashes := ChildExitCrashes(f.PostmasterMajor, f.Status)
	switch {
	case adoptee && crashes:
		return Decision{CrashRestart, true}
	case adoptee:
		return Decision{Adopted, true}
	case crashes:
		return Decision{ServerCrash, true}
	}
	return Decision{Exit, false}
}

// AdoptionFacts is what is known when an orphan is handed to a new parent.
type AdoptionFacts struct {
	NewParentIsPostmaster bool
	PostmasterMajor       int
	// NewParentIsContainerInit: PID 1 of a non-host namespace, or a subreaper.
	NewParentIsContainerInit bool
	// Zombie: the orphan is already dead; its new parent reaps it and sees Status.
	Zombie bool
	Status event.ExitStatus
}

// OnAdoption decides an adoption.
func OnAdoption(f AdoptionFacts) Decision {
	if f.Zombie && f.NewParentIsPostmaster {
		// The postmaster reaps a corpse it never forked, as if it had died in its care.
		if ChildExitCrashes(f.PostmasterMajor, f.Status) {
			return Decision{CrashRestart, true}
		}
		return Decision{Adopted, true}
	}
	return Decision{Adoption, f.NewParentIsPostmaster || f.NewParentIsContainerInit}
}

// OnPostmasterStart decides a postmaster seen starting (or running when
// orphanwatch starts): as PID 1 of its namespace it is a hazard.
func OnPostmasterStart(nsPid uint32) Decision {
	if nsPid == 1 {
		return Decision{PostmasterPID1, true}
	}
	return Decision{PostmasterStart, false}
}

// OOMRole is the victim's relation to a postmaster.
type OOMRole string

const (
	RolePostmaster OOMRole = "postmaster"
	RoleServer     OOMRole = "server"
	RoleAdopted    OOMRole = "adopted"
	RoleOther      OOMRole = "other"
)

// OnOOM decides an OOM kill, and whether the postmaster will crash-restart:
// a killed server process or adoptee dies of SIGKILL, a crash for every
// version; a killed postmaster takes the server down instead.
func OnOOM(role OOMRole) (d Decision, crashRestart bool) {
	switch role {
	case RolePostmaster:
		return Decision{OOMKill, true}, false
	case RoleServer, RoleAdopted:
		return Decision{OOMKill, true}, true
	}
	return Decision{OOMKill, false}, false
}
