package container

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
)

const node = "node-a"

// Container ids as the kubelet reports them.
var (
	pgID      = strings.Repeat("a1", 32)
	pgNewID   = strings.Repeat("b2", 32)
	pgNewerID = strings.Repeat("c3", 32)
	initID    = strings.Repeat("d4", 32)
	debugID   = strings.Repeat("e5", 32)
	otherID   = strings.Repeat("f6", 32)
	addedID   = strings.Repeat("07", 32)
	staticID  = strings.Repeat("18", 32)
)

func pod(ns, name, uid, nodeName string, statuses ...corev1.ContainerStatus) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec:       corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "postgres", Image: "postgres:15"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: statuses},
	}
}

func running(name, containerID string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, ContainerID: containerID, Ready: true, Image: "postgres:15"}
}

// startFake runs the namer on a fake clientset holding objs, and returns
// once the informer's watch is open, so later changes are not lost between
// its list and its watch.
func startFake(t *testing.T, objs ...runtime.Object) (*KubernetesNamer, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset(objs...)
	watching := make(chan struct{})
	var once sync.Once
	client.PrependWatchReactor("pods", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := client.Tracker().Watch(a.GetResource(), a.GetNamespace())
		once.Do(func() { close(watching) })
		return true, w, err
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	k, err := startKubernetesNamer(ctx, client.CoreV1().Pods(""), node, nil, 10*time.Second)
	if err != nil {
		t.Fatalf("starting the namer: %v", err)
	}
	t.Cleanup(k.Close)
	select {
	case <-watching:
	case <-time.After(10 * time.Second):
		t.Fatal("the informer never watched pods")
	}
	return k, client
}

// eventually waits for the namer to answer want for ref.
func eventually(t *testing.T, k *KubernetesNamer, ref Ref, want Names, why string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got Names
	for time.Now().Before(deadline) {
		if got = k.Names(ref); got == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%s: Names(%+v) = %+v, want %+v", why, ref, got, want)
}

func TestKubernetesNamerNamesThisNodesPods(t *testing.T) {
	pg := pod("db", "pg-0", uid, node, running("postgres", "containerd://"+pgID))
	pg.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "init-chmod", ContainerID: "containerd://" + initID}}
	pg.Status.EphemeralContainerStatuses = []corev1.ContainerStatus{{Name: "debugger-x7k2p", ContainerID: "containerd://" + debugID}}
	elsewhere := pod("db", "pg-1", "0f0e0d0c-0b0a-4908-8706-050403020100", "node-b", running("postgres", "containerd://"+otherID))
	k, client := startFake(t, pg, elsewhere)

	if !k.Synced() {
		t.Error("Synced() = false after the constructor returned")
	}
	for _, tc := range []struct {
		why  string
		ref  Ref
		want Names
	}{
		{"the container by id", Ref{Runtime: RuntimeContainerd, ID: pgID, PodUID: uid}, Names{Namespace: "db", Pod: "pg-0", Container: "postgres"}},
		{"an init container", Ref{ID: initID}, Names{Namespace: "db", Pod: "pg-0", Container: "init-chmod"}},
		{"an ephemeral (kubectl debug) container", Ref{ID: debugID}, Names{Namespace: "db", Pod: "pg-0", Container: "debugger-x7k2p"}},
		{"a container not yet in the pod's status: the pod by UID", Ref{ID: addedID, PodUID: uid}, Names{Namespace: "db", Pod: "pg-0"}},
		{"another node's pod is not watched", Ref{ID: otherID}, Names{}},
		{"nothing", Ref{}, Names{}},
	} {
		if got := k.Names(tc.ref); got != tc.want {
			t.Errorf("%s: Names(%+v) = %+v, want %+v", tc.why, tc.ref, got, tc.want)
		}
	}

	// The API server does the node filtering: the informer must ask for it.
	var asked []string
	for _, a := range client.Actions() {
		if la, ok := a.(k8stesting.ListActionImpl); ok && la.GetResource().Resource == "pods" {
			asked = append(asked, la.GetListRestrictions().Fields.String())
		}
		if wa, ok := a.(k8stesting.WatchActionImpl); ok && wa.GetResource().Resource == "pods" {
			asked = append(asked, wa.GetWatchRestrictions().Fields.String())
		}
	}
	if len(asked) < 2 {
		t.Fatalf("pod list and watch not seen; actions: %v", client.Actions())
	}
	for _, fs := range asked {
		if fs != "spec.nodeName="+node {
			t.Errorf("pods listed/watched with field selector %q, want spec.nodeName=%s", fs, node)
		}
	}
}

func TestKubernetesNamerFollowsAddUpdateDelete(t *testing.T) {
	ctx := context.Background()
	pg := pod("db", "pg-0", uid, node, running("postgres", "containerd://"+pgID))
	k, client := startFake(t, pg)
	pods := client.CoreV1().Pods("db")
	pgNames := Names{Namespace: "db", Pod: "pg-0", Container: "postgres"}

	// Add: a pod scheduled here after start.
	addedUID := "1a2b3c4d-5e6f-4a0b-8c1d-2e3f4a5b6c7d"
	if _, err := pods.Create(ctx, pod("db", "pg-1", addedUID, node, running("postgres", "cri-o://"+addedID)), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, k, Ref{ID: addedID}, Names{Namespace: "db", Pod: "pg-1", Container: "postgres"}, "added pod")

	// Update: the postgres container crashed and the kubelet restarted it
	// with a new id; the old id stays known as the last terminated one.
	restarted := pg.DeepCopy()
	restarted.Status.ContainerStatuses = []corev1.ContainerStatus{running("postgres", "containerd://"+pgNewID)}
	restarted.Status.ContainerStatuses[0].RestartCount = 1
	restarted.Status.ContainerStatuses[0].LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: 137, ContainerID: "containerd://" + pgID}
	if _, err := pods.UpdateStatus(ctx, restarted, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, k, Ref{ID: pgNewID}, pgNames, "restarted container's new id")
	if got := k.Names(Ref{ID: pgID}); got != pgNames {
		t.Errorf("the previous instance's id = %+v, want %+v while it is the last terminated one", got, pgNames)
	}

	// A second restart: the first id is gone from the status, and from the namer.
	again := restarted.DeepCopy()
	again.Status.ContainerStatuses = []corev1.ContainerStatus{running("postgres", "containerd://"+pgNewerID)}
	again.Status.ContainerStatuses[0].LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: 2, ContainerID: "containerd://" + pgNewID}
	if _, err := pods.UpdateStatus(ctx, again, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, k, Ref{ID: pgNewerID}, pgNames, "second restart's id")
	if got := k.Names(Ref{ID: pgID}); !got.IsZero() {
		t.Errorf("an id two restarts old still named: %+v", got)
	}

	// Delete: the pod's ids and UID are forgotten.
	if err := pods.Delete(ctx, "pg-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, k, Ref{ID: addedID, PodUID: addedUID}, Names{}, "deleted pod")
	if got := k.Names(Ref{ID: pgNewerID}); got != pgNames {
		t.Errorf("deleting pg-1 affected pg-0: %+v", got)
	}
}

// A static pod's cgroup carries the kubelet's UID for it, which the API's
// mirror pod has only as an annotation.
func TestKubernetesNamerStaticPod(t *testing.T) {
	mirror := pod("kube-system", "pg-static-node-a", "5b5b5b5b-aaaa-4bbb-8ccc-dddddddddddd", node, running("postgres", "containerd://"+staticID))
	mirror.Annotations = map[string]string{mirrorPodAnnotation: static, "kubernetes.io/config.source": "file"}
	k, _ := startFake(t, mirror)
	cgroup := FromPath("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + static + ".slice/cri-containerd-" + addedID + ".scope")
	if got, want := k.Names(cgroup), (Names{Namespace: "kube-system", Pod: "pg-static-node-a"}); got != want {
		t.Errorf("static pod by its cgroup's UID = %+v, want %+v", got, want)
	}
}

// Events name a pod by its API UID: for a static pod the mirror's, not the
// kubelet's one in the cgroup; for a pod made again under its name, the new
// one's, which the old one's late delete leaves.
func TestKubernetesNamerPodUID(t *testing.T) {
	mirrorUID := "5b5b5b5b-aaaa-4bbb-8ccc-dddddddddddd"
	mirror := pod("kube-system", "pg-static-node-a", mirrorUID, node, running("postgres", "containerd://"+staticID))
	mirror.Annotations = map[string]string{mirrorPodAnnotation: static}
	old := pod("db", "pg-0", uid, node, running("postgres", "containerd://"+pgID))
	k, _ := startFake(t, mirror, old)
	if got := k.PodUID("kube-system", "pg-static-node-a"); got != mirrorUID {
		t.Errorf("static pod's UID = %q, want the mirror's %q", got, mirrorUID)
	}
	if got := k.PodUID("db", "pg-0"); got != uid {
		t.Errorf("PodUID(db, pg-0) = %q, want %q", got, uid)
	}
	newUID := "1a2b3c4d-5e6f-4a0b-8c1d-2e3f4a5b6c7d"
	k.update(pod("db", "pg-0", newUID, node, running("postgres", "containerd://"+pgNewID)))
	k.delete(old)
	if got := k.PodUID("db", "pg-0"); got != newUID {
		t.Errorf("after the old pg-0's delete, PodUID = %q, want the new one's %q", got, newUID)
	}
	if got := k.PodUID("db", "pg-1"); got != "" {
		t.Errorf("an unknown pod's UID = %q", got)
	}
	var none *KubernetesNamer
	if got := none.PodUID("db", "pg-0"); got != "" {
		t.Errorf("a nil namer's PodUID = %q", got)
	}
}

func TestKubernetesNamerTombstoneDelete(t *testing.T) {
	pg := pod("db", "pg-0", uid, node, running("postgres", "docker://"+pgID))
	k, _ := startFake(t, pg)
	if got := k.Names(Ref{ID: pgID}); got.Pod != "pg-0" {
		t.Fatalf("before delete: %+v", got)
	}
	// A delete the watch missed arrives from the relist as a tombstone.
	k.delete(cache.DeletedFinalStateUnknown{Key: "db/pg-0", Obj: pg})
	if got := k.Names(Ref{ID: pgID, PodUID: uid}); !got.IsZero() {
		t.Errorf("after a tombstone delete: %+v", got)
	}
}

func TestKubernetesNamerConcurrentLookups(t *testing.T) {
	ctx := context.Background()
	pg := pod("db", "pg-0", uid, node, running("postgres", "containerd://"+pgID))
	k, client := startFake(t, pg)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if n := k.Names(Ref{ID: pgID, PodUID: uid}); n.Pod != "pg-0" {
					t.Errorf("lookup during updates = %+v", n)
					return
				}
			}
		})
	}
	for i := range 50 {
		p := pg.DeepCopy()
		p.Status.ContainerStatuses[0].RestartCount = int32(i)
		if _, err := client.CoreV1().Pods("db").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
}

// No RBAC for pods: the constructor says so instead of naming nothing.
func TestKubernetesNamerForbidden(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New(`User "system:serviceaccount:orphanwatch:orphanwatch" cannot list resource "pods"`))
	})
	var logged lockedBuffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	start := time.Now()
	k, err := startKubernetesNamer(context.Background(), client.CoreV1().Pods(""), node, log, 2*time.Second)
	if err == nil {
		k.Close()
		t.Fatal("started without permission to list pods")
	}
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), node) {
		t.Errorf("error = %v, want the API's forbidden error naming the node", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %s to give up, want about the 2s sync timeout", time.Since(start))
	}
	if out := logged.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "forbidden") {
		t.Errorf("the failure was not logged as a warning:\n%s", out)
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Outside a cluster and without a reachable API, the constructor fails
// fast with a reason the agent can log before carrying on with ids only.
func TestNewKubernetesNamerWithoutAPI(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	ctx := context.Background()

	if _, err := NewKubernetesNamer(ctx, "", "", nil); err == nil || !strings.Contains(err.Error(), "NODE_NAME") {
		t.Errorf("no node name: err = %v", err)
	}
	if _, err := NewKubernetesNamer(ctx, "", node, nil); err == nil || !strings.Contains(err.Error(), "in-cluster") {
		t.Errorf("not in a cluster, no kubeconfig: err = %v", err)
	}
	missing := filepath.Join(t.TempDir(), "kubeconfig")
	if _, err := NewKubernetesNamer(ctx, missing, node, nil); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing kubeconfig: err = %v", err)
	}

	// A real client against a port nothing listens on.
	kubeconfig := writeKubeconfig(t, "https://127.0.0.1:1")
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := NewKubernetesNamer(short, kubeconfig, node, nil); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("unreachable API server: err = %v, want connection refused", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("took %s with a 3s context", time.Since(start))
	}

	var nilNamer *KubernetesNamer
	if got := nilNamer.Names(Ref{ID: pgID}); !got.IsZero() || nilNamer.Synced() {
		t.Errorf("nil namer: %+v", got)
	}
	nilNamer.Close()
}

func TestContainerIDFromStatus(t *testing.T) {
	for in, want := range map[string]string{
		"containerd://" + pgID:         pgID,
		"cri-o://" + pgID:              pgID,
		"docker://" + pgID:             pgID,
		"":                             "", // a container still being created
		pgID:                           "",
		"containerd://abc":             "",
		"containerd://../" + pgID[:61]: "",
	} {
		if got := ContainerIDFromStatus(in); got != want {
			t.Errorf("ContainerIDFromStatus(%q) = %q, want %q", in, got, want)
		}
	}
}

// The production path, from a kubeconfig through the core/v1 REST client,
// against an HTTP server speaking the API's list and watch: the request
// asks for this node's pods only, and the names arrive.
func TestKubernetesNamerOverHTTP(t *testing.T) {
	listed := pod("db", "postgres-0", "6a0e7b0c-8c1b-4b8a-9d43-0e8a1f2b3c4d", node, running("postgres", "containerd://"+pgID))
	added := pod("db", "postgres-1", "7b1f8c1d-9d2c-4c9b-8e54-1f9b2a3c4d5e", node, running("postgres", "containerd://"+addedID))
	var mu sync.Mutex
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		mu.Unlock()
		if r.URL.Path != "/api/v1/pods" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("watch") != "true" {
			json.NewEncoder(w).Encode(&corev1.PodList{
				TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"},
				ListMeta: metav1.ListMeta{ResourceVersion: "10"},
				Items:    []corev1.Pod{*listed},
			})
			return
		}
		added.ResourceVersion = "11"
		added.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
		json.NewEncoder(w).Encode(map[string]any{"type": "ADDED", "object": added})
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	kubeconfig := writeKubeconfig(t, srv.URL)

	k, err := NewKubernetesNamer(context.Background(), kubeconfig, node, nil)
	if err != nil {
		t.Fatalf("NewKubernetesNamer: %v", err)
	}
	defer k.Close()
	want := Names{Namespace: "db", Pod: "postgres-0", Container: "postgres"}
	if got := k.Names(Ref{ID: pgID}); got != want {
		t.Errorf("listed pod: %+v, want %+v", got, want)
	}
	deadline := time.Now().Add(5 * time.Second)
	for k.Names(Ref{ID: addedID}).Pod != "postgres-1" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := k.Names(Ref{ID: addedID}); got.Pod != "postgres-1" {
		t.Errorf("watched pod: %+v", got)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, q := range queries {
		if !strings.Contains(q, "fieldSelector=spec.nodeName%3D"+node) {
			t.Errorf("request %q does not ask for this node's pods only", q)
		}
	}
}

// writeKubeconfig writes a kubeconfig for the API server at server, with
// the bearer token t0ken, and returns its path.
func writeKubeconfig(t *testing.T, server string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	config := `apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "` + server + `"}}]
users: [{name: test, user: {token: t0ken}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
current-context: test
`
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The exec probes of the pod spec, by container id: the commands the
// kubelet runs in the database container, with their timeouts.
func TestKubernetesNamerTellsExecProbes(t *testing.T) {
	pg := pod("db", "pg-0", uid, node, running("postgres", "containerd://"+pgID))
	pg.Spec.Containers[0].LivenessProbe = &corev1.Probe{
		ProbeHandler:   corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "pg_isready -U postgres"}}},
		TimeoutSeconds: 3,
	}
	pg.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"pg_isready"}}},
	}
	pg.Spec.Containers[0].StartupProbe = &corev1.Probe{ // not an exec probe: nothing runs in the container
		ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{}},
	}
	k, _ := startFake(t, pg)
	eventually(t, k, Ref{ID: pgID}, Names{Namespace: "db", Pod: "pg-0", Container: "postgres"}, "the pod")
	probes := k.Checks(Ref{ID: pgID}).Probes
	if len(probes) != 2 {
		t.Fatalf("probes = %+v, want the liveness and readiness exec probes", probes)
	}
	if p := probes[0]; p.Kind != "livenessProbe" || p.Container != "postgres" || p.TimeoutSeconds != 3 ||
		!slices.Equal(p.Command, []string{"sh", "-c", "pg_isready -U postgres"}) {
		t.Errorf("liveness probe = %+v", p)
	}
	if p := probes[1]; p.Kind != "readinessProbe" || p.TimeoutSeconds != 1 {
		t.Errorf("readiness probe = %+v, want Kubernetes' default timeout of 1 s", p)
	}
	_, match := ChecksOf(Chain(k, NewDockerNamer(t.TempDir())), Ref{ID: pgID}).Matching([]string{"sh", "-c", "pg_isready -U postgres"}, false)
	if match == nil || match.Kind != "livenessProbe" {
		t.Errorf("the probe's shell is not matched: %+v", match)
	}
}
