package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// PGBin is where Debian's postgresql package puts the server binaries.
var PGBin = envOr("PG_BIN", "/usr/lib/postgresql/15/bin")

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// RequirePostgres needs root, the PostgreSQL server binaries, the postgres
// user and util-linux's unshare/nsenter/setpriv.
func RequirePostgres(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	_, err := os.Stat(filepath.Join(PGBin, "postgres"))
	Require(t, err == nil, "needs PostgreSQL server binaries in "+PGBin+" (apt-get install postgresql)")
	_, err = user.Lookup("postgres")
	Require(t, err == nil, "needs the postgres user (apt-get install postgresql)")
	RequireCommands(t, "unshare", "nsenter", "setpriv", "psql")
}

// ClusterOptions says how to run the postmaster.
type ClusterOptions struct {
	// Init runs before the postmaster as PID 1 of the namespace, e.g.
	// []string{"tini", "--"}; empty means the postmaster is PID 1.
	Init []string
	// Cgroup is a cgroup directory (created, and removed at cleanup) the
	// whole namespace runs in, e.g. /sys/fs/cgroup/memory/docker/<id>.
	Cgroup string
	// CgroupFiles are written in Cgroup before start, e.g. memory.limit_in_bytes.
	CgroupFiles map[string]string
	// Settings are extra -c name=value server settings.
	Settings []string
	// Env is extra environment for the postmaster.
	Env []string
	// OOMScoreAdj, when set, is the oom_score_adj the namespace starts
	// with: init and postmaster inherit it, as from a container runtime.
	// Negative values need CAP_SYS_RESOURCE.
	OOMScoreAdj *int
}

// Cluster is a PostgreSQL server in its own PID and mount namespace.
type Cluster struct {
	Dir     string // data directory
	Socket  string // unix socket directory
	LogFile string
	cmd     *exec.Cmd
	// UnsharePID is unshare's pid (in the host namespace).
	UnsharePID int
	// InitPID is the host pid of PID 1 of the namespace.
	InitPID int
	// PostmasterPID is the host pid of the postmaster.
	PostmasterPID int
	done          chan struct{}
	base          string // holds Dir, Socket and LogFile
	cgroup        string // removed once the namespace is empty
}

// The template cluster: initdb runs once per process.
var (
	templateOnce sync.Once
	templateDir  string
	templateErr  error
)

// StartCluster starts a cluster (NewCluster) for a test, stopped at its cleanup.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	RequirePostgres(t)
	c, err := NewCluster(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// NewCluster initdbs (from a per-process template, for speed) and starts a
// postmaster in a new PID namespace, waiting until it accepts connections.
// The benchmark uses it too, without a test.
func NewCluster(opts ClusterOptions) (c *Cluster, err error) {
	pg, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("the postgres user (apt-get install postgresql): %w", err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)

	base, err := os.MkdirTemp("", "orphanwatch-pg-")
	if err != nil {
		return nil, err
	}
	c = &Cluster{Dir: filepath.Join(base, "data"), Socket: filepath.Join(base, "sock"), LogFile: filepath.Join(base, "postgres.log"),
		done: make(chan struct{}), base: base}
	defer func() {
		if err != nil {
			c.Stop()
			c = nil
		}
	}()
	for _, d := range []string{base, c.Socket} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return c, err
		}
		if err := os.Chown(d, uid, gid); err != nil {
			return c, err
		}
	}
	if err := os.Chmod(base, 0o755); err != nil {
		return c, err
	}
	template, err := templateCluster(uid, gid)
	if err != nil {
		return c, err
	}
	if out, err := exec.Command("cp", "-a", template, c.Dir).CombinedOutput(); err != nil {
		return c, fmt.Errorf("copying template cluster: %v: %s", err, out)
	}

	server := []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups",
		filepath.Join(PGBin, "postgres"), "-D", c.Dir, "-k", c.Socket, "-c", "listen_addresses=", "-c", "logging_collector=off"}
	for _, s := range opts.Settings {
		server = append(server, "-c", s)
	}
	args := append([]string{"--pid", "--fork", "--mount-proc"}, opts.Init...)
	args = append(args, server...)
	script := `exec unshare "$@"`
	if opts.Cgroup != "" {
		if err := os.MkdirAll(opts.Cgroup, 0o755); err != nil {
			return c, fmt.Errorf("creating cgroup %s: %v", opts.Cgroup, err)
		}
		c.cgroup = opts.Cgroup
		for name, value := range opts.CgroupFiles {
			if err := os.WriteFile(filepath.Join(opts.Cgroup, name), []byte(value), 0o644); err != nil {
				return c, fmt.Errorf("writing %s in %s: %v", name, opts.Cgroup, err)
			}
		}
		script = fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec unshare "$@"`, opts.Cgroup)
	}
	if opts.OOMScoreAdj != nil {
		script = fmt.Sprintf(`echo %d > /proc/self/oom_score_adj && %s`, *opts.OOMScoreAdj, script)
	}
	log, err := os.Create(c.LogFile)
	if err != nil {
		return c, err
	}
	c.cmd = exec.Command("sh", append([]string{"-c", script, "sh"}, args...)...)
	c.cmd.Stdout, c.cmd.Stderr = log, log
	c.cmd.Env = append(os.Environ(), opts.Env...)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		log.Close()
		c.cmd = nil
		return c, fmt.Errorf("starting postgres: %v", err)
	}
	c.UnsharePID = c.cmd.Process.Pid
	go func() { c.cmd.Wait(); log.Close(); close(c.done) }()

	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(c.Log(), "database system is ready to accept connections") {
		select {
		case <-c.done:
			return c, fmt.Errorf("postgres exited during start:\n%s", c.Log())
		default:
		}
		if time.Now().After(deadline) {
			return c, fmt.Errorf("postgres not ready after 30s:\n%s", c.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c.InitPID, err = childOf(c.UnsharePID); err != nil {
		return c, err
	}
	c.PostmasterPID = c.InitPID
	if len(opts.Init) > 0 {
		if c.PostmasterPID, err = childOf(c.InitPID); err != nil {
			return c, err
		}
	}
	return c, nil
}

// templateCluster returns a data directory made by initdb, once per process.
func templateCluster(uid, gid int) (string, error) {
	templateOnce.Do(func() {
		dir, err := os.MkdirTemp("", "orphanwatch-pgtemplate-")
		if err != nil {
			templateErr = err
			return
		}
		os.Chmod(dir, 0o755)
		if err := os.Chown(dir, uid, gid); err != nil {
			templateErr = err
			return
		}
		templateDir = filepath.Join(dir, "data")
		cmd := exec.Command("setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups",
			filepath.Join(PGBin, "initdb"), "-D", templateDir, "-A", "trust", "-U", "postgres", "--no-sync")
		if out, err := cmd.CombinedOutput(); err != nil {
			templateErr = fmt.Errorf("initdb: %v: %s", err, out)
		}
	})
	return templateDir, templateErr
}

// ChildOf finds the first child of pid, waiting up to 2 s for one.
func ChildOf(t testing.TB, pid int) int {
	t.Helper()
	child, err := childOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	return child
}

// FirstChild is ChildOf without a test, for the benchmark.
func FirstChild(pid int) (int, error) { return childOf(pid) }

func childOf(pid int) (int, error) {
	for range 100 {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if err == nil {
			if f := strings.Fields(string(data)); len(f) > 0 {
				return strconv.Atoi(f[0])
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, fmt.Errorf("process %d has no child", pid)
}

// Log is the server log so far.
func (c *Cluster) Log() string {
	data, _ := os.ReadFile(c.LogFile)
	return string(data)
}

// WaitLog waits until the server log contains s.
func (c *Cluster) WaitLog(s string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(c.Log(), s) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// PsqlArgs is how a psql inside the namespace reaches the server.
func (c *Cluster) PsqlArgs() string {
	return fmt.Sprintf("psql -X -q -h %s -U postgres -d postgres", c.Socket)
}

// Exec runs a shell script inside the cluster's PID and mount namespace,
// as a process the postmaster did not start, and returns its output.
func (c *Cluster) Exec(script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(c.InitPID), "-p", "-m", "sh", "-c", script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Command is a command to run inside the cluster's PID and mount namespace.
func (c *Cluster) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"-t", strconv.Itoa(c.InitPID), "-p", "-m", name}, args...)...)
}

// SeedIncident is the incident orphanwatch exists for: a monitoring psql
// started inside the container, orphaned when its shell exits, killed by
// SIGPIPE when head stops reading.
func (c *Cluster) SeedIncident() error {
	_, err := c.Exec(fmt.Sprintf(`%s -c "select generate_series(1,3000000)" | head -c 10 >/dev/null & exit`, c.PsqlArgs()))
	return err
}

// Ready waits until the server accepts connections again (after a crash-restart).
func (c *Cluster) Ready(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out, err := c.Exec(c.PsqlArgs() + ` -Atc "select 1"`)
		if err == nil && strings.TrimSpace(out) == "1" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server not ready after %s: %v: %s", timeout, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop kills the namespace and waits until it is empty: unshare exits only
// after its child, the namespace's init, which the kernel lets die only once
// every other process in the namespace is reaped (zap_pid_ns_processes).
// Then it removes the cluster's files and cgroup.
func (c *Cluster) Stop() error {
	var errs []error
	if c.cmd != nil {
		if c.InitPID != 0 {
			syscall.Kill(c.InitPID, syscall.SIGKILL)
		}
		syscall.Kill(-c.UnsharePID, syscall.SIGKILL)
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			errs = append(errs, fmt.Errorf("postgres namespace %d did not exit within 30s", c.UnsharePID))
		}
	}
	if c.cgroup != "" {
		if err := removeCgroup(c.cgroup); err != nil {
			errs = append(errs, fmt.Errorf("cgroup %s left behind: %v", c.cgroup, err))
		}
	}
	os.RemoveAll(c.base)
	return errors.Join(errs...)
}

// removeCgroup removes a cgroup directory; the last exits may still be
// leaving it for a moment.
func removeCgroup(dir string) error {
	var err error
	for range 100 {
		if err = os.Remove(dir); err == nil || os.IsNotExist(err) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}
