// Package container turns a process's cgroup into the container and pod it
// belongs to. Runtimes name cgroups after container ids; the formats differ
// by runtime, cgroup driver (cgroupfs or systemd) and cgroup version.
package container

import (
	"regexp"
	"strings"
)

// Ref identifies a container. The zero Ref means "not in a container we
// recognise".
type Ref struct {
	Runtime string // docker, containerd, cri-o, podman, or kubernetes when only kubepods says so
	ID      string // 64 hex digits
	PodUID  string // Kubernetes pod UID, dashed
}

func (r Ref) IsZero() bool { return r.ID == "" && r.PodUID == "" }

// Short is the 12-character form docker ps shows.
func (r Ref) Short() string {
	if len(r.ID) > 12 {
		return r.ID[:12]
	}
	return r.ID
}

var (
	// A path element naming a container: <runtime prefix><id>[.scope], as
	// systemd-driven runtimes create them, or a bare id under a runtime's
	// directory (cgroupfs driver).
	scopeElement = regexp.MustCompile(`^(docker|cri-containerd|crio|libpod)-([0-9a-f]{64})\.scope$`)
	// containerd with the systemd driver on a cgroupfs mount:
	// kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>
	colonElement = regexp.MustCompile(`:(cri-containerd|crio|docker):([0-9a-f]{64})$`)
	bareID       = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// A pod's cgroup: pod<uid> (cgroupfs driver) or
	// kubepods[-<qos>]-pod<uid>.slice (systemd driver, dashes in the UID
	// written as underscores). Static pods have 32-hex-digit UIDs.
	podUID = regexp.MustCompile(`^(?:kubepods-(?:[a-z]+-)?)?pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})(?:\.slice)?$`)
)

var runtimeByPrefix = map[string]string{
	"docker":         "docker",
	"cri-containerd": "containerd",
	"crio":           "cri-o",
	"libpod":         "podman",
}

// FromPath parses a cgroup path such as /proc/<pid>/cgroup shows it. The
// innermost element naming a container wins (a container may nest cgroups
// of its own below, e.g. init.scope).
func FromPath(path string) Ref {
	var ref Ref
	elements := strings.Split(path, "/")
	kubepods := false
	for i, el := range elements {
		if strings.HasPrefix(el, "kubepods") {
			kubepods = true
		}
		if m := podUID.FindStringSubmatch(el); m != nil {
			kubepods = true
			ref.PodUID = strings.ReplaceAll(m[1], "_", "-")
		}
		if m := scopeElement.FindStringSubmatch(el); m != nil {
			ref.Runtime, ref.ID = runtimeByPrefix[m[1]], m[2]
			continue
		}
		if m := colonElement.FindStringSubmatch(el); m != nil {
			ref.Runtime, ref.ID = runtimeByPrefix[m[1]], m[2]
			if p := podUID.FindStringSubmatch(strings.SplitN(el, ":", 2)[0]); p != nil {
				ref.PodUID = strings.ReplaceAll(p[1], "_", "-")
			}
			continue
		}
		if bareID.MatchString(el) && i > 0 {
			switch parent := elements[i-1]; {
			case parent == "docker":
				ref.Runtime, ref.ID = "docker", el
			case parent == "libpod_parent" || strings.HasPrefix(parent, "libpod-"):
				ref.Runtime, ref.ID = "podman", el
			case kubepods:
				// cgroupfs driver: the runtime is not in the path.
				ref.Runtime, ref.ID = "kubernetes", el
			}
		}
	}
	if ref.ID == "" && ref.PodUID != "" {
		ref.Runtime = "kubernetes"
	}
	return ref
}

// FromNames parses the two innermost names the kernel reports for an event:
// the cgroup directory's name and its parent's, enough for every format
// above (a container's parent is its pod, or the runtime's directory).
func FromNames(name, parent string) Ref {
	return FromPath(parent + "/" + name)
}

// Names are the human names of a container, where a runtime or the
// Kubernetes API can tell them.
type Names struct {
	Namespace string // Kubernetes namespace
	Pod       string
	Container string
}

// Namer looks names up; implementations must be safe for concurrent use.
type Namer interface {
	Names(Ref) Names
}
