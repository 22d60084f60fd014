package verdict

import (
	"testing"

	"github.com/orphanwatch/orphanwatch/internal/event"
)

const (
	exit0   = event.ExitStatus(0)
	exit1   = event.ExitStatus(1 << 8)
	exit2   = event.ExitStatus(2 << 8)
	exit3   = event.ExitStatus(3 << 8)
	sigpipe = event.ExitStatus(13)
	sigterm = event.ExitStatus(15)
	sigkill = event.ExitStatus(9)
	segvCor = event.ExitStatus(0x80 | 11)
)

// The rule PostgreSQL 12-18 apply to a child they did not fork (verified on
// PostgreSQL 15 here: SIGPIPE, SIGTERM and exit 3 crash-restart, exit 1 does not).
func TestChildExitCrashesPerVersion(t *testing.T) {
	for major := 12; major <= 18; major++ {
		for status, want := range map[event.ExitStatus]bool{
			exit0: false, exit1: false, exit2: true, exit3: true,
			sigpipe: true, sigterm: true, sigkill: true, segvCor: true,
		} {
			if got := ChildExitCrashes(major, status); got != want {
				t.Errorf("PostgreSQL %d, %v: crashes = %v, want %v", major, status, got, want)
			}
		}
	}
	// Unknown or out-of-table versions fall back to the nearest rule.
	for major, want := range map[int]string{0: "server process", 11: "server process", 19: "untracked child process"} {
		if got := RuleFor(major).LogSubject; got != want {
			t.Errorf("RuleFor(%d) logs %q, want the nearest rule's %q", major, got, want)
		}
	}
	if RuleFor(15).LogsCleanExit || !RuleFor(18).LogsCleanExit {
		t.Error("exit 0/1 of an unknown child is logged at LOG level by 18 only")
	}
}

func TestLogLineWordingPerVersion(t *testing.T) {
	tests := []struct {
		major  int
		status event.ExitStatus
		want   string
	}{
		{15, sigpipe, "server process (PID 9) was terminated by signal 13: Broken pipe"},
		{12, sigterm, "server process (PID 9) was terminated by signal 15: Terminated"},
		{17, exit3, "server process (PID 9) exited with exit code 3"},
		{18, sigpipe, "untracked child process (PID 9) was terminated by signal 13: Broken pipe"},
		{18, exit3, "untracked child process (PID 9) exited with exit code 3"},
		{15, event.ExitStatus(1 << 8), ""}, // not logged at LOG level before 18
		{18, event.ExitStatus(1 << 8), "untracked child process (PID 9) exited with exit code 1"},
	}
	for _, tt := range tests {
		if got := LogLine(tt.major, 9, tt.status); got != tt.want {
			t.Errorf("LogLine(%d, %v) = %q, want %q", tt.major, tt.status, got, tt.want)
		}
	}
}

func TestOnExit(t *testing.T) {
	tests := []struct {
		name string
		f    ExitFacts
		want Decision
	}{
		{"adoptee killed by SIGPIPE", ExitFacts{Status: sigpipe, ParentIsPostmaster: true, PostmasterMajor: 15, Origin: OriginAdopted}, Decision{CrashRestart, true}},
		{"adoptee exit 3", ExitFacts{Status: exit3, ParentIsPostmaster: true, Origin: OriginAdopted}, Decision{CrashRestart, true}},
		{"adoptee exit 1", ExitFacts{Status: exit1, ParentIsPostmaster: true, Origin: OriginAdopted}, Decision{Adopted, true}},
		{"adoptee exit 0", ExitFacts{Status: exit0, ParentIsPostmaster: true, Origin: OriginAdopted}, Decision{Adopted, true}},
		{"unknown origin, not postgres: an adoptee", ExitFacts{Status: sigterm, ParentIsPostmaster: true}, Decision{CrashRestart, true}},
		{"unknown origin, postgres binary: a backend", ExitFacts{Status: exit1, ParentIsPostmaster: true, IsServerBinary: true}, Decision{Exit, false}},
		{"backend killed -9", ExitFacts{Status: sigkill, ParentIsPostmaster: true, Origin: OriginForked}, Decision{ServerCrash, true}},
		{"backend ends normally", ExitFacts{Status: exit0, ParentIsPostmaster: true, Origin: OriginForked}, Decision{Exit, false}},
		{"backend told to quit by the postmaster", ExitFacts{Status: exit2, ParentIsPostmaster: true, Origin: OriginForked, KilledByPostmaster: true}, Decision{Exit, false}},
		{"OOM victim, already reported", ExitFacts{Status: sigkill, ParentIsPostmaster: true, Origin: OriginForked, OOMKilled: true}, Decision{Exit, false}},
		{"postmaster exits", ExitFacts{Status: exit0, IsPostmaster: true}, Decision{PostmasterExit, true}},
		{"not under a postmaster", ExitFacts{Status: sigpipe, Origin: OriginAdopted}, Decision{Exit, false}},
	}
	for _, tt := range tests {
		if got := OnExit(tt.f); got != tt.want {
			t.Errorf("%s: OnExit = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestOnAdoption(t *testing.T) {
	tests := []struct {
		name string
		f    AdoptionFacts
		want Decision
	}{
		{"live orphan to a postmaster", AdoptionFacts{NewParentIsPostmaster: true}, Decision{Adoption, true}},
		{"live orphan to a container init", AdoptionFacts{NewParentIsContainerInit: true}, Decision{Adoption, true}},
		{"live orphan to the host init", AdoptionFacts{}, Decision{Adoption, false}},
		{"dead SIGPIPE orphan handed to a postmaster", AdoptionFacts{NewParentIsPostmaster: true, Zombie: true, Status: sigpipe}, Decision{CrashRestart, true}},
		{"dead exit-0 orphan handed to a postmaster", AdoptionFacts{NewParentIsPostmaster: true, Zombie: true, Status: exit0}, Decision{Adopted, true}},
		{"dead orphan handed to tini", AdoptionFacts{NewParentIsContainerInit: true, Zombie: true, Status: sigpipe}, Decision{Adoption, true}},
	}
	for _, tt := range tests {
		if got := OnAdoption(tt.f); got != tt.want {
			t.Errorf("%s: OnAdoption = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestPostmasterIdentification(t *testing.T) {
	tests := []struct {
		argv           []string
		parentIsServer bool
		want           bool
	}{
		{[]string{"/usr/lib/postgresql/15/bin/postgres", "-D", "/data"}, false, true},
		{[]string{"postgres"}, false, true},
		{[]string{"postgres: checkpointer"}, true, false}, // a backend: forked by the postmaster
		{[]string{"postgres", "--single", "-D", "/data", "db"}, false, false},
		{[]string{"postgres", "--boot", "-F"}, false, false},
		{[]string{"postgres", "-C", "data_directory"}, false, false},
		{[]string{"postgres", "-V"}, false, false},
		{[]string{"postgres", "--describe-config"}, false, false},
	}
	for _, tt := range tests {
		if got := IsPostmaster(tt.argv, tt.parentIsServer); got != tt.want {
			t.Errorf("IsPostmaster(%q, %v) = %v, want %v", tt.argv, tt.parentIsServer, got, tt.want)
		}
	}
	for exe, want := range map[string]bool{
		"/usr/lib/postgresql/15/bin/postgres": true, "/usr/local/bin/postmaster": true,
		"/usr/lib/postgresql/15/bin/postgres (deleted)": true, "/usr/bin/psql": false, "/usr/bin/postgres-exporter": false,
	} {
		if got := IsServerBinary(exe, ""); got != want {
			t.Errorf("IsServerBinary(%q) = %v", exe, got)
		}
	}
	if !IsServerBinary("", "postgres") || IsServerBinary("", "psql") {
		t.Error("IsServerBinary by comm")
	}
}

func TestOnPostmasterStartAndOOM(t *testing.T) {
	if d := OnPostmasterStart(1); d != (Decision{PostmasterPID1, true}) {
		t.Errorf("ns pid 1: %+v", d)
	}
	if d := OnPostmasterStart(7); d != (Decision{PostmasterStart, false}) {
		t.Errorf("ns pid 7: %+v", d)
	}
	for role, crash := range map[OOMRole]bool{RolePostmaster: false, RoleServer: true, RoleAdopted: true, RoleOther: false} {
		d, c := OnOOM(role)
		if d.Verdict != OOMKill || c != crash || d.Flagged != (role != RoleOther) {
			t.Errorf("OnOOM(%s) = %+v, %v", role, d, c)
		}
	}
}
