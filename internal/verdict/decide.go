package verdict

import "github.com/orphanwatch/orphanwatch/internal/event"

// Origin says how a process came to be a postmaster's child.
type Origin int

const (
	OriginUnknown Origin = iota // no birth record: started before orphanwatch, or evicted
	OriginForked                // its parent at death is its parent at birth
	OriginAdopted               // its parent at death adopted it
)

// IsAdoptee reports whether the postmaster is to take a child for one it
// never forked: adopted, or of unknown origin and not running the server
// binary (backends are forked without exec, so they run it).
func IsAdoptee(o Origin, serverBinary bool) bool {
	return o == OriginAdopted || (o == OriginUnknown && !serverBinary)
}

// DeathFacts is what is known when a postmaster's child dies.
type DeathFacts struct {
	Adoptee bool
	// OOMKilled: the OOM killer chose it; that was reported as oom-kill.
	OOMKilled bool
	// Reaped: what the postmaster did about it (State.Reap).
	Reaped Reaped
}

// OnDeath decides the death of a postmaster's child.
func OnDeath(f DeathFacts, status event.ExitStatus) Decision {
	r := f.Reaped
	switch {
	case f.OOMKilled:
		return decide(Exit) // the oom-kill record named it
	case f.Adoptee && r.Crash:
		return decide(CrashRestart)
	case f.Adoptee && r.Ignored:
		return decide(Casualty)
	case f.Adoptee && !Crashes(status):
		return decide(Adopted)
	case r.Crash:
		return decide(ServerCrash)
	}
	return decide(Exit)
}

// AdoptionFacts is what is known when an orphan is handed to a new parent.
type AdoptionFacts struct {
	NewParentIsPostmaster bool
}

// OnAdoption decides an adoption of a live orphan. One that is already
// dead is decided when its new parent reaps it (OnDeath).
func OnAdoption(f AdoptionFacts) Decision {
	return Decision{Adoption, f.NewParentIsPostmaster}
}

// OnPostmasterStart decides a postmaster seen starting (or running when
// orphanwatch starts): as PID 1 of its namespace it is a hazard.
func OnPostmasterStart(nsPid uint32) Decision {
	if nsPid == 1 {
		return decide(PostmasterPID1)
	}
	return decide(PostmasterStart)
}

// OOMRole is the victim's relation to a postmaster.
type OOMRole string

const (
	RolePostmaster OOMRole = "postmaster"
	RoleServer     OOMRole = "server"
	RoleAdopted    OOMRole = "adopted"
	RoleOther      OOMRole = "other"
)

// OOMFacts is what is known when the OOM killer chooses a victim.
type OOMFacts struct {
	Role OOMRole
	// GroupKill: memory.oom.group is set above the victim (cgroup v2;
	// Kubernetes 1.28+ sets it on every container): every process of its
	// cgroup is killed with it, except those at oom_score_adj -1000.
	GroupKill bool
	// PostmasterProtected: the postmaster's oom_score_adj is -1000.
	PostmasterProtected bool
	// PostmasterShares: the postmaster is in the victim's cgroup.
	PostmasterShares bool
}

// OnOOM decides an OOM kill, and whether the postmaster will crash-restart:
// a killed server process or adoptee dies of SIGKILL, a crash for every
// version, unless a group kill takes the postmaster too (then nothing
// restarts but the container). A killed postmaster takes the server down.
func OnOOM(f OOMFacts) (d Decision, crashRestart bool) {
	switch f.Role {
	case RolePostmaster:
		return decide(OOMKill), false
	case RoleServer, RoleAdopted:
		postmasterDies := f.GroupKill && f.PostmasterShares && !f.PostmasterProtected
		return decide(OOMKill), !postmasterDies
	}
	return Decision{OOMKill, false}, false
}
