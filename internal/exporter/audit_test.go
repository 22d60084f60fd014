package exporter

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/orphanwatch/orphanwatch/internal/audit"
)

func TestAuditGaugesPublishCheckFindings(t *testing.T) {
	limit, overcommit := uint64(400<<20), 0
	report := audit.Report{
		Status:           audit.Fail,
		OvercommitMemory: &overcommit,
		Postmasters: []audit.Postmaster{{
			PID: 8900, NSPid: 1, PID1: true, PidNS: 4026532334, DataDir: "/var/lib/postgresql/data", OOMScoreAdj: 0,
			ContainerRuntime: "docker", ContainerID: strings.Repeat("ab", 32),
			Memory:  audit.Memory{LimitBytes: &limit, UsedBytes: 100 << 20},
			Orphans: []audit.Orphan{{PID: 9000}},
		}},
		Findings: []audit.Finding{
			{Check: audit.CheckPID1, Level: audit.Fail}, {Check: audit.CheckOrphan, Level: audit.Warn},
			{Check: audit.CheckOvercommit, Level: audit.Note},
		},
	}
	runs := 0
	c := NewAuditCollector(func() audit.Report { runs++; return report }, nil)
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }

	id := strings.Repeat("ab", 32)
	want := `
# HELP orphanwatch_check_status The worst finding of ` + "`orphanwatch check`" + ` now, as its exit status: 0 ok, 1 warning, 2 failure, 3 unknown.
# TYPE orphanwatch_check_status gauge
orphanwatch_check_status 2
# HELP orphanwatch_postmaster_pid1 One series per running postmaster, from ` + "`orphanwatch check`" + `'s audit of /proc: 1 when it is PID 1 of its PID namespace (it adopts every orphan there), else 0. orphanwatch_postmasters_pid1 counts them per container from the live process table instead.
# TYPE orphanwatch_postmaster_pid1 gauge
orphanwatch_postmaster_pid1{container="",container_id="` + id + `",data_dir="/var/lib/postgresql/data",namespace="",pid_ns="4026532334",pod=""} 1
# HELP orphanwatch_postmaster_orphans Live orphans the postmaster has adopted now: each is a crash-restart waiting to happen.
# TYPE orphanwatch_postmaster_orphans gauge
orphanwatch_postmaster_orphans{container="",container_id="` + id + `",data_dir="/var/lib/postgresql/data",namespace="",pid_ns="4026532334",pod=""} 1
# HELP orphanwatch_postmaster_memory_limit_bytes The tightest memory cgroup limit over the postmaster's cgroup and its ancestors; absent when unlimited.
# TYPE orphanwatch_postmaster_memory_limit_bytes gauge
orphanwatch_postmaster_memory_limit_bytes{container="",container_id="` + id + `",data_dir="/var/lib/postgresql/data",namespace="",pid_ns="4026532334",pod=""} 4.194304e+08
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "orphanwatch_check_status", "orphanwatch_postmaster_pid1",
		"orphanwatch_postmaster_orphans", "orphanwatch_postmaster_memory_limit_bytes"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c, "orphanwatch_check_findings"); n != 3 {
		t.Errorf("%d finding series, want 3", n)
	}
	if runs != 1 {
		t.Errorf("the audit ran %d times for scrapes within %s, want 1", runs, auditCacheFor)
	}
	now = now.Add(auditCacheFor)
	testutil.CollectAndCount(c)
	if runs != 2 {
		t.Errorf("the audit ran %d times after the cache expired, want 2", runs)
	}
}

// Two postmasters outside any recognised container with the same data
// directory path (each in its own mount and PID namespace), or with none
// known, are two series, not one series collected twice (which the registry
// would refuse, dropping one).
func TestAuditGaugesTellApartPostmastersOutsideContainers(t *testing.T) {
	report := audit.Report{Postmasters: []audit.Postmaster{
		{PID: 100, NSPid: 1, PID1: true, PidNS: 4026531836, DataDir: "/srv/pg"},
		{PID: 200, NSPid: 1, PID1: true, PidNS: 4026532400, DataDir: "/srv/pg"},
		{PID: 300, NSPid: 1, PID1: true, PidNS: 4026532500},
		{PID: 400, NSPid: 1, PID1: true, PidNS: 4026532600},
	}}
	c := NewAuditCollector(func() audit.Report { return report }, nil)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if _, err := reg.Gather(); err != nil {
		t.Fatalf("gathering the audit gauges: %v", err)
	}
	if n := testutil.CollectAndCount(c, "orphanwatch_postmaster_pid1"); n != 4 {
		t.Errorf("%d orphanwatch_postmaster_pid1 series, want 4", n)
	}
}
