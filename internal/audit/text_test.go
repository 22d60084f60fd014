package audit

import (
	"bytes"
	"strings"
	"testing"

	"github.com/orphanwatch/orphanwatch/internal/procfs/procfstest"
)

// A process in a container chooses its comm and argv: check's text report
// must not hand its escape sequences to the admin's terminal.
func TestWriteTextEscapesTerminalControls(t *testing.T) {
	h := newFakeHost(t)
	h.container(containerID, 100, 0, 0)
	h.proc.Add(procfstest.Proc{PID: 110, PPID: 100, Comm: "ev\x1b[2Jil\x9b\n", Start: 40, Exe: "/bin/sh",
		Argv: []string{"sh", "-c", "printf '\x1b]0;pwned\x07' password=s3cr;t"}, NSpid: []int{110, 12}, Cgroup: scope})
	r := h.host().Run(Selector{})
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if i := strings.IndexFunc(out, func(c rune) bool { return c < ' ' && c != '\n' || c == 0x7f || c == 0x9b || c == 0xfffd }); i >= 0 {
		t.Errorf("control character %q at %d in the report:\n%q", out[i], i, out)
	}
	for _, want := range []string{
		`orphan ev\x1b[2Jil\x9b\n (pid 110, pid 12 in its namespace)`,
		`x1b]0;pwned`, // the command line, escaped by redact.Argv, then quoted by %q
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "s3cr") || strings.Contains(out, ";t") {
		t.Errorf("password in the report:\n%s", out)
	}
}
