package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// KubeAPI is a Kubernetes control plane without nodes: an etcd and a
// kube-apiserver, both on 127.0.0.1 only, with RBAC and a token for an
// administrator (group system:masters). There is no controller manager,
// scheduler or kubelet, so nothing acts on what is stored: a DaemonSet makes
// no pods, a pod never runs, a namespace never finishes terminating. Tests
// create what those would (pods with spec.nodeName, their status through
// pods/status, a namespace's default service account).
//
// One is started per test process, on first use, and stopped by
// MainWithKubeAPI. Packages do not share one: scripts/test.sh runs them
// one at a time (-p 1) and a start takes a few seconds.
type KubeAPI struct {
	URL             string // https://127.0.0.1:<port>
	Dir             string // certificates, token file, logs, kubeconfigs
	AdminKubeconfig string // a kubeconfig with the administrator's token

	ca       []byte // PEM of the CA that signed the serving certificate
	kubectl  string
	etcdData string     // when not under Dir
	procs    []*process // stopped in reverse order: the API server before etcd
}

// The admission configuration: as on GKE, pods of the critical priority
// classes are admitted only in a namespace with a ResourceQuota covering
// them (deploy/kubernetes/resourcequota.yaml exists for that).
const kubeAdmissionConfig = `apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
  - name: ResourceQuota
    configuration:
      apiVersion: apiserver.config.k8s.io/v1
      kind: ResourceQuotaConfiguration
      limitedResources:
        - resource: pods
          matchScopes:
            - scopeName: PriorityClass
              operator: In
              values: ["system-node-critical", "system-cluster-critical"]
`

var (
	kubeOnce sync.Once
	kube     *KubeAPI
	kubeErr  error
)

// KubeBinDir is where scripts/kube-apiserver.sh puts kube-apiserver and
// kubectl (the script owns the version and the cache's location).
func KubeBinDir() (string, error) {
	out, err := exec.Command("bash", filepath.Join(ModuleRoot(), "scripts", "kube-apiserver.sh"), "--path").Output()
	if err != nil {
		return "", fmt.Errorf("scripts/kube-apiserver.sh --path: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// RequireKubeAPI returns the process's API server, starting it on first
// use. It needs kube-apiserver and kubectl from scripts/kube-apiserver.sh
// and etcd (Debian's etcd-server); no root.
func RequireKubeAPI(t testing.TB) *KubeAPI {
	t.Helper()
	bin, err := KubeBinDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kube-apiserver", "kubectl"} {
		_, err := os.Stat(filepath.Join(bin, name))
		Require(t, err == nil, "needs "+filepath.Join(bin, name)+": run scripts/kube-apiserver.sh (builds it once, minutes; scripts/test.sh does)")
	}
	etcd, err := exec.LookPath("etcd")
	Require(t, err == nil, "needs etcd on PATH (apt-get install etcd-server; scripts/deps.sh)")
	kubeOnce.Do(func() { kube, kubeErr = startKubeAPI(bin, etcd) })
	if kubeErr != nil {
		t.Fatal(kubeErr)
	}
	return kube
}

// MainWithKubeAPI is Main for packages that use RequireKubeAPI: it also
// stops the API server and etcd and removes their files.
func MainWithKubeAPI(m *testing.M) {
	code := m.Run()
	if kube != nil {
		kube.stop()
	}
	RemoveBuilt()
	os.Exit(code)
}

func startKubeAPI(bin, etcd string) (k *KubeAPI, err error) {
	removeStale(os.TempDir(), "orphanwatch-kube-")
	removeStale("/dev/shm", "orphanwatch-etcd-")
	dir, err := os.MkdirTemp("", fmt.Sprintf("orphanwatch-kube-%d-", os.Getpid()))
	if err != nil {
		return nil, err
	}
	k = &KubeAPI{Dir: dir, kubectl: filepath.Join(bin, "kubectl")}
	defer func() {
		if err != nil {
			k.stop()
			k = nil
		}
	}()
	adminToken, err := k.writeFiles()
	if err != nil {
		return k, err
	}

	// etcd fsyncs every write (3.4 has no --unsafe-no-fsync): in memory,
	// where there is a tmpfs, so that a busy disk does not slow the tests.
	etcdData := filepath.Join(dir, "etcd")
	if shm, err := os.MkdirTemp("/dev/shm", fmt.Sprintf("orphanwatch-etcd-%d-", os.Getpid())); err == nil {
		etcdData = shm
		k.etcdData = shm
	}

	// A free port is only free until someone takes it: another test
	// process may, between our probe and etcd's bind. Then try again.
	var etcdURL string
	for attempt := 0; ; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			return k, err
		}
		client, peer := fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		p, err := startProcess("etcd", filepath.Join(dir, "etcd.log"), etcd,
			"--name=orphanwatch-test", "--data-dir="+etcdData, "--logger=zap",
			"--listen-client-urls="+client, "--advertise-client-urls="+client,
			"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
			"--initial-cluster=orphanwatch-test="+peer)
		if err != nil {
			return k, err
		}
		err = waitHealthy(p, client+"/health", nil, "", `"health":"true"`, 30*time.Second)
		if err == nil {
			k.procs = append(k.procs, p)
			etcdURL = client
			break
		}
		p.stop()
		if attempt == 2 || !p.portTaken() {
			return k, err
		}
		os.RemoveAll(etcdData)
		os.MkdirAll(etcdData, 0o700)
	}

	for attempt := 0; ; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			return k, err
		}
		k.URL = fmt.Sprintf("https://127.0.0.1:%d", ports[0])
		p, err := startProcess("kube-apiserver", filepath.Join(dir, "kube-apiserver.log"), filepath.Join(bin, "kube-apiserver"),
			"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", ports[0]),
			"--etcd-servers="+etcdURL,
			"--cert-dir="+filepath.Join(dir, "cert-dir"), // unused (the files below are given), but kept out of /var/run/kubernetes
			"--tls-cert-file="+filepath.Join(dir, "serving.crt"), "--tls-private-key-file="+filepath.Join(dir, "serving.key"),
			"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file="+filepath.Join(dir, "service-account.key"),
			"--service-account-signing-key-file="+filepath.Join(dir, "service-account.key"),
			// The kubernetes Service's ClusterIP comes from it; nothing routes it.
			"--service-cluster-ip-range=10.96.0.0/16",
			// The kubernetes Service's endpoint would be the advertise
			// address, which may not be a loopback one: publish none.
			"--endpoint-reconciler-type=none",
			// hostPID pods are refused without it; kubeadm and managed
			// clusters set it.
			"--allow-privileged=true",
			// The default admission plugins, as a real cluster runs them
			// (ServiceAccount included: tests create the service account
			// a pod names, as the controller manager would), with the
			// configuration above.
			"--admission-control-config-file="+filepath.Join(dir, "admission.yaml"),
			"--profiling=false")
		if err != nil {
			return k, err
		}
		err = waitHealthy(p, k.URL+"/readyz", k.ca, adminToken, "ok", 90*time.Second)
		if err == nil {
			k.procs = append(k.procs, p)
			return k, os.WriteFile(k.AdminKubeconfig, k.kubeconfig(adminToken), 0o600)
		}
		p.stop()
		if attempt == 2 || !p.portTaken() {
			return k, err
		}
	}
}

// writeFiles writes the certificates, keys, token file, admission
// configuration and the administrator's kubeconfig, and returns the
// administrator's token.
func (k *KubeAPI) writeFiles() (string, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	now := time.Now()
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "orphanwatch test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return "", err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "", err
	}
	servingKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	servingDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
	}, caCert, &servingKey.PublicKey, caKey)
	if err != nil {
		return "", err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	keyPEM := func(key *ecdsa.PrivateKey) ([]byte, error) {
		der, err := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), err
	}
	servingKeyPEM, err := keyPEM(servingKey)
	if err != nil {
		return "", err
	}
	saKeyPEM, err := keyPEM(saKey)
	if err != nil {
		return "", err
	}
	k.ca = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	token := make([]byte, 24)
	rand.Read(token)
	adminToken := hex.EncodeToString(token)

	k.AdminKubeconfig = filepath.Join(k.Dir, "admin.kubeconfig")
	for name, data := range map[string][]byte{
		"ca.crt":              k.ca,
		"serving.crt":         pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: servingDER}),
		"serving.key":         servingKeyPEM,
		"service-account.key": saKeyPEM,
		// token,user,uid,"groups"
		"tokens.csv":     []byte(adminToken + `,admin,admin,"system:masters"` + "\n"),
		"admission.yaml": []byte(kubeAdmissionConfig),
	} {
		if err := os.WriteFile(filepath.Join(k.Dir, name), data, 0o600); err != nil {
			return "", err
		}
	}
	return adminToken, nil
}

// kubeconfig is a kubeconfig for this API server and a bearer token.
func (k *KubeAPI) kubeconfig(token string) []byte {
	return []byte(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "` + k.URL + `", certificate-authority-data: ` + base64.StdEncoding.EncodeToString(k.ca) + `}}]
users: [{name: test, user: {token: "` + token + `"}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
current-context: test
`)
}

// TokenKubeconfig writes a kubeconfig for token in a test's directory and
// returns its path.
func (k *KubeAPI) TokenKubeconfig(t testing.TB, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, k.kubeconfig(token), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ServiceAccountKubeconfig writes a kubeconfig holding a token of the
// service account namespace/name, from the TokenRequest API as the kubelet
// gets a pod's projected token, and returns its path.
func (k *KubeAPI) ServiceAccountKubeconfig(t testing.TB, namespace, name string) string {
	t.Helper()
	token := strings.TrimSpace(k.Kubectl(t, "create", "token", name, "--namespace", namespace, "--duration=1h"))
	if token == "" {
		t.Fatalf("no token for service account %s/%s", namespace, name)
	}
	return k.TokenKubeconfig(t, token)
}

// NewNamespace creates a namespace with these labels and the default
// service account that the controller manager would add (ServiceAccount
// admission refuses pods without it), and returns its name: prefix and a
// random suffix, since a namespace is never finished deleting here and
// -count reruns tests against the same API server.
func (k *KubeAPI) NewNamespace(t testing.TB, prefix string, labels map[string]string) string {
	t.Helper()
	suffix := make([]byte, 3)
	rand.Read(suffix)
	name := prefix + "-" + hex.EncodeToString(suffix)
	k.Kubectl(t, "create", "namespace", name)
	if len(labels) > 0 {
		args := []string{"label", "namespace", name}
		for key, value := range labels {
			args = append(args, key+"="+value)
		}
		k.Kubectl(t, args...)
	}
	k.Kubectl(t, "create", "serviceaccount", "default", "--namespace", name)
	return name
}

// Kubectl runs kubectl as the administrator and returns its standard
// output; any failure fails the test.
func (k *KubeAPI) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := k.KubectlWith(k.AdminKubeconfig, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// KubectlWith runs kubectl with a kubeconfig and returns its standard
// output, and an error holding its standard error when it fails (kubectl
// auth can-i answers "no" with status 1).
func (k *KubeAPI) KubectlWith(kubeconfig string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.kubectl, append([]string{"--kubeconfig=" + kubeconfig}, args...)...)
	// Its discovery cache, and nothing from the user's ~/.kube.
	cmd.Env = append(os.Environ(), "HOME="+k.Dir, "KUBECONFIG=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// Log is the tail of the API server's log, for a failure message.
func (k *KubeAPI) Log() string {
	return tail(filepath.Join(k.Dir, "kube-apiserver.log"), 40)
}

func (k *KubeAPI) stop() {
	for i := len(k.procs) - 1; i >= 0; i-- {
		k.procs[i].stop()
	}
	os.RemoveAll(k.Dir)
	if k.etcdData != "" {
		os.RemoveAll(k.etcdData)
	}
}

// removeStale removes the directories <prefix><pid>-* in parent of test
// processes that are gone: one that panicked or timed out never reached
// MainWithKubeAPI (its servers died with it, by Pdeathsig), and etcd's
// 64 MiB write-ahead log would stay in memory on /dev/shm.
func removeStale(parent, prefix string) {
	dirs, _ := filepath.Glob(filepath.Join(parent, prefix+"*-*"))
	for _, dir := range dirs {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(dir), prefix), "-")
		n, err := strconv.Atoi(pid)
		if err == nil && n > 0 && syscall.Kill(n, 0) == syscall.ESRCH {
			os.RemoveAll(dir)
		}
	}
}

// freePorts returns n distinct ports that were free on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitHealthy polls url (with the CA and bearer token, when given) until
// it answers 200 with a body containing want, or p exits, or timeout.
func waitHealthy(p *process, url string, ca []byte, token, want string, timeout time.Duration) error {
	client := &http.Client{Timeout: 5 * time.Second}
	if ca != nil {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v; its log:\n%s", p.name, p.err, tail(p.log, 40))
		case <-time.After(200 * time.Millisecond):
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			last = err.Error()
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && strings.Contains(string(body), want) {
			return nil
		}
		last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body)
	}
	return fmt.Errorf("%s not ready at %s after %s (%s); its log:\n%s", p.name, url, timeout, last, tail(p.log, 40))
}

// process is a server the tests started, killed with the test binary.
type process struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed once it exited; err is then set
	err  error
}

func startProcess(name, log, path string, args ...string) (*process, error) {
	f, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	p := &process{name: name, log: log, cmd: exec.Command(path, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	// A test binary that panics or times out never reaches MainWithKubeAPI's
	// stop: the kernel then kills the servers. Pdeathsig fires when the
	// thread that forked the child exits, so that thread stays locked to
	// the goroutine that waits for the child, for the child's whole life.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the child
		defer f.Close()
		if err := p.cmd.Start(); err != nil {
			started <- fmt.Errorf("starting %s: %w", name, err)
			return
		}
		started <- nil
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// stop asks the server to stop, and kills it if it has not within 15s.
func (p *process) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// portTaken reports whether the server failed because its port was taken.
func (p *process) portTaken() bool {
	data, _ := os.ReadFile(p.log)
	return bytes.Contains(data, []byte("address already in use"))
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
