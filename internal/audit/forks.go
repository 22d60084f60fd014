package audit

import (
	"cmp"
	"path"
	"slices"
	"strings"
)

// Whether a check's command forks: runs a program as the child of a process
// that the runtime kills at the check's timeout. Docker's HEALTHCHECK and
// Kubernetes' exec probes kill only the process they started; its children
// are orphaned, and in a container without an init the postmaster adopts
// them (moby#47583, containerd#4594, kubernetes#124226).
//
// The test, made on the command as written (nothing is run):
//
//   - `sh -c SCRIPT` (CMD-SHELL is `/bin/sh -c SCRIPT`) forks when SCRIPT is
//     more than one simple command: a pipeline (|), a list (;, &&, ||, a
//     newline), a background job (&), a command substitution ($(...) or
//     backquotes), a subshell ( (...) ), a process substitution (<(...)), a
//     compound command (if, while, until, for, case) or a negation (!).
//     Even a single simple command forks, unless the shell execs it in
//     place: bash does; Debian's dash (/bin/sh of the official postgres
//     image) does not, as orphanwatch's tests saw with Debian 11 to 13 and
//     sid (`sh -c 'cat /proc/$$/comm'` prints sh); other shells are taken to
//     fork. `exec COMMAND` replaces the shell in every one. Redirections
//     (2>&1, >/dev/null) fork nothing.
//   - The program that is finally run forks when it runs its command as a
//     child rather than exec'ing it: timeout, su, sudo, runuser, flock,
//     xargs, watch; or when it is a shell script (the shell runs each
//     command as a child), seen by a .sh name or, where the container's
//     file is readable, by a #! line naming a shell. Programs that exec
//     their command (env, nice, nohup, setpriv, gosu, chroot, stdbuf,
//     ionice, exec, command) are looked through to the command they run.
//
// forks returns why argv forks, one reason each, in words; none when it
// runs one program in place.
// fs looks into the container the check runs in; nil knows nothing.
func forks(argv []string, fs checkFS) []string {
	return forksArgv(argv, fs, 0)
}

// checkFS is what the fork test reads in the container a check runs in.
type checkFS interface {
	// Script tells whether a program is a shell script, and its #! line.
	Script(program string) (interpreter string, ok bool)
	// Shell is the base name of the file a shell's path resolves to in the
	// container (/bin/sh -> dash); "" when unknown.
	Shell(program string) string
}

// builtins are commands every POSIX shell runs itself, without a child.
var builtins = []string{":", "true", "false", "exit", "test", "[", "echo", "printf", "kill", "read", "cd"}

// execsSingleCommand are the shells seen to exec the only simple command of
// a -c script in place of forking it.
var execsSingleCommand = []string{"bash"}

// maxNesting bounds sh -c "sh -c '...'" recursion.
const maxNesting = 4

// shells run their -c argument as a script.
var shells = []string{"sh", "bash", "dash", "ash", "ksh", "mksh", "zsh", "busybox"}

// forkingPrograms run their command as a child, and wait for it.
var forkingPrograms = map[string]string{
	"timeout": "timeout runs its command as a child",
	"su":      "su runs the command as a child",
	"sudo":    "sudo runs the command as a child",
	"runuser": "runuser runs the command as a child",
	"flock":   "flock runs its command as a child",
	"xargs":   "xargs runs its commands as children",
	"watch":   "watch runs its command as a child",
}

// execingPrograms replace themselves with their command: the value says
// how many arguments they take before it (-1: options, then the command;
// skipped as words starting with - or holding =).
var execingPrograms = map[string]int{
	"env": -1, "nice": -1, "nohup": 0, "setpriv": -1, "gosu": 1, "su-exec": 1, "chroot": 1,
	"stdbuf": -1, "ionice": -1, "exec": -1, "command": -1, "chpst": -1, "s6-setuidgid": 1,
}

func forksArgv(argv []string, fs checkFS, depth int) []string {
	for len(argv) > 0 && depth <= maxNesting {
		prog := path.Base(argv[0])
		if prog == "busybox" && len(argv) > 1 { // busybox sh -c ...
			argv = argv[1:]
			continue
		}
		if slices.Contains(shells, prog) {
			if i := slices.Index(argv, "-c"); i > 0 && i+1 < len(argv) {
				shell := prog
				if fs != nil {
					shell = cmp.Or(fs.Shell(argv[0]), prog)
				}
				return forksScript(argv[i+1], shell, fs, depth+1)
			}
			if len(argv) > 1 && !strings.HasPrefix(argv[1], "-") {
				return []string{"runs the script " + argv[1] + " with " + prog + ", which runs its commands as children"}
			}
			return nil
		}
		if why, ok := forkingPrograms[prog]; ok {
			return []string{why}
		}
		if skip, ok := execingPrograms[prog]; ok {
			argv = argv[1:]
			if skip > 0 {
				argv = argv[min(skip, len(argv)):]
			} else if skip < 0 {
				for len(argv) > 0 && (strings.HasPrefix(argv[0], "-") || strings.Contains(argv[0], "=")) {
					argv = argv[1:]
				}
			}
			continue
		}
		if strings.HasSuffix(prog, ".sh") {
			return []string{"runs the script " + argv[0] + ", whose shell runs its commands as children"}
		}
		if fs != nil {
			if interp, ok := fs.Script(argv[0]); ok {
				return []string{"runs the script " + argv[0] + " (#!" + interp + "), whose shell runs its commands as children"}
			}
		}
		return nil
	}
	return nil
}

// forksScript tells why a shell script (the -c argument of shell) forks.
func forksScript(script, shell string, fs checkFS, depth int) []string {
	words, ops := scanShell(script)
	var reasons []string
	add := func(r string) {
		if !slices.Contains(reasons, r) {
			reasons = append(reasons, r)
		}
	}
	for _, op := range ops {
		add(op)
	}
	if len(reasons) > 0 || len(words) == 0 {
		return reasons
	}
	// One simple command: run in place by exec, or by a shell that execs
	// it; what it runs may fork in turn.
	command := commandWords(words)
	switch {
	case len(command) > 0 && slices.Contains(builtins, command[0]):
		return nil // run by the shell itself
	case len(command) > 0 && command[0] == "exec", slices.Contains(execsSingleCommand, shell):
	case shell == "dash":
		return []string{"the container's shell is dash, which runs even a single command as its child, where exec COMMAND would replace the shell"}
	case shell == "sh" || shell == "":
		return []string{"orphanwatch could not tell which shell sh is in the container; dash, Debian's, runs even a single command as its child"}
	default:
		return []string{"its shell, " + shell + ", may run even a single command as its child, as Debian's dash does"}
	}
	return forksArgv(command, fs, depth)
}

// compoundKeywords start commands whose parts the shell runs as children.
var compoundKeywords = []string{"if", "while", "until", "for", "case", "select", "function"}

// scanShell splits a script into the words of its first command (quotes
// removed, no expansion) and the constructs in it that make the shell fork.
// It is a scanner for this question, not a shell parser: it honours
// quoting ('...', "...", \x) so that operators inside quotes do not count.
func scanShell(s string) (words []string, forks []string) {
	var word strings.Builder
	inWord, firstCommand := false, true
	flush := func() {
		if inWord && firstCommand {
			words = append(words, word.String())
		}
		word.Reset()
		inWord = false
	}
	note := func(r string) {
		if !slices.Contains(forks, r) {
			forks = append(forks, r)
		}
	}
	atCommandStart := func() bool { return !inWord && len(words) == 0 && firstCommand }
	for i := 0; i < len(s); i++ {
		c := s[i]
		next := byte(0)
		if i+1 < len(s) {
			next = s[i+1]
		}
		switch {
		case c == '\\' && i+1 < len(s):
			if next != '\n' {
				word.WriteByte(next)
				inWord = true
			}
			i++
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				j = len(s) - i - 1
			}
			word.WriteString(s[i+1 : i+1+j])
			inWord = true
			i += j + 1
		case c == '"':
			j := i + 1
			for ; j < len(s) && s[j] != '"'; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
					continue
				}
				if s[j] == '`' || s[j] == '$' && j+1 < len(s) && s[j+1] == '(' && (j+2 >= len(s) || s[j+2] != '(') {
					note("a command substitution runs in a child shell")
				}
			}
			word.WriteString(strings.ReplaceAll(s[i+1:min(j, len(s))], `\"`, `"`))
			inWord = true
			i = j
		case c == '`' || c == '$' && next == '(' && (i+2 >= len(s) || s[i+2] != '('):
			note("a command substitution runs in a child shell")
			word.WriteByte(c)
			inWord = true
		case (c == '<' || c == '>') && next == '(':
			note("a process substitution runs in a child")
			i++
		case c == '|' && next == '|':
			note("|| makes the shell run the command before it as its child")
			flush()
			firstCommand = false
			i++
		case c == '|':
			note("a pipeline runs its commands as children of the shell")
			flush()
			firstCommand = false
		case c == '&' && next == '&':
			note("&& makes the shell run the command before it as its child")
			flush()
			firstCommand = false
			i++
		case c == '&' && (next == '>' || i > 0 && (s[i-1] == '>' || s[i-1] == '<')):
			// A redirection: &>file, 2>&1, <&3.
			word.WriteByte(c)
			inWord = true
		case c == '&':
			note("& starts a background job, orphaned at every run, not only at a timeout")
			flush()
			firstCommand = false
		case c == ';' || c == '\n':
			flush()
			if strings.TrimSpace(s[i+1:]) != "" && !onlyTerminators(s[i+1:]) {
				note("a list (; or a newline) makes the shell run its commands as children")
				firstCommand = false
			}
		case c == '(' && atCommandStart():
			note("a subshell is a child of the shell")
		case c == ' ' || c == '\t':
			flush()
		case c == '#' && !inWord:
			// A comment to the end of the line.
			for i < len(s) && s[i] != '\n' {
				i++
			}
			i--
		default:
			word.WriteByte(c)
			inWord = true
		}
	}
	flush()
	switch {
	case len(words) > 0 && slices.Contains(compoundKeywords, words[0]):
		note("the shell runs the commands of " + words[0] + " as its children")
	case len(words) > 0 && words[0] == "!":
		note("! makes the shell run the command as its child, to invert its status")
	}
	return words, forks
}

// onlyTerminators: what follows a ; is nothing but more separators or a
// comment ("cmd;" or "cmd; # note").
func onlyTerminators(s string) bool {
	t := strings.TrimLeft(s, " \t\n;")
	return t == "" || t[0] == '#'
}

// commandWords drops the leading assignments (VAR=value) and redirections
// of a simple command: what is left is the program and its arguments.
func commandWords(words []string) []string {
	out := words
	for len(out) > 0 {
		w := out[0]
		switch {
		case isAssignment(w):
			out = out[1:]
		case strings.IndexAny(w, "<>") >= 0:
			out = out[1:]
		default:
			return out
		}
	}
	return out
}

func isAssignment(w string) bool {
	name, _, ok := strings.Cut(w, "=")
	if !ok || name == "" {
		return false
	}
	for i, r := range name {
		if !(r == '_' || 'A' <= r && r <= 'Z' || 'a' <= r && r <= 'z' || i > 0 && '0' <= r && r <= '9') {
			return false
		}
	}
	return true
}

// execForm proposes the exec form of a check that forks: the words of its
// first simple command, when they are plain words (no expansion, no
// redirection); nil when none can be proposed.
func execForm(argv []string) []string {
	for depth := 0; len(argv) > 0 && depth <= maxNesting; depth++ {
		prog := path.Base(argv[0])
		if prog == "busybox" {
			argv = argv[1:]
			continue
		}
		if slices.Contains(shells, prog) {
			i := slices.Index(argv, "-c")
			if i < 0 || i+1 >= len(argv) {
				return nil
			}
			words, _ := scanShell(argv[i+1])
			words = commandWords(words)
			argv = words
			continue
		}
		if _, ok := forkingPrograms[prog]; ok {
			return nil // timeout 5 pg_isready: the timeout is the check's own
		}
		for _, w := range argv {
			if strings.ContainsAny(w, "$`<>|&;*?") {
				return nil
			}
		}
		if slices.Contains(compoundKeywords, argv[0]) {
			return nil
		}
		return argv
	}
	return nil
}
