package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Bad values are usage errors, refused before anything is loaded, with the
// flag and what it wants on the first line. Numbers are read strictly:
// fmt.Sscan read "64K" as 64 and "12abc" as 12.
func TestBadFlagValuesAreUsageErrors(t *testing.T) {
	page := os.Getpagesize()
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"trace", "--ringbuf-size", "64K"}, "must be a power of two and at least one page"},
		{[]string{"trace", "--ringbuf-size", "1000"}, "must be a power of two and at least one page"},
		{[]string{"trace", "--ringbuf-size", fmt.Sprint(page / 2)}, "must be a power of two and at least one page"},
		{[]string{"serve", "--ringbuf-size", "0"}, "must be a power of two and at least one page"},
		{[]string{"trace", "--ringbuf-size", "8589934592"}, "must be a power of two and at least one page"}, // 2^33: past uint32
		{[]string{"trace", "--max-children", "0"}, "must be a whole number from 1 to 256"},
		{[]string{"trace", "--max-children", "257"}, "must be a whole number from 1 to 256"},
		{[]string{"serve", "--max-children", "8x"}, "must be a whole number from 1 to 256"},
		{[]string{"trace", "--max-processes", "0"}, "must be a whole number greater than 0"},
		{[]string{"trace", "--max-processes", "-5"}, "must be a whole number greater than 0"},
		{[]string{"trace", "--max-processes", "16k"}, "must be a whole number greater than 0"},
		{[]string{"trace", "--pid", "12abc"}, "must be a process id greater than 0"},
		{[]string{"trace", "--pid", "0"}, "must be a process id greater than 0"},
		{[]string{"trace", "--pid", "-1"}, "must be a process id greater than 0"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			first, _, _ := strings.Cut(stderr.String(), "\n")
			flagName := strings.TrimPrefix(tc.args[1], "-")
			if code != exitUsage || !strings.Contains(first, tc.says) || !strings.Contains(first, flagName) {
				t.Errorf("exit %d, first line %q; want %d and a line naming %s and saying %q", code, first, exitUsage, flagName, tc.says)
			}
		})
	}
}

func TestGoodFlagValuesAreTaken(t *testing.T) {
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	var pf probeFlags
	pf.register(fs)
	args := []string{"--ringbuf-size", fmt.Sprint(os.Getpagesize()), "--max-children", "256", "--max-processes", "1"}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if c := pf.config(); c.RingBufferBytes != uint32(os.Getpagesize()) || c.MaxChildren != 256 || c.MaxProcesses != 1 {
		t.Errorf("config %+v from %v", c, args)
	}
}

// The testing-only refusal of a BPF program is an environment variable, not
// a flag every -h shows.
func TestRefuseProgramIsNoFlag(t *testing.T) {
	for _, cmd := range []string{"trace", "serve"} {
		var stdout, stderr bytes.Buffer
		if code := run([]string{cmd, "-h"}, &stdout, &stderr); code != exitOK || strings.Contains(stderr.String(), "refuse") {
			t.Errorf("%s -h: exit %d, mentions refusing:\n%s", cmd, code, stderr.String())
		}
	}
	var pf probeFlags
	if cfg := pf.config(); len(cfg.Refuse) != 0 {
		t.Errorf("refusing %v without %s", cfg.Refuse, refuseEnv)
	}
	t.Setenv(refuseEnv, "handle_mark_victim")
	if cfg := pf.config(); !slices.Equal(cfg.Refuse, []string{"handle_mark_victim"}) {
		t.Errorf("with %s=handle_mark_victim, refusing %v", refuseEnv, cfg.Refuse)
	}
}

// serve checks its web flags before binding or loading anything: a mistake
// there is a usage error in one line, not a runtime error.
func TestServeWebFlagsAreUsageErrors(t *testing.T) {
	dir := t.TempDir()
	badYAML := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(badYAML, []byte("tls_server_config:\n  cert_file: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noKey := filepath.Join(dir, "nokey.yml")
	if err := os.WriteFile(noKey, []byte("tls_server_config:\n  cert_file: cert.pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--web.config.file", filepath.Join(dir, "missing.yml")}, "--web.config.file " + filepath.Join(dir, "missing.yml") + " is not a usable web configuration: "},
		{[]string{"--web.config.file", badYAML}, "is not a usable web configuration: yaml"},
		{[]string{"--web.config.file", noKey}, "is not a usable web configuration: missing one of key or key_file"},
		{[]string{"--web.telemetry-path", "metrics"}, `--web.telemetry-path "metrics" must be a path of its own starting with /`},
		{[]string{"--web.telemetry-path", "/healthz"}, `--web.telemetry-path "/healthz" must be a path of its own`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(append([]string{"serve", "--web.listen-address", "127.0.0.1:0"}, tc.args...), io.Discard, &stderr)
			if code != exitUsage || !strings.Contains(stderr.String(), tc.says) || strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want %d and one line saying %q", code, stderr.String(), exitUsage, tc.says)
			}
		})
	}
}

// An empty container id (docker:// alone) would select every container by
// prefix: check refuses it as a usage error, with its own status 3.
func TestCheckRefusesAnEmptyContainerID(t *testing.T) {
	for _, tc := range []struct{ value, says string }{
		{"docker://", "no container id after docker://"},
		{"containerd://", "no container id after containerd://"},
		{"", "empty container id"},
	} {
		var stdout, stderr bytes.Buffer
		code := run([]string{"check", "--container", tc.value}, &stdout, &stderr)
		first, _, _ := strings.Cut(stderr.String(), "\n")
		if code != checkUnknown || !strings.Contains(first, tc.says) {
			t.Errorf("check --container %q: exit %d, first line %q; want %d saying %q", tc.value, code, first, checkUnknown, tc.says)
		}
	}
}

// check reads --pid as trace does; its usage errors exit 3 (unknown), since
// 2 would read as a failed check.
func TestCheckBadPidIsUnknown(t *testing.T) {
	for _, pid := range []string{"12abc", "0", "-1"} {
		var stdout, stderr bytes.Buffer
		code := run([]string{"check", "--pid", pid}, &stdout, &stderr)
		first, _, _ := strings.Cut(stderr.String(), "\n")
		if code != checkUnknown || !strings.Contains(first, "pid") || !strings.Contains(first, "must be a process id greater than 0") {
			t.Errorf("check --pid %s: exit %d, first line %q", pid, code, first)
		}
	}
}

// Kubernetes flags without --kubernetes would do nothing: a usage error in
// one line naming them, before anything is loaded. --node-name's default
// from $NODE_NAME is no flag given.
func TestKubernetesFlagsNeedKubernetes(t *testing.T) {
	t.Setenv("NODE_NAME", "node-a")
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"serve", "--kubernetes.events=false"}, "--kubernetes.events needs --kubernetes"},
		{[]string{"serve", "--kubeconfig", "/etc/kube.conf", "--node-name", "n1"}, "--kubeconfig and --node-name need --kubernetes"},
		{[]string{"trace", "--namespace", "db"}, "--namespace needs --kubernetes (pods are named from the Kubernetes API)"},
		{[]string{"trace", "--pod", "pg-0", "--kubeconfig", "k"}, "--kubeconfig and --pod need --kubernetes"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(tc.args, io.Discard, &stderr)
			if code != exitUsage || !strings.Contains(stderr.String(), tc.says) || strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want %d and one line saying %q", code, stderr.String(), exitUsage, tc.says)
			}
		})
	}
}

// The trace filters refuse empty values, as --verdict refuses unknown ones.
func TestTraceFilterFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"trace", "--kubernetes", "--namespace", "db,"}, `empty namespace in "db,"`},
		{[]string{"trace", "--kubernetes", "--pod", ""}, `empty pod name in ""`},
		{[]string{"trace", "--container", "pg,"}, "empty container id"},
		{[]string{"trace", "--container", "docker://"}, "no container id after docker://"},
	} {
		var stderr bytes.Buffer
		code := run(tc.args, io.Discard, &stderr)
		first, _, _ := strings.Cut(stderr.String(), "\n")
		if code != exitUsage || !strings.Contains(first, tc.says) {
			t.Errorf("%v: exit %d, first line %q; want %d saying %q", tc.args, code, first, exitUsage, tc.says)
		}
	}
}
