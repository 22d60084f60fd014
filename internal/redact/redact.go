// Package redact removes credentials from command lines before orphanwatch
// prints, logs or exports them. It errs on the side of hiding: anything that
// looks like a password, token or secret is replaced by Mask.
package redact

import (
	"regexp"
	"strings"
)

// Mask replaces every secret.
const Mask = "***"

var (
	// libpq conninfo keywords and KEY=value pairs whose key names a secret:
	// password=..., sslpassword='...', PGPASSWORD=..., --password=..., API_TOKEN=...
	// A quoted value may contain spaces; an unterminated quote (a command line
	// cut short) runs to the end.
	secretKeyValue = regexp.MustCompile(`(?i)([\w.-]*(?:passw(?:or)?d|pwd|secret|token|api[_-]?key|credential)[\w.-]*\s*=\s*)('(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|[^\s&;]*)`)
	// URIs with a password: postgresql://user:secret@host, also in a query.
	uriPassword = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):[^@\s]*@`)
	// ?password=... in a URI query string is caught by secretKeyValue.

	// Flags whose next argument is the secret: --password secret, -P secret (sqlcmd style is rare; only long forms).
	secretFlag = regexp.MustCompile(`(?i)^--?[\w.-]*(?:passw(?:or)?d|secret|token|api[_-]?key)$`)
)

// String redacts one string (an argument, or a whole command line).
func String(s string) string {
	if !mayHoldSecret(s) {
		return s
	}
	s = uriPassword.ReplaceAllString(s, "${1}:"+Mask+"@")
	return secretKeyValue.ReplaceAllStringFunc(s, func(m string) string {
		sub := secretKeyValue.FindStringSubmatch(m)
		if sub[2] == "" {
			return m // "password=" with nothing after it hides nothing
		}
		return sub[1] + Mask
	})
}

// Argv redacts an argument vector, including a secret passed as the argument
// after a flag like --password, and joins it as a shell would read it back:
// arguments with spaces are single-quoted.
func Argv(argv []string) string {
	out := make([]string, len(argv))
	hideNext := false
	for i, arg := range argv {
		switch {
		case hideNext:
			out[i] = Mask
			hideNext = false
		default:
			out[i] = quote(String(arg))
			hideNext = secretFlag.MatchString(arg)
		}
	}
	return strings.Join(out, " ")
}

func quote(arg string) string {
	if arg != "" && !strings.ContainsAny(arg, " \t\n'\"") {
		return arg
	}
	return "'" + strings.ReplaceAll(arg, "'", `'\''`) + "'"
}

// hints are what every pattern above needs to match, lower case: checking
// for them first spares the regular expressions almost every argument.
var hints = []string{"://", "passw", "pwd", "secret", "token", "api", "credential"}

func mayHoldSecret(s string) bool {
	for _, h := range hints {
		if containsFold(s, h) {
			return true
		}
	}
	return false
}

// containsFold is strings.Contains ignoring ASCII case, without allocating.
func containsFold(s, lower string) bool {
	for i := 0; i+len(lower) <= len(s); i++ {
		j := 0
		for ; j < len(lower); j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != lower[j] {
				break
			}
		}
		if j == len(lower) {
			return true
		}
	}
	return false
}
