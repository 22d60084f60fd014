package exporter

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startServer serves an exporter on a loopback port and returns its address.
func startServer(t *testing.T, webConfig string) (*Server, string) {
	t.Helper()
	srv, addrs := startServerOn(t, 1, webConfig)
	return srv, addrs[0]
}

// startServerOn serves an exporter on n loopback ports.
func startServerOn(t *testing.T, n int, webConfig string) (*Server, []string) {
	t.Helper()
	var listeners []net.Listener
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, l)
		addrs = append(addrs, l.Addr().String())
	}
	srv, err := NewServer(ServerConfig{Listeners: listeners, TelemetryPath: "/metrics", WebConfigFile: webConfig, Registry: NewRegistry(New(Config{}))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v after Shutdown, want nil", err)
		}
	})
	return srv, addrs
}

func get(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestReadyOnlyOnceAttached(t *testing.T) {
	srv, addr := startServer(t, "")
	base := "http://" + addr
	c := http.DefaultClient
	if code, body := get(t, c, base+"/healthz"); code != 200 {
		t.Errorf("/healthz while loading = %d %q, want 200", code, body)
	}
	if code, body := get(t, c, base+"/readyz"); code != 503 || !strings.Contains(body, "loading") {
		t.Errorf("/readyz while loading = %d %q, want 503 saying it is loading", code, body)
	}
	srv.Ready("attached tp_btf/sched_process_exit")
	if code, body := get(t, c, base+"/readyz"); code != 200 || !strings.Contains(body, "sched_process_exit") {
		t.Errorf("/readyz once attached = %d %q, want 200 naming the hooks", code, body)
	}
	srv.NotReady("shutting down")
	if code, _ := get(t, c, base+"/readyz"); code != 503 {
		t.Errorf("/readyz while shutting down = %d, want 503", code)
	}
	if code, body := get(t, c, base+"/"); code != 200 || !strings.Contains(body, `href="/metrics"`) {
		t.Errorf("landing page = %d, want 200 linking the metrics:\n%s", code, body)
	}
	if code, _ := get(t, c, base+"/nothing"); code != 404 {
		t.Errorf("/nothing = %d, want 404", code)
	}
	if code, body := get(t, c, base+"/metrics"); code != 200 || !strings.Contains(body, "orphanwatch_build_info{") || !strings.Contains(body, "process_start_time_seconds") {
		t.Errorf("/metrics = %d, want build info and process metrics:\n%s", code, body)
	}
}

// The password is "scrape-secret" (bcrypt, cost 4 to keep the test fast).
const webConfig = `tls_server_config:
  cert_file: %CERT%
  key_file: %KEY%
basic_auth_users:
  prometheus: $2a$04$So66HT.uWTxkKABKpXGPFOMA9s/PI.EjtjxPLlJ8FhWgFOnFrdnQK
`

// writeWebConfig writes a web config with a fresh certificate and returns
// its path and a pool trusting the certificate.
func writeWebConfig(t *testing.T) (string, *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	pool := selfSigned(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	cfg := strings.NewReplacer("%CERT%", filepath.Join(dir, "cert.pem"), "%KEY%", filepath.Join(dir, "key.pem")).Replace(webConfig)
	path := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, pool
}

func TestWebConfigGivesTLSAndBasicAuth(t *testing.T) {
	path, pool := writeWebConfig(t)
	_, addr := startServer(t, path)
	checkTLSAndBasicAuth(t, addr, pool)
}

// Each listener serves TLS and basic auth on its own http.Server:
// exporter-toolkit's Serve sets a server's Handler and TLSConfig, so on a
// shared server listeners raced on them (go test -race) and wrapped basic
// auth once per listener.
func TestWebConfigOnSeveralListeners(t *testing.T) {
	path, pool := writeWebConfig(t)
	_, addrs := startServerOn(t, 3, path)
	for _, addr := range addrs {
		checkTLSAndBasicAuth(t, addr, pool)
	}
}

func checkTLSAndBasicAuth(t *testing.T, addr string, pool *x509.CertPool) {
	t.Helper()
	tlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	// Go's TLS server answers a plain-HTTP request with a 400.
	if code, _ := get(t, http.DefaultClient, "http://"+addr+"/metrics"); code == 200 {
		t.Error("plain HTTP served the metrics")
	}
	if code, _ := get(t, tlsClient, "https://"+addr+"/metrics"); code != 401 {
		t.Errorf("HTTPS without credentials = %d, want 401", code)
	}
	req, _ := http.NewRequest("GET", "https://"+addr+"/metrics", nil)
	req.SetBasicAuth("prometheus", "scrape-secret")
	resp, err := tlsClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "orphanwatch_build_info") {
		t.Errorf("%s: HTTPS with credentials = %d, want 200 and the metrics", addr, resp.StatusCode)
	}
}

func TestTelemetryPathMustBeAPathOfItsOwn(t *testing.T) {
	for _, p := range []string{"", "metrics", "/", "/healthz", "/readyz"} {
		if err := CheckTelemetryPath(p); err == nil {
			t.Errorf("telemetry path %q accepted", p)
		}
	}
	if err := CheckTelemetryPath("/metrics"); err != nil {
		t.Errorf("/metrics: %v", err)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns a
// pool trusting it.
func selfSigned(t *testing.T, certPath, keyPath string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "orphanwatch test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}
