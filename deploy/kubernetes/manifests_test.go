package kubernetes

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/orphanwatch/orphanwatch/internal/exporter"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// The custom resources and the kustomization, reduced to the fields these
// manifests use, under the names their CRDs and kustomize give them.
// Decoding is strict, so a misspelt or misplaced field fails here instead of
// being dropped (or rejected) by the API server.
type (
	podMonitor struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata"`
		Spec              struct {
			Selector            metav1.LabelSelector `json:"selector"`
			PodMetricsEndpoints []struct {
				Port        string `json:"port"`
				Path        string `json:"path"`
				Interval    string `json:"interval"`
				Relabelings []struct {
					Action       string   `json:"action"`
					SourceLabels []string `json:"sourceLabels"`
					TargetLabel  string   `json:"targetLabel"`
					Regex        string   `json:"regex"`
					Replacement  *string  `json:"replacement"`
				} `json:"relabelings"`
			} `json:"podMetricsEndpoints"`
		} `json:"spec"`
	}
	prometheusRule struct {
		metav1.TypeMeta   `json:",inline"`
		metav1.ObjectMeta `json:"metadata"`
		Spec              struct {
			Groups []struct {
				Name     string            `json:"name"`
				Interval string            `json:"interval"`
				Labels   map[string]string `json:"labels"`
				Rules    []struct {
					Alert         string            `json:"alert"`
					Record        string            `json:"record"`
					Expr          string            `json:"expr"`
					For           string            `json:"for"`
					KeepFiringFor string            `json:"keep_firing_for"`
					Labels        map[string]string `json:"labels"`
					Annotations   map[string]string `json:"annotations"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	kustomization struct {
		metav1.TypeMeta `json:",inline"`
		Namespace       string   `json:"namespace"`
		Resources       []string `json:"resources"`
		Images          []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
			NewTag  string `json:"newTag"`
		} `json:"images"`
	}
)

// newObject is the Go type a manifest of this apiVersion and kind must
// decode into.
func newObject(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "v1 Namespace":
		return &corev1.Namespace{}, nil
	case "v1 ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 ResourceQuota":
		return &corev1.ResourceQuota{}, nil
	case "rbac.authorization.k8s.io/v1 ClusterRole":
		return &rbacv1.ClusterRole{}, nil
	case "rbac.authorization.k8s.io/v1 ClusterRoleBinding":
		return &rbacv1.ClusterRoleBinding{}, nil
	case "apps/v1 DaemonSet":
		return &appsv1.DaemonSet{}, nil
	case "monitoring.coreos.com/v1 PodMonitor":
		return &podMonitor{}, nil
	case "monitoring.coreos.com/v1 PrometheusRule":
		return &prometheusRule{}, nil
	case "kustomize.config.k8s.io/v1beta1 Kustomization":
		return &kustomization{}, nil
	}
	return nil, fmt.Errorf("no Go type known for apiVersion %q kind %q: add one to newObject", apiVersion, kind)
}

// decodeStrict decodes one YAML document into its type as the API server's
// strict field validation does: unknown or duplicate fields fail, and field
// names are case-sensitive. (yaml.UnmarshalStrict and encoding/json's
// DisallowUnknownFields match names case-insensitively: hostPid would pass
// for hostPID there, and be dropped by the API server.)
func decodeStrict(doc []byte) (any, error) {
	data, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(data, &tm); err != nil {
		return nil, err
	}
	obj, err := newObject(tm.APIVersion, tm.Kind)
	if err != nil {
		return nil, err
	}
	strict, err := k8sjson.UnmarshalStrict(data, obj, k8sjson.DisallowDuplicateFields, k8sjson.DisallowUnknownFields)
	if err == nil && len(strict) > 0 {
		err = errors.Join(strict...)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
	}
	return obj, nil
}

type manifest struct {
	file string // relative to deploy/kubernetes
	doc  []byte
	obj  any
}

var (
	documentSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)
	onlyComments      = regexp.MustCompile(`^(?:\s*(?:#.*)?\n?)*$`)
)

// manifests decodes every YAML document under this directory.
func manifests(t *testing.T) []manifest {
	t.Helper()
	var out []manifest
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, doc := range documentSeparator.Split(string(data), -1) {
			if onlyComments.MatchString(doc) {
				continue
			}
			obj, err := decodeStrict([]byte(doc))
			if err != nil {
				t.Errorf("%s, document %d: %v", path, i+1, err)
				continue
			}
			out = append(out, manifest{file: path, doc: []byte(doc), obj: obj})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("no manifests found")
	}
	return out
}

// only returns the one object of type T among the manifests.
func only[T any](t *testing.T, ms []manifest) T {
	t.Helper()
	var found []T
	for _, m := range ms {
		if o, ok := m.obj.(T); ok {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("%d manifests of type %T, want 1", len(found), zero)
	}
	return found[0]
}

func TestEveryManifestDecodesStrictly(t *testing.T) {
	ms := manifests(t)
	kinds := map[string]bool{}
	for _, m := range ms {
		var tm metav1.TypeMeta
		yaml.Unmarshal(m.doc, &tm)
		kinds[tm.Kind] = true
		if o, ok := m.obj.(metav1.Object); ok && o.GetName() == "" {
			t.Errorf("%s: %s without a name", m.file, tm.Kind)
		}
	}
	for _, want := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet", "Service", "PodMonitor", "PrometheusRule", "Kustomization"} {
		if !kinds[want] {
			t.Errorf("no %s among the manifests", want)
		}
	}
}

// The decoding above would catch a misspelt field: show that it does.
func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	data, err := os.ReadFile("daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, typo := range []struct{ from, to string }{
		{"      hostPID: true", "      hostPid: true"}, // case: the API server would drop it
		{"            readOnlyRootFilesystem: true", "            readOnlyRootFileSystem: true"},
		{"      serviceAccountName: orphanwatch", "      serviceAccountName: orphanwatch\n      serviceAccountName: other"},
		{"      hostPID: true", "      hostPID: true\n      hostUsers: false\n      shareHostPID: true"},
	} {
		if !bytes.Contains(data, []byte(typo.from)) {
			t.Fatalf("daemonset.yaml has no line %q to alter", typo.from)
		}
		bad := bytes.Replace(data, []byte(typo.from), []byte(typo.to), 1)
		if _, err := decodeStrict(bad); err == nil {
			t.Errorf("a DaemonSet with %q decoded without error", typo.to)
		}
	}
	pm, err := os.ReadFile("podmonitor.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeStrict(bytes.Replace(pm, []byte("podMetricsEndpoints"), []byte("podMetricEndpoints"), 1)); err == nil {
		t.Error("a PodMonitor with podMetricEndpoints decoded without error")
	}
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	ms := manifests(t)
	k := only[*kustomization](t, ms)
	var files []string
	for _, m := range ms {
		if m.file != "kustomization.yaml" && !slices.Contains(files, m.file) {
			files = append(files, m.file)
		}
	}
	resources := slices.Clone(k.Resources)
	slices.Sort(resources)
	slices.Sort(files)
	if !slices.Equal(resources, files) {
		t.Errorf("kustomization resources %v, manifests in the directory %v", resources, files)
	}
	ds := only[*appsv1.DaemonSet](t, ms)
	image := ds.Spec.Template.Spec.Containers[0].Image
	if len(k.Images) != 1 || k.Images[0].Name != image || k.Images[0].NewTag == "" {
		t.Errorf("kustomization images %+v: want one entry for the DaemonSet's image %q with a tag users can override", k.Images, image)
	}
	if strings.Contains(image, ":") || strings.Contains(image, "@") {
		t.Errorf("DaemonSet image %q carries a tag: the kustomization's images: field sets it", image)
	}
}

func agentContainer(t *testing.T, ds *appsv1.DaemonSet) *corev1.Container {
	t.Helper()
	cs := ds.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("DaemonSet has %d containers, want 1", len(cs))
	}
	return &cs[0]
}

func TestDaemonSetHasTheLeastPrivilegeThatWorks(t *testing.T) {
	ms := manifests(t)
	ds := only[*appsv1.DaemonSet](t, ms)
	pod := ds.Spec.Template.Spec
	c := agentContainer(t, ds)
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("the agent container has no securityContext capabilities")
	}

	if !pod.HostPID {
		t.Error("hostPID is not set: the agent would see only its own processes")
	}
	if pod.HostNetwork || pod.HostIPC {
		t.Error("hostNetwork or hostIPC set: the agent needs neither")
	}
	if sc.Privileged != nil {
		t.Errorf("privileged is set (%v): the capabilities below replace it", *sc.Privileged)
	}
	want := []corev1.Capability{"BPF", "DAC_READ_SEARCH", "PERFMON", "SYS_PTRACE", "SYS_RESOURCE"}
	got := slices.Clone(sc.Capabilities.Add)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("capabilities added %v, want exactly %v", got, want)
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities dropped %v, want ALL (the runtime's defaults are not needed)", sc.Capabilities.Drop)
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("runAsUser is not 0: /proc of other users' processes needs root")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type == "" {
		t.Error("no seccomp profile chosen")
	}

	// Only read-only host paths.
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	for _, v := range pod.Volumes {
		if v.HostPath == nil {
			continue
		}
		if m, ok := mounts[v.Name]; !ok || !m.ReadOnly {
			t.Errorf("host path %s is not mounted read-only", v.HostPath.Path)
		}
	}
	if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.HostPath != nil && v.HostPath.Path == "/sys/kernel/btf" }) {
		t.Error("no /sys/kernel/btf mount: the BPF objects are CO-RE and need the kernel's BTF")
	}

	// On every node.
	if !slices.ContainsFunc(pod.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == ""
	}) {
		t.Errorf("tolerations %+v do not tolerate every taint", pod.Tolerations)
	}

	// The namer's node filter comes from the downward API.
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}) {
		t.Error("NODE_NAME is not set from spec.nodeName")
	}

	// About 25 MiB RSS (40 MiB at most, the target) plus about 8 MiB of BPF
	// maps charged to the pod.
	limit, request := c.Resources.Limits.Memory(), c.Resources.Requests.Memory()
	if limit.Cmp(resource.MustParse("96Mi")) < 0 {
		t.Errorf("memory limit %s leaves no room over 40 MiB RSS + 8 MiB of BPF maps", limit)
	}
	if request.IsZero() || request.Cmp(*limit) > 0 {
		t.Errorf("memory request %s, limit %s", request, limit)
	}

	// The service account it runs as is the one the role is bound to, and
	// Pod Security Admission lets the namespace run it.
	sa := only[*corev1.ServiceAccount](t, ms)
	if pod.ServiceAccountName != sa.Name || ds.Namespace != sa.Namespace {
		t.Errorf("DaemonSet runs as %s/%s, the ServiceAccount is %s/%s", ds.Namespace, pod.ServiceAccountName, sa.Namespace, sa.Name)
	}
	ns := only[*corev1.Namespace](t, ms)
	if ns.Name != ds.Namespace || ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("namespace %s labels %v: Pod Security Admission would reject hostPID and these capabilities", ns.Name, ns.Labels)
	}
}

func TestClusterRoleReadsPodsAndPostsEventsOnly(t *testing.T) {
	ms := manifests(t)
	role := only[*rbacv1.ClusterRole](t, ms)
	// apiGroup, resource: sorted verbs. apiserver_test.go checks what
	// the API server makes of them.
	want := map[[2]string][]string{
		{"", "pods"}:                {"get", "list", "watch"},
		{"events.k8s.io", "events"}: {"create", "patch"},
	}
	if len(role.Rules) != len(want) {
		t.Fatalf("ClusterRole has %d rules, want %d: %+v", len(role.Rules), len(want), role.Rules)
	}
	for _, r := range role.Rules {
		verbs := slices.Clone(r.Verbs)
		slices.Sort(verbs)
		if len(r.APIGroups) != 1 || len(r.Resources) != 1 || len(r.ResourceNames) != 0 || len(r.NonResourceURLs) != 0 ||
			!slices.Equal(verbs, want[[2]string{r.APIGroups[0], r.Resources[0]}]) {
			t.Errorf("ClusterRole rule %+v, want only get/list/watch on core pods and create/patch on events.k8s.io events", r)
			continue
		}
		delete(want, [2]string{r.APIGroups[0], r.Resources[0]})
	}
	if len(want) != 0 {
		t.Errorf("ClusterRole has no rule for %v", want)
	}
	if role.AggregationRule != nil {
		t.Error("the ClusterRole aggregates others")
	}

	binding := only[*rbacv1.ClusterRoleBinding](t, ms)
	sa := only[*corev1.ServiceAccount](t, ms)
	if binding.RoleRef.Kind != "ClusterRole" || binding.RoleRef.Name != role.Name {
		t.Errorf("binding refers to %+v, want ClusterRole %s", binding.RoleRef, role.Name)
	}
	if len(binding.Subjects) != 1 || binding.Subjects[0].Kind != "ServiceAccount" ||
		binding.Subjects[0].Name != sa.Name || binding.Subjects[0].Namespace != sa.Namespace {
		t.Errorf("binding subjects %+v, want only the ServiceAccount %s/%s", binding.Subjects, sa.Namespace, sa.Name)
	}
}

// The probes, ports and scrape config must reach what the agent serves: its
// real HTTP server answers the probe paths, on its default port.
func TestProbesAndPortsReachTheAgentsServer(t *testing.T) {
	ms := manifests(t)
	ds := only[*appsv1.DaemonSet](t, ms)
	c := agentContainer(t, ds)

	var metricsPort int32
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			metricsPort = p.ContainerPort
		}
	}
	_, defaultPort, _ := net.SplitHostPort(exporter.DefaultListenAddress)
	if fmt.Sprint(metricsPort) != defaultPort {
		t.Errorf("container port metrics = %d, the agent listens on %s", metricsPort, defaultPort)
	}
	if !slices.Contains(c.Args, "--web.listen-address=:"+defaultPort) {
		t.Errorf("args %v do not pin --web.listen-address to the container port", c.Args)
	}
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Fatal("liveness and readiness must be HTTP probes")
		}
		if p.HTTPGet.Port.String() != "metrics" && p.HTTPGet.Port.IntValue() != int(metricsPort) {
			t.Errorf("probe %s on port %s, not the agent's", p.HTTPGet.Path, p.HTTPGet.Port.String())
		}
	}

	svc := only[*corev1.Service](t, ms)
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != metricsPort || svc.Spec.Ports[0].TargetPort.String() != "metrics" {
		t.Errorf("Service ports %+v, want %d to the metrics port", svc.Spec.Ports, metricsPort)
	}
	for k, v := range svc.Spec.Selector {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("Service selects %s=%s, the pods have %q", k, v, ds.Spec.Template.Labels[k])
		}
	}
	pm := only[*podMonitor](t, ms)
	for k, v := range pm.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("PodMonitor selects %s=%s, the pods have %q", k, v, ds.Spec.Template.Labels[k])
		}
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 || pm.Spec.PodMetricsEndpoints[0].Port != "metrics" {
		t.Fatalf("PodMonitor endpoints %+v, want the metrics port", pm.Spec.PodMetricsEndpoints)
	}
	telemetryPath := pm.Spec.PodMetricsEndpoints[0].Path

	// The agent's own server, as serve builds it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := exporter.NewServer(exporter.ServerConfig{
		Listeners: []net.Listener{l}, TelemetryPath: telemetryPath,
		Registry: exporter.NewRegistry(exporter.New(exporter.Config{})),
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	get := func(path string) int {
		resp, err := http.Get("http://" + l.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(c.LivenessProbe.HTTPGet.Path); code != http.StatusOK {
		t.Errorf("liveness probe %s: HTTP %d while loading, want 200 (a restart would not help)", c.LivenessProbe.HTTPGet.Path, code)
	}
	if code := get(c.ReadinessProbe.HTTPGet.Path); code != http.StatusServiceUnavailable {
		t.Errorf("readiness probe %s: HTTP %d before the programs are attached, want 503", c.ReadinessProbe.HTTPGet.Path, code)
	}
	srv.Ready("test")
	if code := get(c.ReadinessProbe.HTTPGet.Path); code != http.StatusOK {
		t.Errorf("readiness probe %s: HTTP %d once attached, want 200", c.ReadinessProbe.HTTPGet.Path, code)
	}
	if code := get(telemetryPath); code != http.StatusOK {
		t.Errorf("PodMonitor path %s: HTTP %d", telemetryPath, code)
	}
}

// The command and args run the image's binary as `orphanwatch serve` with
// flags serve accepts.
func TestDaemonSetRunsServeWithFlagsItKnows(t *testing.T) {
	ds := only[*appsv1.DaemonSet](t, manifests(t))
	c := agentContainer(t, ds)

	dockerfile, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ENTRYPOINT\s+(\[.*\])\s*$`).FindSubmatch(dockerfile)
	if m == nil {
		t.Fatal("the Dockerfile has no exec-form ENTRYPOINT")
	}
	var entrypoint []string
	if err := json.Unmarshal(m[1], &entrypoint); err != nil {
		t.Fatal(err)
	}
	if len(c.Command) != 1 || c.Command[0] != entrypoint[0] {
		t.Errorf("command %v: want the image's binary %s alone (the image's ENTRYPOINT %v already says serve)", c.Command, entrypoint[0], entrypoint)
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("args %v, want serve first", c.Args)
	}

	out, _ := exec.Command(testenv.Binary(t), "serve", "-h").CombinedOutput()
	for _, arg := range c.Args[1:] {
		name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if !regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(name) + `(\s|$)`).Match(out) {
			t.Errorf("orphanwatch serve does not know the DaemonSet's flag %s; its flags:\n%s", arg, out)
		}
	}
}

// The operator labels targets with the scraped pod's namespace, pod and
// container (orphanwatch's own): those must go, so that the series keep the
// labels naming the PostgreSQL container they are about.
func TestPodMonitorKeepsTheAgentsContainerLabels(t *testing.T) {
	pm := only[*podMonitor](t, manifests(t))
	ep := pm.Spec.PodMetricsEndpoints[0]
	var dropped []string
	node := false
	for _, r := range ep.Relabelings {
		switch r.Action {
		case "labeldrop":
			re := regexp.MustCompile("^(?:" + r.Regex + ")$") // Prometheus anchors relabel regexes
			for _, l := range []string{"namespace", "pod", "container", "container_id", "instance", "job", "node", "verdict", "comm", "signal"} {
				if re.MatchString(l) {
					dropped = append(dropped, l)
				}
			}
		case "replace", "":
			if slices.Equal(r.SourceLabels, []string{"__meta_kubernetes_pod_node_name"}) && r.TargetLabel == "node" {
				node = true
			}
		}
	}
	if !slices.Equal(dropped, []string{"namespace", "pod", "container"}) {
		t.Errorf("target labels dropped: %v, want exactly namespace, pod and container", dropped)
	}
	if !node {
		t.Error("no node label from __meta_kubernetes_pod_node_name")
	}
}

func TestPrometheusRuleIsTheRulesFile(t *testing.T) {
	rules, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(), RulesSource))
	if err != nil {
		t.Fatalf("the PrometheusRule is generated from %s: %v", RulesSource, err)
	}
	want, err := PrometheusRule(rules)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("prometheusrule.yaml is stale: run go generate ./deploy/kubernetes")
	}
	if err := SameGroups(rules, got); err != nil {
		t.Error(err)
	}

	// Every alert of the rules file, by name, and nothing else.
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(rules, &file); err != nil {
		t.Fatal(err)
	}
	pr := only[*prometheusRule](t, manifests(t))
	var inFile, inRule []string
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			inFile = append(inFile, r.Alert)
		}
	}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			inRule = append(inRule, r.Alert)
		}
	}
	if len(inFile) == 0 || !slices.Equal(inFile, inRule) {
		t.Errorf("alerts in the rules file %v, in the PrometheusRule %v", inFile, inRule)
	}
}

func TestPrometheusRuleGenerator(t *testing.T) {
	const rules = `# a comment the copy drops
groups:
  # a comment the copy keeps
  - name: g
    rules:
      - alert: A
        expr: |
          up == 0
          or absent(up)
        annotations:
          summary: >-
            folded
            text
`
	out, err := PrometheusRule([]byte(rules))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeStrict(out); err != nil {
		t.Errorf("generated PrometheusRule does not decode: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("    # a comment the copy keeps\n")) || !bytes.Contains(out, []byte("DO NOT EDIT")) {
		t.Errorf("generated:\n%s", out)
	}
	for name, bad := range map[string]string{
		"another top-level key": rules + "extra: 1\n",
		"flow style":            `groups: [{name: g, rules: [{alert: A, expr: up}]}]`,
		"not YAML":              "groups:\n  - name: [\n",
		"no groups":             "rules: []\n",
	} {
		if _, err := PrometheusRule([]byte(bad)); err == nil {
			t.Errorf("%s: generated without error", name)
		}
	}
}
