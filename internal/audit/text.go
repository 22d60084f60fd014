package audit

import (
	"fmt"
	"io"
	"strings"

	"github.com/orphanwatch/orphanwatch/internal/redact"
)

// WriteText writes the report for a terminal: a verdict line (the first
// line is what a monitoring system shows), then each postmaster with its
// findings, then the host's.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "orphanwatch check: %s", strings.ToUpper(r.Status.String()))
	if counts := r.counts(); counts != "" {
		fmt.Fprintf(&b, " (%s)", counts)
	}
	fmt.Fprintf(&b, ": %s\n", plural(len(r.Postmasters), "postmaster"))

	for _, f := range r.Findings {
		if f.Check == CheckDiscovery {
			writeFinding(&b, f)
		}
	}
	for i := range r.Postmasters {
		pm := &r.Postmasters[i]
		fmt.Fprintf(&b, "\npostmaster pid %d: %s\n", pm.PID, redact.Printable(describe(pm)))
		for _, f := range r.Findings {
			if f.Postmaster == pm.PID && f.Check != CheckDiscovery {
				writeFinding(&b, f)
			}
		}
	}
	if len(r.Postmasters) > 0 {
		b.WriteString("\nhost\n")
		for _, f := range r.Findings {
			if f.Postmaster == 0 && f.Check != CheckDiscovery {
				writeFinding(&b, f)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// counts is "1 failure, 2 warnings, 3 notes"; empty when all is OK.
func (r *Report) counts() string {
	n := map[Level]int{}
	for _, f := range r.Findings {
		n[f.Level]++
	}
	var parts []string
	for _, c := range []struct {
		level Level
		name  string
	}{{Fail, "failure"}, {Unknown, "unknown"}, {Warn, "warning"}, {Note, "note"}} {
		if n[c.level] > 0 {
			parts = append(parts, plural(n[c.level], c.name))
		}
	}
	return strings.Join(parts, ", ")
}

func plural(n int, noun string) string {
	if n == 1 || noun == "unknown" {
		return fmt.Sprintf("%d %s", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// describe is "PID 1 of its namespace, PostgreSQL 15, /var/lib/postgresql/data,
// container docker 0123456789ab".
func describe(pm *Postmaster) string {
	var parts []string
	if pm.PID1 {
		parts = append(parts, "PID 1 of its namespace")
	} else {
		parts = append(parts, fmt.Sprintf("pid %d in its namespace", pm.NSPid))
	}
	if pm.Version != 0 {
		parts = append(parts, fmt.Sprintf("PostgreSQL %d", pm.Version))
	}
	if pm.DataDir != "" {
		parts = append(parts, pm.DataDir)
	}
	if w := where(pm); w != "" {
		parts = append(parts, w)
	}
	return strings.Join(parts, ", ")
}

// writeFinding escapes the message and fix: they quote comms, command
// lines and paths, which are the processes' choice and may hold escape
// sequences for the terminal.
func writeFinding(b *strings.Builder, f Finding) {
	fmt.Fprintf(b, "  %-7s %-17s %s\n", strings.ToUpper(f.Level.String()), f.Check, redact.Printable(f.Message))
	if f.Fix != "" && f.Level != OK {
		fmt.Fprintf(b, "  %-7s %-17s fix: %s\n", "", "", redact.Printable(f.Fix))
	}
}
