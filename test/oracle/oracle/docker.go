package oracle

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// dockerCluster is a container of testenv's image for a major version
// (Debian's packages; the entrypoint execs the postmaster, which is PID 1
// of the container, as in the official image), on testenv's private
// engine, with --network none. The scratch directory is bind-mounted at
// the same path. The families' commands enter the container's PID and
// mount namespaces with nsenter, as the namespace cluster's do, with the
// image's environment: their orphans are adopted by the container's PID 1,
// the postmaster. (Unlike docker exec they stay in the oracle's cgroup,
// which no verdict depends on.) The server log is the container's
// stderr, read from the engine's json-file log.
type dockerCluster struct {
	engine  *testenv.DockerEngine
	version int
	id      string
	pid     int // the postmaster's host pid: PID 1 of the container
	pidfd   int
	env     []string
	uid     int
	gid     int
	log     *dockerLog
}

// dockerEngine is the private engine, started (or found) once a process.
var dockerEngine = sync.OnceValues(func() (*testenv.DockerEngine, error) {
	e, err := testenv.StartDocker()
	if err != nil {
		return nil, err
	}
	if err := e.RemoveOrphanedContainers(); err != nil {
		return nil, err
	}
	return e, nil
})

func dockerVersions() []int {
	var out []int
	for v := range testenv.PostgresSuites {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// dockerImage is the image of a major, built if missing (minutes, once a
// machine: make pg-images).
func dockerImage(version int, log io.Writer) (*testenv.DockerEngine, string, error) {
	e, err := dockerEngine()
	if err != nil {
		return nil, "", err
	}
	image, err := testenv.BuildPostgresImage(e, version, log)
	return e, image, err
}

func startDockerCluster(version int, scratch string) (Cluster, error) {
	e, image, err := dockerImage(version, io.Discard)
	if err != nil {
		return nil, err
	}
	args := []string{"--volume", scratch + ":" + scratch}
	cmd := []string{"postgres"}
	for _, s := range settings {
		cmd = append(cmd, "-c", s)
	}
	name := fmt.Sprintf("ow-oracle-%d-%d-%d", version, os.Getpid(), time.Now().UnixNano()%1e9)
	id, err := e.RunDetached(name, args, image, cmd...)
	if err != nil {
		return nil, err
	}
	c := &dockerCluster{engine: e, version: version, id: id, pidfd: -1, env: testenv.PostgresImageEnv(version),
		log: &dockerLog{path: filepath.Join(e.ContainersDir(), id, id+"-json.log")}}
	if err := c.waitStarted(60 * time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// waitStarted waits for the entrypoint's initdb and the server's start,
// then finds the postmaster.
func (c *dockerCluster) waitStarted(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(c.Log(), "database system is ready to accept connections") {
		if time.Now().After(deadline) {
			state, _ := c.engine.Docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", c.id)
			return fmt.Errorf("PostgreSQL %d in container %.12s not ready after %s (state %s):\n%s", c.version, c.id, timeout, state, tail(c.Log(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, err := c.engine.Docker("inspect", "--format", "{{.State.Pid}}", c.id)
	if err != nil {
		return err
	}
	if c.pid, err = strconv.Atoi(out); err != nil || c.pid <= 0 {
		return fmt.Errorf("container %.12s: no PID 1 (State.Pid %q)", c.id, out)
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c.pid)); strings.TrimSpace(string(comm)) != "postgres" {
		return fmt.Errorf("PID 1 of container %.12s is %q, not the postmaster", c.id, bytes.TrimSpace(comm))
	}
	if c.pidfd, err = unix.PidfdOpen(c.pid, 0); err != nil {
		return fmt.Errorf("opening the postmaster's pidfd: %w", err)
	}
	passwd, err := os.ReadFile(fmt.Sprintf("/proc/%d/root/etc/passwd", c.pid))
	if err != nil {
		return err
	}
	if c.uid, c.gid, err = passwdEntry(passwd, "postgres"); err != nil {
		return fmt.Errorf("container %.12s: %w", c.id, err)
	}
	return nil
}

// passwdEntry is a user's uid and gid in an /etc/passwd.
func passwdEntry(passwd []byte, name string) (uid, gid int, err error) {
	for _, line := range strings.Split(string(passwd), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 4 && f[0] == name {
			uid, err1 := strconv.Atoi(f[2])
			gid, err2 := strconv.Atoi(f[3])
			if err1 == nil && err2 == nil {
				return uid, gid, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("no user %s in its /etc/passwd", name)
}

func (c *dockerCluster) Version() int                  { return c.version }
func (c *dockerCluster) PostmasterPID() int            { return c.pid }
func (c *dockerCluster) Psql() string                  { return testenv.PsqlArgs }
func (c *dockerCluster) PGBin() string                 { return fmt.Sprintf("/usr/lib/postgresql/%d/bin", c.version) }
func (c *dockerCluster) Inside(hostPath string) string { return filepath.Clean(hostPath) }
func (c *dockerCluster) Owner() (uid, gid int)         { return c.uid, c.gid }

// nsenter is a command entering the container's PID and mount namespaces,
// with the image's environment.
func (c *dockerCluster) nsenter(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.pid), "-p", "-m", name}, args...)...)
	cmd.Env = c.env
	return cmd
}

func (c *dockerCluster) Exec(script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := ownGroup(c.nsenter(ctx, "sh", "-c", script), syscall.SIGKILL)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (c *dockerCluster) Command(name string, args ...string) *exec.Cmd {
	return c.nsenter(context.Background(), c.Inside(name), args...)
}

// Ready asks pg_isready on the image's default socket.
func (c *dockerCluster) Ready(timeout time.Duration) error {
	return waitReady(c, c.PGBin()+"/pg_isready -U postgres", timeout)
}

func (c *dockerCluster) Log() string { return c.log.read() }

func (c *dockerCluster) Exited() bool {
	if c.pidfd < 0 {
		return true
	}
	return exited(c.pidfd)
}

// Stop removes the container (its data directory was inside it); the log
// read so far stays readable.
func (c *dockerCluster) Stop() error {
	c.log.read()
	_, err := c.engine.Docker("rm", "--force", "--volumes", c.id)
	if c.pidfd >= 0 {
		unix.Close(c.pidfd)
		c.pidfd = -1
	}
	return err
}

// dockerLog reads the engine's json-file log of a container as it grows:
// one JSON object per line, the text in "log".
type dockerLog struct {
	path string
	mu   sync.Mutex
	off  int64
	text strings.Builder
}

func (l *dockerLog) read() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.Open(l.path)
	if err != nil {
		return l.text.String() // not yet written, or the container is gone
	}
	defer f.Close()
	if _, err := f.Seek(l.off, io.SeekStart); err != nil {
		return l.text.String()
	}
	scan := bufio.NewScanner(f)
	scan.Buffer(make([]byte, 1<<16), 1<<22)
	for scan.Scan() {
		line := scan.Bytes()
		var entry struct {
			Log string `json:"log"`
		}
		if json.Unmarshal(line, &entry) != nil {
			break // a line being written: read it next time
		}
		l.off += int64(len(line)) + 1
		l.text.WriteString(entry.Log)
	}
	return l.text.String()
}

// dockerTemplate runs initdb of the major's image in a one-off container,
// into the scratch directory, as the image's postgres user.
func dockerTemplate(version int, scratch string, log io.Writer) (string, error) {
	e, image, err := dockerImage(version, log)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(scratch, fmt.Sprintf("template-%d", version))
	script := fmt.Sprintf(`set -e
mkdir -m 755 %[1]s
chown postgres:postgres %[1]s
setpriv --reuid=postgres --regid=postgres --init-groups initdb -D %[1]s/data -U postgres -A trust --no-sync >/dev/null`, dir)
	if out, err := e.RunOnce([]string{"--volume", scratch + ":" + scratch, "--entrypoint", "sh"}, image, "-c", script); err != nil {
		return "", fmt.Errorf("initdb of the PostgreSQL %d template: %v: %s", version, err, out)
	}
	return filepath.Join(dir, "data"), nil
}
