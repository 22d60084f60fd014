package kubernetes

// The manifests against a real kube-apiserver and etcd
// (internal/testenv/kube.go). There is no kubelet, scheduler or controller
// manager: nothing runs, and what is checked is what the API server itself
// decides: schemas and field validation, defaulting, admission (Pod
// Security, priority, quota, service accounts) and RBAC.

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// The agent's identity, as rbac.yaml and daemonset.yaml name it.
const (
	agentNamespace = "orphanwatch"
	agentAccount   = "orphanwatch"
)

var (
	installOnce sync.Once
	installOut  string
	installErr  error
)

// installed returns the API server once the Prometheus Operator's CRDs and
// then this directory are applied, the way docs/kubernetes.md says:
// `kubectl apply -k deploy/kubernetes`. Once per test process.
func installed(t *testing.T) *testenv.KubeAPI {
	t.Helper()
	k := testenv.RequireKubeAPI(t)
	installOnce.Do(func() {
		// The Prometheus Operator's CRDs (testenv.PrometheusOperatorModule)
		// that the PodMonitor and the PrometheusRule must satisfy.
		if installErr = k.InstallPrometheusOperatorCRDs("podmonitors", "prometheusrules"); installErr != nil {
			return
		}
		installOut, installErr = k.KubectlWith(k.AdminKubeconfig, "apply", "-k", manifestDir())
	})
	if installErr != nil {
		t.Fatalf("installing: %v\nAPI server log:\n%s", installErr, k.Log())
	}
	return k
}

func manifestDir() string { return filepath.Join(testenv.ModuleRoot(), "deploy", "kubernetes") }

func clientFor(t *testing.T, kubeconfig string) *kubernetes.Clientset {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// builtObjects is `kubectl kustomize` of this directory, one object each.
func builtObjects(t *testing.T, k *testenv.KubeAPI) []map[string]any {
	t.Helper()
	built := k.Kubectl(t, "kustomize", manifestDir())
	var objs []map[string]any
	for _, doc := range documentSeparator.Split(built, -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, obj)
	}
	return objs
}

// Every manifest is accepted by the API server as written (kubectl's
// default strict field validation: an unknown field fails), is stored with
// every field it sets (nothing dropped or rewritten, as a disabled feature
// gate or an older schema would), and applying again changes nothing.
func TestKustomizationAppliesToARealAPIServer(t *testing.T) {
	k := installed(t)
	objs := builtObjects(t, k)
	kinds := map[string]bool{}
	for _, obj := range objs {
		kinds[obj["kind"].(string)] = true
	}
	for _, want := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ResourceQuota", "DaemonSet", "Service", "PodMonitor", "PrometheusRule"} {
		if !kinds[want] {
			t.Errorf("kustomize built no %s", want)
		}
	}
	t.Logf("kubectl apply -k deploy/kubernetes:\n%s", installOut)
	if n := strings.Count(strings.TrimSpace(installOut), "\n") + 1; n != len(objs) {
		t.Errorf("apply reported %d objects, kustomize built %d", n, len(objs))
	}

	for _, obj := range objs {
		meta := obj["metadata"].(map[string]any)
		ref := strings.ToLower(obj["kind"].(string)) + "/" + meta["name"].(string)
		args := []string{"get", ref, "-o", "json"}
		if ns, ok := meta["namespace"].(string); ok {
			args = append(args, "--namespace", ns)
		}
		var live map[string]any
		if err := json.Unmarshal([]byte(k.Kubectl(t, args...)), &live); err != nil {
			t.Fatal(err)
		}
		for _, d := range missingFrom(live, obj, ref) {
			t.Errorf("stored differently from the manifest: %s", d)
		}
	}

	again := k.Kubectl(t, "apply", "-k", manifestDir())
	for _, line := range strings.Split(strings.TrimSpace(again), "\n") {
		if !strings.HasSuffix(line, " unchanged") {
			t.Errorf("applying again: %q, want unchanged (something rewrites what the manifest says)", line)
		}
	}
}

// missingFrom lists where live lacks or differs from what want sets. Lists
// must match element by element; live may hold more fields (defaults).
func missingFrom(live, want any, path string) []string {
	switch w := want.(type) {
	case map[string]any:
		l, ok := live.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: %v, want an object", path, live)}
		}
		var out []string
		keys := make([]string, 0, len(w))
		for key := range w {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		for _, key := range keys {
			out = append(out, missingFrom(l[key], w[key], path+"."+key)...)
		}
		return out
	case []any:
		l, ok := live.([]any)
		if !ok || len(l) != len(w) {
			return []string{fmt.Sprintf("%s: %v, want %v", path, live, want)}
		}
		var out []string
		for i := range w {
			out = append(out, missingFrom(l[i], w[i], fmt.Sprintf("%s[%d]", path, i))...)
		}
		return out
	}
	if !reflect.DeepEqual(live, want) {
		return []string{fmt.Sprintf("%s: %v, want %v", path, live, want)}
	}
	return nil
}

// canIList is `kubectl auth can-i --list` in a namespace, one rule a line
// with its spacing normalised.
func canIList(t *testing.T, k *testenv.KubeAPI, kubeconfig, namespace string, extra ...string) []string {
	t.Helper()
	out, err := k.KubectlWith(kubeconfig, append([]string{"auth", "can-i", "--list", "--namespace", namespace}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		lines = append(lines, strings.Join(strings.Fields(line), " "))
	}
	return lines
}

// The agent's service account may get, list and watch pods and create and
// patch events.k8s.io Events, and nothing more than every service account
// may: checked exhaustively against a service account bound to nothing,
// with the agent's real token (from the TokenRequest API, as its pod gets
// it) and by impersonation, in several namespaces.
func TestAgentServiceAccountCanDoExactlyWhatItNeeds(t *testing.T) {
	k := installed(t)
	// A service account bound to nothing: what every one of them may do
	// (discovery, self reviews, the issuer's public keys).
	nobodyNS := k.NewNamespace(t, "rbac-baseline", nil)
	nobody := k.ServiceAccountKubeconfig(t, nobodyNS, "default")
	agent := k.ServiceAccountKubeconfig(t, agentNamespace, agentAccount)

	want := []string{
		"events.events.k8s.io [] [] [create patch]",
		"pods [] [] [get list watch]",
	}
	for _, ns := range []string{"default", "kube-system", agentNamespace, "db"} {
		got := canIList(t, k, agent, ns)
		if ns == agentNamespace {
			t.Logf("kubectl auth can-i --list --namespace %s, as the agent (its token):\n%s", ns, strings.Join(got, "\n"))
		}
		if as := canIList(t, k, k.AdminKubeconfig, ns, "--as=system:serviceaccount:"+agentNamespace+":"+agentAccount); !slices.Equal(as, got) {
			t.Errorf("namespace %s: impersonating the agent gives\n%s\nits own token\n%s", ns, strings.Join(as, "\n"), strings.Join(got, "\n"))
		}
		base := canIList(t, k, nobody, ns)
		var extra, lost []string
		for _, line := range got[1:] { // [0] is the header
			if !slices.Contains(base, line) {
				extra = append(extra, line)
			}
		}
		for _, line := range base[1:] {
			if !slices.Contains(got, line) {
				lost = append(lost, line)
			}
		}
		slices.Sort(extra)
		if !slices.Equal(extra, want) || len(lost) != 0 {
			t.Errorf("namespace %s: the agent may, beyond any service account,\n%s\nwant exactly\n%s\n(and lacks %v)", ns, strings.Join(extra, "\n"), strings.Join(want, "\n"), lost)
		}
	}

	// One question at a time, by impersonation, as a reviewer would ask
	// them. -A: in every namespace at once (a ClusterRole).
	as := "--as=system:serviceaccount:" + agentNamespace + ":" + agentAccount
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "pods", "-n", "db"}, "yes"},
		{[]string{"list", "pods", "-A"}, "yes"},
		{[]string{"watch", "pods", "-A"}, "yes"},
		{[]string{"create", "events.events.k8s.io", "-n", "db"}, "yes"},
		{[]string{"patch", "events.events.k8s.io", "-n", "db"}, "yes"},
		{[]string{"get", "secrets", "-n", agentNamespace}, "no"},
		{[]string{"list", "secrets", "-A"}, "no"},
		{[]string{"create", "pods", "-n", "db"}, "no"},
		{[]string{"delete", "pods", "-n", "db"}, "no"},
		{[]string{"patch", "pods", "-n", "db"}, "no"},
		{[]string{"update", "pods", "-n", "db", "--subresource=status"}, "no"},
		{[]string{"create", "pods", "-n", "db", "--subresource=exec"}, "no"},
		{[]string{"get", "pods", "-n", "db", "--subresource=log"}, "no"},
		{[]string{"create", "pods", "-n", "db", "--subresource=eviction"}, "no"},
		{[]string{"create", "events", "-n", "db"}, "no"}, // core/v1 Events
		{[]string{"get", "events.events.k8s.io", "-n", "db"}, "no"},
		{[]string{"list", "events.events.k8s.io", "-A"}, "no"},
		{[]string{"update", "events.events.k8s.io", "-n", "db"}, "no"},
		{[]string{"delete", "events.events.k8s.io", "-n", "db"}, "no"},
		{[]string{"get", "configmaps", "-n", "db"}, "no"},
		{[]string{"get", "nodes"}, "no"},
		{[]string{"get", "nodes", "--subresource=proxy"}, "no"},
		{[]string{"create", "serviceaccounts", "-n", agentNamespace, "--subresource=token"}, "no"},
		{[]string{"impersonate", "users"}, "no"},
		{[]string{"bind", "clusterroles"}, "no"},
		{[]string{"escalate", "clusterroles"}, "no"},
		{[]string{"*", "*", "-A"}, "no"},
	} {
		out, err := k.KubectlWith(k.AdminKubeconfig, append([]string{"auth", "can-i", as}, tc.args...)...)
		if got := strings.TrimSpace(out); got != tc.want {
			t.Errorf("kubectl auth can-i %s: %q (%v), want %s", strings.Join(tc.args, " "), got, err, tc.want)
		}
	}
}

// RBAC has no rule on a field selector: the agent's role lets it list every
// pod of the cluster, and spec.nodeName=$NODE_NAME is the agent's own
// choice, kept by its code (KubernetesNamer), not enforced by the API
// server. (Only the Node authorizer confines a kubelet to its node's pods.)
func TestRBACDoesNotConfineTheAgentToItsNode(t *testing.T) {
	k := installed(t)
	admin := clientFor(t, k.AdminKubeconfig)
	ns := k.NewNamespace(t, "nodes", nil)
	for _, node := range []string{"node-a", "node-b"} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "pg-" + node},
			Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "postgres", Image: "postgres:16"}}},
		}
		if _, err := admin.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	agent := clientFor(t, k.ServiceAccountKubeconfig(t, agentNamespace, agentAccount))
	names := func(fieldSelector string) []string {
		list, err := agent.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{FieldSelector: fieldSelector})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range list.Items {
			out = append(out, p.Name)
		}
		slices.Sort(out)
		return out
	}
	if got := names(""); !slices.Equal(got, []string{"pg-node-a", "pg-node-b"}) {
		t.Errorf("the agent listing without a field selector got %v, want both nodes' pods", got)
	}
	if got := names("spec.nodeName=node-a"); !slices.Equal(got, []string{"pg-node-a"}) {
		t.Errorf("the agent listing node-a's pods got %v", got)
	}
}

// With its own token the agent posts an events.k8s.io/v1 Event on a pod
// and patches it as the incident repeats; it may not read Events back, nor
// post the older core/v1 kind.
func TestAgentServiceAccountPostsEvents(t *testing.T) {
	k := installed(t)
	admin := clientFor(t, k.AdminKubeconfig)
	ns := k.NewNamespace(t, "db", nil)
	agent := clientFor(t, k.ServiceAccountKubeconfig(t, agentNamespace, agentAccount))
	ctx := t.Context()

	now := metav1.NowMicro()
	ev := &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: "pg-0.crash-restart"},
		EventTime:           now,
		ReportingController: "orphanwatch.io/agent",
		ReportingInstance:   "orphanwatch-node-a",
		Action:              "Detected",
		Reason:              "CrashRestart",
		Type:                corev1.EventTypeWarning,
		Regarding:           corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: ns, Name: "pg-0", FieldPath: "spec.containers{postgres}"},
		Note:                "psql (pid 9 in the container) was adopted by the postmaster and died of SIGPIPE: PostgreSQL crash-restarted",
	}
	if _, err := agent.EventsV1().Events(ns).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Fatalf("the agent creating an Event: %v", err)
	}
	series := fmt.Sprintf(`{"series":{"count":2,"lastObservedTime":%q}}`, metav1.NowMicro().Format(metav1.RFC3339Micro))
	if _, err := agent.EventsV1().Events(ns).Patch(ctx, ev.Name, types.MergePatchType, []byte(series), metav1.PatchOptions{}); err != nil {
		t.Fatalf("the agent patching its Event: %v", err)
	}
	got, err := admin.EventsV1().Events(ns).Get(ctx, ev.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Series == nil || got.Series.Count != 2 || got.Reason != "CrashRestart" {
		t.Errorf("stored Event: series %+v, reason %s", got.Series, got.Reason)
	}
	// The same Event through the core/v1 API, where kubectl describe pod
	// and kubectl get events read it.
	core, err := admin.CoreV1().Events(ns).Get(ctx, ev.Name, metav1.GetOptions{})
	if err != nil || core.InvolvedObject.Name != "pg-0" || core.Series == nil || core.Series.Count != 2 {
		t.Errorf("as a core/v1 Event: %+v, %v", core, err)
	}

	if _, err := agent.EventsV1().Events(ns).Get(ctx, ev.Name, metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the agent reading an Event: %v, want forbidden", err)
	}
	if err := agent.EventsV1().Events(ns).Delete(ctx, ev.Name, metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the agent deleting an Event: %v, want forbidden", err)
	}
	legacy := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "pg-0.legacy"},
		InvolvedObject: ev.Regarding,
		Reason:         "CrashRestart",
		Message:        ev.Note,
		Type:           corev1.EventTypeWarning,
	}
	if _, err := agent.CoreV1().Events(ns).Create(ctx, legacy, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the agent creating a core/v1 Event: %v, want forbidden", err)
	}
}

// agentPod is the pod the DaemonSet controller would create from the
// DaemonSet's template for a node.
func agentPod(t *testing.T, c *kubernetes.Clientset, namespace, node string) *corev1.Pod {
	t.Helper()
	ds, err := c.AppsV1().DaemonSets(agentNamespace).Get(t.Context(), "orphanwatch", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := ds.Spec.Template.DeepCopy()
	pod := &corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
	pod.GenerateName = "orphanwatch-"
	pod.Namespace = namespace
	pod.Spec.NodeName = node
	return pod
}

// setQuotaStatus does what the controller manager's resourcequota
// controller would: publish the quota's limits and current use, without
// which quota admission refuses every pod the quota covers.
func setQuotaStatus(t *testing.T, c *kubernetes.Clientset, namespace string) {
	t.Helper()
	ctx := t.Context()
	q, err := c.CoreV1().ResourceQuotas(namespace).Get(ctx, "orphanwatch-critical-pods", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	q.Status.Hard = q.Spec.Hard
	q.Status.Used = corev1.ResourceList{corev1.ResourcePods: resource.MustParse("0")}
	if _, err := c.CoreV1().ResourceQuotas(namespace).UpdateStatus(ctx, q, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// The DaemonSet's pod passes the API server's admission in the orphanwatch
// namespace, as stored: Pod Security at the namespace's privileged level,
// the system-node-critical priority class, a cluster that admits critical
// pods only under a quota (as GKE does; testenv configures it) and the
// service account token the namer's in-cluster config reads. Without the
// namespace's label, or without the quota, it is refused with the errors
// docs/kubernetes.md's troubleshooting table quotes.
func TestDaemonSetPodIsAdmitted(t *testing.T) {
	k := installed(t)
	admin := clientFor(t, k.AdminKubeconfig)
	ctx := t.Context()
	setQuotaStatus(t, admin, agentNamespace)

	pod, err := admin.CoreV1().Pods(agentNamespace).Create(ctx, agentPod(t, admin, agentNamespace, "node-a"), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("the DaemonSet's pod was refused: %v", err)
	}
	// Nothing will run it: remove it as the kubelet finally would.
	t.Cleanup(func() {
		admin.CoreV1().Pods(agentNamespace).Delete(context.Background(), pod.Name, *metav1.NewDeleteOptions(0))
	})
	if pod.Spec.Priority == nil || *pod.Spec.Priority < 2000000000 {
		t.Errorf("priority %v, want system-node-critical's", pod.Spec.Priority)
	}
	c := pod.Spec.Containers[0]
	if sc := c.SecurityContext; sc == nil || sc.AppArmorProfile == nil || sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined ||
		sc.Privileged != nil && *sc.Privileged || len(sc.Capabilities.Add) != 5 || !pod.Spec.HostPID {
		t.Errorf("the admitted pod's security settings differ from the template: hostPID %v, %+v", pod.Spec.HostPID, c.SecurityContext)
	}
	// ServiceAccount admission mounts a projected token at the path
	// rest.InClusterConfig reads.
	token := false
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/var/run/secrets/kubernetes.io/serviceaccount" {
			token = true
		}
	}
	if !token || pod.Spec.ServiceAccountName != agentAccount {
		t.Errorf("service account %q, token mounted %v", pod.Spec.ServiceAccountName, token)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		q, err := admin.CoreV1().ResourceQuotas(agentNamespace).Get(ctx, "orphanwatch-critical-pods", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if used := q.Status.Used[corev1.ResourcePods]; used.Value() >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the quota did not count the pod: %+v", q.Status)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Without the privileged label: baseline forbids hostPID and the
	// capabilities. The namespace gets the quota, so only Pod Security
	// can refuse.
	baseline := k.NewNamespace(t, "baseline", map[string]string{"pod-security.kubernetes.io/enforce": "baseline"})
	q := only[*corev1.ResourceQuota](t, manifests(t))
	q.Namespace = baseline
	if _, err := admin.CoreV1().ResourceQuotas(baseline).Create(ctx, q, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	setQuotaStatus(t, admin, baseline)
	if _, err := admin.CoreV1().ServiceAccounts(baseline).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: agentAccount}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = admin.CoreV1().Pods(baseline).Create(ctx, agentPod(t, admin, baseline, "node-a"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Errorf("in a namespace enforcing baseline: %v, want a PodSecurity violation", err)
	}

	// Privileged, but no quota: critical pods are refused.
	noQuota := k.NewNamespace(t, "no-quota", map[string]string{"pod-security.kubernetes.io/enforce": "privileged"})
	if _, err := admin.CoreV1().ServiceAccounts(noQuota).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: agentAccount}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = admin.CoreV1().Pods(noQuota).Create(ctx, agentPod(t, admin, noQuota, "node-a"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err == nil || !regexp.MustCompile(`insufficient quota to match these scopes.*system-node-critical`).MatchString(err.Error()) {
		t.Errorf("in a namespace without the quota: %v, want insufficient quota for system-node-critical", err)
	}
}
