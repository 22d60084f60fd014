// Package redact makes command lines and process names safe to print, log
// or export: it removes credentials, erring on the side of hiding (anything
// that looks like a password, token or secret is replaced by Mask), and it
// escapes the characters a terminal would act on, since a process in a
// container chooses its own argv and comm.
package redact

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Mask replaces every secret.
const Mask = "***"

// keywords name a secret, in a KEY=value pair as in a --flag: one list for
// both, so that a word hidden in one form is hidden in the other.
const keywords = `passw(?:or)?d|passphrase|pwd|secret|token|api[_-]?key|credential`

// space is what ends an unquoted libpq conninfo value: isspace() in C, which
// (unlike RE2's \s) includes \v.
const space = "\t\n\v\f\r "

var (
	// libpq conninfo keywords and KEY=value pairs whose key names a secret:
	// password=..., sslpassword='...', PGPASSWORD=..., --password=..., API_TOKEN=...
	// libpq ends an unquoted value only at whitespace (a backslash escapes the
	// next character), so ';' and '&' are part of it. A quoted value may
	// contain spaces; an unterminated quote (a command line cut short) runs to
	// the end.
	secretKeyValue = regexp.MustCompile(`(?i)([\w.-]*(?:` + keywords + `)[\w.-]*[` + space + `]*=[` + space + `]*)` +
		`('(?:[^'\\]|\\[\s\S])*'?|"(?:[^"\\]|\\[\s\S])*"?|(?:[^` + space + `\\]|\\[\s\S])*\\?)`)
	// URIs with a password: postgresql://user:secret@host, also in a query.
	// The password runs to the last '@' of the authority, which ends at '/',
	// '?' or whitespace: an unencoded '@' in the password is common and
	// net/url reads it the same way.
	uriPassword = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@` + space + `]*):[^/?` + space + `]*@`)
	// ?password=... in a URI query string is caught by secretKeyValue.

	// SQL in an argument: psql -c "ALTER ROLE app PASSWORD 'secret'" (also
	// CREATE ROLE ... ENCRYPTED PASSWORD, and E'...' strings; '' is a quote
	// inside the literal).
	sqlPassword = regexp.MustCompile(`(?i)(\bpassword[` + space + `]+)(?:E?'(?:[^']|'')*'?)`)

	// Flags whose next argument is the secret: --password secret, --api-token x.
	// Only flags that end in the keyword, so --password-file keeps its path.
	secretFlag = regexp.MustCompile(`(?i)^--?[\w.-]*(?:` + keywords + `)$`)
	// psql's --no-password (and any --no-* flag) takes no argument.
	negatedFlag = regexp.MustCompile(`(?i)^--?no[_-]`)
)

// hints are what every pattern above needs to match, lower case: "://" and
// the literal start of each keyword. Checking for them first spares the
// regular expressions almost every argument.
var hints = func() []string {
	h := []string{"://"}
	for _, word := range strings.Split(keywords, "|") {
		start, _ := regexp.MustCompile(word).LiteralPrefix()
		h = append(h, start)
	}
	return h
}()

// String redacts one string (an argument, or a whole command line that a
// process rewrote into one string, where a flag and its secret are
// separated by a space).
func String(s string) string {
	if !mayHoldSecret(s) {
		return s
	}
	s = uriPassword.ReplaceAllString(s, "${1}:"+Mask+"@")
	s = sqlPassword.ReplaceAllString(s, "${1}'"+Mask+"'")
	s = secretKeyValue.ReplaceAllStringFunc(s, func(m string) string {
		sub := secretKeyValue.FindStringSubmatch(m)
		if sub[2] == "" {
			return m // "password=" with nothing after it hides nothing
		}
		return sub[1] + Mask
	})
	return maskFlagValues(s)
}

// Argv redacts an argument vector, including a secret passed as the argument
// after a flag like --password, and joins it as a shell would read it back:
// arguments with spaces are single-quoted, and arguments with characters a
// terminal would act on are written $'...' with those characters escaped.
func Argv(argv []string) string {
	out := make([]string, len(argv))
	hideNext := false
	for i, arg := range argv {
		switch {
		case hideNext:
			out[i] = Mask
			hideNext = false
		case !mayHoldSecret(arg): // most arguments: no regular expression runs
			out[i] = quote(arg)
		default:
			out[i] = quote(String(arg))
			hideNext = isSecretFlag(arg)
		}
	}
	return strings.Join(out, " ")
}

func isSecretFlag(arg string) bool {
	return secretFlag.MatchString(arg) && !negatedFlag.MatchString(arg)
}

// maskFlagValues hides the word after a secret flag inside one string:
// "worker --password s3cret -v". Words are split as a shell would, so a
// quoted secret with spaces is hidden whole.
func maskFlagValues(s string) string {
	if !strings.ContainsAny(s, space) {
		return s // one word: no flag followed by a value
	}
	var b strings.Builder
	hideNext := false
	for i := 0; i < len(s); {
		if isSpace(s[i]) {
			b.WriteByte(s[i])
			i++
			continue
		}
		end := wordEnd(s, i)
		word := s[i:end]
		if hideNext {
			b.WriteString(Mask)
			hideNext = false
		} else {
			b.WriteString(word)
			hideNext = isSecretFlag(word)
		}
		i = end
	}
	return b.String()
}

// wordEnd is where the shell word starting at s[i] ends: at whitespace
// outside quotes, or at the end (an unterminated quote runs to the end).
func wordEnd(s string, i int) int {
	var quote byte
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			}
		case c == '\\':
			i++ // escapes the next byte, outside quotes and within "..."
		case quote == '"':
			if c == '"' {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case isSpace(c):
			return i
		}
	}
	return len(s)
}

func isSpace(c byte) bool { return strings.IndexByte(space, c) >= 0 }

func quote(arg string) string {
	if !isPrintable(arg) {
		return ansiCQuote(arg)
	}
	if arg != "" && !strings.ContainsAny(arg, " '\"") {
		return arg
	}
	return "'" + strings.ReplaceAll(arg, "'", `'\''`) + "'"
}

// ansiCQuote writes arg as bash's $'...', which reads back to the same
// bytes: non-printable characters become \t, \n, \r, \xHH (C0, DEL, bytes
// that are not UTF-8) or \uHHHH (C1 controls, other non-printable runes).
func ansiCQuote(arg string) string {
	var b strings.Builder
	b.WriteString("$'")
	for i := 0; i < len(arg); {
		r, size := utf8.DecodeRuneInString(arg[i:])
		switch {
		case r == '\\' || r == '\'':
			b.WriteByte('\\')
			b.WriteByte(byte(r))
		default:
			writeRune(&b, r, arg[i:i+size])
		}
		i += size
	}
	b.WriteByte('\'')
	return b.String()
}

// Printable escapes the characters a terminal would act on, for a process
// name (comm) or any text holding one: C0 and C1 controls, DEL, other
// non-printable runes (bidirectional overrides among them) and bytes that
// are not UTF-8 become \t, \n, \r, \xHH or \uHHHH. Backslashes are left
// alone, so Printable of its own result, or of Argv's, changes nothing.
func Printable(s string) string {
	if isPrintable(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		writeRune(&b, r, s[i:i+size])
		i += size
	}
	return b.String()
}

// writeRune writes r, decoded from raw, escaped if a terminal would act on it.
func writeRune(b *strings.Builder, r rune, raw string) {
	switch {
	case isPrint(r, raw):
		b.WriteString(raw)
	case r == '\t':
		b.WriteString(`\t`)
	case r == '\n':
		b.WriteString(`\n`)
	case r == '\r':
		b.WriteString(`\r`)
	case r < utf8.RuneSelf || len(raw) == 1: // C0, DEL, or a byte that is not UTF-8
		fmt.Fprintf(b, `\x%02x`, raw[0])
	case r > 0xffff:
		fmt.Fprintf(b, `\U%08x`, r)
	default:
		fmt.Fprintf(b, `\u%04x`, r)
	}
}

// isPrint is whether r, decoded from raw, prints as itself: not a control,
// not a format character such as U+202E (right-to-left override), and not a
// byte that is not UTF-8 (decoded as U+FFFD from a single byte).
func isPrint(r rune, raw string) bool {
	if r < utf8.RuneSelf {
		return ' ' <= r && r < 0x7f
	}
	return !(r == utf8.RuneError && len(raw) == 1) && strconv.IsPrint(r)
}

func isPrintable(s string) bool {
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c < ' ' || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if !isPrint(r, s[i:i+size]) {
			return false
		}
		i += size
	}
	return true
}

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
