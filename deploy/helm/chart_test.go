package helm

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/orphanwatch/orphanwatch/deploy/kubernetes"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// The chart's copies of the rules and the dashboard are their sources'.
func TestCopiesAreCurrent(t *testing.T) {
	root := testenv.ModuleRoot()
	for _, c := range Copies {
		want, err := c.Want(root)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(c.Path(root))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s/%s is not a copy of %s (%v): run go generate ./deploy/helm", ChartDir, c.Chart, c.Source, err)
		}
	}
}

// The values sets the tests lint, render and apply: each switch of the
// chart at least once away from its default.
var variants = []struct {
	name   string
	values values
}{
	{"defaults", nil},
	{"namespace created", values{"namespace": values{"create": true}}},
	{"ServiceMonitor, Events off", values{
		"prometheus": values{"monitor": values{"kind": "ServiceMonitor", "labels": values{"release": "kube-prometheus-stack"}}},
		"kubernetes": values{"events": false},
	}},
	{"no Prometheus Operator, no dashboard", values{
		"prometheus": values{"monitor": values{"kind": "none"}, "rule": values{"enabled": false}},
		"grafana":    values{"dashboard": values{"enabled": false}},
	}},
	{"privileged, own priority class and service account", values{
		"privileged":        true,
		"priorityClassName": "orphanwatch-agent",
		"serviceAccount":    values{"create": false, "name": "agent"},
		"extraArgs":         []string{"--log.format=json"},
		"extraEnv":          []any{values{"name": "TZ", "value": "UTC"}},
		"extraVolumes":      []any{values{"name": "docker", "hostPath": values{"path": "/var/lib/docker/containers", "type": "Directory"}}},
		"extraVolumeMounts": []any{values{"name": "docker", "mountPath": "/var/lib/docker/containers", "readOnly": true}},
	}},
}

// `helm lint --strict` passes for every variant, and refuses values the
// schema forbids, saying which.
func TestHelmLint(t *testing.T) {
	for _, v := range variants {
		out, err := runHelm(t, "", "lint", "--strict", chartDir(), "-f", v.values.file(t))
		if err != nil || !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") {
			t.Errorf("%s: helm lint --strict: %v\n%s", v.name, err, out)
		}
	}
	for _, bad := range []struct {
		values values
		says   string
	}{
		{values{"prometheus": values{"monitor": values{"kind": "Probe"}}}, "/prometheus/monitor/kind"},
		{values{"kubernetes": values{"events": "no"}}, "/kubernetes/events"},
		{values{"extraArgs": []string{"serve"}}, "/extraArgs/0"},
		{values{"tolerations": values{"operator": "Exists"}}, "/tolerations"},
		{values{"tolerration": []string{}}, "tolerration"},
	} {
		out, err := runHelm(t, "", "lint", "--strict", chartDir(), "-f", bad.values.file(t))
		if err == nil || !strings.Contains(out+err.Error(), bad.says) {
			t.Errorf("helm lint with %v: %v, want a failure naming %s\n%s", bad.values, err, bad.says, out)
		}
	}
}

// No drift: with its defaults (and the namespace, which helm install
// leaves to the user), the chart renders every object deploy/kubernetes
// holds, equal to it field by field once Helm's own labels are set aside,
// and only the dashboard's ConfigMap besides. Names follow the release's:
// release orphanwatch in namespace orphanwatch names them as
// deploy/kubernetes does.
func TestChartIsTheKustomization(t *testing.T) {
	chart := rendered(t, "orphanwatch", "orphanwatch", values{"namespace": values{"create": true}})
	kust := objects(t, testenv.Kustomize(t, filepath.Join(testenv.ModuleRoot(), "deploy", "kubernetes")))

	appVersion := chartMetadata(t)["appVersion"]
	byRef := map[string]object{}
	for _, o := range chart {
		l := o.labels()
		if l["helm.sh/chart"] != "orphanwatch-"+chartMetadata(t)["version"] || l["app.kubernetes.io/instance"] != "orphanwatch" ||
			l["app.kubernetes.io/managed-by"] != "Helm" || l["app.kubernetes.io/version"] != appVersion {
			t.Errorf("%s: labels %v lack Helm's", o.ref(), l)
		}
		withoutHelmLabels(map[string]any(o))
		byRef[o.ref()] = o
	}
	if len(kust) < 9 {
		t.Fatalf("kubectl kustomize gave %d objects", len(kust))
	}
	for _, k := range kust {
		c, ok := byRef[k.ref()]
		if !ok {
			t.Errorf("the chart has no %s", k.ref())
			continue
		}
		delete(byRef, k.ref())
		for _, d := range differences(map[string]any(c), map[string]any(k), k.ref()) {
			t.Errorf("chart and kustomization differ: %s", d)
		}
	}
	for ref := range byRef {
		if ref != "orphanwatch/ConfigMap/orphanwatch-dashboard" {
			t.Errorf("the chart has %s, which deploy/kubernetes has not", ref)
		}
	}
}

// chartMetadata is Chart.yaml's string fields.
func chartMetadata(t testing.TB) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir(), "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k, v := range m {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return out
}

// The PrometheusRule holds the rules file's groups, decoded equal, and the
// ConfigMap the dashboard, byte for byte.
func TestChartEmbedsTheRulesAndTheDashboard(t *testing.T) {
	root := testenv.ModuleRoot()
	objs := rendered(t, "orphanwatch", "orphanwatch", nil)

	rules, err := os.ReadFile(filepath.Join(root, kubernetes.RulesSource))
	if err != nil {
		t.Fatal(err)
	}
	pr := ofKind(objs, "PrometheusRule")
	if len(pr) != 1 {
		t.Fatalf("%d PrometheusRules", len(pr))
	}
	data, err := yaml.Marshal(map[string]any(pr[0]))
	if err != nil {
		t.Fatal(err)
	}
	if err := kubernetes.SameGroups(rules, data); err != nil {
		t.Error(err)
	}

	dashboard, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "orphanwatch.json"))
	if err != nil {
		t.Fatal(err)
	}
	cm := one[corev1.ConfigMap](t, objs, "ConfigMap")
	if cm.Data["orphanwatch.json"] != string(dashboard) {
		t.Errorf("ConfigMap %s holds %d bytes under orphanwatch.json, not deploy/grafana/orphanwatch.json (%d bytes)", cm.Name, len(cm.Data["orphanwatch.json"]), len(dashboard))
	}
	if len(cm.Data) != 1 || cm.Labels["grafana_dashboard"] != "1" || cm.Namespace != "orphanwatch" {
		t.Errorf("ConfigMap %s/%s labels %v keys %d: want the dashboard alone, labelled grafana_dashboard: \"1\"", cm.Namespace, cm.Name, cm.Labels, len(cm.Data))
	}
}

// What each value changes, in the objects a user would look at.
func TestChartValues(t *testing.T) {
	base := rendered(t, "orphanwatch", "orphanwatch", nil)
	baseDS := one[appsv1.DaemonSet](t, base, "DaemonSet")
	kustDS := one[appsv1.DaemonSet](t, objects(t, testenv.Kustomize(t, filepath.Join(testenv.ModuleRoot(), "deploy", "kubernetes"))), "DaemonSet")
	agent := func(ds *appsv1.DaemonSet) corev1.Container { return ds.Spec.Template.Spec.Containers[0] }
	pm := ofKind(base, "PodMonitor")
	if len(pm) != 1 {
		t.Fatalf("%d PodMonitors by default", len(pm))
	}
	relabelings := pm[0]["spec"].(map[string]any)["podMetricsEndpoints"].([]any)[0].(map[string]any)["relabelings"]

	for _, tc := range []struct {
		name    string
		release string
		values  values
		check   func(t *testing.T, objs []object, ds *appsv1.DaemonSet)
	}{
		{"defaults", "orphanwatch", nil, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			if got := kinds(objs); !slices.Equal(got, []string{"ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "PodMonitor", "PrometheusRule", "ResourceQuota", "Service", "ServiceAccount"}) {
				t.Errorf("kinds %v", got)
			}
			if !slices.Equal(agent(ds).Args, agent(kustDS).Args) || slices.ContainsFunc(agent(ds).Args, isEventsFlag) {
				t.Errorf("args %v, want deploy/kubernetes' %v", agent(ds).Args, agent(kustDS).Args)
			}
			if img := agent(ds).Image; img != "ghcr.io/orphanwatch/orphanwatch:"+chartMetadata(t)["appVersion"] || img != agent(kustDS).Image {
				t.Errorf("image %s; deploy/kubernetes runs %s", img, agent(kustDS).Image)
			}
		}},
		{"Events off", "orphanwatch", values{"kubernetes": values{"events": false}}, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			want := append(slices.Clone(agent(baseDS).Args), "--kubernetes.events=false")
			if !slices.Equal(agent(ds).Args, want) {
				t.Errorf("args %v, want %v", agent(ds).Args, want)
			}
		}},
		{"extra args and environment", "orphanwatch", values{
			"kubernetes": values{"events": false},
			"extraArgs":  []string{"--max-processes=32768", "--log.format=json"},
			"extraEnv":   []any{values{"name": "TZ", "value": "UTC"}},
		}, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			want := append(slices.Clone(agent(baseDS).Args), "--kubernetes.events=false", "--max-processes=32768", "--log.format=json")
			if !slices.Equal(agent(ds).Args, want) {
				t.Errorf("args %v, want %v", agent(ds).Args, want)
			}
			env := agent(ds).Env
			if len(env) != len(agent(baseDS).Env)+1 || env[len(env)-1] != (corev1.EnvVar{Name: "TZ", Value: "UTC"}) {
				t.Errorf("env %+v", env)
			}
		}},
		{"ServiceMonitor", "orphanwatch", values{"prometheus": values{"monitor": values{"kind": "ServiceMonitor", "labels": values{"release": "kps"}, "interval": "15s"}}}, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			if len(ofKind(objs, "PodMonitor")) != 0 {
				t.Error("a PodMonitor besides the ServiceMonitor")
			}
			sm := ofKind(objs, "ServiceMonitor")
			if len(sm) != 1 {
				t.Fatalf("%d ServiceMonitors", len(sm))
			}
			svc := one[corev1.Service](t, objs, "Service")
			var spec struct {
				Selector struct {
					MatchLabels map[string]string `json:"matchLabels"`
				} `json:"selector"`
				Endpoints []struct {
					Port        string `json:"port"`
					Path        string `json:"path"`
					Interval    string `json:"interval"`
					Relabelings any    `json:"relabelings"`
				} `json:"endpoints"`
			}
			object(sm[0]["spec"].(map[string]any)).into(t, &spec)
			if !subset(spec.Selector.MatchLabels, svc.Labels) {
				t.Errorf("ServiceMonitor selects %v, the Service is labelled %v", spec.Selector.MatchLabels, svc.Labels)
			}
			if !subset(svc.Spec.Selector, ds.Spec.Template.Labels) || svc.Spec.ClusterIP != "None" {
				t.Errorf("Service selects %v, the pods are labelled %v", svc.Spec.Selector, ds.Spec.Template.Labels)
			}
			if len(spec.Endpoints) != 1 || spec.Endpoints[0].Port != "metrics" || spec.Endpoints[0].Path != "/metrics" || spec.Endpoints[0].Interval != "15s" {
				t.Errorf("endpoints %+v", spec.Endpoints)
			}
			if len(spec.Endpoints) == 1 && !reflect.DeepEqual(spec.Endpoints[0].Relabelings, relabelings) {
				t.Errorf("relabelings %v, the PodMonitor's %v", spec.Endpoints[0].Relabelings, relabelings)
			}
			if sm[0].labels()["release"] != "kps" {
				t.Errorf("ServiceMonitor labels %v", sm[0].labels())
			}
		}},
		{"no Prometheus Operator", "orphanwatch", values{"prometheus": values{"monitor": values{"kind": "none"}, "rule": values{"enabled": false}}}, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			for _, o := range objs {
				if strings.HasPrefix(o["apiVersion"].(string), "monitoring.coreos.com/") {
					t.Errorf("%s needs the Prometheus Operator", o.ref())
				}
			}
			if len(ofKind(objs, "Service")) != 1 {
				t.Error("no Service for scrapers without the operator")
			}
		}},
		{"rule labels", "orphanwatch", values{"prometheus": values{"rule": values{"labels": values{"release": "kps"}}}}, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			if l := ofKind(objs, "PrometheusRule")[0].labels(); l["release"] != "kps" || l["app.kubernetes.io/name"] != "orphanwatch" {
				t.Errorf("PrometheusRule labels %v", l)
			}
		}},
		{"dashboard for another sidecar", "orphanwatch", values{"grafana": values{"dashboard": values{
			"namespace": "monitoring", "label": "dashboards", "labelValue": "orphanwatch", "annotations": values{"grafana_folder": "PostgreSQL"},
		}}}, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			cm := one[corev1.ConfigMap](t, objs, "ConfigMap")
			if cm.Namespace != "monitoring" || cm.Labels["dashboards"] != "orphanwatch" || cm.Annotations["grafana_folder"] != "PostgreSQL" {
				t.Errorf("ConfigMap %s/%s labels %v annotations %v", cm.Namespace, cm.Name, cm.Labels, cm.Annotations)
			}
			if _, ok := cm.Labels["grafana_dashboard"]; ok {
				t.Error("still labelled grafana_dashboard")
			}
		}},
		{"no dashboard", "orphanwatch", values{"grafana": values{"dashboard": values{"enabled": false}}}, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			if n := len(ofKind(objs, "ConfigMap")); n != 0 {
				t.Errorf("%d ConfigMaps", n)
			}
		}},
		{"image", "orphanwatch", values{
			"image":            values{"repository": "registry.example.com/orphanwatch", "tag": "v9.9.9", "pullPolicy": "Always"},
			"imagePullSecrets": []any{values{"name": "registry"}},
		}, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			c := agent(ds)
			if c.Image != "registry.example.com/orphanwatch:v9.9.9" || c.ImagePullPolicy != corev1.PullAlways {
				t.Errorf("image %s, pull policy %s", c.Image, c.ImagePullPolicy)
			}
			if s := ds.Spec.Template.Spec.ImagePullSecrets; len(s) != 1 || s[0].Name != "registry" {
				t.Errorf("image pull secrets %v", s)
			}
		}},
		{"scheduling and resources", "orphanwatch", values{
			"tolerations":  []any{values{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}},
			"nodeSelector": values{"workload": "postgres"},
			"affinity": values{"nodeAffinity": values{"requiredDuringSchedulingIgnoredDuringExecution": values{"nodeSelectorTerms": []any{
				values{"matchExpressions": []any{values{"key": "kubernetes.io/arch", "operator": "In", "values": []string{"amd64", "arm64"}}}},
			}}}},
			"resources":         values{"requests": values{"cpu": "50m", "memory": "128Mi"}, "limits": values{"memory": "256Mi"}},
			"goMemLimit":        "200MiB",
			"priorityClassName": "system-cluster-critical",
			"podAnnotations":    values{"example.com/team": "db"},
			"podLabels":         values{"team": "db"},
		}, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			p := ds.Spec.Template.Spec
			if len(p.Tolerations) != 1 || p.Tolerations[0].Key != "dedicated" || p.Tolerations[0].Effect != corev1.TaintEffectNoSchedule {
				t.Errorf("tolerations %+v (they replace the defaults)", p.Tolerations)
			}
			if !reflect.DeepEqual(p.NodeSelector, map[string]string{"kubernetes.io/os": "linux", "workload": "postgres"}) {
				t.Errorf("node selector %v (merged with the default)", p.NodeSelector)
			}
			if p.Affinity == nil || p.Affinity.NodeAffinity == nil || len(p.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms) != 1 {
				t.Errorf("affinity %+v", p.Affinity)
			}
			r := agent(ds).Resources
			if !r.Limits.Memory().Equal(resource.MustParse("256Mi")) || !r.Requests.Cpu().Equal(resource.MustParse("50m")) || r.Limits.Cpu() != nil && !r.Limits.Cpu().IsZero() {
				t.Errorf("resources %+v", r)
			}
			if !slices.Contains(agent(ds).Env, corev1.EnvVar{Name: "GOMEMLIMIT", Value: "200MiB"}) {
				t.Errorf("env %+v", agent(ds).Env)
			}
			if p.PriorityClassName != "system-cluster-critical" {
				t.Errorf("priority class %q", p.PriorityClassName)
			}
			q := one[corev1.ResourceQuota](t, objs, "ResourceQuota")
			if sel := q.Spec.ScopeSelector.MatchExpressions; len(sel) != 1 || !slices.Equal(sel[0].Values, []string{"system-cluster-critical"}) {
				t.Errorf("quota scope %+v, want the pods' priority class", sel)
			}
			if ds.Spec.Template.Annotations["example.com/team"] != "db" || ds.Spec.Template.Labels["team"] != "db" ||
				!subset(ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels) {
				t.Errorf("pod annotations %v, labels %v, selector %v", ds.Spec.Template.Annotations, ds.Spec.Template.Labels, ds.Spec.Selector.MatchLabels)
			}
		}},
		{"a priority class no quota limits", "orphanwatch", values{"priorityClassName": "orphanwatch-agent"}, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			if ds.Spec.Template.Spec.PriorityClassName != "orphanwatch-agent" || len(ofKind(objs, "ResourceQuota")) != 0 {
				t.Errorf("priority class %q, %d ResourceQuotas", ds.Spec.Template.Spec.PriorityClassName, len(ofKind(objs, "ResourceQuota")))
			}
		}},
		{"no priority class", "orphanwatch", values{"priorityClassName": ""}, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			if ds.Spec.Template.Spec.PriorityClassName != "" || len(ofKind(objs, "ResourceQuota")) != 0 {
				t.Errorf("priority class %q, %d ResourceQuotas", ds.Spec.Template.Spec.PriorityClassName, len(ofKind(objs, "ResourceQuota")))
			}
		}},
		{"privileged fallback", "orphanwatch", values{"privileged": true}, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			sc := agent(ds).SecurityContext
			if sc == nil || sc.Privileged == nil || !*sc.Privileged || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.Capabilities != nil || sc.AllowPrivilegeEscalation != nil || sc.SeccompProfile != nil || sc.AppArmorProfile != nil {
				t.Errorf("security context %+v, want privileged: true and readOnlyRootFilesystem: true alone (docs/kubernetes.md)", sc)
			}
		}},
		{"seccomp Unconfined", "orphanwatch", values{"securityContext": values{"seccompProfile": values{"type": "Unconfined"}}}, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			sc, want := agent(ds).SecurityContext, agent(baseDS).SecurityContext.DeepCopy()
			want.SeccompProfile.Type = corev1.SeccompProfileTypeUnconfined
			if !reflect.DeepEqual(sc, want) {
				t.Errorf("security context %+v, want the default but seccomp %+v", sc, want)
			}
		}},
		{"an existing service account", "orphanwatch", values{"serviceAccount": values{"create": false, "name": "agent"}}, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			if len(ofKind(objs, "ServiceAccount")) != 0 || ds.Spec.Template.Spec.ServiceAccountName != "agent" {
				t.Errorf("%d ServiceAccounts, the pods run as %q", len(ofKind(objs, "ServiceAccount")), ds.Spec.Template.Spec.ServiceAccountName)
			}
			b := one[rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding")
			if len(b.Subjects) != 1 || b.Subjects[0].Name != "agent" || b.Subjects[0].Namespace != "orphanwatch" {
				t.Errorf("binding subjects %+v", b.Subjects)
			}
		}},
		{"no RBAC", "orphanwatch", values{"rbac": values{"create": false}}, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			if n := len(ofKind(objs, "ClusterRole")) + len(ofKind(objs, "ClusterRoleBinding")); n != 0 {
				t.Errorf("%d RBAC objects", n)
			}
		}},
		{"another release", "db-tracer", nil, func(t *testing.T, objs []object, ds *appsv1.DaemonSet) {
			for _, o := range objs {
				if !strings.HasPrefix(o.name(), "db-tracer-orphanwatch") {
					t.Errorf("%s: not named after the release", o.ref())
				}
				if ns := o.namespace(); ns != "" && ns != "monitoring" {
					t.Errorf("%s: not in the release's namespace", o.ref())
				}
			}
			if ds.Spec.Selector.MatchLabels["app.kubernetes.io/instance"] != "db-tracer" {
				t.Errorf("selector %v: another release's pods would match", ds.Spec.Selector.MatchLabels)
			}
			b := one[rbacv1.ClusterRoleBinding](t, objs, "ClusterRoleBinding")
			if b.Subjects[0].Namespace != "monitoring" || b.Subjects[0].Name != ds.Spec.Template.Spec.ServiceAccountName || b.RoleRef.Name != b.Name {
				t.Errorf("binding %+v", b)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := "orphanwatch"
			if tc.release != "orphanwatch" {
				ns = "monitoring"
			}
			objs := rendered(t, tc.release, ns, tc.values)
			tc.check(t, objs, one[appsv1.DaemonSet](t, objs, "DaemonSet"))
		})
	}
}

// Values the chart cannot honour fail helm template with a message that
// says what to set, also when the schema is not checked.
func TestChartRefusesValuesItCannotHonour(t *testing.T) {
	for _, tc := range []struct {
		values values
		says   string
		flags  []string
	}{
		{values{"serviceAccount": values{"create": false}}, "serviceAccount.name: the existing ServiceAccount to run as", nil},
		{values{"prometheus": values{"monitor": values{"kind": "PodMonitors"}}}, "at '/prometheus/monitor/kind': value must be one of 'PodMonitor', 'ServiceMonitor', 'none'", nil},
		{values{"prometheus": values{"monitor": values{"kind": "PodMonitors"}}}, `prometheus.monitor.kind is "PodMonitors": want PodMonitor, ServiceMonitor or none`, []string{"--skip-schema-validation"}},
	} {
		out, err := template(t, "orphanwatch", "orphanwatch", tc.values, tc.flags...)
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("helm template with %v: %v, want an error saying %q\n%s", tc.values, err, tc.says, out)
		}
	}
}

func isEventsFlag(arg string) bool { return strings.HasPrefix(arg, "--kubernetes.events") }

// subset reports whether every label of sel is in labels.
func subset(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Every flag the chart can pass is one orphanwatch serve knows.
func TestDaemonSetFlagsAreServes(t *testing.T) {
	ds := one[appsv1.DaemonSet](t, rendered(t, "orphanwatch", "orphanwatch", values{"kubernetes": values{"events": false}}), "DaemonSet")
	c := ds.Spec.Template.Spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("args %v, want serve first", c.Args)
	}
	out, _ := exec.Command(testenv.Binary(t), "serve", "-h").CombinedOutput()
	for _, arg := range c.Args[1:] {
		name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if !regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(name) + `(\s|$)`).Match(out) {
			t.Errorf("orphanwatch serve does not know the chart's flag %s; its flags:\n%s", arg, out)
		}
	}
}
