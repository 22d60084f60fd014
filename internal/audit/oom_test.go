package audit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orphanwatch/orphanwatch/internal/procfs"
)

func servers(adj ...int) []ServerProcess {
	out := make([]ServerProcess, len(adj))
	for i, a := range adj {
		out[i] = ServerProcess{PID: uint32(200 + i), OOMScoreAdj: a}
	}
	return out
}

func TestOOMScoreAdjLevels(t *testing.T) {
	for _, tc := range []struct {
		name       string
		postmaster int
		children   []ServerProcess
		file, val  string
		want       Level
		says       string
	}{
		{"recommended: -1000 and children reset to 0", -1000, servers(0, 0, 0), pgOOMAdjustFile, "0", OK, "the OOM killer never chooses it) and its server processes all 3 at 0"},
		{"default: all at 0", 0, servers(0, 0), "", "", Note, "share oom_score_adj 0"},
		{"Guaranteed pod: all at -997", -997, servers(-997), "", "", Note, "share oom_score_adj -997"},
		{"below its children, not immune", -500, servers(0, 0), "", "", OK, "-1000 would make it immune"},
		{"children inherited -1000", -1000, servers(-1000, -1000), "", "", Warn, "2 of 2 server processes have oom_score_adj -1000"},
		{"some children at -1000", -1000, servers(0, -1000), "", "", Warn, "1 of 2 server processes have oom_score_adj -1000 (1 at -1000, 1 at 0)"},
		{"postmaster above its children", 500, servers(0, 0), "", "", Warn, "(oom_score_adj 500) can be chosen by the OOM killer before its server processes (all 2 at 0)"},
		{"children protected, postmaster not", 0, servers(-1000), "", "", Warn, "can be chosen by the OOM killer before"},
		{"no children yet, protected", -1000, nil, "", "", OK, "no server processes to compare"},
		{"no children yet, not protected", 0, nil, "", "", Note, "nothing protects it"},
		// A Burstable pod: the runtime set 937 with CAP_SYS_RESOURCE, so
		// backends cannot write 0 and PostgreSQL ignores the failure.
		{"reset refused by the kernel", 937, servers(937, 937), pgOOMAdjustFile, "", Note, "PG_OOM_ADJUST_FILE is set with value 0, but server process 200 has 937: the kernel refused the write"},
		{"bad PG_OOM_ADJUST_VALUE", 0, servers(0), pgOOMAdjustFile, "zero", Note, `PG_OOM_ADJUST_VALUE="zero" is not a number`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pm := &Postmaster{OOMScoreAdj: tc.postmaster, ServerProcesses: tc.children, OOMAdjustFile: tc.file, OOMAdjustValue: tc.val}
			f := oomScoreAdjFinding(pm)
			if f.Level != tc.want || !strings.Contains(f.Message, tc.says) {
				t.Errorf("got %s %q, want %s saying %q", f.Level, f.Message, tc.want, tc.says)
			}
			if (f.Level == OK) != (f.Fix == "") {
				t.Errorf("fix %q for level %s: want a fix exactly when not OK", f.Fix, f.Level)
			}
		})
	}
}

func TestOvercommitLevels(t *testing.T) {
	for _, tc := range []struct {
		content string
		want    Level
		mode    int
	}{
		{"2\n", OK, 2},
		{"0\n", Note, 0},
		{"1\n", Warn, 1},
		{"7\n", Unknown, 7},
		{"x\n", Unknown, -1},
		{"", Unknown, -1}, // no such file: a /proc without sys/vm
	} {
		h := newFakeHost(t)
		if tc.content == "" {
			if err := os.Remove(filepath.Join(h.proc.Root, "sys", "vm", "overcommit_memory")); err != nil {
				t.Fatal(err)
			}
		} else {
			h.file(h.proc.Root, "sys/vm/overcommit_memory", tc.content)
		}
		mode, f := Host{Proc: procfs.FS{Root: h.proc.Root}}.overcommit()
		if f.Level != tc.want || f.Check != CheckOvercommit {
			t.Errorf("%q: %+v, want %s", tc.content, f, tc.want)
		}
		if (mode == nil) != (tc.mode < 0) || (mode != nil && *mode != tc.mode) {
			t.Errorf("%q: mode %v, want %d", tc.content, mode, tc.mode)
		}
	}
}
