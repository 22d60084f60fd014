package verdict

// All is every verdict, in the order of README's verdict table: what
// crash-restarts PostgreSQL first, context last. trace's --verdict accepts
// these and lists them in this order; orphanwatch_records_total starts a
// series for each at 0.
var All = []Verdict{
	CrashRestart, CrashRestartConfirmed, Adopted, Adoption, PostmasterPID1,
	ServerCrash, OOMKill, PostmasterExit, PostmasterStart, Exit, Signal,
}
