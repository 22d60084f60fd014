package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ownerLabel marks a test's containers with its process id, so one left by
// a killed run can be told from a concurrent test's.
const ownerLabel = "org.orphanwatch.test.pid"

// Container is a container on the private engine, removed at test cleanup.
type Container struct {
	e    *DockerEngine
	t    testing.TB
	Name string // as given to docker run (docker rename changes it)
	ID   string // the full 64-hex id, as in the container's cgroup path
}

// RunContainer runs `docker run -d --network none --name name args... image
// cmd...`. args are extra docker run options (--init, --health-cmd ...);
// anything that would give the container a network is refused.
func RunContainer(t testing.TB, e *DockerEngine, name string, args []string, image string, cmd ...string) *Container {
	t.Helper()
	id, err := e.RunDetached(name, args, image, cmd...)
	if err != nil {
		t.Fatal(err)
	}
	c := &Container{e: e, t: t, Name: name, ID: id}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("docker logs %s:\n%s", c.Name, c.Logs())
		}
		if _, err := e.Docker("rm", "--force", "--volumes", c.ID); err != nil {
			t.Errorf("removing container %s: %v", c.Name, err)
		}
	})
	return c
}

// RunDetached is RunContainer without a test (the oracle is also a
// program): it returns the container's id, and the caller removes it. The
// container is labelled with this process's id, so that one a killed run
// left behind is removed by the next (RemoveOrphanedContainers).
func (e *DockerEngine) RunDetached(name string, args []string, image string, cmd ...string) (string, error) {
	if err := noNetwork(args); err != nil {
		return "", fmt.Errorf("container %s: %w", name, err)
	}
	run := []string{"run", "--detach", "--network", "none", "--name", name, "--label", ownerLabel + "=" + strconv.Itoa(os.Getpid())}
	run = append(append(append(run, args...), image), cmd...)
	return e.Docker(run...)
}

// RunOnce is `docker run --rm` of a command to its end, with no network,
// labelled like RunDetached; it returns the command's output.
func (e *DockerEngine) RunOnce(args []string, image string, cmd ...string) (string, error) {
	if err := noNetwork(args); err != nil {
		return "", err
	}
	run := []string{"run", "--rm", "--network", "none", "--label", ownerLabel + "=" + strconv.Itoa(os.Getpid())}
	return e.Docker(append(append(append(run, args...), image), cmd...)...)
}

// noNetwork refuses docker run options that would give a container a
// network: every container here runs with --network none.
func noNetwork(args []string) error {
	for _, a := range args {
		if a == "-p" || a == "-P" || strings.HasPrefix(a, "--publish") || strings.HasPrefix(a, "--net") {
			return fmt.Errorf("%q would give it a network; every container here runs with --network none", a)
		}
	}
	return nil
}

// RemoveOrphanedContainers removes the containers of test processes (and
// oracle runs) that are gone, killed before they removed them.
func (e *DockerEngine) RemoveOrphanedContainers() error { return removeOrphanedContainers(e) }

// removeOrphanedContainers removes the containers of test processes that
// are gone (killed before their cleanup ran).
func removeOrphanedContainers(e *DockerEngine) error {
	out, err := e.Docker("ps", "--all", "--filter", "label="+ownerLabel, "--format", `{{.ID}} {{.Label "`+ownerLabel+`"}}`)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(out, "\n") {
		id, owner, ok := strings.Cut(line, " ")
		if pid, _ := strconv.Atoi(owner); ok && pid > 0 && !processAlive(pid) {
			if _, err := e.Docker("rm", "--force", "--volumes", id); err != nil {
				return err
			}
		}
	}
	return nil
}

func processAlive(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// UniqueName is prefix plus a random suffix: tests running concurrently
// never collide.
func UniqueName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// Exec runs `docker exec <container> args...` and returns its combined output.
func (c *Container) Exec(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := c.e.Command(ctx, append([]string{"exec", c.ID}, args...)...).CombinedOutput()
	return string(out), err
}

// Shell runs a script under sh -c in the container with docker exec.
func (c *Container) Shell(script string) (string, error) {
	return c.Exec("sh", "-c", script)
}

// Inspect formats `docker inspect` of the container with a Go template.
func (c *Container) Inspect(format string) string {
	c.t.Helper()
	out, err := c.e.Docker("inspect", "--format", format, c.ID)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// InitPID is the host pid of the container's PID 1 (docker-init with
// --init, else the entrypoint, which becomes the postmaster).
func (c *Container) InitPID() int {
	c.t.Helper()
	pid, err := strconv.Atoi(c.Inspect("{{.State.Pid}}"))
	if err != nil || pid <= 0 {
		c.t.Fatalf("container %s has no running init (State.Pid %d): %v", c.Name, pid, err)
	}
	return pid
}

// Logs is `docker logs`: the container's stdout and stderr, which for the
// PostgreSQL images is the server log. (Not t.Context(): cleanups use it
// after that is cancelled.)
func (c *Container) Logs() string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := c.e.Command(ctx, "logs", c.ID).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(docker logs failed: %v) %s", err, out)
	}
	return string(out)
}

// WaitLog waits until the container's log contains s.
func (c *Container) WaitLog(s string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if strings.Contains(c.Logs(), s) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Rename is `docker rename`; Name follows.
func (c *Container) Rename(name string) {
	c.t.Helper()
	if _, err := c.e.Docker("rename", c.ID, name); err != nil {
		c.t.Fatal(err)
	}
	c.Name = name
}

// Health is the healthcheck status (starting, healthy, unhealthy) and the
// last probes' exit codes and output.
func (c *Container) Health() string {
	c.t.Helper()
	return c.Inspect(`{{.State.Health.Status}}{{range .State.Health.Log}} | exit {{.ExitCode}}: {{printf "%q" .Output}}{{end}}`)
}
