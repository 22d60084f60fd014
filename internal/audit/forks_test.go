package audit

import (
	"slices"
	"strings"
	"testing"
)

// fakeFS is a container whose /bin/sh is shell and whose scripts are the
// programs listed.
type fakeFS struct {
	shell   string
	scripts map[string]string
}

func (f fakeFS) Script(program string) (string, bool) { i, ok := f.scripts[program]; return i, ok }
func (f fakeFS) Shell(program string) string {
	if strings.HasSuffix(program, "/sh") || program == "sh" {
		return f.shell
	}
	return ""
}

func TestForks(t *testing.T) {
	dash := fakeFS{shell: "dash", scripts: map[string]string{"docker-healthcheck": "/bin/sh -e", "/usr/local/bin/check": "/usr/bin/env bash"}}
	bash := fakeFS{shell: "bash"}
	sh := func(script string) []string { return []string{"/bin/sh", "-c", script} }
	for _, tc := range []struct {
		name string
		argv []string
		fs   checkFS
		why  string // a reason must contain it; "" for no fork
	}{
		{"exec form", []string{"pg_isready", "-U", "postgres"}, dash, ""},
		{"exec form, absolute", []string{"/usr/lib/postgresql/15/bin/pg_isready"}, dash, ""},
		{"single command under dash", sh("pg_isready -U postgres"), dash, "dash, which runs even a single command as its child"},
		{"single command under bash", sh("pg_isready -U postgres"), bash, ""},
		{"bash -c named", []string{"bash", "-c", "pg_isready"}, nil, ""},
		{"shell unknown", sh("pg_isready"), nil, "could not tell which shell sh is"},
		{"busybox", sh("pg_isready"), fakeFS{shell: "busybox"}, "its shell, busybox, may run even a single command"},
		{"exec replaces dash", sh("exec pg_isready -U postgres"), dash, ""},
		{"exec with env", sh("exec env PGCONNECT_TIMEOUT=2 pg_isready"), dash, ""},
		{"assignment and redirection, bash", sh("PGCONNECT_TIMEOUT=2 pg_isready -q >/dev/null 2>&1"), bash, ""},
		{"builtin", sh("[ -f /tmp/ready ]"), dash, ""},
		{"or exit", sh("pg_isready -q -U postgres || exit 1"), bash, "|| makes the shell run the command before it as its child"},
		{"and", sh("pg_isready && psql -c 'select 1'"), bash, "&& makes"},
		{"pipeline", sh("psql -Atc 'select 1' | grep -q 1"), bash, "a pipeline"},
		{"list", sh("pg_isready; exit $?"), bash, "a list"},
		{"newline", sh("pg_isready\nexit 0"), bash, "a list"},
		{"trailing semicolon is no list", sh("pg_isready;"), bash, ""},
		{"background", sh("pg_isready &"), bash, "& starts a background job"},
		{"redirection is no background", sh("pg_isready >/dev/null 2>&1"), bash, ""},
		{"command substitution", sh(`test "$(psql -Atc 'select 1')" = 1`), bash, "a command substitution"},
		{"backquotes", sh("test `id -u` = 0"), bash, "a command substitution"},
		{"arithmetic is no substitution", sh("exit $((1-1))"), bash, ""},
		{"quoted operators do not count", sh(`psql -c 'select 1 || 2; select 3 | 4'`), bash, ""},
		{"double-quoted substitution", sh(`echo "$(date)"`), bash, "a command substitution"},
		{"subshell", sh("(pg_isready)"), bash, "a subshell"},
		{"if", sh("if pg_isready; then exit 0; fi"), bash, "the shell runs the commands of if"},
		{"negation", sh("! pg_isready"), bash, "! makes the shell run"},
		{"timeout", sh("timeout 5 pg_isready"), bash, "timeout runs its command as a child"},
		{"timeout exec form", []string{"timeout", "5", "pg_isready"}, nil, "timeout runs its command as a child"},
		{"su", []string{"su", "postgres", "-c", "pg_isready"}, nil, "su runs the command as a child"},
		{"gosu execs", []string{"gosu", "postgres", "pg_isready"}, nil, ""},
		{"nested shell", []string{"sh", "-c", "bash -c 'pg_isready | cat'"}, dash, "dash, which runs even a single command"},
		{"nested shell under bash", []string{"bash", "-c", "sh -c 'pg_isready | cat'"}, nil, "a pipeline"},
		{"script by name", []string{"/usr/local/bin/healthcheck.sh"}, nil, "runs the script /usr/local/bin/healthcheck.sh"},
		{"script by #!", []string{"docker-healthcheck"}, dash, "runs the script docker-healthcheck (#!/bin/sh -e)"},
		{"script by env bash", []string{"/usr/local/bin/check"}, dash, "(#!/usr/bin/env bash)"},
		{"sh script.sh", []string{"sh", "/check"}, nil, "runs the script /check with sh"},
		{"comment", sh("pg_isready # && not this"), bash, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := forks(tc.argv, tc.fs)
			switch {
			case tc.why == "" && len(got) > 0:
				t.Errorf("forks(%q) = %q, want no fork", tc.argv, got)
			case tc.why != "" && !slices.ContainsFunc(got, func(r string) bool { return strings.Contains(r, tc.why) }):
				t.Errorf("forks(%q) = %q, want a reason with %q", tc.argv, got, tc.why)
			}
		})
	}
}

func TestExecForm(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want []string
	}{
		{[]string{"/bin/sh", "-c", "pg_isready -q -U postgres || exit 1"}, []string{"pg_isready", "-q", "-U", "postgres"}},
		{[]string{"/bin/sh", "-c", "PGCONNECT_TIMEOUT=2 pg_isready -h 127.0.0.1 && psql -c 'select 1'"}, []string{"pg_isready", "-h", "127.0.0.1"}},
		{[]string{"sh", "-c", `pg_isready -U "$POSTGRES_USER"`}, nil}, // an expansion: no literal form
		{[]string{"sh", "-c", "timeout 5 pg_isready"}, nil},
		{[]string{"sh", "-c", "if true; then :; fi"}, nil},
	} {
		if got := execForm(tc.argv); !slices.Equal(got, tc.want) {
			t.Errorf("execForm(%q) = %q, want %q", tc.argv, got, tc.want)
		}
	}
}
