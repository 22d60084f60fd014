package report

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// Comms, command lines and paths are the processes' choice: the table and
// the story must not hand their escape sequences to the terminal, and a tab
// or newline in a comm must not break the columns.
func TestTableEscapesTerminalControls(t *testing.T) {
	r := seedRecord()
	r.Comm = "ps\x1b[2J\tx\n"
	r.ParentComm = "pg\x9b31m"
	r.Ancestry[0].Comm = "sh\x07"
	r.Summary += " \x1b]0;pwned\x07"
	r.Cmdline = "psql \x1b[31m"
	r.Postmaster.DataDir = "/data\u202e"
	var buf bytes.Buffer
	if err := NewTableWriter(&buf).Write(&r); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if i := strings.IndexFunc(out, func(c rune) bool {
		return c < ' ' && c != '\n' || c == 0x7f || c == 0xfffd || c == 0x202e
	}); i >= 0 {
		t.Errorf("control character %q at %d in:\n%q", out[i], i, out)
	}
	for _, want := range []string{`ps\x1b[2J\tx\n`, `pg\x9b31m[8900]`, `sh\x07[8910]`, `\x1b]0;pwned\x07`, `psql \x1b[31m`, `/data\u202e`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if lines := strings.Count(out, "\n"); lines != strings.Count(plainTable(t), "\n") {
		t.Errorf("%d lines, want as many as without the controls:\n%s", lines, out)
	}
}

func plainTable(t *testing.T) string {
	r := seedRecord()
	var buf bytes.Buffer
	if err := NewTableWriter(&buf).Write(&r); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// JSON lines are tailed in terminals too: no control character may reach one
// raw, C1 (U+009B is CSI) included, and the values must decode unchanged.
func TestJSONEscapesTerminalControls(t *testing.T) {
	r := seedRecord()
	r.Comm = "ps\u009b2J\u0085é"
	r.Cmdline = "psql \x1b[31m \u0080\u009f\u00a0"
	var buf bytes.Buffer
	w := NewJSONWriter(&buf)
	for i := 0; i < 2; i++ { // the scratch line is reused
		if err := w.Write(&r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if i := strings.IndexFunc(out, func(c rune) bool {
		return c < ' ' && c != '\n' || c >= 0x7f && c <= 0x9f
	}); i >= 0 {
		t.Errorf("control character %q at %d in:\n%q", out[i:], i, out)
	}
	for _, want := range []string{`ps\u009b2J\u0085é`, `\u001b[31m \u0080\u009f` + "\u00a0"} {
		if strings.Count(out, want) != 2 {
			t.Errorf("output lacks two of %q:\n%s", want, out)
		}
	}
	dec := json.NewDecoder(strings.NewReader(out))
	for i := 0; i < 2; i++ {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		if m["comm"] != r.Comm || m["cmdline"] != r.Cmdline {
			t.Errorf("decoded comm %q, cmdline %q; want %q, %q", m["comm"], m["cmdline"], r.Comm, r.Cmdline)
		}
	}
}
