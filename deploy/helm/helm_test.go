package helm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	k8sjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// The API server the tests of apiserver_test.go share is stopped at the end.
func TestMain(m *testing.M) { testenv.MainWithKubeAPI(m) }

// helmBinary is the helm that scripts/helm.sh built from its Go module.
func helmBinary(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("bash", filepath.Join(testenv.ModuleRoot(), "scripts", "helm.sh"), "--path").Output()
	if err != nil {
		t.Fatalf("scripts/helm.sh --path: %v", err)
	}
	path := strings.TrimSpace(string(out))
	_, err = os.Stat(path)
	testenv.Require(t, err == nil, "needs "+path+": run scripts/helm.sh (builds helm from its Go module once, minutes; scripts/test.sh does)")
	return path
}

// runHelm runs helm with a configuration, cache and data directory of its
// own, and nothing from the user's, and returns its standard output; the
// error holds its standard error. kubeconfig is for commands that talk to
// an API server ("" for none).
func runHelm(t testing.TB, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, helmBinary(t), args...)
	cmd.Env = append(os.Environ(),
		"HOME="+home, "HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"), "HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+kubeconfig)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func chartDir() string { return filepath.Join(testenv.ModuleRoot(), ChartDir) }

// values are chart values, as a values file holds them.
type values map[string]any

// file writes the values to a values file and returns its path.
func (v values) file(t testing.TB) string {
	t.Helper()
	data, err := yaml.Marshal(map[string]any(v))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(tempDir(t), "values.yaml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// tempDir is a directory removed when the test ends, for files passed
// with -f: not t.TempDir(), whose path holds the test's name, in which
// subtests' names put commas, at which helm and kubectl split -f.
func tempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "orphanwatch-helm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// template is `helm template release chart --namespace namespace -f
// values flags...`: the manifest, and helm's error.
func template(t testing.TB, release, namespace string, v values, flags ...string) (string, error) {
	t.Helper()
	return runHelm(t, "", append([]string{"template", release, chartDir(), "--namespace", namespace, "-f", v.file(t)}, flags...)...)
}

// object is a Kubernetes object as decoded from YAML.
type object map[string]any

func (o object) kind() string { k, _ := o["kind"].(string); return k }

func (o object) meta() map[string]any { m, _ := o["metadata"].(map[string]any); return m }

func (o object) name() string { n, _ := o.meta()["name"].(string); return n }

func (o object) namespace() string { ns, _ := o.meta()["namespace"].(string); return ns }

// ref names the object as kubectl does, with its namespace.
func (o object) ref() string {
	if ns := o.namespace(); ns != "" {
		return ns + "/" + o.kind() + "/" + o.name()
	}
	return o.kind() + "/" + o.name()
}

func (o object) labels() map[string]any { l, _ := o.meta()["labels"].(map[string]any); return l }

// into decodes the object into a typed one, strictly: a field the type
// does not have is an error.
func (o object) into(t testing.TB, typed any) {
	t.Helper()
	data, err := yaml.Marshal(map[string]any(o))
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	strict, err := k8sjson.UnmarshalStrict(j, typed)
	if err != nil || len(strict) > 0 {
		t.Fatalf("%s does not decode as %T: %v %v", o.ref(), typed, err, strict)
	}
}

var documentSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// objects splits a multi-document manifest into objects, in order.
func objects(t testing.TB, manifest string) []object {
	t.Helper()
	var out []object
	for _, doc := range documentSeparator.Split(manifest, -1) {
		var o object
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("%v in\n%s", err, doc)
		}
		if o != nil {
			out = append(out, o)
		}
	}
	return out
}

// rendered is the chart's objects for these values.
func rendered(t testing.TB, release, namespace string, v values) []object {
	t.Helper()
	out, err := template(t, release, namespace, v)
	if err != nil {
		t.Fatal(err)
	}
	return objects(t, out)
}

// ofKind returns the objects of a kind.
func ofKind(objs []object, kind string) []object {
	var out []object
	for _, o := range objs {
		if o.kind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// one returns the only object of a kind, decoded into T.
func one[T any](t testing.TB, objs []object, kind string) *T {
	t.Helper()
	found := ofKind(objs, kind)
	if len(found) != 1 {
		t.Fatalf("%d objects of kind %s, want 1", len(found), kind)
	}
	var typed T
	found[0].into(t, &typed)
	return &typed
}

// kinds lists the objects' kinds, sorted.
func kinds(objs []object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.kind())
	}
	sort.Strings(out)
	return out
}

// helmLabels are the labels Helm charts put on every object, which
// deploy/kubernetes has no use for.
var helmLabels = []string{"helm.sh/chart", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"}

// withoutHelmLabels removes helmLabels wherever labels stand: in metadata,
// selectors and pod templates.
func withoutHelmLabels(v any) {
	switch v := v.(type) {
	case map[string]any:
		for _, l := range helmLabels {
			delete(v, l)
		}
		for _, child := range v {
			withoutHelmLabels(child)
		}
	case []any:
		for _, child := range v {
			withoutHelmLabels(child)
		}
	}
}

// differences lists where a and b differ, by path, both ways.
func differences(a, b any, path string) []string {
	switch a := a.(type) {
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: %v, and %v", path, a, b)}
		}
		keys := map[string]bool{}
		for k := range a {
			keys[k] = true
		}
		for k := range bm {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		var out []string
		for _, k := range sorted {
			out = append(out, differences(a[k], bm[k], path+"."+k)...)
		}
		return out
	case []any:
		bl, ok := b.([]any)
		if !ok || len(bl) != len(a) {
			return []string{fmt.Sprintf("%s: %v, and %v", path, a, b)}
		}
		var out []string
		for i := range a {
			out = append(out, differences(a[i], bl[i], fmt.Sprintf("%s[%d]", path, i))...)
		}
		return out
	}
	if fmt.Sprintf("%#v", a) != fmt.Sprintf("%#v", b) {
		return []string{fmt.Sprintf("%s: %#v, and %#v", path, a, b)}
	}
	return nil
}
