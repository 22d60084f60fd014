package testenv

import (
	"bufio"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io"
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

// PostgresSuites says which Debian suite ships each PostgreSQL major the
// Docker tests cover: the images are built offline from Debian's packages.
var PostgresSuites = map[int]string{13: "bullseye", 15: "bookworm", 17: "trixie", 18: "sid"}

// RootfsCache keeps each debootstrap result as a tarball, outside the
// repository, so a machine builds each version once.
var RootfsCache = envOr("OW_ROOTFS_CACHE", "/var/cache/orphanwatch-test/rootfs")

// debianKeyring verifies every suite's Release file. Bookworm's
// debian-archive-keyring (2023.3+deb12u2) holds the bullseye, bookworm and
// trixie keys; sid is signed with the bookworm and trixie automatic keys.
// OW_DEBIAN_KEYRING overrides it (e.g. a newer keyring once sid moves to
// keys bookworm's package lacks); verification is never turned off.
var debianKeyring = envOr("OW_DEBIAN_KEYRING", "/usr/share/keyrings/debian-archive-keyring.gpg")

//go:embed docker-entrypoint.sh
var entrypoint []byte

// PostgresImageTag is the image for a major version.
func PostgresImageTag(version int) string { return fmt.Sprintf("orphanwatch-postgres:%d", version) }

// imageChanges are the docker import --change lines: the official image's
// PATH and PGDATA, the entrypoint, and postgres as the command.
func imageChanges(version int) []string {
	return []string{
		fmt.Sprintf("ENV PG_MAJOR=%d", version),
		fmt.Sprintf("ENV PATH=/usr/lib/postgresql/%d/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", version),
		"ENV PGDATA=/var/lib/postgresql/data",
		"ENV LANG=C.UTF-8",
		`ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]`,
		`CMD ["postgres"]`,
	}
}

// PostgresImageEnv is the environment the image gives its processes (its
// ENV lines), for a command entered into a container from the host
// (nsenter), as docker exec would give it.
func PostgresImageEnv(version int) []string {
	env := []string{"HOME=/root"}
	for _, c := range imageChanges(version) {
		if kv, ok := strings.CutPrefix(c, "ENV "); ok {
			env = append(env, kv)
		}
	}
	return env
}

// imageRevision changes with the entrypoint and the --change lines, so a
// cached image made from an older recipe is re-imported (the rootfs stays).
func imageRevision(version int) string {
	h := sha256.New()
	h.Write(entrypoint)
	for _, c := range imageChanges(version) {
		fmt.Fprintln(h, c)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

const revisionLabel = "org.orphanwatch.image.revision"

var (
	imagesMu sync.Mutex
	images   = map[int]string{}
)

// PostgresImage needs the image for a major version, building it (minutes,
// once per machine) when it is missing or stale.
func PostgresImage(t testing.TB, e *DockerEngine, version int) string {
	t.Helper()
	imagesMu.Lock()
	defer imagesMu.Unlock()
	if tag, ok := images[version]; ok {
		return tag
	}
	if !e.imageCurrent(version) {
		RequireCommands(t, "debootstrap", "gpgv")
		t.Logf("building %s (debootstrap of %s; cached in %s)", PostgresImageTag(version), PostgresSuites[version], RootfsCache)
	}
	start := time.Now()
	tag, err := BuildPostgresImage(e, version, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Logf("%s ready in %s", tag, d.Round(time.Second))
	}
	images[version] = tag
	return tag
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (e *DockerEngine) imageCurrent(version int) bool {
	rev, err := e.Docker("image", "inspect", "--format", `{{index .Config.Labels "`+revisionLabel+`"}}`, PostgresImageTag(version))
	return err == nil && rev == imageRevision(version)
}

// BuildPostgresImage makes the image for a major version unless it is
// current: debootstrap of the suite that ships it (cached), then docker
// import with the entrypoint added. Concurrent builders wait for each other.
func BuildPostgresImage(e *DockerEngine, version int, log io.Writer) (string, error) {
	suite, ok := PostgresSuites[version]
	if !ok {
		return "", fmt.Errorf("no Debian suite known for PostgreSQL %d (have %v)", version, PostgresSuites)
	}
	tag := PostgresImageTag(version)
	if err := os.MkdirAll(RootfsCache, 0o755); err != nil {
		return "", err
	}
	unlock, err := lockFile(filepath.Join(RootfsCache, fmt.Sprintf("postgresql-%d.lock", version)))
	if err != nil {
		return "", err
	}
	defer unlock()
	if e.imageCurrent(version) {
		return tag, nil
	}
	rootfs, err := debootstrap(suite, version, log)
	if err != nil {
		return "", err
	}
	return tag, e.importImage(rootfs, version, log)
}

// debootstrap returns the cached root filesystem tarball of a minimal suite
// with postgresql-N and procps, making it when missing.
func debootstrap(suite string, version int, log io.Writer) (string, error) {
	tarball := filepath.Join(RootfsCache, fmt.Sprintf("%s-postgresql-%d.tar", suite, version))
	if _, err := os.Stat(tarball); err == nil {
		return tarball, nil
	}
	dir, err := os.MkdirTemp(RootfsCache, suite+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	// It becomes the image's /: MkdirTemp's 0700 would lock postgres out.
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	mirror := DebianMirror()
	fmt.Fprintf(log, "debootstrap %s (postgresql-%d) from %s, keyring %s\n", suite, version, mirror, debianKeyring)
	start := time.Now()
	cmd := exec.Command("debootstrap", "--variant=minbase", fmt.Sprintf("--include=postgresql-%d,procps", version),
		"--keyring="+debianKeyring, suite, dir, mirror)
	// policy-rc.d and a fake start-stop-daemon keep package scripts from
	// starting services; no cluster may start inside the chroot.
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("debootstrap %s: %v\n%s", suite, err, lastLines(out, 30))
	}
	if err := noProcessesIn(dir); err != nil {
		return "", err
	}
	trimRootfs(dir, version)
	tmp := tarball + ".tmp"
	if out, err := exec.Command("tar", "--numeric-owner", "--xattrs", "-C", dir, "-cf", tmp, ".").CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("archiving the %s rootfs: %v: %s", suite, err, out)
	}
	if err := os.Rename(tmp, tarball); err != nil {
		return "", err
	}
	fmt.Fprintf(log, "debootstrap %s took %s; cached as %s\n", suite, time.Since(start).Round(time.Second), tarball)
	return tarball, nil
}

// noProcessesIn fails (and kills them) when package scripts left a process
// running in the chroot, such as a postmaster of Debian's main cluster.
func noProcessesIn(dir string) error {
	procs, _ := filepath.Glob("/proc/[0-9]*/root")
	var left []string
	for _, p := range procs {
		if root, err := os.Readlink(p); err == nil && (root == dir || strings.HasPrefix(root, dir+"/")) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			left = append(left, fmt.Sprintf("%d %s", pid, comm(pid)))
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("debootstrap left processes running in %s (killed): %v", dir, left)
	}
	return nil
}

// trimRootfs removes what the image does not need: Debian's "main" cluster
// (the entrypoint makes its own in $PGDATA, as the official image does),
// apt's downloads and lists, and documentation.
func trimRootfs(dir string, version int) {
	for _, p := range []string{fmt.Sprintf("var/lib/postgresql/%d/main", version), fmt.Sprintf("etc/postgresql/%d/main", version),
		"usr/share/doc", "usr/share/man", "usr/share/info"} {
		os.RemoveAll(filepath.Join(dir, p))
	}
	for _, p := range []string{"var/cache/apt/archives", "var/lib/apt/lists"} {
		entries, _ := os.ReadDir(filepath.Join(dir, p))
		for _, en := range entries {
			if !en.IsDir() {
				os.Remove(filepath.Join(dir, p, en.Name()))
			}
		}
	}
}

// importImage runs docker import of the rootfs plus the entrypoint.
func (e *DockerEngine) importImage(rootfs string, version int, log io.Writer) error {
	stage, err := os.MkdirTemp(RootfsCache, "import-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	script := filepath.Join(stage, "usr/local/bin/docker-entrypoint.sh")
	if err := os.MkdirAll(filepath.Dir(script), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(script, entrypoint, 0o755); err != nil {
		return err
	}
	// tar appends to a copy: the cached rootfs stays as debootstrap made it.
	tarball := filepath.Join(stage, "image.tar")
	if out, err := exec.Command("cp", "--reflink=auto", rootfs, tarball).CombinedOutput(); err != nil {
		return fmt.Errorf("copying %s: %v: %s", rootfs, err, out)
	}
	if out, err := exec.Command("tar", "--numeric-owner", "--owner=0", "--group=0", "-C", stage, "-rf", tarball, "./usr/local/bin/docker-entrypoint.sh").CombinedOutput(); err != nil {
		return fmt.Errorf("adding the entrypoint: %v: %s", err, out)
	}
	args := []string{"import"}
	for _, c := range append(imageChanges(version), "LABEL "+revisionLabel+"="+imageRevision(version)) {
		args = append(args, "--change", c)
	}
	args = append(args, tarball, PostgresImageTag(version))
	start := time.Now()
	if _, err := e.Docker(args...); err != nil {
		return err
	}
	fmt.Fprintf(log, "docker import %s took %s\n", PostgresImageTag(version), time.Since(start).Round(time.Millisecond))
	return nil
}

// DebianMirror is the Debian mirror apt is configured with here (the first
// deb822 or one-line source whose URI ends in /debian), or
// OW_DEBIAN_MIRROR; deb.debian.org when there is none.
func DebianMirror() string {
	if m := os.Getenv("OW_DEBIAN_MIRROR"); m != "" {
		return m
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	files = append(files, "/etc/apt/sources.list")
	for _, f := range files {
		if m := mirrorIn(f); m != "" {
			return m
		}
	}
	return "http://deb.debian.org/debian"
}

func mirrorIn(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	scan := bufio.NewScanner(f)
	for scan.Scan() {
		fields := strings.Fields(scan.Text())
		var uris []string
		switch {
		case len(fields) > 1 && fields[0] == "URIs:":
			uris = fields[1:]
		case len(fields) > 2 && fields[0] == "deb":
			uris = fields[1:2]
			if strings.HasPrefix(fields[1], "[") { // deb [options] uri
				for i, f := range fields {
					if strings.HasSuffix(f, "]") && i+1 < len(fields) {
						uris = fields[i+1 : i+2]
						break
					}
				}
			}
		}
		for _, u := range uris {
			if strings.HasSuffix(strings.TrimSuffix(u, "/"), "/debian") {
				return strings.TrimSuffix(u, "/")
			}
		}
	}
	return ""
}

func lastLines(out []byte, lines int) string {
	l := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
