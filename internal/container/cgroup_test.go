package container

import (
	"regexp"
	"strings"
	"testing"
)

// Ids and UIDs in the shapes runtimes and the kubelet write them.
const (
	id      = "3f1c9e0a7b2d4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6"
	id2     = "9a8b7c6d5e4f30211203948576a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7"
	uid     = "6c0b5f2a-8e1d-4f3b-9a77-2d4e5c6b7a81"
	uidSD   = "6c0b5f2a_8e1d_4f3b_9a77_2d4e5c6b7a81" // systemd driver: dashes are unit-name separators
	static  = "8d6b2d9e8a2b3c4d5e6f708192a3b4c5"     // a static pod's UID: the hash of its manifest
	sysdPod = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSD + ".slice"
)

func TestFromPath(t *testing.T) {
	docker := Ref{Runtime: RuntimeDocker, ID: id}
	containerd := Ref{Runtime: RuntimeContainerd, ID: id, PodUID: uid}
	crio := Ref{Runtime: RuntimeCRIO, ID: id, PodUID: uid}
	podman := Ref{Runtime: RuntimePodman, ID: id}
	cgroupfsK8s := Ref{Runtime: RuntimeKubernetes, ID: id, PodUID: uid}
	podOnly := Ref{Runtime: RuntimeKubernetes, PodUID: uid}

	for _, tc := range []struct {
		name string
		path string
		want Ref
	}{
		// Docker Engine.
		// The same strings appear as a v1 controller's path (memory) and as
		// the v2 path: drivers name cgroups alike in both.
		{"docker cgroupfs (v1 memory, or v2)", "/docker/" + id, docker},
		{"docker systemd v1 and v2", "/system.slice/docker-" + id + ".scope", docker},
		{"docker systemd in the container's own cgroups", "/system.slice/docker-" + id + ".scope/init.scope", docker},
		{"docker rootless", "/user.slice/user-1000.slice/user@1000.service/user.slice/docker-" + id + ".scope", docker},
		{"docker in docker: the inner container", "/docker/" + id2 + "/docker/" + id, docker},
		{"docker seen from a cgroup namespace", "/../../system.slice/docker-" + id + ".scope", docker},

		// Kubernetes, systemd driver (v2 default hierarchy, or v1 memory), each QoS class.
		{"containerd systemd guaranteed", "/kubepods.slice/kubepods-pod" + uidSD + ".slice/cri-containerd-" + id + ".scope", containerd},
		{"containerd systemd burstable", sysdPod + "/cri-containerd-" + id + ".scope", containerd},
		{"containerd systemd besteffort", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidSD + ".slice/cri-containerd-" + id + ".scope", containerd},
		{"containerd systemd static pod", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + static + ".slice/cri-containerd-" + id + ".scope", Ref{Runtime: RuntimeContainerd, ID: id, PodUID: static}},
		{"containerd systemd nested below the container", sysdPod + "/cri-containerd-" + id + ".scope/init.scope", containerd},
		{"containerd seen from the agent's cgroup namespace", "/../../../kubepods-burstable.slice/kubepods-burstable-pod" + uidSD + ".slice/cri-containerd-" + id + ".scope", containerd},
		{"crio systemd burstable", sysdPod + "/crio-" + id + ".scope", crio},
		{"crio systemd guaranteed", "/kubepods.slice/kubepods-pod" + uidSD + ".slice/crio-" + id + ".scope", crio},
		{"crio systemd besteffort", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidSD + ".slice/crio-" + id + ".scope", crio},
		{"crio conmon is not the container", sysdPod + "/crio-conmon-" + id + ".scope", podOnly},
		{"docker via cri-dockerd, systemd", sysdPod + "/docker-" + id + ".scope", Ref{Runtime: RuntimeDocker, ID: id, PodUID: uid}},

		// Kubernetes, cgroupfs driver (k3s, older kubeadm): bare ids under pod<uid>.
		{"cgroupfs guaranteed", "/kubepods/pod" + uid + "/" + id, cgroupfsK8s},
		{"cgroupfs burstable", "/kubepods/burstable/pod" + uid + "/" + id, cgroupfsK8s},
		{"cgroupfs besteffort", "/kubepods/besteffort/pod" + uid + "/" + id, cgroupfsK8s},
		{"cgroupfs nested below the container", "/kubepods/besteffort/pod" + uid + "/" + id + "/init.scope", cgroupfsK8s},
		{"crio cgroupfs", "/kubepods/burstable/pod" + uid + "/crio-" + id, crio},
		{"crio cgroupfs conmon", "/kubepods/burstable/pod" + uid + "/crio-conmon-" + id, podOnly},
		{"a process in the pod's own cgroup", "/kubepods/burstable/pod" + uid, podOnly},
		{"systemd slice path taken literally by cgroupfs", "/kubepods-besteffort-pod" + uidSD + ".slice:cri-containerd:" + id, containerd},
		{"kind: a pod inside a node container", "/system.slice/docker-" + id2 + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidSD + ".slice/cri-containerd-" + id + ".scope", containerd},
		{"kind: the pod's cgroup, not the node's container", "/system.slice/docker-" + id2 + ".scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + uidSD + ".slice", podOnly},

		// Podman.
		{"podman systemd", "/machine.slice/libpod-" + id + ".scope", podman},
		{"podman systemd, systemd in the container", "/machine.slice/libpod-" + id + ".scope/container", podman},
		{"podman pod", "/machine.slice/machine-libpod_pod_" + id2 + ".slice/libpod-" + id + ".scope", podman},
		{"podman rootless", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id + ".scope", podman},
		{"podman cgroupfs", "/libpod_parent/libpod-" + id, podman},
		{"podman conmon is not the container", "/machine.slice/libpod-conmon-" + id + ".scope", Ref{}},

		// nerdctl (containerd without Kubernetes).
		{"nerdctl systemd", "/system.slice/nerdctl-" + id + ".scope", Ref{Runtime: RuntimeContainerd, ID: id}},

		// Not containers, and malformed paths.
		{"empty", "", Ref{}},
		{"root", "/", Ref{}},
		{"host service", "/system.slice/containerd.service", Ref{}},
		{"login session", "/user.slice/user-1000.slice/session-3.scope", Ref{}},
		{"runtime directory only", "/docker/", Ref{}},
		{"id one digit short", "/docker/" + id[:63], Ref{}},
		{"id one digit long", "/docker/" + id + "0", Ref{}},
		{"id in upper case", "/docker/" + strings.ToUpper(id), Ref{}},
		{"bare id under an unknown parent", "/something/" + id, Ref{}},
		{"bare id under a malformed pod", "/kubepods/burstable/pod" + uid[:30] + "/" + id, Ref{}},
		{"scope with trailing junk", "/system.slice/docker-" + id + ".scopex", Ref{}},
		{"docker without .scope", "/system.slice/docker-" + id, Ref{}},
		{"containerd without .scope", sysdPod + "/cri-containerd-" + id, podOnly},
		{"unknown runtime prefix", "/system.slice/runtimex-" + id + ".scope", Ref{}},
		{"pod UID too short", "/kubepods/besteffort/pod1234", Ref{}},
		{"NUL bytes", "/docker/\x00" + id, Ref{}},
		{"only slashes and dots", "/../.././/", Ref{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FromPath(tc.path); got != tc.want {
				t.Errorf("FromPath(%q)\n got %+v\nwant %+v", tc.path, got, tc.want)
			}
		})
	}
}

// The kernel reports only a cgroup's name and its parent's, truncated to
// 159 and 95 bytes (bpf/events.h); what those give must match the full path.
func TestFromNames(t *testing.T) {
	for _, tc := range []struct {
		name, parent string
		want         Ref
	}{
		{id, "docker", Ref{Runtime: RuntimeDocker, ID: id}},
		{"docker-" + id + ".scope", "system.slice", Ref{Runtime: RuntimeDocker, ID: id}},
		{"init.scope", "docker-" + id + ".scope", Ref{Runtime: RuntimeDocker, ID: id}},
		{"cri-containerd-" + id + ".scope", "kubepods-besteffort-pod" + uidSD + ".slice", Ref{Runtime: RuntimeContainerd, ID: id, PodUID: uid}},
		{"crio-" + id + ".scope", "kubepods-pod" + uidSD + ".slice", Ref{Runtime: RuntimeCRIO, ID: id, PodUID: uid}},
		{id, "pod" + uid, Ref{Runtime: RuntimeKubernetes, ID: id, PodUID: uid}},
		{"libpod-" + id + ".scope", "machine.slice", Ref{Runtime: RuntimePodman, ID: id}},
		// The cgroup v1 root, or an event without a cgroup.
		{"", "", Ref{}},
		// A host cgroup, like the one this machine's tests run in.
		{"b0ee0e5d7c601a546a8f79edde0db147", "process_api", Ref{}},
		// 145 bytes: within what the kernel side keeps.
		{"kubepods-besteffort-pod" + uidSD + ".slice:cri-containerd:" + id, "", Ref{Runtime: RuntimeContainerd, ID: id, PodUID: uid}},
		// Cut short (a longer runtime prefix): the pod survives.
		{("kubepods-besteffort-pod" + uidSD + ".slice:cri-containerd:" + id)[:95], "", Ref{Runtime: RuntimeKubernetes, PodUID: uid}},
	} {
		if got := FromNames(tc.name, tc.parent); got != tc.want {
			t.Errorf("FromNames(%q, %q)\n got %+v\nwant %+v", tc.name, tc.parent, got, tc.want)
		}
	}
}

func TestShort(t *testing.T) {
	if got := (Ref{ID: id}).Short(); got != id[:12] {
		t.Errorf("Short = %q, want %q", got, id[:12])
	}
}

var (
	hex64    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	validUID = regexp.MustCompile(`^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})$`)
)

// FuzzFromPath: any input gives a well-formed Ref taken from the input, or
// the zero Ref; never a panic. `go test` runs the seeds; `go test -fuzz
// FuzzFromPath ./internal/container` searches further.
func FuzzFromPath(f *testing.F) {
	for _, seed := range []string{
		"",
		"/",
		"/docker/" + id,
		"/system.slice/docker-" + id + ".scope/init.scope",
		sysdPod + "/cri-containerd-" + id + ".scope",
		"/kubepods/besteffort/pod" + uid + "/" + id,
		"/kubepods-besteffort-pod" + uidSD + ".slice:cri-containerd:" + id[:20],
		"/machine.slice/libpod-conmon-" + id + ".scope",
		"/../../kubepods/pod" + static + "/crio-" + id,
		"::::/pod/docker/",
		"/pod" + static,                 // the shortest element that names something
		"/pod" + static[:31] + "/a:b:c", // one shorter, and colons
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, path string) {
		for _, el := range strings.Split(path, "/") {
			if !cannotName(el) {
				continue
			}
			for _, re := range []*regexp.Regexp{podElement, scopeElement, colonElement, bareID} {
				if re.MatchString(el) {
					t.Fatalf("element %q skipped as naming nothing, but %s matches it", el, re)
				}
			}
		}
		ref := FromPath(path)
		if ref.IsZero() {
			if ref != (Ref{}) {
				t.Fatalf("FromPath(%q) = %+v: a runtime without a container or pod", path, ref)
			}
			return
		}
		if ref.ID != "" && (!hex64.MatchString(ref.ID) || !strings.Contains(path, ref.ID)) {
			t.Fatalf("FromPath(%q) id %q: not 64 hex digits of the path", path, ref.ID)
		}
		if ref.PodUID != "" && !validUID.MatchString(ref.PodUID) {
			t.Fatalf("FromPath(%q) pod UID %q is not a UID", path, ref.PodUID)
		}
		switch ref.Runtime {
		case RuntimeDocker, RuntimeContainerd, RuntimeCRIO, RuntimePodman, RuntimeKubernetes:
		default:
			t.Fatalf("FromPath(%q) runtime %q", path, ref.Runtime)
		}
		if ref.Runtime == RuntimeKubernetes && ref.PodUID == "" {
			t.Fatalf("FromPath(%q) = %+v: kubernetes without a pod", path, ref)
		}
		// The kernel's two-name view of the same cgroup must not invent
		// a different container.
		els := strings.Split(path, "/")
		name, parent := els[len(els)-1], ""
		if len(els) > 1 {
			parent = els[len(els)-2]
		}
		if short := FromNames(name, parent); short.ID != "" && short.ID != ref.ID {
			t.Fatalf("FromNames(%q, %q) id %q, full path gives %q", name, parent, short.ID, ref.ID)
		}
	})
}
