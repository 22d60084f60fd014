package testenv

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// PrometheusOperatorModule is the Prometheus Operator release whose CRDs
// the PodMonitor, ServiceMonitor and PrometheusRule manifests must satisfy.
// Its module holds them under example/prometheus-operator-crd; only the
// download is used, never a package, so it is not in go.mod.
const PrometheusOperatorModule = "github.com/prometheus-operator/prometheus-operator@v0.85.0"

// PrometheusOperatorCRDs downloads the operator's module (from the Go
// module cache when it is there) and returns the files of the CRDs named by
// their plurals (podmonitors, servicemonitors, prometheusrules).
func PrometheusOperatorCRDs(plurals ...string) ([]string, error) {
	dir, err := os.MkdirTemp("", "orphanwatch-crds-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command("go", "mod", "download", "-json", PrometheusOperatorModule)
	cmd.Dir = dir // outside this module, whose go.mod it must not touch
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	out, err := cmd.Output()
	var mod struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &mod); jerr != nil || mod.Error != "" || err != nil {
		return nil, fmt.Errorf("go mod download %s: %v %s %s", PrometheusOperatorModule, err, mod.Error, out)
	}
	var files []string
	for _, p := range plurals {
		f := filepath.Join(mod.Dir, "example", "prometheus-operator-crd", "monitoring.coreos.com_"+p+".yaml")
		if _, err := os.Stat(f); err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// InstallPrometheusOperatorCRDs applies the operator's CRDs named by their
// plurals, as the administrator, and waits until the API server serves
// them.
func (k *KubeAPI) InstallPrometheusOperatorCRDs(plurals ...string) error {
	files, err := PrometheusOperatorCRDs(plurals...)
	if err != nil {
		return err
	}
	args := []string{"apply", "--server-side"} // the CRDs are too large for apply's annotation
	for _, f := range files {
		args = append(args, "-f", f)
	}
	if _, err := k.KubectlWith(k.AdminKubeconfig, args...); err != nil {
		return err
	}
	// apiextensions, inside kube-apiserver, serves them once established.
	wait := []string{"wait", "--for=condition=Established", "--timeout=60s"}
	for _, p := range plurals {
		wait = append(wait, "crd/"+p+".monitoring.coreos.com")
	}
	_, err = k.KubectlWith(k.AdminKubeconfig, wait...)
	return err
}

// KubectlBinary is the kubectl that scripts/kube-apiserver.sh built, for
// commands that need no API server (kubectl kustomize). It fails the test
// under CI, and skips it elsewhere, when the binary is missing.
func KubectlBinary(t testing.TB) string {
	t.Helper()
	bin, err := KubeBinDir()
	if err != nil {
		t.Fatal(err)
	}
	kubectl := filepath.Join(bin, "kubectl")
	_, err = os.Stat(kubectl)
	Require(t, err == nil, "needs "+kubectl+": run scripts/kube-apiserver.sh (builds it once, minutes; scripts/test.sh does)")
	return kubectl
}

// Kustomize is `kubectl kustomize dir`: the objects `kubectl apply -k dir`
// would apply, as YAML.
func Kustomize(t testing.TB, dir string) string {
	t.Helper()
	cmd := exec.Command(KubectlBinary(t), "kustomize", dir)
	cmd.Env = append(os.Environ(), "KUBECONFIG=")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
	}
	return string(out)
}
