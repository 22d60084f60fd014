package audit

import (
	"strings"
	"testing"

	"github.com/orphanwatch/orphanwatch/internal/container"
)

func TestSelectorByName(t *testing.T) {
	h := newFakeHost(t)
	h.container(containerID, 100, 0, 0)
	h.container(otherID, 200, 0, 0)
	h.container("beef"+containerID[4:], 300, 0, 0)
	host := h.host()
	host.Names = fakeNamer{names: map[string]container.Names{
		containerID:              {Namespace: "app", Pod: "db-0", Container: "postgres"},
		otherID:                  {Namespace: "app", Pod: "db-1", Container: "postgres"},
		"beef" + containerID[4:]: {Container: "cafe"},
	}}
	for _, tc := range []struct {
		name string
		arg  string
		pid  uint32
		says string
	}{
		{"docker name", "cafe", 300, ""},
		{"docker name with its slash", "/cafe", 300, ""},
		{"pod/container", "db-1/postgres", 200, ""},
		{"namespace/pod/container", "app/db-0/postgres", 100, ""},
		// A name wins over an id prefix, as in docker inspect: "beef" is
		// both hex and no name; "cafe" is a name and no id's prefix.
		{"id prefix", "beef", 300, ""},
		{"ambiguous name", "postgres", 0, `"postgres" names several containers (app/db-0/postgres (0123456789ab), app/db-1/postgres (0123456789ab)): give the container id`},
		{"no such name", "web", 0, `no running postmaster in a container named "web"; postmasters run in app/db-0/postgres (0123456789ab), app/db-1/postgres (0123456789ab), cafe (beef456789ab)`},
		{"no such id", "ffff", 0, `no running postmaster in a container whose id starts with "ffff" or named "ffff"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := host.Run(Selector{Container: tc.arg})
			if tc.pid != 0 {
				if len(r.Postmasters) != 1 || r.Postmasters[0].PID != tc.pid {
					t.Errorf("--container %s selected %+v, want postmaster %d; findings %+v", tc.arg, r.Postmasters, tc.pid, r.Findings)
				}
				return
			}
			if r.Status != Unknown || len(r.Findings) != 1 || !strings.Contains(r.Findings[0].Message, tc.says) {
				t.Errorf("--container %s: %s %+v\nwant unknown saying %q", tc.arg, r.Status, r.Findings, tc.says)
			}
		})
	}
}
