package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// freeAddr is a loopback address with a port nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// server is a running `orphanwatch serve`.
type server struct {
	t      *testing.T
	Addr   string
	cmd    *exec.Cmd
	stdout *testenv.Buffer
	stderr *testenv.Buffer
	done   chan struct{}
	err    error // Wait's result, once done is closed
}

// startServe runs `orphanwatch serve` on a free loopback port.
func startServe(t *testing.T, args ...string) *server {
	t.Helper()
	s := &server{t: t, Addr: freeAddr(t), stdout: &testenv.Buffer{}, stderr: &testenv.Buffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(testenv.Binary(t), append([]string{"serve", "--web.listen-address=" + s.Addr}, args...)...)
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

// waitReady waits until /readyz answers 200.
func (s *server) waitReady(timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if code, _ := httpGet(s.t, "http://"+s.Addr+"/readyz"); code == 200 {
			return
		}
		select {
		case <-s.done:
			s.t.Fatalf("serve exited before it was ready (%v):\n%s", s.err, s.stderr)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("serve not ready after %s:\n%s", timeout, s.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// records are the JSON lines serve wrote on stdout so far.
func (s *server) records() []report.Record {
	s.t.Helper()
	var out []report.Record
	scan := bufio.NewScanner(strings.NewReader(s.stdout.String()))
	scan.Buffer(make([]byte, 1<<20), 1<<20)
	for scan.Scan() {
		var r report.Record
		if err := json.Unmarshal(scan.Bytes(), &r); err != nil {
			s.t.Errorf("serve wrote a stdout line that is not a record: %v: %s", err, scan.Text())
			continue
		}
		out = append(out, r)
	}
	return out
}

func (s *server) waitRecord(timeout time.Duration, match func(*report.Record) bool) (report.Record, bool) {
	deadline := time.Now().Add(timeout)
	for {
		for _, r := range s.records() {
			if match(&r) {
				return r, true
			}
		}
		if time.Now().After(deadline) {
			return report.Record{}, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// httpGet returns the status (0 when the request failed) and body.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// prometheus is a real Prometheus server (Debian's package) scraping one
// orphanwatch every second and evaluating deploy/prometheus's rules every
// second.
type prometheus struct {
	t    *testing.T
	URL  string
	logs *testenv.Buffer
}

func startPrometheus(t *testing.T, target string) *prometheus {
	t.Helper()
	testenv.RequireCommands(t, "prometheus")
	dir := t.TempDir()
	rules := filepath.Join(testenv.ModuleRoot(), "deploy", "prometheus", "orphanwatch.rules.yml")
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: orphanwatch
    static_configs:
      - targets: ['%s']
`, rules, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := &prometheus{t: t, URL: "http://" + addr, logs: &testenv.Buffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "prometheus",
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := httpGet(t, p.URL+"/-/ready"); code == 200 {
			break
		}
		select {
		case <-done:
			t.Fatalf("prometheus exited:\n%s", p.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 30s:\n%s", p.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p
}

// api GETs a Prometheus HTTP API path and decodes its data.
func (p *prometheus) api(path string, params url.Values, data any) {
	p.t.Helper()
	code, body := httpGet(p.t, p.URL+path+"?"+params.Encode())
	var resp struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil || code != 200 || resp.Status != "success" {
		p.t.Fatalf("GET %s %v: %d %s", path, params, code, body)
	}
	if err := json.Unmarshal(resp.Data, data); err != nil {
		p.t.Fatalf("%s: %v: %s", path, err, resp.Data)
	}
}

// sample is one element of an instant vector.
type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s sample) float() float64 {
	f, _ := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
	return f
}

// query runs an instant query.
func (p *prometheus) query(expr string) []sample {
	p.t.Helper()
	var data struct {
		ResultType string   `json:"resultType"`
		Result     []sample `json:"result"`
	}
	p.api("/api/v1/query", url.Values{"query": {expr}}, &data)
	return data.Result
}

// value is the value of a query that yields one sample; ok is false when
// it yields none.
func (p *prometheus) value(expr string) (float64, bool) {
	p.t.Helper()
	result := p.query(expr)
	switch len(result) {
	case 0:
		return 0, false
	case 1:
		return result[0].float(), true
	}
	p.t.Fatalf("%s: %d samples, want one", expr, len(result))
	return 0, false
}

// waitValue waits until a query yields one sample satisfying ok.
func (p *prometheus) waitValue(timeout time.Duration, expr string, ok func(float64) bool) (float64, bool) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, found := p.value(expr)
		if found && ok(v) {
			return v, true
		}
		if time.Now().After(deadline) {
			return v, false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// alert is one entry of /api/v1/alerts.
type alert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
	ActiveAt    time.Time         `json:"activeAt"`
	Value       string            `json:"value"`
}

// alerts lists the pending and firing alerts with that name about that
// container (other PostgreSQL servers may run on the host).
func (p *prometheus) alerts(name, containerID string) []alert {
	p.t.Helper()
	var data struct {
		Alerts []alert `json:"alerts"`
	}
	p.api("/api/v1/alerts", nil, &data)
	var out []alert
	for _, a := range data.Alerts {
		if a.Labels["alertname"] == name && a.Labels["container_id"] == containerID {
			out = append(out, a)
		}
	}
	return out
}

// rawAlerts is /api/v1/alerts as Prometheus reports it, for logs.
func (p *prometheus) rawAlerts() string {
	_, body := httpGet(p.t, p.URL+"/api/v1/alerts")
	var pretty bytes.Buffer
	if json.Indent(&pretty, []byte(body), "", "  ") != nil {
		return body
	}
	return pretty.String()
}

// waitFiring waits until the alert fires for that container, and returns it.
func (p *prometheus) waitFiring(timeout time.Duration, name, containerID string) (alert, bool) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, a := range p.alerts(name, containerID) {
			if a.State == "firing" {
				return a, true
			}
		}
		if time.Now().After(deadline) {
			return alert{}, false
		}
		time.Sleep(200 * time.Millisecond)
	}
}
