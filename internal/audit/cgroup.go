package audit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Memory is the memory limit the postmaster runs under.
type Memory struct {
	// CgroupVersion: 1 for the v1 memory controller, 2 for the unified
	// hierarchy, 0 when no memory controller is mounted (no limit exists).
	CgroupVersion int    `json:"cgroup_version"`
	Cgroup        string `json:"cgroup"` // as /proc/<pid>/cgroup names it
	// LimitBytes is the tightest limit on its cgroup or an ancestor's; nil
	// when there is none.
	LimitBytes  *uint64 `json:"limit_bytes"`
	LimitCgroup string  `json:"limit_cgroup,omitempty"` // the cgroup that sets it
	// UsedBytes is the anonymous and shared memory (shared_buffers) charged
	// to LimitCgroup: what reclaiming page cache cannot free, without swap.
	UsedBytes uint64 `json:"used_bytes"`
	// OOMGroup is whether memory.oom.group is 1 on its cgroup or an
	// ancestor (cgroup v2 only: nil on v1, where it does not exist). Then
	// an OOM kill there kills every process of that cgroup, except those
	// at oom_score_adj -1000 (mm/memcontrol.c mem_cgroup_get_oom_group,
	// Linux 4.19+). Kubernetes 1.28+ sets it on every container.
	OOMGroup *bool `json:"oom_group"`
	// OOMGroupCgroup is the highest cgroup with it set: the one a group
	// kill takes whole.
	OOMGroupCgroup string `json:"oom_group_cgroup,omitempty"`
}

// nearLimit is the share of the limit in use that makes an OOM kill likely
// soon: one large sort or hash can take the rest.
const nearLimit = 0.9

// memoryHierarchy says where a cgroup version keeps what the audit reads.
type memoryHierarchy struct {
	version   int
	mount     string   // the mount point of the hierarchy
	limitFile string   // per cgroup
	groupFile string   // per cgroup: memory.oom.group, v2 only
	usedStats []string // memory.stat keys summed into UsedBytes (hierarchical)
}

func (h Host) memoryFinding(pid int) (Memory, Finding) {
	f := Finding{Check: CheckMemoryLimit}
	m, err := h.memory(pid)
	switch {
	case err != nil:
		f.Level, f.Message = Unknown, fmt.Sprintf("cannot tell the postmaster's memory limit: %v", err)
	case m.LimitBytes == nil:
		f.Level, f.Fix = Note, limitFix
		where := "its cgroup " + m.Cgroup
		if m.CgroupVersion == 0 {
			where = "this host (no memory controller is mounted)"
		}
		f.Message = fmt.Sprintf("no memory limit on %s: PostgreSQL may use all of the host's memory, and a shortage is settled by "+
			"the host-wide OOM killer among all its processes", where)
	default:
		limit := *m.LimitBytes
		share := float64(m.UsedBytes) / float64(limit)
		f.Message = fmt.Sprintf("memory limit %s on cgroup %s (v%d); %s anonymous and shared memory in use (%.0f%%)",
			bytesString(limit), m.LimitCgroup, m.CgroupVersion, bytesString(m.UsedBytes), 100*share)
		f.Level = OK
		if share >= nearLimit {
			f.Level, f.Fix = Warn, limitFix
			f.Message += ": close to the limit, where the cgroup's OOM killer ends a backend and PostgreSQL crash-restarts"
		}
	}
	return m, f
}

const limitFix = "size the container's memory limit (docker run --memory, Kubernetes resources.limits.memory) for shared_buffers, " +
	"max_connections × work_mem (a query may use it once per sort or hash), maintenance_work_mem and per-process overhead; see docs/oom.md"

// memory finds the postmaster's memory cgroup and the limit that applies
// to it. The v1 memory controller wins where both are mounted (a hybrid
// host): the kernel enforces a controller in one hierarchy only.
func (h Host) memory(pid int) (Memory, error) {
	cgroups, err := h.Proc.Cgroups(pid)
	if err != nil {
		return Memory{}, fmt.Errorf("reading its cgroups: %w", err)
	}
	hier, path, err := h.memoryHierarchy(cgroups)
	if err != nil || hier.version == 0 {
		return Memory{Cgroup: path}, err
	}
	m := Memory{CgroupVersion: hier.version, Cgroup: path}
	// A path outside our cgroup namespace shows as /../..: it is not under
	// our mount.
	if !strings.HasPrefix(path, "/") || slices.Contains(strings.Split(path, "/"), "..") {
		return m, fmt.Errorf("its cgroup %q is outside orphanwatch's cgroup namespace: run orphanwatch in the host's cgroup namespace", path)
	}
	dir := filepath.Join(hier.mount, path)
	if _, err := os.Stat(dir); err != nil {
		return m, fmt.Errorf("its cgroup directory: %w (is the host's /sys/fs/cgroup mounted?)", err)
	}
	var limitDir string
	if hier.groupFile != "" {
		m.OOMGroup = new(bool)
	}
	for d := dir; ; d = filepath.Dir(d) {
		limit, ok, err := readLimit(filepath.Join(d, hier.limitFile))
		if err != nil {
			return m, err
		}
		if ok && (m.LimitBytes == nil || limit < *m.LimitBytes) {
			m.LimitBytes, limitDir = &limit, d
		}
		if hier.groupFile != "" {
			set, err := readOOMGroup(filepath.Join(d, hier.groupFile))
			if err != nil {
				return m, err
			}
			if set { // going up: the last one set is the highest
				*m.OOMGroup, m.OOMGroupCgroup = true, cgroupName(hier.mount, d)
			}
		}
		if d == hier.mount || len(d) <= len(hier.mount) {
			break
		}
	}
	if m.LimitBytes == nil {
		return m, nil
	}
	m.LimitCgroup = cgroupName(hier.mount, limitDir)
	stats, err := readStat(filepath.Join(limitDir, "memory.stat"))
	if err != nil {
		return m, err
	}
	for _, k := range hier.usedStats {
		m.UsedBytes += stats[k]
	}
	return m, nil
}

// memoryHierarchy picks the hierarchy holding the memory controller for
// these /proc/<pid>/cgroup lines, and the process's path in it. Layouts:
// v1 controllers at <root>/<controllers> (e.g. /sys/fs/cgroup/memory), with
// v2 beside them at <root>/unified; or v2 alone at <root>.
func (h Host) memoryHierarchy(cgroups map[string]string) (memoryHierarchy, string, error) {
	for controllers, path := range cgroups {
		if !slices.Contains(strings.Split(controllers, ","), "memory") {
			continue
		}
		mount := filepath.Join(h.CgroupRoot, controllers)
		if _, err := os.Stat(mount); err != nil {
			mount = filepath.Join(h.CgroupRoot, "memory")
		}
		return memoryHierarchy{1, mount, "memory.limit_in_bytes", "", []string{"total_rss", "total_shmem"}}, path, nil
	}
	path, ok := cgroups[""]
	if !ok {
		return memoryHierarchy{}, "", nil // no v2 and no v1 memory controller: no limit can exist
	}
	for _, mount := range []string{h.CgroupRoot, filepath.Join(h.CgroupRoot, "unified")} {
		controllers, err := os.ReadFile(filepath.Join(mount, "cgroup.controllers"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return memoryHierarchy{}, path, fmt.Errorf("reading the cgroup v2 controllers: %w", err)
		}
		if !slices.Contains(strings.Fields(string(controllers)), "memory") {
			return memoryHierarchy{}, path, nil // v2 without its memory controller
		}
		return memoryHierarchy{2, mount, "memory.max", "memory.oom.group", []string{"anon", "shmem"}}, path, nil
	}
	return memoryHierarchy{}, path, fmt.Errorf("no cgroup v2 hierarchy at %s or %s/unified", h.CgroupRoot, h.CgroupRoot)
}

// cgroupName is a cgroup directory as /proc/<pid>/cgroup names it.
func cgroupName(mount, dir string) string {
	return "/" + strings.TrimPrefix(strings.TrimPrefix(dir, mount), "/")
}

// readOOMGroup reads memory.oom.group: "1" set, "0" not. Missing (the
// root cgroup, a level without the memory controller) is not set.
func readOOMGroup(path string) (bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading memory.oom.group: %w", err)
	}
	switch s := strings.TrimSpace(string(data)); s {
	case "0":
		return false, nil
	case "1":
		return true, nil
	default:
		return false, fmt.Errorf("memory.oom.group %q in %s", s, path)
	}
}

// unlimitedV1 is where v1's "no limit" starts: PAGE_COUNTER_MAX pages in
// bytes, 0x7FFFFFFFFFFFF000 with 4 KiB pages, reads back as a huge number.
const unlimitedV1 = 1 << 62

// readLimit reads memory.max ("max" for none) or memory.limit_in_bytes.
// A missing file (the root of v2, or a level where the controller is not
// enabled) is no limit.
func readLimit(path string) (limit uint64, ok bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading the memory limit: %w", err)
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return 0, false, nil
	}
	limit, err = strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("memory limit %q in %s: %w", s, path, err)
	}
	return limit, limit < unlimitedV1, nil
}

// readStat reads a memory.stat file: "key value" lines.
func readStat(path string) (map[string]uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading memory use: %w", err)
	}
	out := map[string]uint64{}
	for line := range strings.Lines(string(data)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			out[k] = n
		}
	}
	return out, nil
}

// bytesString is 400 MiB, 1.5 GiB.
func bytesString(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
