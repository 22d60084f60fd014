package oracle

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// Cluster is one running PostgreSQL server whose postmaster is PID 1 of a
// PID namespace: what the families act on and the judge reads. The
// namespace cluster (unshare, the host's PostgreSQL) and the Docker
// cluster (a container of testenv's images, any major) implement it.
type Cluster interface {
	// Version is the server's major version.
	Version() int
	// PostmasterPID is the postmaster's pid on the host.
	PostmasterPID() int
	// Exec runs a shell script inside the namespace as a process the
	// postmaster did not start; it returns when the script's shell exits.
	Exec(script string) (string, error)
	// Command is a long-running command inside the namespace (storms).
	Command(name string, args ...string) *exec.Cmd
	// Psql is a psql command line that reaches the server from inside.
	Psql() string
	// PGBin is the server binaries' directory, as seen inside.
	PGBin() string
	// Inside maps a host path under the scratch directory to the path the
	// namespace sees (both clusters see it at the same path).
	Inside(hostPath string) string
	// Owner is the uid and gid of the server's user, as the host numbers
	// them: what a second postmaster's files must belong to.
	Owner() (uid, gid int)
	// Ready waits until the server accepts connections.
	Ready(timeout time.Duration) error
	// Log is the server log so far (stderr, default log_line_prefix).
	Log() string
	// Exited reports whether the postmaster has exited.
	Exited() bool
	// Stop ends the server and its namespace and removes its files.
	Stop() error
}

// ClusterStarter starts a cluster of a PostgreSQL major version; scratch
// is a host directory the cluster must make visible inside (Inside).
type ClusterStarter func(version int, scratch string) (Cluster, error)

// Kind is a way to run the server.
type Kind struct {
	Start ClusterStarter
	// Template makes (once a run, before tracing starts) a data directory
	// of that major, initdb'd by its own binaries and owned by its server
	// user, that a second postmaster's round copies (cp -a); the host path
	// must be visible inside. log receives progress.
	Template func(version int, scratch string, log io.Writer) (string, error)
	// Versions is the majors it can run.
	Versions func() []int
}

// Kinds are the kinds of cluster the oracle can run against, by name
// (-cluster). "auto" picks namespace for the host's PostgreSQL and docker
// for the others (AutoKind).
var Kinds = map[string]Kind{
	"namespace": {Start: startNamespaceCluster, Template: namespaceTemplate, Versions: func() []int { return []int{HostMajor()} }},
	"docker":    {Start: startDockerCluster, Template: dockerTemplate, Versions: dockerVersions},
}

// AutoKind is the kind a version runs on by default: the host's own
// PostgreSQL in a PID namespace, any other in a Docker container.
func AutoKind(version int) string {
	if version == HostMajor() {
		return "namespace"
	}
	return "docker"
}

// HostMajor is the major of the host's server binaries (testenv.PGBin,
// /usr/lib/postgresql/N/bin), 0 if the path does not say.
func HostMajor() int {
	m := hostMajorRE.FindStringSubmatch(testenv.PGBin)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

var hostMajorRE = regexp.MustCompile(`/postgresql/(\d+)/bin/?$`)

// namespaceCluster is testenv's cluster: unshare --pid --fork --mount-proc,
// the postmaster as PID 1, the host's filesystem.
type namespaceCluster struct {
	*testenv.Cluster
	pidfd int // the postmaster's: Exited cannot be fooled by pid reuse
}

// settings make the oracle's rounds faster and its log unambiguous.
var settings = []string{
	// The default prefix spelled out, in UTC, whatever initdb found.
	"log_line_prefix=%m [%p] ",
	"log_timezone=UTC",
	// Crash recovery fsyncs the whole data directory first (2-3 s here);
	// without fsync it takes ~0.3 s, so a round waits less for the reset.
	"fsync=off",
	// Rounds open many connections at once.
	"max_connections=200",
}

func startNamespaceCluster(version int, scratch string) (Cluster, error) {
	if version != HostMajor() {
		return nil, fmt.Errorf("the namespace cluster runs the host's PostgreSQL %d (%s), not %d: use -cluster docker", HostMajor(), testenv.PGBin, version)
	}
	c, err := testenv.NewCluster(testenv.ClusterOptions{Settings: settings})
	if err != nil {
		return nil, err
	}
	fd, err := unix.PidfdOpen(c.PostmasterPID, 0)
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("opening the postmaster's pidfd: %w", err)
	}
	return &namespaceCluster{Cluster: c, pidfd: fd}, nil
}

func (c *namespaceCluster) Version() int                  { return HostMajor() }
func (c *namespaceCluster) PostmasterPID() int            { return c.Cluster.PostmasterPID }
func (c *namespaceCluster) Psql() string                  { return c.PsqlArgs() }
func (c *namespaceCluster) PGBin() string                 { return testenv.PGBin }
func (c *namespaceCluster) Inside(hostPath string) string { return filepath.Clean(hostPath) }

// Owner is the host's postgres user.
func (c *namespaceCluster) Owner() (uid, gid int) {
	uid, gid, _ = hostPostgres()
	return uid, gid
}

func hostPostgres() (uid, gid int, err error) {
	pg, err := user.Lookup("postgres")
	if err != nil {
		return 0, 0, fmt.Errorf("the postgres user (apt-get install postgresql): %w", err)
	}
	uid, _ = strconv.Atoi(pg.Uid)
	gid, _ = strconv.Atoi(pg.Gid)
	return uid, gid, nil
}

// namespaceTemplate is testenv's template data directory (outside the
// scratch directory: the namespace shares the host's filesystem).
func namespaceTemplate(version int, scratch string, log io.Writer) (string, error) {
	return testenv.TemplateDataDir()
}

// Exec is testenv's, in a process group of its own (see ownGroup).
func (c *namespaceCluster) Exec(script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := ownGroup(exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(c.InitPID), "-p", "-m", "sh", "-c", script), syscall.SIGKILL)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (c *namespaceCluster) Exited() bool {
	return exited(c.pidfd)
}

func (c *namespaceCluster) Stop() error {
	err := c.Cluster.Stop()
	if c.pidfd >= 0 {
		unix.Close(c.pidfd)
		c.pidfd = -1
	}
	return err
}

// Ready asks pg_isready (no session, so no backend to disturb), and
// gives up at once when the postmaster is gone.
func (c *namespaceCluster) Ready(timeout time.Duration) error {
	return waitReady(c, fmt.Sprintf("%s/pg_isready -h %s -U postgres", testenv.PGBin, c.Socket), timeout)
}

// waitReady runs probe (a pg_isready) until it succeeds, the postmaster
// exits or timeout passes. A server that stays down is a harness failure
// that must be explained from its one report: the error says what
// pg_isready last said, what the postmaster and its children were doing,
// and the log's last lines.
func waitReady(c Cluster, probe string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if c.Exited() {
			return fmt.Errorf("the postmaster (pid %d) has exited", c.PostmasterPID())
		}
		out, err := c.Exec(probe)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server not ready after %s: pg_isready: %v: %s\nthe postmaster and its children:\n%s\nthe server log's last lines:\n%s",
				timeout, err, strings.TrimSpace(out), processTree(c.PostmasterPID()), tail(c.Log(), 15))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// processTree lists pid and its children (every thread's), one a line:
// host pid, state, kernel wait channel and command line.
func processTree(pid int) string {
	var b strings.Builder
	line := func(pid int, indent string) {
		state := "?"
		if s, err := readProcStat(pid); err == nil {
			state = s.state
		}
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		fmt.Fprintf(&b, "%s%d %s %s %s\n", indent, pid, state, wchan, bytes.TrimSpace(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	}
	line(pid, "")
	for _, child := range childrenOf(pid) {
		line(child, "  ")
	}
	return strings.TrimRight(b.String(), "\n")
}

// writeExecutable writes a script the namespace runs.
func writeExecutable(path, text string) error {
	return os.WriteFile(path, []byte(text), 0o755)
}
