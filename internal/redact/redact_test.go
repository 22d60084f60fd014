package redact

import (
	"strings"
	"testing"
)

func TestArgvHidesSecrets(t *testing.T) {
	tests := []struct {
		name   string
		argv   []string
		want   string
		secret string
	}{
		{"conninfo keyword", []string{"psql", "host=db user=app password=s3cr3t dbname=x"}, "psql 'host=db user=app password=*** dbname=x'", "s3cr3t"},
		{"quoted conninfo value with spaces", []string{"psql", "password='a b c' host=db"}, "psql 'password=*** host=db'", "a b c"},
		{"spaces around =", []string{"psql", "password = hunter2 host=db"}, "psql 'password = *** host=db'", "hunter2"},
		{"uri", []string{"psql", "postgresql://app:topsecret@db:5432/x"}, "psql postgresql://app:***@db:5432/x", "topsecret"},
		{"uri query password", []string{"psql", "postgres://db/x?user=a&password=qwerty"}, "psql postgres://db/x?user=a&password=***", "qwerty"},
		{"env assignment", []string{"env", "PGPASSWORD=letmein", "psql"}, "env PGPASSWORD=*** psql", "letmein"},
		{"long flag with =", []string{"pg_dump", "--password=abc123"}, "pg_dump --password=***", "abc123"},
		{"long flag, value next", []string{"tool", "--password", "abc123", "-v"}, "tool --password *** -v", "abc123"},
		{"token", []string{"curl", "API_TOKEN=zzz"}, "curl API_TOKEN=***", "zzz"},
		{"cut short inside quotes", []string{"psql", "password='unfinished sec"}, "psql password=***", "unfinished sec"},
		{"quoting kept readable", []string{"sh", "-c", "it's"}, `sh -c 'it'\''s'`, ""},
		{"sslpassword", []string{"psql", "sslpassword=pem"}, "psql sslpassword=***", "pem"},
		{"nothing secret", []string{"psql", "-c", "select 1"}, "psql -c 'select 1'", ""},
		{"empty password kept", []string{"psql", "password="}, "psql password=", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Argv(tt.argv)
			if got != tt.want {
				t.Errorf("Argv(%q) = %q, want %q", tt.argv, got, tt.want)
			}
			if tt.secret != "" && strings.Contains(got, tt.secret) {
				t.Errorf("secret %q survived in %q", tt.secret, got)
			}
		})
	}
}

func TestStringOnRewrittenCmdline(t *testing.T) {
	// A process that rewrote its argv leaves one string with spaces.
	got := String("worker --db postgresql://u:pw1@h/d password=pw2")
	for _, s := range []string{"pw1", "pw2"} {
		if strings.Contains(got, s) {
			t.Fatalf("%q still holds %q", got, s)
		}
	}
}

// Whatever the input, a value after password= never survives, and redaction
// never panics.
func FuzzArgv(f *testing.F) {
	f.Add("psql", "password=x host=y", "--password", "z")
	f.Add("a", "postgresql://u:p@h/d", "PGPASSWORD=q", "'")
	f.Add("", "password='unterminated", "\x00", "\xff")
	f.Fuzz(func(t *testing.T, a, b, c, d string) {
		Argv([]string{a, b, c, d}) // must not panic on anything
		const secret = "Zq9SECRETz"
		if got := Argv([]string{a, "password=" + secret, b}); strings.Contains(got, secret) {
			t.Fatalf("secret survived: %q", got)
		}
		if got := Argv([]string{"postgresql://user:" + secret + "@host/db"}); strings.Contains(got, secret) {
			t.Fatalf("uri secret survived: %q", got)
		}
	})
}
