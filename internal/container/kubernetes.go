package container

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// KubernetesSyncTimeout bounds how long NewKubernetesNamer waits for the
// first list of this node's pods.
const KubernetesSyncTimeout = 15 * time.Second

// mirrorPodAnnotation carries a static pod's kubelet UID on its mirror pod:
// the kubelet names the pod's cgroup after that UID, not the API object's.
const mirrorPodAnnotation = "kubernetes.io/config.mirror"

// KubernetesNamer maps container ids and pod UIDs of the pods on one node
// to namespace, pod and container names, kept current by a pod informer
// limited to that node. Lookups are map reads under a read lock: they never
// wait for the API server. For a container started after the pod update
// that lists it has arrived, it knows less: the pod UID in the container's
// cgroup still gives namespace and pod.
type KubernetesNamer struct {
	node   string
	log    *slog.Logger
	cancel context.CancelFunc
	synced cache.InformerSynced

	mu         sync.RWMutex
	containers map[string]Names    // container id -> names
	probes     map[string][]Probe  // container id -> its exec probes
	pods       map[string]Names    // pod UID (and static pod's kubelet UID) -> namespace and pod
	uids       map[string]string   // namespace/name -> the API's pod UID
	keys       map[string]podIndex // pod UID -> what it added to the maps above

	lastErr error // the latest list/watch failure; under mu
}

type podIndex struct {
	name         string // namespace/name
	containerIDs []string
	podUIDs      []string
}

// NewKubernetesNamer watches the pods scheduled on nodeName and names their
// containers. kubeconfig is a kubeconfig file's path; "" means the
// in-cluster config (the pod's service account), as in a DaemonSet. It
// needs get, list and watch on pods (deploy/kubernetes/rbac.yaml).
//
// It waits for the first list of the node's pods, at most
// KubernetesSyncTimeout or until ctx ends, and returns an error when there
// is no usable API: not in a cluster and no kubeconfig, an unreadable
// kubeconfig, an unreachable API server, or missing RBAC permissions. The
// caller can log the error and carry on with container ids only. Once
// started, the informer survives API outages on its own (failures are
// logged at warn level) until ctx ends or Close is called.
func NewKubernetesNamer(ctx context.Context, kubeconfig, nodeName string, log *slog.Logger) (*KubernetesNamer, error) {
	if nodeName == "" {
		return nil, errors.New("no node name: pass --node-name or set NODE_NAME (in a DaemonSet, from the downward API's spec.nodeName)")
	}
	cfg, err := RESTConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	// Protobuf is cheaper than JSON to decode, for the agent's memory budget.
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	pods, err := newRESTPods(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return startKubernetesNamer(ctx, pods, nodeName, log, KubernetesSyncTimeout)
}

// podClient lists and watches pods in all namespaces: all the namer asks of
// the API. client-go's typed clientset would do, but importing it registers
// every API group at start, ~10 MiB of the agent's memory budget; this
// needs core/v1 only. The fake clientset's CoreV1().Pods("") implements it.
type podClient interface {
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// restPods is a podClient speaking to the API server with core/v1 only.
type restPods struct {
	client *rest.RESTClient
	params runtime.ParameterCodec
}

func newRESTPods(cfg *rest.Config) (*restPods, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	metav1.AddToGroupVersion(scheme, corev1.SchemeGroupVersion)
	cfg = rest.CopyConfig(cfg)
	cfg.APIPath = "/api"
	cfg.GroupVersion = &corev1.SchemeGroupVersion
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	client, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, err
	}
	return &restPods{client: client, params: runtime.NewParameterCodec(scheme)}, nil
}

func (p *restPods) List(ctx context.Context, opts metav1.ListOptions) (*corev1.PodList, error) {
	list := &corev1.PodList{}
	err := p.client.Get().Resource("pods").VersionedParams(&opts, p.params).Do(ctx).Into(list)
	return list, err
}

func (p *restPods) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return p.client.Get().Resource("pods").VersionedParams(&opts, p.params).Watch(ctx)
}

// RESTConfig is the API client configuration from a kubeconfig file, or
// with "" the in-cluster one (the pod's service account).
func RESTConfig(kubeconfig string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		if cfg, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("in-cluster kubernetes config (pass --kubeconfig outside a pod): %w", err)
		}
	} else if cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.UserAgent = "orphanwatch"
	return cfg, nil
}

// startKubernetesNamer runs the informer on pods (tests pass a fake).
func startKubernetesNamer(ctx context.Context, pods podClient, nodeName string, log *slog.Logger, syncTimeout time.Duration) (*KubernetesNamer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k := &KubernetesNamer{
		node:       nodeName,
		log:        log,
		containers: make(map[string]Names),
		probes:     make(map[string][]Probe),
		pods:       make(map[string]Names),
		uids:       make(map[string]string),
		keys:       make(map[string]podIndex),
	}
	// Only this node's pods: the API server filters, so a node's agent
	// costs the same in a cluster of 10 nodes or 5000.
	onNode := fields.OneTermEqualSelector("spec.nodeName", nodeName).String()
	informer := cache.NewSharedIndexInformer(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = onNode
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = onNode
			return pods.Watch(ctx, o)
		},
	}, &corev1.Pod{}, 0, cache.Indexers{})
	if err := informer.SetTransform(trimPod); err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	if err := informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		k.mu.Lock()
		k.lastErr = err
		k.mu.Unlock()
		k.log.Warn("listing or watching this node's pods; names may be stale", "node", nodeName, "err", err)
	}); err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	handlers, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.update(obj) },
		UpdateFunc: func(_, obj any) { k.update(obj) },
		DeleteFunc: k.delete,
	})
	if err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	// The registration's HasSynced, not the informer's: it waits for our
	// handlers to have taken the first list too, so Names answers for
	// every listed pod as soon as the constructor returns.
	k.synced = handlers.HasSynced

	runCtx, cancel := context.WithCancel(ctx)
	k.cancel = cancel
	go informer.RunWithContext(runCtx)

	syncCtx, stop := context.WithTimeout(runCtx, syncTimeout)
	defer stop()
	if !cache.WaitForCacheSync(syncCtx.Done(), handlers.HasSynced) {
		cancel()
		k.mu.RLock()
		last := k.lastErr
		k.mu.RUnlock()
		if last == nil {
			last = syncCtx.Err()
		}
		return nil, fmt.Errorf("listing the pods on node %s: %w", nodeName, last)
	}
	return k, nil
}

// Synced reports whether the first list of the node's pods has arrived.
func (k *KubernetesNamer) Synced() bool { return k != nil && k.synced() }

// Close stops the informer. Names keeps answering from what it knew.
func (k *KubernetesNamer) Close() {
	if k != nil {
		k.cancel()
	}
}

// Names implements Namer: by container id, else by pod UID (namespace and
// pod only).
func (k *KubernetesNamer) Names(ref Ref) Names {
	if k == nil || ref.IsZero() {
		return Names{}
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	if n, ok := k.containers[ref.ID]; ok && ref.ID != "" {
		return n
	}
	if n, ok := k.pods[ref.PodUID]; ok && ref.PodUID != "" {
		return n
	}
	return Names{}
}

// PodUID is the API's UID of pod namespace/name on this node, "" when it
// is not known. Events must name it for kubectl describe pod to show them;
// the pod UID in a static pod's cgroup is its kubelet's, not the API's.
func (k *KubernetesNamer) PodUID(namespace, name string) string {
	if k == nil {
		return ""
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.uids[namespace+"/"+name]
}

// Checks implements CheckSource: the exec probes of the container.
func (k *KubernetesNamer) Checks(ref Ref) Checks {
	if k == nil || ref.ID == "" {
		return Checks{}
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	return Checks{Probes: k.probes[ref.ID]}
}

// execProbes lists a container's exec probes.
func execProbes(c corev1.Container) []Probe {
	var out []Probe
	for _, p := range []struct {
		kind  string
		probe *corev1.Probe
	}{{"livenessProbe", c.LivenessProbe}, {"readinessProbe", c.ReadinessProbe}, {"startupProbe", c.StartupProbe}} {
		if p.probe == nil || p.probe.Exec == nil || len(p.probe.Exec.Command) == 0 {
			continue
		}
		out = append(out, Probe{Kind: p.kind, Container: c.Name, Command: p.probe.Exec.Command,
			TimeoutSeconds: cmp.Or(p.probe.TimeoutSeconds, 1)}) // Kubernetes' default is 1 s
	}
	return out
}

// update replaces everything a pod contributed to the maps, so a restarted
// container's new id replaces the old one, and ids no longer listed go.
func (k *KubernetesNamer) update(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if pod.Spec.NodeName != k.node { // the API server filters; this guards the fake and any slip
		k.remove(string(pod.UID))
		return
	}
	podNames := Names{Namespace: pod.Namespace, Pod: pod.Name}
	idx := podIndex{name: pod.Namespace + "/" + pod.Name, podUIDs: []string{string(pod.UID)}}
	if hash := pod.Annotations[mirrorPodAnnotation]; hash != "" && hash != string(pod.UID) {
		idx.podUIDs = append(idx.podUIDs, hash)
	}
	probesOf := map[string][]Probe{}
	for _, c := range pod.Spec.Containers {
		probesOf[c.Name] = execProbes(c)
	}
	containers := map[string]Names{}
	for _, statuses := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for _, s := range statuses {
			n := Names{Namespace: pod.Namespace, Pod: pod.Name, Container: s.Name}
			// The previous instance's id too: its last processes may
			// still be reported after the status moved on.
			if t := s.LastTerminationState.Terminated; t != nil {
				if id := ContainerIDFromStatus(t.ContainerID); id != "" {
					containers[id] = n
				}
			}
			if id := ContainerIDFromStatus(s.ContainerID); id != "" {
				containers[id] = n
			}
		}
	}
	for id := range containers {
		idx.containerIDs = append(idx.containerIDs, id)
	}

	k.mu.Lock()
	defer k.mu.Unlock()
	k.removeLocked(string(pod.UID))
	for _, uid := range idx.podUIDs {
		k.pods[uid] = podNames
	}
	k.uids[idx.name] = string(pod.UID)
	for id, n := range containers {
		k.containers[id] = n
		if p := probesOf[n.Container]; len(p) > 0 {
			k.probes[id] = p
		}
	}
	k.keys[string(pod.UID)] = idx
}

func (k *KubernetesNamer) delete(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	if pod, ok := obj.(*corev1.Pod); ok {
		k.remove(string(pod.UID))
	}
}

func (k *KubernetesNamer) remove(uid string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.removeLocked(uid)
}

func (k *KubernetesNamer) removeLocked(uid string) {
	idx, ok := k.keys[uid]
	if !ok {
		return
	}
	for _, id := range idx.containerIDs {
		delete(k.containers, id)
		delete(k.probes, id)
	}
	for _, u := range idx.podUIDs {
		delete(k.pods, u)
	}
	// A pod deleted and made again under its name has a new UID, which
	// the old one's late removal must leave.
	if k.uids[idx.name] == uid {
		delete(k.uids, idx.name)
	}
	delete(k.keys, uid)
}

// ContainerIDFromStatus returns the id in a container status's
// containerID, "<runtime>://<id>" (containerd://, cri-o://, docker://),
// or "" when it is not one.
func ContainerIDFromStatus(s string) string {
	_, id, ok := strings.Cut(s, "://")
	if !ok || !bareID.MatchString(id) {
		return ""
	}
	return id
}

// trimPod keeps only what the namer reads, so the informer's cache holds
// a few hundred bytes per pod rather than the whole spec and status.
func trimPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone: left as it is
	}
	trimmed := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:            pod.Name,
			Namespace:       pod.Namespace,
			UID:             pod.UID,
			ResourceVersion: pod.ResourceVersion,
		},
		Spec: corev1.PodSpec{NodeName: pod.Spec.NodeName},
	}
	// Of the spec, only the exec probes: the commands the kubelet runs in
	// the containers.
	for _, c := range pod.Spec.Containers {
		t := corev1.Container{Name: c.Name}
		for _, p := range []struct{ in, out **corev1.Probe }{{&c.LivenessProbe, &t.LivenessProbe}, {&c.ReadinessProbe, &t.ReadinessProbe}, {&c.StartupProbe, &t.StartupProbe}} {
			if *p.in != nil && (*p.in).Exec != nil {
				*p.out = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: (*p.in).Exec}, TimeoutSeconds: (*p.in).TimeoutSeconds}
			}
		}
		trimmed.Spec.Containers = append(trimmed.Spec.Containers, t)
	}
	if hash := pod.Annotations[mirrorPodAnnotation]; hash != "" {
		trimmed.Annotations = map[string]string{mirrorPodAnnotation: hash}
	}
	trimStatuses := func(in []corev1.ContainerStatus) []corev1.ContainerStatus {
		out := make([]corev1.ContainerStatus, 0, len(in))
		for _, s := range in {
			t := corev1.ContainerStatus{Name: s.Name, ContainerID: s.ContainerID}
			if last := s.LastTerminationState.Terminated; last != nil {
				t.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ContainerID: last.ContainerID}
			}
			out = append(out, t)
		}
		return out
	}
	trimmed.Status.InitContainerStatuses = trimStatuses(pod.Status.InitContainerStatuses)
	trimmed.Status.ContainerStatuses = trimStatuses(pod.Status.ContainerStatuses)
	trimmed.Status.EphemeralContainerStatuses = trimStatuses(pod.Status.EphemeralContainerStatuses)
	return trimmed, nil
}
