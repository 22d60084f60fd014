package audit

import (
	"strings"
	"testing"
)

// cgroup v2 (this project's own machine is cgroup v1 hybrid: the kernel
// side is tested there only with v1; this is a fake v2 tree).
func TestOOMGroup(t *testing.T) {
	for _, tc := range []struct {
		name     string
		files    map[string]string
		pmAdj    int
		level    Level
		set      bool
		cgroup   string
		says     string
		nofinder bool
	}{
		{"not set", map[string]string{scope + "/memory.oom.group": "0\n"}, 0, OK, false, "",
			"memory.oom.group is 0 on its cgroup " + scope + " and its ancestors: the OOM killer ends one process", false},
		{"set on the container", map[string]string{scope + "/memory.oom.group": "1\n"}, -997, Warn, true, scope,
			"memory.oom.group is 1 on cgroup " + scope + " (Kubernetes 1.28+ sets it on every container on cgroup v2): an OOM kill there kills every process of it, the postmaster too (its oom_score_adj -997", false},
		{"set above", map[string]string{"system.slice/memory.oom.group": "1\n", scope + "/memory.oom.group": "1\n"}, 0, Warn, true, "/system.slice",
			"memory.oom.group is 1 on cgroup /system.slice", false},
		{"the postmaster at -1000 is spared", map[string]string{scope + "/memory.oom.group": "1\n"}, -1000, OK, true, scope,
			"but the postmaster, which is at oom_score_adj -1000: every server process dies and PostgreSQL crash-restarts", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(t)
			h.container(containerID, 100, tc.pmAdj, 0)
			for name, data := range tc.files {
				h.file(h.cgroup, name, data)
			}
			r := h.host().Run(Selector{})
			m := r.Postmasters[0].Memory
			if m.OOMGroup == nil || *m.OOMGroup != tc.set || m.OOMGroupCgroup != tc.cgroup {
				t.Errorf("memory = %+v (oom_group %v)", m, m.OOMGroup)
			}
			f := findingOf(t, r, 100, CheckOOMGroup)
			if f.Level != tc.level || !strings.Contains(f.Message, tc.says) || (tc.level == Warn) != strings.Contains(f.Fix, "singleProcessOOMKill") {
				t.Errorf("finding = %+v\nwant %s saying %q", f, tc.level, tc.says)
			}
		})
	}
}

// On cgroup v1 there is no memory.oom.group: no finding, null in JSON.
func TestOOMGroupAbsentOnV1(t *testing.T) {
	root := t.TempDir()
	write(t, root, map[string]string{
		"unified/cgroup.controllers":              "\n",
		"memory/docker/abc/memory.limit_in_bytes": "419430400\n",
		"memory/docker/abc/memory.stat":           "total_rss 1\n",
	})
	m, _ := memoryOf(t, root, hybridLines)
	if m.CgroupVersion != 1 || m.OOMGroup != nil {
		t.Errorf("memory = %+v", m)
	}
}
