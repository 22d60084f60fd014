package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The private Docker Engine the tests share. Its data-root lives outside the
// repository and persists, so images built once on a machine are reused by
// every later run (CI machines are clean and build once).
var (
	// DockerState holds the engine's data-root (docker/) and its log.
	DockerState = envOr("OW_DOCKER_STATE", "/var/lib/orphanwatch-test")
	// dockerRun holds the socket, pidfile and exec-root: runtime state that
	// must not outlive a reboot.
	dockerRun = envOr("OW_DOCKER_RUN", "/run/orphanwatch-test")
)

const (
	// dockerCLI is Debian's client from docker.io, the same release as
	// dockerd. /usr/local/bin/docker (a newer CLI) comes first on PATH
	// here: it would negotiate an older API and read ~/.docker plugins and
	// credential helpers, so the path is explicit.
	dockerCLI = "/usr/bin/docker"
	dockerd   = "/usr/sbin/dockerd"
)

// DockerEngine is a running dockerd on a private unix socket.
type DockerEngine struct {
	Socket   string // unix socket path
	DataRoot string // --data-root; container configs are in DataRoot/containers
	cliCfg   string // an empty DOCKER_CONFIG: no user config, contexts or helpers
}

// ContainersDir is what `orphanwatch trace --docker-root` needs for names.
func (e *DockerEngine) ContainersDir() string { return filepath.Join(e.DataRoot, "containers") }

// RequireDocker needs root, Debian's dockerd and docker CLI (docker.io).
func RequireDocker(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	for _, p := range []string{dockerd, dockerCLI, "/usr/bin/containerd", "/usr/sbin/runc"} {
		_, err := os.Stat(p)
		Require(t, err == nil, "needs "+p+" (apt-get install docker.io; scripts/deps.sh does)")
	}
}

var (
	dockerOnce sync.Once
	engine     *DockerEngine
	engineErr  error
)

// Docker starts the private engine once per test process, or reuses one
// already answering on the same socket (another test package, the oracle).
func Docker(t testing.TB) *DockerEngine {
	t.Helper()
	RequireDocker(t)
	dockerOnce.Do(func() {
		if engine, engineErr = StartDocker(); engineErr == nil {
			engineErr = removeOrphanedContainers(engine)
		}
	})
	if engineErr != nil {
		t.Fatal(engineErr)
	}
	return engine
}

// StartDocker reuses or starts the engine; it needs no test (the image
// builder command uses it).
func StartDocker() (*DockerEngine, error) {
	e := &DockerEngine{
		Socket:   filepath.Join(dockerRun, "docker.sock"),
		DataRoot: filepath.Join(DockerState, "docker"),
		cliCfg:   filepath.Join(DockerState, "cli"),
	}
	for _, d := range []string{dockerRun, e.DataRoot, e.cliCfg} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	// Two test processes starting at once must not start two daemons on
	// one data-root.
	unlock, err := lockFile(filepath.Join(dockerRun, "start.lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	if e.ping() == nil {
		return e, nil
	}
	os.Remove(e.Socket) // stale, from a daemon that died
	log, err := os.OpenFile(filepath.Join(DockerState, "dockerd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	// No TCP listener, no bridge, no iptables or sysctl changes: every
	// container runs with --network none. Without --containerd dockerd
	// starts and supervises its own containerd under the exec-root.
	cmd := exec.Command(dockerd,
		"--host", "unix://"+e.Socket,
		"--data-root", e.DataRoot,
		"--exec-root", filepath.Join(dockerRun, "exec"),
		"--pidfile", filepath.Join(dockerRun, "dockerd.pid"),
		"--bridge=none", "--iptables=false", "--ip6tables=false",
		"--ip-forward=false", "--ip-masq=false", "--userland-proxy=false")
	cmd.Stdout, cmd.Stderr = log, log
	// Its own session: it outlives this test process for the next run and
	// for others to share (stop it with kill $(cat /run/orphanwatch-test/dockerd.pid)),
	// and a Ctrl-C of go test does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting dockerd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := e.ping()
		if err == nil {
			return e, nil
		}
		select {
		case werr := <-exited:
			return nil, fmt.Errorf("dockerd exited during start (%v); see %s/dockerd.log: %v", werr, DockerState, err)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return nil, fmt.Errorf("dockerd not answering after 60s; see %s/dockerd.log: %v", DockerState, err)
		}
	}
}

func (e *DockerEngine) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := e.run(ctx, "version", "--format", "{{.Server.Version}}")
	return err
}

// Command is the docker CLI aimed at this engine.
func (e *DockerEngine) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, dockerCLI, append([]string{"--host", "unix://" + e.Socket}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+e.cliCfg)
	return cmd
}

// Docker runs the CLI and returns its stdout, trimmed; stderr is in the error.
func (e *DockerEngine) Docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return e.run(ctx, args...)
}

func (e *DockerEngine) run(ctx context.Context, args ...string) (string, error) {
	cmd := e.Command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Processes are the host pids of the engine: dockerd, its children
// (containerd, any docker-proxy) and the shims of its containers (their
// command line names its exec-root).
func (e *DockerEngine) Processes() ([]int, error) {
	data, err := os.ReadFile(filepath.Join(dockerRun, "dockerd.pid"))
	if err != nil {
		return nil, err
	}
	daemon := strings.TrimSpace(string(data))
	execRoot := []byte(filepath.Join(dockerRun, "exec") + "/")
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var pids []int
	for _, stat := range stats {
		dir := filepath.Dir(stat)
		pid := filepath.Base(dir)
		st, err := os.ReadFile(stat)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so after the last ')'.
		var ppid string
		if i := bytes.LastIndexByte(st, ')'); i > 0 {
			if f := strings.Fields(string(st[i+1:])); len(f) > 1 {
				ppid = f[1]
			}
		}
		cmdline, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
		if pid == daemon || ppid == daemon || bytes.Contains(cmdline, execRoot) {
			n, _ := strconv.Atoi(pid)
			pids = append(pids, n)
		}
	}
	return pids, nil
}

// lockFile takes an exclusive flock, across processes, until unlock.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
