// Package procfs reads what orphanwatch needs about processes from /proc:
// at start (processes older than the agent), when a postmaster appears, and
// for `orphanwatch check`. Processes vanish at any moment: every reader
// returns an error wrapping fs.ErrNotExist for a process that is gone.
package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// gone is the error of a process that was reaped while it was being read:
// its /proc/<pid> files were opened, but the kernel no longer finds the task
// behind them (proc_pid_cmdline_read, proc_single_show and
// oom_score_adj_read return ESRCH). Callers ask errors.Is(err,
// fs.ErrNotExist) alone, as for a pid whose directory is already gone.
type gone struct{ err error }

func (g gone) Error() string   { return g.err.Error() }
func (g gone) Unwrap() []error { return []error{g.err, fs.ErrNotExist} }

// vanished makes an ESRCH from /proc an fs.ErrNotExist, keeping its text.
func vanished(err error) error {
	if errors.Is(err, syscall.ESRCH) && !errors.Is(err, fs.ErrNotExist) {
		return gone{err}
	}
	return err
}

func readFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	return data, vanished(err)
}

func readlink(path string) (string, error) {
	link, err := os.Readlink(path)
	return link, vanished(err)
}

// FS is a /proc mount; tests point it elsewhere.
type FS struct{ Root string }

// Default is the host's /proc.
var Default = FS{Root: "/proc"}

func (fs FS) path(pid int, name string) string {
	return filepath.Join(fs.Root, strconv.Itoa(pid), name)
}

// PIDs lists the processes (not threads) present now.
func (fs FS) PIDs() ([]int, error) {
	entries, err := os.ReadDir(fs.Root)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", fs.Root, err)
	}
	pids := make([]int, 0, len(entries))
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Stats reads every process's stat, skipping those that vanish meanwhile.
func (fs FS) Stats() (map[int]Stat, error) {
	pids, err := fs.PIDs()
	if err != nil {
		return nil, err
	}
	stats := make(map[int]Stat, len(pids))
	for _, pid := range pids {
		if st, err := fs.ReadStat(pid); err == nil {
			stats[pid] = st
		}
	}
	return stats, nil
}

// Stat is the part of /proc/<pid>/stat orphanwatch uses.
type Stat struct {
	PID        int
	Comm       string
	State      byte
	PPID       int
	StartTicks uint64 // since boot, in USER_HZ ticks
}

// ReadStat reads /proc/<pid>/stat.
func (fs FS) ReadStat(pid int) (Stat, error) {
	data, err := readFile(fs.path(pid, "stat"))
	if err != nil {
		return Stat{}, err
	}
	return ParseStat(data)
}

// ParseStat parses a stat line. The comm field is in parentheses and may
// itself contain spaces and parentheses, so it ends at the last ')'.
func ParseStat(data []byte) (Stat, error) {
	open := bytes.IndexByte(data, '(')
	close := bytes.LastIndexByte(data, ')')
	if open < 1 || close < open {
		return Stat{}, errors.New("stat: no (comm)")
	}
	var s Stat
	var err error
	if s.PID, err = strconv.Atoi(string(bytes.TrimSpace(data[:open]))); err != nil || s.PID <= 0 {
		return Stat{}, fmt.Errorf("stat: pid %q: %v", bytes.TrimSpace(data[:open]), err)
	}
	s.Comm = string(data[open+1 : close])
	// Fields after comm, numbered from 3 (state) as in proc(5).
	fields := strings.Fields(string(data[close+1:]))
	if len(fields) < 20 {
		return Stat{}, fmt.Errorf("stat: %d fields after comm, want at least 20", len(fields))
	}
	// The state is one letter (R, S, D, Z, T, t, X, I, ...); strings.Fields
	// splits on spaces only, so a NUL could stand in for it.
	if st := fields[0]; len(st) != 1 || !('A' <= st[0] && st[0] <= 'Z' || 'a' <= st[0] && st[0] <= 'z') {
		return Stat{}, fmt.Errorf("stat: state %q", st)
	}
	s.State = fields[0][0]
	if s.PPID, err = strconv.Atoi(fields[1]); err != nil {
		return Stat{}, fmt.Errorf("stat: ppid: %w", err)
	}
	if s.StartTicks, err = strconv.ParseUint(fields[19], 10, 64); err != nil {
		return Stat{}, fmt.Errorf("stat: starttime: %w", err)
	}
	return s, nil
}

// Status is the part of /proc/<pid>/status orphanwatch uses.
type Status struct {
	NSpid []int // pid in each pid namespace, outermost first
	UID   int   // real uid
}

// NSPid is the pid in the process's own namespace.
func (s Status) NSPid() int {
	if len(s.NSpid) == 0 {
		return 0
	}
	return s.NSpid[len(s.NSpid)-1]
}

// ReadStatus reads /proc/<pid>/status.
func (fs FS) ReadStatus(pid int) (Status, error) {
	data, err := readFile(fs.path(pid, "status"))
	if err != nil {
		return Status{}, err
	}
	return ParseStatus(data)
}

// ParseStatus parses the NSpid and Uid lines.
func ParseStatus(data []byte) (Status, error) {
	var s Status
	seen := false
	for line := range strings.Lines(string(data)) {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch key {
		case "NSpid":
			for _, f := range strings.Fields(value) {
				n, err := strconv.Atoi(f)
				if err != nil {
					return Status{}, fmt.Errorf("status: NSpid: %w", err)
				}
				s.NSpid = append(s.NSpid, n)
			}
		case "Uid":
			f := strings.Fields(value)
			if len(f) == 0 {
				return Status{}, errors.New("status: empty Uid")
			}
			uid, err := strconv.Atoi(f[0])
			if err != nil {
				return Status{}, fmt.Errorf("status: Uid: %w", err)
			}
			s.UID, seen = uid, true
		}
	}
	if !seen {
		return Status{}, errors.New("status: no Uid line")
	}
	return s, nil
}

// Cmdline reads /proc/<pid>/cmdline as argv. Kernel threads have none.
func (fs FS) Cmdline(pid int) ([]string, error) {
	data, err := readFile(fs.path(pid, "cmdline"))
	if err != nil {
		return nil, err
	}
	return ParseCmdline(data), nil
}

// ParseCmdline splits NUL-separated arguments. A process that rewrote its
// argv area (PostgreSQL's ps display does) may leave one space-separated
// string; it is returned as is.
func ParseCmdline(data []byte) []string {
	data = bytes.TrimRight(data, "\x00")
	if len(data) == 0 {
		return nil
	}
	parts := bytes.Split(data, []byte{0})
	argv := make([]string, len(parts))
	for i, p := range parts {
		argv[i] = string(p)
	}
	return argv
}

// Children returns the pids of a single-threaded process's children
// (/proc/<pid>/task/<pid>/children lists those of that thread).
func (fs FS) Children(pid int) ([]int, error) {
	data, err := readFile(fs.path(pid, fmt.Sprintf("task/%d/children", pid)))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(string(data)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// Exe is the path of the process's executable ("(deleted)" suffix kept).
func (fs FS) Exe(pid int) (string, error) { return readlink(fs.path(pid, "exe")) }

// Cwd is the process's working directory. A postmaster works in its data
// directory (ChangeToDataDir at start).
func (fs FS) Cwd(pid int) (string, error) { return readlink(fs.path(pid, "cwd")) }

// RootPath is a path as the process sees it, through its mount namespace
// (/proc/<pid>/root/<path>).
func (fs FS) RootPath(pid int, path string) string {
	return filepath.Join(fs.Root, strconv.Itoa(pid), "root", path)
}

// PidNamespace is the inode of the process's pid namespace.
func (fs FS) PidNamespace(pid int) (uint64, error) {
	link, err := readlink(fs.path(pid, "ns/pid"))
	if err != nil {
		return 0, err
	}
	return parseNSLink(link)
}

func parseNSLink(link string) (uint64, error) {
	// "pid:[4026531836]"
	open, close := strings.IndexByte(link, '['), strings.LastIndexByte(link, ']')
	if open < 0 || close < open {
		return 0, fmt.Errorf("namespace link %q", link)
	}
	return strconv.ParseUint(link[open+1:close], 10, 64)
}

// OOMScoreAdj reads /proc/<pid>/oom_score_adj.
func (fs FS) OOMScoreAdj(pid int) (int, error) {
	data, err := readFile(fs.path(pid, "oom_score_adj"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// Cgroups reads /proc/<pid>/cgroup: controller list -> path. The v2 entry
// has the key "" (its line is "0::/path").
func (fs FS) Cgroups(pid int) (map[string]string, error) {
	data, err := readFile(fs.path(pid, "cgroup"))
	if err != nil {
		return nil, err
	}
	return ParseCgroups(data), nil
}

// ParseCgroups parses /proc/<pid>/cgroup lines "id:controllers:path".
func ParseCgroups(data []byte) map[string]string {
	out := make(map[string]string)
	for line := range strings.Lines(string(data)) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) != 3 {
			continue
		}
		out[parts[1]] = parts[2]
	}
	return out
}

// ReadFileIn reads a file relative to a process's working directory, as the
// process sees it.
func (fs FS) ReadFileIn(pid int, name string) ([]byte, error) {
	return readFile(filepath.Join(fs.Root, strconv.Itoa(pid), "cwd", name))
}

// Tasks are the kernel's own tallies of tasks (processes and threads).
type Tasks struct {
	Forked uint64 // created since boot: /proc/stat's "processes" (total_forks)
	Alive  uint64 // existing now: /proc/loadavg's "running/total" total (nr_threads)
}

// ReadTasks reads the host's task tallies; they are not per PID namespace.
func (fs FS) ReadTasks() (Tasks, error) {
	stat, err := readFile(filepath.Join(fs.Root, "stat"))
	if err != nil {
		return Tasks{}, err
	}
	loadavg, err := readFile(filepath.Join(fs.Root, "loadavg"))
	if err != nil {
		return Tasks{}, err
	}
	return ParseTasks(stat, loadavg)
}

// ParseTasks reads Tasks from the text of /proc/stat and /proc/loadavg.
func ParseTasks(stat, loadavg []byte) (Tasks, error) {
	var t Tasks
	found := false
	for line := range bytes.Lines(stat) {
		if rest, ok := bytes.CutPrefix(line, []byte("processes ")); ok {
			n, err := strconv.ParseUint(string(bytes.TrimSpace(rest)), 10, 64)
			if err != nil {
				return t, fmt.Errorf("/proc/stat: processes: %w", err)
			}
			t.Forked, found = n, true
			break
		}
	}
	if !found {
		return t, errors.New("/proc/stat has no processes line")
	}
	// "0.12 0.34 0.56 2/345 6789": the fourth field is running/total.
	fields := strings.Fields(string(loadavg))
	if len(fields) < 4 {
		return t, fmt.Errorf("/proc/loadavg: %q has no running/total field", loadavg)
	}
	_, total, ok := strings.Cut(fields[3], "/")
	n, err := strconv.ParseUint(total, 10, 64)
	if !ok || err != nil {
		return t, fmt.Errorf("/proc/loadavg: %q is not running/total", fields[3])
	}
	t.Alive = n
	return t, nil
}
