package audit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orphanwatch/orphanwatch/internal/procfs/procfstest"
)

const unlimited = "9223372036854771712\n" // v1's "no limit" with 4 KiB pages

// memoryOf adds a process with these /proc/<pid>/cgroup lines and reads
// its memory limit from the fake cgroup tree at root.
func memoryOf(t *testing.T, cgroupRoot, cgroupLines string) (Memory, Finding) {
	t.Helper()
	tree := procfstest.New(t)
	tree.Add(procfstest.Proc{PID: 100, PPID: 1, Comm: "postgres", Start: 1, Exe: pgBin})
	if err := os.WriteFile(filepath.Join(tree.Root, "100", "cgroup"), []byte(cgroupLines), 0o644); err != nil {
		t.Fatal(err)
	}
	return Host{Proc: tree.FS(), CgroupRoot: cgroupRoot}.memoryFinding(100)
}

func write(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// This host's layout: v1 controllers at /sys/fs/cgroup/<controller>, v2
// beside them at /sys/fs/cgroup/unified without the memory controller.
const hybridLines = "9:name=systemd:/docker/abc\n4:memory:/docker/abc\n1:cpu,cpuacct:/docker/abc\n0::/docker/abc\n"

func TestMemoryV1OnAHybridHost(t *testing.T) {
	root := t.TempDir()
	write(t, root, map[string]string{
		"unified/cgroup.controllers":              "\n",
		"memory/memory.limit_in_bytes":            unlimited,
		"memory/docker/memory.limit_in_bytes":     unlimited,
		"memory/docker/abc/memory.limit_in_bytes": "419430400\n",
		"memory/docker/abc/memory.stat":           "cache 1000\nrss 5\nshmem 7\ntotal_cache 734003200\ntotal_rss 209715200\ntotal_shmem 20971520\n",
	})
	m, f := memoryOf(t, root, hybridLines)
	if m.CgroupVersion != 1 || m.Cgroup != "/docker/abc" || m.LimitBytes == nil || *m.LimitBytes != 400<<20 || m.LimitCgroup != "/docker/abc" {
		t.Errorf("memory = %+v", m)
	}
	// Page cache (total_cache) is reclaimable: not counted.
	if m.UsedBytes != 220<<20 {
		t.Errorf("used = %d, want total_rss + total_shmem", m.UsedBytes)
	}
	if f.Level != OK || !strings.Contains(f.Message, "memory limit 400 MiB on cgroup /docker/abc (v1); 220 MiB anonymous and shared memory in use (55%)") {
		t.Errorf("finding = %+v", f)
	}
}

func TestMemoryTightestAncestorWins(t *testing.T) {
	root := t.TempDir()
	write(t, root, map[string]string{
		"memory/memory.limit_in_bytes":            unlimited,
		"memory/docker/memory.limit_in_bytes":     "1073741824\n",
		"memory/docker/memory.stat":               "total_rss 1048576\ntotal_shmem 0\n",
		"memory/docker/abc/memory.limit_in_bytes": "2147483648\n",
	})
	m, _ := memoryOf(t, root, hybridLines)
	if m.LimitBytes == nil || *m.LimitBytes != 1<<30 || m.LimitCgroup != "/docker" || m.UsedBytes != 1<<20 {
		t.Errorf("memory = %+v, want the parent's 1 GiB", m)
	}
}

func TestMemoryPureV2(t *testing.T) {
	root := t.TempDir()
	pod := "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice"
	write(t, root, map[string]string{
		"cgroup.controllers":                       "cpuset cpu io memory hugetlb pids\n",
		pod + "/memory.max":                        "536870912\n",
		pod + "/memory.stat":                       "anon 500000000\nfile 10\nshmem 10000000\n",
		pod + "/cri-containerd-x.scope/memory.max": "max\n",
	})
	m, f := memoryOf(t, root, "0::"+pod+"/cri-containerd-x.scope\n")
	if m.CgroupVersion != 2 || m.LimitBytes == nil || *m.LimitBytes != 512<<20 || m.LimitCgroup != pod || m.UsedBytes != 510000000 {
		t.Errorf("memory = %+v", m)
	}
	// 95% of the limit is anonymous or shared: one more sort and a backend dies.
	if f.Level != Warn || !strings.Contains(f.Message, "close to the limit") || f.Fix == "" {
		t.Errorf("finding = %+v, want a warning near the limit", f)
	}
}

func TestMemoryWithoutLimit(t *testing.T) {
	for name, tc := range map[string]struct {
		files map[string]string
		lines string
		says  string
	}{
		"v2 max everywhere":                     {map[string]string{"cgroup.controllers": "memory\n", "a/memory.max": "max\n"}, "0::/a\n", "no memory limit on its cgroup /a"},
		"v1 unlimited":                          {map[string]string{"memory/memory.limit_in_bytes": unlimited, "memory/a/memory.limit_in_bytes": unlimited}, "4:memory:/a\n0::/a\n", "no memory limit on its cgroup /a"},
		"hybrid, no memory controller anywhere": {map[string]string{"unified/cgroup.controllers": "\n"}, "1:cpu:/a\n0::/a\n", "no memory controller is mounted"},
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			write(t, root, tc.files)
			m, f := memoryOf(t, root, tc.lines)
			if m.LimitBytes != nil || f.Level != Note || !strings.Contains(f.Message, tc.says) || f.Fix == "" {
				t.Errorf("memory %+v, finding %+v; want a note saying %q", m, f, tc.says)
			}
		})
	}
}

func TestMemoryUnknowable(t *testing.T) {
	for name, tc := range map[string]struct {
		files map[string]string
		lines string
		says  string
	}{
		// /proc/<pid>/cgroup is relative to the reader's cgroup namespace.
		"another cgroup namespace": {map[string]string{"cgroup.controllers": "memory\n"}, "0::/../../kubepods/pod1\n", "outside orphanwatch's cgroup namespace"},
		"cgroup tree not mounted":  {map[string]string{"cgroup.controllers": "memory\n"}, "0::/docker/abc\n", "is the host's /sys/fs/cgroup mounted?"},
		"no v2 mount":              {map[string]string{}, "0::/docker/abc\n", "no cgroup v2 hierarchy at"},
		"garbage limit":            {map[string]string{"cgroup.controllers": "memory\n", "a/memory.max": "lots\n"}, "0::/a\n", `memory limit "lots"`},
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			write(t, root, tc.files)
			_, f := memoryOf(t, root, tc.lines)
			if f.Level != Unknown || !strings.Contains(f.Message, tc.says) {
				t.Errorf("finding %+v, want unknown saying %q", f, tc.says)
			}
		})
	}
}

func TestBytesString(t *testing.T) {
	for n, want := range map[uint64]string{400 << 20: "400 MiB", 1 << 30: "1 GiB", 3 << 29: "1.5 GiB", 2048: "2 KiB", 12: "12 B"} {
		if got := bytesString(n); got != want {
			t.Errorf("bytesString(%d) = %q, want %q", n, got, want)
		}
	}
}
