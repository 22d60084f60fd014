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
		// libpq ends an unquoted value only at whitespace.
		{"semicolon in value", []string{"psql", "password=ab;cd host=db"}, "psql 'password=*** host=db'", ";cd"},
		{"ampersand in value", []string{"psql", "password=ab&cd"}, "psql password=***", "&cd"},
		{"escaped space in value", []string{"psql", `password=ab\ cd host=db`}, "psql 'password=*** host=db'", "cd"},
		{"vertical tab ends a value", []string{"psql", "password=ab\vhost=db"}, `psql $'password=***\x0bhost=db'`, "ab"},
		{"uri password with @", []string{"psql", "postgresql://app:p@ss@db/x"}, "psql postgresql://app:***@db/x", "ss"},
		{"uri password with @ and query", []string{"psql", "postgresql://app:p@s:s@db?sslmode=require"}, "psql postgresql://app:***@db?sslmode=require", "s:s"},
		{"uri @ in path kept", []string{"psql", "postgresql://app:pw@db/x@y"}, "psql postgresql://app:***@db/x@y", "pw"},
		// SQL run through psql -c.
		{"sql password", []string{"psql", "-c", "ALTER ROLE app WITH PASSWORD 'hunter2'"}, `psql -c 'ALTER ROLE app WITH PASSWORD '\''***'\'''`, "hunter2"},
		{"sql encrypted password, quote inside", []string{"psql", "-c", "create user u encrypted password 'it''s'; select 1"}, `psql -c 'create user u encrypted password '\''***'\''; select 1'`, "it''s"},
		// One keyword list for KEY=value and --flag value.
		{"pwd flag", []string{"tool", "--pwd", "s1"}, "tool --pwd ***", "s1"},
		{"passphrase flag", []string{"tool", "--ssl-passphrase", "s2"}, "tool --ssl-passphrase ***", "s2"},
		{"credential flag", []string{"tool", "--credential", "s3"}, "tool --credential ***", "s3"},
		{"passphrase pair", []string{"tool", "KEY_PASSPHRASE=s4"}, "tool KEY_PASSPHRASE=***", "s4"},
		{"no-password takes no argument", []string{"psql", "--no-password", "-c", "select 1"}, "psql --no-password -c 'select 1'", ""},
		{"flag with a path suffix kept", []string{"tool", "--password-file", "/run/pw"}, "tool --password-file /run/pw", ""},
		// A process that rewrote its argv into one string.
		{"rewritten: flag value", []string{"worker --password s3cret -v"}, "'worker --password *** -v'", "s3cret"},
		{"rewritten: quoted flag value", []string{"worker --token 'a b' -v"}, `'worker --token *** -v'`, "a b"},
		{"rewritten: no-password", []string{"psql --no-password -c x"}, "'psql --no-password -c x'", ""},
		{"rewritten: no-password then password", []string{"t --no-password --password s3 x"}, "'t --no-password --password *** x'", "s3"},
		// Characters a terminal acts on are escaped, the secret still hidden.
		{"escape sequence", []string{"sh", "-c", "echo \x1b[2J\x1b]0;pwned\x07"}, `sh -c $'echo \x1b[2J\x1b]0;pwned\x07'`, "\x1b"},
		{"escape and quote", []string{"x\x9b'y"}, `$'x\x9b\'y'`, "\x9b"},
		{"C1 control", []string{"a\u009bb"}, `$'a\u009bb'`, "\u009b"},
		{"bidi override", []string{"a\u202eb"}, `$'a\u202eb'`, "\u202e"},
		{"tab and newline", []string{"a\tb\nc"}, `$'a\tb\nc'`, "\n"},
		{"backslash in escaped arg", []string{"a\\b\x7f"}, `$'a\\b\x7f'`, "\x7f"},
		{"escape with secret", []string{"\x1b password=s3 x"}, `$'\x1b password=*** x'`, "s3"},
		{"unicode printable kept", []string{"échec", "日本"}, "échec 日本", ""},
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

func TestKeywordsInEveryForm(t *testing.T) {
	for _, word := range []string{"password", "passwd", "passphrase", "pwd", "secret", "token", "apikey", "api_key", "api-key", "credential"} {
		for _, argv := range [][]string{
			{"t", word + "=zz9"}, {"t", "--" + word + "=zz9"}, {"t", "--" + word, "zz9"},
			{"t", "--db-" + strings.ToUpper(word), "zz9"}, {"t --" + word + " zz9"},
		} {
			if got := Argv(argv); strings.Contains(got, "zz9") {
				t.Errorf("Argv(%q) = %q", argv, got)
			}
		}
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"postgres":       "postgres",
		"a\x1b[31mb":     `a\x1b[31mb`,
		"tab\there":      `tab\there`,
		"nl\n":           `nl\n`,
		"del\x7f":        `del\x7f`,
		"c1\u0085\u009b": `c1\u0085\u009b`,
		"bad\xff\xc3":    `bad\xff\xc3`,
		"rlo\u202e":      `rlo\u202e`,
		"back\\slash":    `back\slash`,
		"ok é 日本 \ufffd": "ok é 日本 \ufffd",
	} {
		got := Printable(in)
		if got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
		if again := Printable(got); again != got {
			t.Errorf("Printable not idempotent: %q -> %q", got, again)
		}
	}
}

// Whatever the input, redaction never panics and never prints a character
// a terminal acts on; a secret after password=, after --password, or in a
// URI never survives, whatever its bytes (short of whitespace and quotes,
// which end or delimit a value).
func FuzzArgv(f *testing.F) {
	f.Add("psql", "password=x host=y", "--password", "z", "s3cret")
	f.Add("a", "postgresql://u:p@h/d", "PGPASSWORD=q", "'", "p@ss;w&rd")
	f.Add("", "password='unterminated", "\x00", "\xff", "a\\")
	f.Add("\x1b[2J", "--no-password", "-c", "x", "\x9b=?:")
	f.Fuzz(func(t *testing.T, a, b, c, d, secret string) {
		if got := Argv([]string{a, b, c, d}); !isPrintable(got) {
			t.Fatalf("Argv(%q) = %q: not printable", []string{a, b, c, d}, got)
		}
		String(a + " " + b) // must not panic
		if p := Printable(a); !isPrintable(p) || Printable(p) != p {
			t.Fatalf("Printable(%q) = %q: not printable, or not idempotent", a, p)
		}
		if secret == "" || strings.ContainsAny(secret, space+"'\"") {
			return
		}
		// A trailing backslash escapes the space after it, and the value
		// runs on (libpq and the shell read it so): what follows is hidden too.
		after := func(s string) string { return s }
		if trailing := len(secret) - len(strings.TrimRight(secret, `\`)); trailing%2 == 1 {
			after = func(string) string { return "" }
		}
		for _, tc := range []struct {
			argv []string
			want string
		}{
			{[]string{"psql", "password=" + secret}, "psql password=***"},
			{[]string{"env", "PGPASSWORD=" + secret, "psql"}, "env PGPASSWORD=*** psql"},
			{[]string{"tool", "--password", secret, "-v"}, "tool --password *** -v"},
			{[]string{"psql", "host=db password=" + secret + " dbname=x"}, "psql 'host=db password=***" + after(" dbname=x") + "'"},
		} {
			if got := Argv(tc.argv); got != tc.want {
				t.Fatalf("Argv(%q) = %q, want %q", tc.argv, got, tc.want)
			}
		}
		// In one rewritten string, "--password = -v" also reads as a
		// password "-v": hiding -v too is fine, showing the secret is not.
		rewritten := []string{"worker --password " + secret + " -v"}
		got := Argv(rewritten)
		rest, ok := strings.CutPrefix(got, "'worker --password ***")
		if !ok || (rest != after(" -v")+"'" && rest != " ***'") {
			t.Fatalf("Argv(%q) = %q, want 'worker --password ***%s'", rewritten, got, after(" -v"))
		}
		// In a URI, '/' and '?' end the authority: a password holding them
		// must be percent-encoded, so the raw secret cannot hold them.
		if !strings.ContainsAny(secret, "/?") {
			uri := []string{"psql", "postgresql://app:" + secret + "@db:5432/x"}
			if got, want := Argv(uri), "psql postgresql://app:***@db:5432/x"; got != want {
				t.Fatalf("Argv(%q) = %q, want %q", uri, got, want)
			}
		}
	})
}
