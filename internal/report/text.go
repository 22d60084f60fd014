package report

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/redact"
	"github.com/orphanwatch/orphanwatch/internal/verdict"
)

// JSONWriter writes one record per line. Lines are buffered until Flush,
// which the agent calls whenever the kernel has nothing more to hand over:
// a lone event is written at once, a burst in a few writes.
type JSONWriter struct {
	mu   sync.Mutex
	buf  *bufio.Writer
	line bytes.Buffer // one encoded record, before its C1 controls are escaped
	enc  *json.Encoder
}

func NewJSONWriter(w io.Writer) *JSONWriter {
	j := &JSONWriter{buf: bufio.NewWriterSize(w, 64<<10)}
	j.enc = json.NewEncoder(&j.line)
	return j
}

func (j *JSONWriter) Write(r *Record) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.line.Reset()
	if err := j.enc.Encode(r); err != nil {
		return err
	}
	return writeC1Escaped(j.buf, j.line.Bytes())
}

// writeC1Escaped writes a JSON line with the C1 controls (U+0080-U+009F)
// escaped as \u00XX: encoding/json escapes only C0, and a terminal that tails
// the JSON acts on C1 (U+009B is CSI) as on ESC [. In a JSON text a C1 control
// can only be inside a string, encoded as 0xC2 0x80-0x9F, so a byte scan is exact.
func writeC1Escaped(w *bufio.Writer, line []byte) error {
	for {
		i := bytes.IndexByte(line, 0xc2)
		if i < 0 || i+1 >= len(line) {
			_, err := w.Write(line)
			return err
		}
		if c := line[i+1]; c >= 0x80 && c <= 0x9f {
			w.Write(line[:i])
			fmt.Fprintf(w, `\u%04x`, c)
			line = line[i+2:]
			continue
		}
		w.Write(line[:i+2])
		line = line[i+2:]
	}
}

// Flush writes out the buffered lines.
func (j *JSONWriter) Flush() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.buf.Flush()
}

// TableWriter prints the live table, and after each crash-restart (or other
// serious verdict) the story behind it.
type TableWriter struct {
	mu      sync.Mutex
	w       io.Writer
	started bool
}

func NewTableWriter(w io.Writer) *TableWriter { return &TableWriter{w: w} }

var columns = []string{"TIME", "VERDICT", "PID", "NSPID", "COMM", "HOW", "PARENT", "ORIGINAL PARENT", "LIFETIME", "ORIGIN", "CONTAINER"}

func (t *TableWriter) Write(r *Record) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	// One tabwriter per row keeps rows streaming; fixed minimum widths keep
	// the columns aligned from row to row.
	tw := tabwriter.NewWriter(t.w, 0, 0, 2, ' ', 0)
	if !t.started {
		fmt.Fprintln(tw, padded(columns))
		t.started = true
	}
	fmt.Fprintln(tw, padded([]string{
		r.Time.Format("15:04:05.000"), r.Verdict, fmt.Sprint(r.PID), fmt.Sprint(r.NSPid), r.Comm,
		how(r), parentColumn(r), originalParentColumn(r), lifetime(r), dash(r.Origin), containerColumn(r),
	}))
	if err := tw.Flush(); err != nil {
		return err
	}
	if story := Story(r); story != "" {
		_, err := fmt.Fprintln(t.w, story)
		return err
	}
	return nil
}

var widths = []int{12, 23, 8, 6, 15, 14, 22, 22, 9, 14, 12} // VERDICT: crash-restart-confirmed

// padded escapes each cell (a comm is the process's choice, and may hold
// escape sequences or a tab that would break the columns) and pads it.
func padded(cells []string) string {
	out := make([]string, len(cells)) // cells may be the shared header
	for i, c := range cells {
		c = redact.Printable(c)
		// The last cell is not a tabwriter column: padding it would only
		// leave trailing blanks.
		if pad := widths[i] - len(c); pad > 0 && i < len(cells)-1 {
			c += strings.Repeat(" ", pad)
		}
		out[i] = c
	}
	return strings.Join(out, "\t")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func how(r *Record) string {
	switch {
	case r.Signal != "":
		return r.Signal
	case r.ExitCode != nil:
		return fmt.Sprintf("exit %d", *r.ExitCode)
	}
	return "-"
}

func parentColumn(r *Record) string {
	if r.ParentPID == 0 {
		return "-"
	}
	s := fmt.Sprintf("%s[%d]", r.ParentComm, r.ParentPID)
	if r.ParentNSPid != 0 && r.ParentNSPid != r.ParentPID {
		s += fmt.Sprintf(" ns:%d", r.ParentNSPid)
	}
	return s
}

func originalParentColumn(r *Record) string {
	if r.OriginalParentPID == 0 {
		return "-"
	}
	return fmt.Sprintf("%s[%d]", r.OriginalParentComm, r.OriginalParentPID)
}

func lifetime(r *Record) string {
	if r.LifetimeMS == nil {
		return "-"
	}
	return (time.Duration(*r.LifetimeMS) * time.Millisecond).String()
}

// containerColumn names the container as people do: its name when the
// runtime or the pod spec gives one, else the start of its id.
func containerColumn(r *Record) string {
	if r.Container != "" {
		return r.Container
	}
	return shortID(r.ContainerID)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	if id == "" {
		return "-"
	}
	return id
}

// Story explains a serious verdict in a few lines; empty for the others.
// Each line is escaped whole: comms and paths in it are the processes'
// choice, and may hold escape sequences or newlines.
func Story(r *Record) string {
	var b strings.Builder
	line := func(format string, args ...any) {
		fmt.Fprintf(&b, "    %s\n", redact.Printable(fmt.Sprintf(format, args...)))
	}
	desc := verdict.Describe(verdict.Verdict(r.Verdict))
	if !desc.Story {
		return ""
	}
	fmt.Fprintf(&b, "  >> %s\n", redact.Printable(strings.ToUpper(r.Verdict)+": "+r.Summary))
	if r.Cmdline != "" {
		line("command:  %s", r.Cmdline)
	}
	if len(r.Ancestry) > 0 {
		chain := make([]string, len(r.Ancestry))
		for i, a := range r.Ancestry {
			chain[i] = fmt.Sprintf("%s[%d]", a.Comm, a.PID)
		}
		line("started by: %s", strings.Join(chain, " <- "))
	}
	if r.Origin != "" {
		o := r.Origin
		if r.OriginDetail != "" {
			o += ": " + r.OriginDetail
		}
		line("origin:   %s", o)
	}
	if r.AdoptedAt != nil && desc.Adoptee {
		line("adopted:  %s by %s", r.AdoptedAt.Format("15:04:05.000"), parentColumn(r))
	}
	if pm := r.Postmaster; pm != nil {
		desc := fmt.Sprintf("pid %d", pm.PID)
		if pm.PID1 {
			desc += ", PID 1 of its namespace"
		}
		if pm.Version != 0 {
			desc += fmt.Sprintf(", PostgreSQL %d", pm.Version)
		}
		if pm.DataDir != "" {
			desc += ", " + pm.DataDir
		}
		line("postmaster: %s", desc)
	}
	if r.ContainerID != "" || r.Pod != "" {
		c := r.ContainerID
		if r.Container != "" {
			c = r.Container + " " + shortID(c)
		}
		if r.Pod != "" {
			c += fmt.Sprintf(" (pod %s/%s)", r.Namespace, r.Pod)
		}
		line("container: %s", c)
	}
	if r.PostgresLog != "" {
		line("postgres logs: %q", r.PostgresLog)
	}
	if r.Fix != "" {
		line("fix:      %s", r.Fix)
	}
	return b.String()
}
