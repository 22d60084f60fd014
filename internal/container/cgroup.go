// Package container turns a process's cgroup into the container and pod it
// belongs to, and (optionally) into names a person recognises: the Docker
// container name, or the Kubernetes namespace, pod and container.
//
// Runtimes name cgroups after container ids; the formats differ by runtime,
// cgroup driver (cgroupfs or systemd) and cgroup version, but within one
// path element they are distinctive enough to be read without knowing which
// runtime or driver made them.
package container

import (
	"regexp"
	"slices"
	"strings"
)

// Ref identifies a container. The zero Ref means "not in a container we
// recognise".
type Ref struct {
	Runtime string // docker, containerd, cri-o, podman, or kubernetes when only kubepods says so
	ID      string // 64 hex digits
	PodUID  string // Kubernetes pod UID, dashed (or 32 hex digits for a static pod)
}

// IsZero reports whether r names no container and no pod.
func (r Ref) IsZero() bool { return r.ID == "" && r.PodUID == "" }

// Short is the 12-character form docker ps shows.
func (r Ref) Short() string {
	if len(r.ID) > 12 {
		return r.ID[:12]
	}
	return r.ID
}

// Runtime names as Ref.Runtime reports them.
const (
	RuntimeDocker     = "docker"
	RuntimeContainerd = "containerd"
	RuntimeCRIO       = "cri-o"
	RuntimePodman     = "podman"
	// RuntimeKubernetes: the path says Kubernetes (a kubepods pod cgroup)
	// but not which runtime, as with the cgroupfs driver's bare ids.
	RuntimeKubernetes = "kubernetes"
)

var (
	// <prefix>-<id>.scope is what runc's systemd driver creates for the
	// cgroupsPath "slice:<prefix>:<id>" a runtime asks for. CRI-O's and
	// Podman's cgroupfs managers use the same <prefix>-<id> without .scope.
	// The monitors (crio-conmon-<id>, libpod-conmon-<id>) do not match: the
	// id must follow the prefix directly.
	scopeElement = regexp.MustCompile(`^(docker|cri-containerd|nerdctl|crio|libpod)-([0-9a-f]{64})(\.scope)?$`)
	// A systemd cgroupsPath taken literally by a cgroupfs driver (containerd
	// with SystemdCgroup=false under a kubelet using the systemd driver):
	// kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>, one element.
	colonElement = regexp.MustCompile(`^([^:]*):(docker|cri-containerd|crio|libpod):([0-9a-f]{0,64})$`)
	bareID       = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// A pod's cgroup: pod<uid> (cgroupfs driver), or
	// [<root>-]kubepods[-<qos>]-pod<uid>.slice (systemd driver, with the
	// UID's dashes written as underscores; kind's kubelet uses the root
	// kubelet-kubepods). Static pods have 32-hex-digit UIDs.
	podElement = regexp.MustCompile(`^(?:[a-z0-9_-]*kubepods(?:-[a-z]+)?-)?pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})(?:\.slice)?$`)
)

var runtimeByPrefix = map[string]string{
	"docker":         RuntimeDocker,
	"cri-containerd": RuntimeContainerd,
	"nerdctl":        RuntimeContainerd,
	"crio":           RuntimeCRIO,
	"libpod":         RuntimePodman,
}

// FromPath parses a cgroup path such as /proc/<pid>/cgroup shows it, for
// the v2 hierarchy or a v1 controller. The innermost element naming a
// container or pod wins: a container may nest cgroups of its own below
// (systemd's init.scope, Podman's container), and a node may itself be a
// container (kind, Docker in Docker). Paths relative to a cgroup namespace
// (/../../kubepods...) parse the same. Anything unrecognised gives the
// zero Ref.
func FromPath(path string) Ref {
	var ref Ref
	prev, prevIsPod := "", false
	for el := range strings.SplitSeq(path, "/") {
		if el == "" || el == "." || el == ".." {
			continue
		}
		isPod := false
		if !cannotName(el) {
			ref, isPod = fromElement(el, prev, prevIsPod, ref)
		}
		prev, prevIsPod = el, isPod
	}
	return ref
}

// fromElement reads one element of a path below outer, the Ref of the
// elements above it; prev is the element just above. Each regexp runs once,
// and an element it matches is not tried against the rest.
func fromElement(el, prev string, prevIsPod bool, outer Ref) (ref Ref, isPod bool) {
	if uid, ok := podUID(el); ok {
		return Ref{Runtime: RuntimeKubernetes, PodUID: uid}, true
	}
	if m := scopeElement.FindStringSubmatch(el); m != nil {
		if m[3] == "" && m[1] != "crio" && m[1] != "libpod" {
			return outer, false // only the cgroupfs managers of CRI-O and Podman omit .scope
		}
		return Ref{Runtime: runtimeByPrefix[m[1]], ID: m[2], PodUID: outer.PodUID}, false
	}
	if m := colonElement.FindStringSubmatch(el); m != nil {
		return fromColonElement(m, outer), false
	}
	if bareID.MatchString(el) {
		switch {
		case prev == "docker": // Docker's cgroupfs driver: /docker/<id>
			return Ref{Runtime: RuntimeDocker, ID: el, PodUID: outer.PodUID}, false
		case prevIsPod: // kubelet's cgroupfs driver: the runtime is not in the path
			return Ref{Runtime: RuntimeKubernetes, ID: el, PodUID: outer.PodUID}, false
		}
	}
	return outer, false
}

// shortestNaming is the length of the shortest element that names a pod or
// a container: pod<32 hex digits>. Every other form is longer or has a colon.
const shortestNaming = len("pod") + 32

// cannotName reports, without a regexp, that an element names no pod and no
// container: most do not (user.slice, session-2.scope), and with --all every
// exit's path is parsed.
func cannotName(el string) bool {
	return len(el) < shortestNaming && strings.IndexByte(el, ':') < 0
}

// fromColonElement reads slice:prefix:id, matched by colonElement as m.
// The kernel truncates long names (bpf/events.h keeps 159 bytes of them,
// enough for this form with a 64-digit id), which could cut the id short:
// the pod is still worth knowing then.
func fromColonElement(m []string, outer Ref) Ref {
	ref := Ref{Runtime: RuntimeKubernetes, PodUID: outer.PodUID}
	if uid, ok := podUID(m[1]); ok {
		ref.PodUID = uid
	}
	if len(m[3]) == 64 {
		ref.Runtime, ref.ID = runtimeByPrefix[m[2]], m[3]
	}
	if ref.IsZero() {
		return outer
	}
	return ref
}

// podUID reads a pod's cgroup name (podElement): its UID, dashed.
func podUID(el string) (string, bool) {
	if !strings.Contains(el, "pod") { // spares the regexp most elements
		return "", false
	}
	m := podElement.FindStringSubmatch(el)
	if m == nil {
		return "", false
	}
	return strings.ReplaceAll(m[1], "_", "-"), true
}

// FromNames parses the two innermost names the kernel reports for an event
// (bpf/task.h read_cgroup): the cgroup directory's name and its parent's.
// That is enough for every format above: a container's parent is its pod,
// or the runtime's directory, and below a container one level of nesting
// (init.scope) is recognised.
func FromNames(name, parent string) Ref {
	return FromPath(parent + "/" + name)
}

// FromCgroups finds the container of a process from its /proc/<pid>/cgroup
// lines (procfs.ParseCgroups: controllers -> path): the v2 hierarchy's
// path, else the v1 memory controller's, as the kernel side reads it.
func FromCgroups(cgroups map[string]string) Ref {
	if ref := FromPath(cgroups[""]); !ref.IsZero() {
		return ref
	}
	for controllers, path := range cgroups {
		if slices.Contains(strings.Split(controllers, ","), "memory") {
			return FromPath(path)
		}
	}
	return Ref{}
}
