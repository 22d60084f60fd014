package container_test

// The namer against a real kube-apiserver (internal/testenv/kube.go) with
// the agent's own RBAC (deploy/kubernetes/rbac.yaml) and a token of its
// service account. There is no kubelet: the test creates the pods a
// scheduler would bind (spec.nodeName) and writes their container
// statuses through pods/status as the kubelet would.

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8srand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/orphanwatch/orphanwatch/internal/container"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// An external test package: testenv imports container (through report).

func TestMain(m *testing.M) { testenv.MainWithKubeAPI(m) }

// Container ids as the kubelet reports them, and a static pod's UID (the
// hash of its manifest, which its cgroup carries).
var (
	pgID      = strings.Repeat("a1", 32)
	pgNewID   = strings.Repeat("b2", 32)
	pgNewerID = strings.Repeat("c3", 32)
	initID    = strings.Repeat("d4", 32)
	otherID   = strings.Repeat("f6", 32)
	addedID   = strings.Repeat("07", 32)
	staticID  = strings.Repeat("18", 32)
	static    = "8d6b2d9e8a2b3c4d5e6f708192a3b4c5"
)

func pod(ns, name, nodeName string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "postgres", Image: "postgres:15"}}},
	}
}

func runningSince(name, containerID string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, ContainerID: containerID, Ready: true, Image: "postgres:15",
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}}
}

// eventually waits for the namer to answer want for ref.
func eventually(t *testing.T, k *container.KubernetesNamer, ref container.Ref, want container.Names, why string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got container.Names
	for time.Now().Before(deadline) {
		if got = k.Names(ref); got == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%s: Names(%+v) = %+v, want %+v", why, ref, got, want)
}

// apiServer is the test process's API server with deploy/kubernetes's
// namespace and RBAC applied, and an administrator's client.
func apiServer(t *testing.T) (*testenv.KubeAPI, *kubernetes.Clientset) {
	t.Helper()
	k := testenv.RequireKubeAPI(t)
	deploy := filepath.Join(testenv.ModuleRoot(), "deploy", "kubernetes")
	k.Kubectl(t, "apply", "-f", filepath.Join(deploy, "namespace.yaml"), "-f", filepath.Join(deploy, "rbac.yaml"))
	cfg, err := clientcmd.BuildConfigFromFlags("", k.AdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k, admin
}

// bind creates p, bound to its node as the scheduler would, and returns
// it as stored (with the UID the API server gave it).
func bind(t *testing.T, c *kubernetes.Clientset, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	created, err := c.CoreV1().Pods(p.Namespace).Create(t.Context(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod %s: %v", p.Name, err)
	}
	return created
}

// report writes the pod's status as the kubelet would: running, with these
// container and init container statuses.
func report(t *testing.T, c *kubernetes.Clientset, p *corev1.Pod, containers []corev1.ContainerStatus, inits ...corev1.ContainerStatus) *corev1.Pod {
	t.Helper()
	pods := c.CoreV1().Pods(p.Namespace)
	cur, err := pods.Get(t.Context(), p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Status.Phase = corev1.PodRunning
	cur.Status.ContainerStatuses = containers
	cur.Status.InitContainerStatuses = inits
	updated, err := pods.UpdateStatus(t.Context(), cur, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("writing pod %s's status: %v", p.Name, err)
	}
	return updated
}

func TestKubernetesNamerAgainstAPIServer(t *testing.T) {
	k, admin := apiServer(t)
	ns := k.NewNamespace(t, "db", nil)
	ctx := t.Context()
	// Pods outlive a test here (nothing finishes deleting them): a node
	// of its own keeps a -count rerun from seeing the last run's.
	node := "node-" + k8srand.String(5)

	// Before the namer starts: pg-0 on this node with an init container,
	// pg-1 on another node, a static pod's mirror, and a pod the kubelet
	// has not reported on yet.
	pg0 := pod(ns, "pg-0", node)
	pg0.Spec.InitContainers = []corev1.Container{{Name: "init-chmod", Image: "busybox"}}
	pg0 = bind(t, admin, pg0)
	done := runningSince("init-chmod", "containerd://"+initID)
	done.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, ContainerID: "containerd://" + initID}}
	done.Ready = true
	pg0 = report(t, admin, pg0, []corev1.ContainerStatus{runningSince("postgres", "containerd://"+pgID)}, done)

	pg1 := bind(t, admin, pod(ns, "pg-1", node+"-b"))
	report(t, admin, pg1, []corev1.ContainerStatus{runningSince("postgres", "containerd://"+otherID)})

	mirror := pod(ns, "pg-static-"+node, node)
	mirror.Annotations = map[string]string{"kubernetes.io/config.mirror": static, "kubernetes.io/config.source": "file"}
	mirror = bind(t, admin, mirror)
	report(t, admin, mirror, []corev1.ContainerStatus{runningSince("postgres", "docker://"+staticID)})

	pending := bind(t, admin, pod(ns, "pg-pending", node))

	var logged testenv.Buffer
	namer, err := container.NewKubernetesNamer(ctx, k.ServiceAccountKubeconfig(t, "orphanwatch", "orphanwatch"), node, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatalf("NewKubernetesNamer with the agent's token: %v\nAPI server log:\n%s", err, k.Log())
	}
	defer namer.Close()

	pg0Names := container.Names{Namespace: ns, Pod: "pg-0", Container: "postgres"}
	for _, tc := range []struct {
		why  string
		ref  container.Ref
		want container.Names
	}{
		{"containerd container by id", container.Ref{Runtime: container.RuntimeContainerd, ID: pgID, PodUID: string(pg0.UID)}, pg0Names},
		{"init container", container.Ref{ID: initID}, container.Names{Namespace: ns, Pod: "pg-0", Container: "init-chmod"}},
		{"docker container of a static pod", container.Ref{ID: staticID}, container.Names{Namespace: ns, Pod: "pg-static-" + node, Container: "postgres"}},
		{"static pod by its cgroup's UID (the mirror annotation)", container.Ref{ID: addedID, PodUID: static}, container.Names{Namespace: ns, Pod: "pg-static-" + node}},
		{"a pod without statuses yet, by UID", container.Ref{ID: addedID, PodUID: string(pending.UID)}, container.Names{Namespace: ns, Pod: "pg-pending"}},
		// Last: the listed pods above are known by now.
		{"another node's pod", container.Ref{ID: otherID, PodUID: string(pg1.UID)}, container.Names{}},
	} {
		// At once: the constructor returns when the namer's handlers
		// have taken the first list, so an incident right after the
		// agent's start is named.
		if got := namer.Names(tc.ref); got != tc.want {
			t.Errorf("%s, right after NewKubernetesNamer returned: Names(%+v) = %+v, want %+v", tc.why, tc.ref, got, tc.want)
		}
	}

	// A pod bound after the start: first by UID, then, once the kubelet
	// reports its container, by container id.
	pg2 := bind(t, admin, pod(ns, "pg-2", node))
	pg2Names := container.Names{Namespace: ns, Pod: "pg-2", Container: "postgres"}
	eventually(t, namer, container.Ref{ID: addedID, PodUID: string(pg2.UID)}, container.Names{Namespace: ns, Pod: "pg-2"}, "a pod bound after the start, by UID")
	report(t, admin, pg2, []corev1.ContainerStatus{runningSince("postgres", "docker://"+addedID)})
	eventually(t, namer, container.Ref{ID: addedID}, pg2Names, "its container, once reported")

	// pg-0's postgres restarted: a new id, the old one as the last terminated.
	restarted := runningSince("postgres", "containerd://"+pgNewID)
	restarted.RestartCount = 1
	restarted.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: 137, ContainerID: "containerd://" + pgID}
	report(t, admin, pg0, []corev1.ContainerStatus{restarted}, done)
	eventually(t, namer, container.Ref{ID: pgNewID}, pg0Names, "restarted container's new id")
	if got := namer.Names(container.Ref{ID: pgID}); got != pg0Names {
		t.Errorf("the previous instance's id = %+v, want %+v", got, pg0Names)
	}

	// A graceful delete only marks the pod: its containers run until the
	// kubelet has stopped them, and are still named. The watch delivers
	// events in order, so once a later change to pg-0 has arrived, the
	// namer has seen the delete mark too.
	if err := admin.CoreV1().Pods(ns).Delete(ctx, "pg-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	marked, err := admin.CoreV1().Pods(ns).Get(ctx, "pg-2", metav1.GetOptions{})
	if err != nil || marked.DeletionTimestamp == nil {
		t.Fatalf("pg-2 after a graceful delete: %v, %+v", err, marked)
	}
	again := runningSince("postgres", "containerd://"+pgNewerID)
	again.RestartCount = 2
	again.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: 2, ContainerID: "containerd://" + pgNewID}
	report(t, admin, pg0, []corev1.ContainerStatus{again}, done)
	eventually(t, namer, container.Ref{ID: pgNewerID}, pg0Names, "second restart's id")
	if got := namer.Names(container.Ref{ID: pgID}); !got.IsZero() {
		t.Errorf("an id two restarts old still named: %+v", got)
	}
	if got := namer.Names(container.Ref{ID: addedID}); got != pg2Names {
		t.Errorf("a terminating pod's container = %+v, want %+v until the pod is gone", got, pg2Names)
	}

	// The kubelet's final delete (grace 0) removes it: forgotten.
	if err := admin.CoreV1().Pods(ns).Delete(ctx, "pg-2", *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, namer, container.Ref{ID: addedID, PodUID: string(pg2.UID)}, container.Names{}, "deleted pod")
	if got := namer.Names(container.Ref{ID: pgNewerID}); got != pg0Names {
		t.Errorf("deleting pg-2 affected pg-0: %+v", got)
	}
	if out := logged.String(); out != "" {
		t.Errorf("the namer logged:\n%s", out)
	}
}

// A service account without the ClusterRole: the constructor returns the
// API server's refusal, naming the node, within the caller's deadline.
func TestKubernetesNamerForbiddenByAPIServer(t *testing.T) {
	k, _ := apiServer(t)
	ns := k.NewNamespace(t, "unbound", nil)
	node := "node-" + k8srand.String(5)
	kubeconfig := k.ServiceAccountKubeconfig(t, ns, "default")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	var logged testenv.Buffer
	start := time.Now()
	namer, err := container.NewKubernetesNamer(ctx, kubeconfig, node, slog.New(slog.NewTextHandler(&logged, nil)))
	if err == nil {
		namer.Close()
		t.Fatal("started without permission to list pods")
	}
	if !apierrors.IsForbidden(err) {
		t.Errorf("error = %v, want the API server's forbidden", err)
	}
	t.Logf("error: %v", err)
	if time.Since(start) > 10*time.Second {
		t.Errorf("took %s with a 3s context", time.Since(start))
	}
}
