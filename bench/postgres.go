package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pgBin is where Debian's postgresql package puts the server binaries.
const pgBin = "/usr/lib/postgresql/15/bin"

// database is PostgreSQL 15 whose postmaster is PID 1 of its own PID
// namespace, as in a container without an init: the namespace where
// orphanwatch records every birth.
type database struct {
	cmd     *exec.Cmd
	initPID int
	dir     string
}

func startDatabase(work string) (*database, error) {
	pg, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("the postgres user (apt-get install postgresql): %w", err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	dir := filepath.Join(work, "pg")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	os.Chmod(work, 0o755)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	asPostgres := []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups"}
	initdb := exec.Command(asPostgres[0], append(asPostgres[1:], filepath.Join(pgBin, "initdb"), "-D", filepath.Join(dir, "data"), "-A", "trust", "--no-sync")...)
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	args := append([]string{"--pid", "--fork", "--mount-proc"}, asPostgres...)
	args = append(args, filepath.Join(pgBin, "postgres"), "-D", filepath.Join(dir, "data"), "-k", dir, "-c", "listen_addresses=")
	db := &database{cmd: exec.Command("unshare", args...), dir: dir}
	log, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		return nil, err
	}
	db.cmd.Stdout, db.cmd.Stderr = log, log
	if err := db.cmd.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		data, _ := os.ReadFile(filepath.Join(dir, "log"))
		if !strings.Contains(string(data), "ready to accept connections") {
			continue
		}
		children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", db.cmd.Process.Pid, db.cmd.Process.Pid))
		if f := strings.Fields(string(children)); len(f) > 0 {
			db.initPID, _ = strconv.Atoi(f[0])
			return db, nil
		}
	}
	db.stop()
	return nil, fmt.Errorf("postgres did not start; see %s", filepath.Join(dir, "log"))
}

// command runs inside the database's namespace, like `docker exec`.
func (db *database) command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"-t", strconv.Itoa(db.initPID), "-p", "-m", name}, args...)...)
}

func (db *database) stop() {
	if db.initPID != 0 {
		syscall.Kill(db.initPID, syscall.SIGKILL)
	}
	db.cmd.Process.Kill()
	db.cmd.Wait()
}
