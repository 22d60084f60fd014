package helm

// The chart against a real kube-apiserver and etcd (internal/testenv/kube.go).
// There is no kubelet, scheduler or controller manager: what is checked is
// what the API server decides (schemas and strict field validation with
// the Prometheus Operator's CRDs, defaulting, admission, RBAC), and what
// helm does with it (install, upgrade, uninstall).

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

var (
	crdsOnce sync.Once
	crdsErr  error
)

// withCRDs returns the API server once it serves the Prometheus Operator's
// CRDs the chart can render: PodMonitor, ServiceMonitor, PrometheusRule.
func withCRDs(t *testing.T) *testenv.KubeAPI {
	t.Helper()
	k := testenv.RequireKubeAPI(t)
	crdsOnce.Do(func() { crdsErr = k.InstallPrometheusOperatorCRDs("podmonitors", "servicemonitors", "prometheusrules") })
	if crdsErr != nil {
		t.Fatalf("installing the Prometheus Operator's CRDs: %v\nAPI server log:\n%s", crdsErr, k.Log())
	}
	return k
}

// privileged are the namespace labels a user adds before helm install.
var privileged = map[string]string{
	"pod-security.kubernetes.io/enforce": "privileged",
	"pod-security.kubernetes.io/audit":   "privileged",
	"pod-security.kubernetes.io/warn":    "privileged",
}

// applied writes the manifest to a file and runs kubectl apply -f on it.
func applied(t *testing.T, k *testenv.KubeAPI, manifest string) (file, out string) {
	t.Helper()
	file = filepath.Join(tempDir(t), "manifest.yaml")
	if err := os.WriteFile(file, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	return file, k.Kubectl(t, "apply", "-f", file)
}

// `helm template | kubectl apply -f -`, for every variant: kubectl's strict
// field validation accepts every object (the monitors and the rule
// against the operator's CRDs), the API server stores them as rendered
// (applying again changes nothing, and kubectl diff finds nothing), and
// each object is there.
func TestTemplateAppliesToARealAPIServer(t *testing.T) {
	k := withCRDs(t)
	for i, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			// Cluster-scoped objects are named after the release: one per variant.
			release := "orphanwatch-" + string(rune('a'+i))
			var ns string
			if create, _ := v.values["namespace"].(values); create["create"] == true {
				ns = "helm-template-" + string(rune('a'+i)) // the chart creates it
			} else {
				ns = k.NewNamespace(t, "helm-template", privileged)
			}
			if sa, _ := v.values["serviceAccount"].(values); sa["create"] == false {
				k.Kubectl(t, "create", "serviceaccount", sa["name"].(string), "--namespace", ns)
			}
			manifest, err := template(t, release, ns, v.values)
			if err != nil {
				t.Fatal(err)
			}
			objs := objects(t, manifest)
			file, out := applied(t, k, manifest)
			t.Logf("helm template %s | kubectl apply -f -:\n%s", release, out)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != len(objs) {
				t.Errorf("apply reported %d objects, the chart rendered %d", len(lines), len(objs))
			}
			for _, line := range lines {
				if !strings.HasSuffix(line, " created") {
					t.Errorf("apply: %q, want created", line)
				}
			}
			again := k.Kubectl(t, "apply", "-f", file)
			for _, line := range strings.Split(strings.TrimSpace(again), "\n") {
				if !strings.HasSuffix(line, " unchanged") {
					t.Errorf("applying again: %q, want unchanged (the API server rewrites what the chart says)", line)
				}
			}
			if diff, err := k.KubectlWith(k.AdminKubeconfig, "diff", "-f", file); err != nil || diff != "" {
				t.Errorf("kubectl diff after apply: %v\n%s", err, diff)
			}
			for _, o := range objs {
				args := []string{"get", strings.ToLower(o.kind()) + "/" + o.name(), "-o", "name"}
				if o.namespace() != "" {
					args = append(args, "--namespace", o.namespace())
				}
				if _, err := k.KubectlWith(k.AdminKubeconfig, args...); err != nil {
					t.Errorf("%s is not stored: %v", o.ref(), err)
				}
			}
		})
	}
}

// The chart's DaemonSet, as the API server stores and defaults it, runs
// the same pod as deploy/kubernetes' applied beside it: security context,
// capabilities, hostPID, volumes, probes, environment, priority,
// tolerations, everything but the names and Helm's labels.
func TestChartPodIsTheKustomizations(t *testing.T) {
	k := withCRDs(t)
	k.Kubectl(t, "apply", "-k", filepath.Join(testenv.ModuleRoot(), "deploy", "kubernetes"))
	ns := k.NewNamespace(t, "helm-parity", privileged)
	manifest, err := template(t, "orphanwatch-parity", ns, nil)
	if err != nil {
		t.Fatal(err)
	}
	applied(t, k, manifest)

	stored := func(namespace, name string) *appsv1.DaemonSet {
		var ds appsv1.DaemonSet
		if err := json.Unmarshal([]byte(k.Kubectl(t, "get", "daemonset", name, "--namespace", namespace, "-o", "json")), &ds); err != nil {
			t.Fatal(err)
		}
		return &ds
	}
	kust, chart := stored("orphanwatch", "orphanwatch"), stored(ns, "orphanwatch-parity")

	ks, cs := kust.Spec.Template.Spec, chart.Spec.Template.Spec
	if cs.ServiceAccountName != "orphanwatch-parity" || ks.ServiceAccountName != "orphanwatch" {
		t.Errorf("service accounts %q and %q", cs.ServiceAccountName, ks.ServiceAccountName)
	}
	cs.ServiceAccountName, cs.DeprecatedServiceAccount = ks.ServiceAccountName, ks.DeprecatedServiceAccount
	if !reflect.DeepEqual(cs.Containers[0].SecurityContext, ks.Containers[0].SecurityContext) || cs.HostPID != ks.HostPID {
		t.Errorf("security context as stored: the chart's %+v (hostPID %v), deploy/kubernetes' %+v (hostPID %v)",
			cs.Containers[0].SecurityContext, cs.HostPID, ks.Containers[0].SecurityContext, ks.HostPID)
	}
	if !reflect.DeepEqual(cs, ks) {
		a, _ := json.MarshalIndent(cs, "", "  ")
		b, _ := json.MarshalIndent(ks, "", "  ")
		t.Errorf("pod specs as stored differ:\nthe chart's\n%s\ndeploy/kubernetes'\n%s", a, b)
	}
	if !reflect.DeepEqual(chart.Spec.UpdateStrategy, kust.Spec.UpdateStrategy) {
		t.Errorf("update strategy %+v, deploy/kubernetes' %+v", chart.Spec.UpdateStrategy, kust.Spec.UpdateStrategy)
	}
}

// The way docs/kubernetes.md installs: helm install into a namespace
// labelled privileged, its service account allowed what the agent needs
// and no more, helm upgrade switching Events off and the monitor to a
// ServiceMonitor, helm uninstall removing everything, cluster-scoped
// objects included. And helm install into a namespace enforcing baseline
// stops before creating anything, saying why.
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	k := withCRDs(t)
	ns := k.NewNamespace(t, "helm-install", privileged)
	const release = "orphanwatch-install"
	helm := func(args ...string) string {
		t.Helper()
		out, err := runHelm(t, k.AdminKubeconfig, append(args, "--namespace", ns)...)
		if err != nil {
			t.Fatalf("%v\nAPI server log:\n%s", err, k.Log())
		}
		return out
	}
	args := func() []string {
		var ds appsv1.DaemonSet
		if err := json.Unmarshal([]byte(k.Kubectl(t, "get", "daemonset", release, "--namespace", ns, "-o", "json")), &ds); err != nil {
			t.Fatal(err)
		}
		return ds.Spec.Template.Spec.Containers[0].Args
	}
	exists := func(ref string) bool {
		_, err := k.KubectlWith(k.AdminKubeconfig, "get", ref, "--namespace", ns, "-o", "name")
		return err == nil
	}

	out := helm("install", release, chartDir())
	t.Logf("helm install:\n%s", out)
	if !strings.Contains(out, "STATUS: deployed") || !strings.Contains(out, "kubectl -n "+ns+" get daemonset "+release) {
		t.Errorf("helm install printed\n%s\nwant the release deployed and the NOTES", out)
	}
	if a := args(); slices.ContainsFunc(a, isEventsFlag) {
		t.Errorf("args %v: Events are on by default", a)
	}
	for _, ref := range []string{"podmonitor/" + release, "prometheusrule/" + release, "configmap/" + release + "-dashboard", "service/" + release, "resourcequota/" + release + "-critical-pods", "clusterrole/" + release} {
		if !exists(ref) {
			t.Errorf("helm install created no %s", ref)
		}
	}
	as := "--as=system:serviceaccount:" + ns + ":" + release
	for _, tc := range []struct{ args, want string }{
		{"watch pods -A", "yes"},
		{"create events.events.k8s.io -n db", "yes"},
		{"patch events.events.k8s.io -n db", "yes"},
		{"get secrets -n " + ns, "no"},
		{"create events -n db", "no"},
		{"delete pods -n db", "no"},
	} {
		got, err := k.KubectlWith(k.AdminKubeconfig, append([]string{"auth", "can-i", as}, strings.Fields(tc.args)...)...)
		if strings.TrimSpace(got) != tc.want {
			t.Errorf("kubectl auth can-i %s as the chart's service account: %q (%v), want %s", tc.args, strings.TrimSpace(got), err, tc.want)
		}
	}

	helm("upgrade", release, chartDir(), "--reuse-values", "--set", "kubernetes.events=false", "--set", "prometheus.monitor.kind=ServiceMonitor")
	if a := args(); !slices.Contains(a, "--kubernetes.events=false") {
		t.Errorf("after helm upgrade --set kubernetes.events=false, args %v", a)
	}
	if exists("podmonitor/"+release) || !exists("servicemonitor/"+release) {
		t.Error("after the upgrade to a ServiceMonitor: the PodMonitor is still there, or the ServiceMonitor is not")
	}

	helm("uninstall", release)
	for _, ref := range []string{"daemonset/" + release, "servicemonitor/" + release, "prometheusrule/" + release, "clusterrole/" + release, "clusterrolebinding/" + release, "serviceaccount/" + release} {
		if exists(ref) {
			t.Errorf("helm uninstall left %s", ref)
		}
	}

	baseline := k.NewNamespace(t, "helm-baseline", map[string]string{"pod-security.kubernetes.io/enforce": "baseline"})
	_, err := runHelm(t, k.AdminKubeconfig, "install", "orphanwatch-baseline", chartDir(), "--namespace", baseline)
	if err == nil || !strings.Contains(err.Error(), `enforces Pod Security level "baseline"`) {
		t.Errorf("helm install into a namespace enforcing baseline: %v, want it refused, naming the level", err)
	}
	if _, err := k.KubectlWith(k.AdminKubeconfig, "get", "clusterrole/orphanwatch-baseline", "-o", "name"); err == nil {
		t.Error("the refused install created its ClusterRole")
	}
}
