package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"

	"github.com/orphanwatch/orphanwatch/internal/kubeevents"
	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

// Kubernetes Events from a real agent to a real API server, about a real
// Docker PostgreSQL container. There is no kubelet: the test creates the
// pod a scheduler would bind to the agent's node and writes its status as
// the kubelet would, naming the container's id (docker://<id>). The agent
// runs as its own service account (deploy/kubernetes/rbac.yaml).

// incidents is how many crash-restarts the flood runs after the first.
const incidents = 50

// secret is a password the first incident's psql carries.
const secret = "s3cret-e2e"

func TestKubernetesEventsOnThePod(t *testing.T) {
	k := testenv.RequireKubeAPI(t)
	e := testenv.Docker(t)
	deploy := filepath.Join(testenv.ModuleRoot(), "deploy", "kubernetes")
	k.Kubectl(t, "apply", "-f", filepath.Join(deploy, "namespace.yaml"), "-f", filepath.Join(deploy, "rbac.yaml"))
	ns := k.NewNamespace(t, "db", nil)
	// A node of its own: pods outlive a -count rerun on this API server.
	suffix := make([]byte, 3)
	rand.Read(suffix)
	node := "node-" + hex.EncodeToString(suffix)

	c := testenv.StartPostgresContainer(t, e, dockerVersion, testenv.UniqueName("ow-kube"))
	uid := bindPod(t, k, ns, "pg-0", node, c)

	s := startServe(t, append([]string{"--kubernetes", "--node-name", node,
		"--kubeconfig", k.ServiceAccountKubeconfig(t, "orphanwatch", "orphanwatch")}, dockerTraceArgs(e)...)...)
	s.waitReady(30 * time.Second)
	named := func(r *report.Record) bool { return r.Namespace == ns && r.Pod == "pg-0" && r.Container == "postgres" }
	if pm, ok := s.waitRecord(15*time.Second, forPostmaster(c.PostmasterPID, "postmaster-pid1")); !ok || !named(&pm) {
		t.Fatalf("postmaster-pid1 record %+v (found %v), want it named %s/pg-0 postgres; serve stderr:\n%s", pm, ok, ns, s.stderr)
	}
	pid1 := waitEvents(t, k, ns, kubeevents.ReasonPostmasterIsPID1, 1)[0]
	checkRegarding(t, pid1, uid, node)
	writesBefore := apiServerEventWrites(t, k)

	// The seed incident, with a password in psql's connection string:
	// PostgreSQL's own log and the Event name the same process, and the
	// Event does not give the password away.
	if out, err := c.Shell(`psql -X -q -d "postgresql://postgres:` + secret + `@/postgres" -c "select generate_series(1,3000000)" | head -c 10 >/dev/null & exit`); err != nil {
		t.Fatalf("docker exec: %v: %s", err, out)
	}
	crash := forPostmaster(c.PostmasterPID, "crash-restart")
	r, ok := s.waitRecord(30*time.Second, crash)
	if !ok {
		t.Fatalf("no crash-restart record within 30s; serve stderr:\n%s\ndocker logs:\n%s", s.stderr, c.Logs())
	}
	if r.Comm != "psql" || r.Signal != "SIGPIPE" || !named(&r) {
		t.Errorf("crash-restart record: %s %s in %s/%s %s", r.Comm, r.Signal, r.Namespace, r.Pod, r.Container)
	}
	logged := waitCrashLines(t, c, 1)
	if logged[0].NSPid != r.NSPid {
		t.Errorf("PostgreSQL logged pid %d (%q), the record names ns_pid %d", logged[0].NSPid, logged[0].Message, r.NSPid)
	}
	ev := waitEvents(t, k, ns, kubeevents.ReasonCrashRestart, 1)[0]
	checkRegarding(t, ev, uid, node)
	for _, want := range []string{
		fmt.Sprintf("psql (pid %d, pid %d in its namespace)", r.PID, r.NSPid),
		"died of SIGPIPE", `PostgreSQL logs "` + logged[0].Message + `"`,
		"Origin: docker-exec (docker exec into container postgres: sh -c", "postgresql://postgres:***@/postgres", "Fix: ",
	} {
		if !strings.Contains(ev.Note, want) {
			t.Errorf("the Event's note lacks %q:\n%s", want, ev.Note)
		}
	}
	t.Logf("PostgreSQL %d logged: %s", c.Version, logged[0].Text)

	// What an operator reads.
	describe := k.Kubectl(t, "describe", "pod", "pg-0", "--namespace", ns)
	for _, want := range []string{"Warning  PostgresCrashRestart", "Warning  PostmasterIsPID1", fmt.Sprintf("psql (pid %d, pid %d in its namespace)", r.PID, r.NSPid)} {
		if !strings.Contains(describe, want) {
			t.Errorf("kubectl describe pod lacks %q:\n%s", want, describe)
		}
	}
	if strings.Contains(describe, secret) {
		t.Errorf("kubectl describe pod shows the password:\n%s", describe)
	}
	t.Logf("kubectl describe pod pg-0 after the incident:\n%s", describe)

	// A crash loop: the incident again and again. The recorder counts every
	// one and folds them into the Event's series; the API sees a handful of
	// writes.
	for i := range incidents {
		if err := c.Ready(60 * time.Second); err != nil {
			t.Fatalf("incident %d: %v\n%s", i+1, err, c.Logs())
		}
		if out, err := c.SeedIncident(); err != nil {
			t.Fatalf("incident %d: docker exec: %v: %s", i+1, err, out)
		}
		deadline := time.Now().Add(30 * time.Second)
		for s.count(crash) < i+2 {
			if time.Now().After(deadline) {
				t.Fatalf("incident %d: %d crash-restart records; %s\nserve stderr:\n%s", i+1, s.count(crash), s.unmatched(c), s.stderr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	crashes := s.count(crash)
	recorded := s.waitMetric(10*time.Second, "orphanwatch_kubernetes_events_total", `reason="PostgresCrashRestart"`, float64(crashes))
	if recorded != float64(crashes) {
		t.Errorf("orphanwatch_kubernetes_events_total{reason=PostgresCrashRestart} = %v, want %d (one per crash-restart record)", recorded, crashes)
	}
	time.Sleep(2 * time.Second) // the recorder writes from its own goroutines

	stored := podEvents(t, k, ns)
	byReason := map[string][]eventsv1.Event{}
	for _, ev := range stored {
		byReason[ev.Reason] = append(byReason[ev.Reason], ev)
		if ev.ReportingController != "orphanwatch" {
			t.Errorf("an Event on pg-0 not from orphanwatch: %+v", ev)
		}
	}
	if evs := byReason[kubeevents.ReasonCrashRestart]; len(evs) != 1 || evs[0].Series == nil || evs[0].Series.Count < 2 {
		t.Errorf("after %d crash-restarts: %d PostgresCrashRestart Events (%+v), want one whose series counts them", crashes, len(evs), evs)
	}
	if n := len(byReason[kubeevents.ReasonPostmasterIsPID1]); n != 1 {
		t.Errorf("%d PostmasterIsPID1 Events, want 1 (one postmaster)", n)
	}
	if n := len(byReason[kubeevents.ReasonCrashRestartUnexplained]); n > 1 {
		t.Errorf("%d PostgresCrashRestartUnexplained Events, want at most 1 (a series)", n)
	}
	written := s.metric("orphanwatch_kubernetes_event_writes_total", "")
	failed := s.metric("orphanwatch_kubernetes_event_write_errors_total", "")
	dropped := s.metric("orphanwatch_kubernetes_events_dropped_total", "")
	apiWrites := apiServerEventWrites(t, k) - writesBefore
	// The first incident's create and the series' patch, perhaps an
	// unexplained restart's: far below one pod's budget, so none dropped.
	if written+failed > kubeevents.Burst || dropped != 0 || failed != 0 {
		t.Errorf("%d incidents: %v Event writes, %v failed, %v dropped; want at most %d writes, none failed or dropped", crashes, written, failed, dropped, kubeevents.Burst)
	}
	// The API server's own count of events.k8s.io writes since the first
	// Event (the PostmasterIsPID1 create) agrees with the agent's.
	if apiWrites != written+failed-1 {
		t.Errorf("the API server counted %v Event writes since the first Event, the agent %v (+%v failed) in all", apiWrites, written, failed)
	}
	t.Logf("%d crash-restarts: %d Events on pg-0 (%s series count %d), %v writes by the agent, %v by the API server's count after the first, %v dropped",
		crashes, len(stored), kubeevents.ReasonCrashRestart, byReason[kubeevents.ReasonCrashRestart][0].Series.Count, written, apiWrites, dropped)
	t.Logf("kubectl describe pod pg-0 after the crash loop:\n%s", k.Kubectl(t, "describe", "pod", "pg-0", "--namespace", ns))
	t.Logf("kubectl get events after the crash loop:\n%s", k.Kubectl(t, "get", "events", "--namespace", ns))
}

// bindPod creates pod name on node as a scheduler would, writes its status
// as the kubelet would (running the container c), and returns its UID.
func bindPod(t *testing.T, k *testenv.KubeAPI, ns, name, node string, c *testenv.PostgresContainer) string {
	t.Helper()
	image := fmt.Sprintf("orphanwatch-postgres:%d", c.Version)
	manifest := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(manifest, []byte(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  nodeName: %s
  containers: [{name: postgres, image: %q}]
`, name, ns, node, image)), 0o600); err != nil {
		t.Fatal(err)
	}
	k.Kubectl(t, "apply", "-f", manifest)
	status := fmt.Sprintf(`{"status":{"phase":"Running","containerStatuses":[{"name":"postgres","image":%q,"imageID":"","containerID":"docker://%s","ready":true,"restartCount":0,"state":{"running":{"startedAt":%q}}}]}}`,
		image, c.ID, time.Now().UTC().Format(time.RFC3339))
	k.Kubectl(t, "patch", "pod", name, "--namespace", ns, "--subresource=status", "--type=merge", "-p", status)
	uid := k.Kubectl(t, "get", "pod", name, "--namespace", ns, "-o", "jsonpath={.metadata.uid}")
	if uid == "" {
		t.Fatalf("pod %s/%s has no UID", ns, name)
	}
	return uid
}

// podEvents are the events.k8s.io Events in ns regarding pg-0.
func podEvents(t *testing.T, k *testenv.KubeAPI, ns string) []eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	if err := json.Unmarshal([]byte(k.Kubectl(t, "get", "events.events.k8s.io", "--namespace", ns, "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	var out []eventsv1.Event
	for _, ev := range list.Items {
		if ev.Regarding.Kind == "Pod" && ev.Regarding.Name == "pg-0" {
			out = append(out, ev)
		}
	}
	return out
}

// waitEvents waits up to 30 s for n Events of reason regarding pg-0.
func waitEvents(t *testing.T, k *testenv.KubeAPI, ns, reason string, n int) []eventsv1.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got []eventsv1.Event
		for _, ev := range podEvents(t, k, ns) {
			if ev.Reason == reason {
				got = append(got, ev)
			}
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s Events on %s/pg-0 after 30s, want %d; all: %+v", len(got), reason, ns, n, podEvents(t, k, ns))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkRegarding: the Event is a Warning about pg-0's postgres container,
// by its UID (which kubectl describe pod looks for), from orphanwatch on
// the node.
func checkRegarding(t *testing.T, ev eventsv1.Event, uid, node string) {
	t.Helper()
	re := ev.Regarding
	if re.APIVersion != "v1" || re.Kind != "Pod" || re.Name != "pg-0" || string(re.UID) != uid || re.FieldPath != "spec.containers{postgres}" {
		t.Errorf("%s regarding %+v, want pod pg-0 (uid %s), container postgres", ev.Reason, re, uid)
	}
	if ev.Type != "Warning" || ev.ReportingController != kubeevents.Controller || ev.ReportingInstance != node || ev.Action == "" {
		t.Errorf("%s: type %s, action %q, from %s/%s; want a Warning from orphanwatch/%s", ev.Reason, ev.Type, ev.Action, ev.ReportingController, ev.ReportingInstance, node)
	}
}

// waitCrashLines waits for PostgreSQL to log n crashes in the container.
func waitCrashLines(t *testing.T, c *testenv.PostgresContainer, n int) []testenv.ChildExit {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if logged := testenv.CrashLines(c.Logs()); len(logged) >= n {
			return logged
		}
		if time.Now().After(deadline) {
			t.Fatalf("PostgreSQL logged fewer than %d crashes; docker logs:\n%s", n, c.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// apiServerEventWrites is the API server's own count of create and patch
// requests on events.k8s.io Events, whatever their answer.
func apiServerEventWrites(t *testing.T, k *testenv.KubeAPI) float64 {
	t.Helper()
	body := k.Kubectl(t, "get", "--raw", "/metrics")
	return sumSamples(body, "apiserver_request_total", `group="events.k8s.io"`, `verb="POST"`) +
		sumSamples(body, "apiserver_request_total", `group="events.k8s.io"`, `verb="PATCH"`)
}

// sumSamples adds up the samples of a metric, in Prometheus' text format,
// whose labels contain every one of labels.
func sumSamples(body, name string, labels ...string) float64 {
	sum := 0.0
	for line := range strings.Lines(body) {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		match := true
		for _, l := range labels {
			match = match && (l == "" || strings.Contains(rest, l))
		}
		f := strings.Fields(rest)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); match && err == nil {
			sum += v
		}
	}
	return sum
}

// count is how many records serve wrote that match.
func (s *server) count(match func(*report.Record) bool) int {
	n := 0
	for _, r := range s.records() {
		if match(&r) {
			n++
		}
	}
	return n
}

// unmatched says which crashes PostgreSQL logged have no crash-restart
// record, and every record of those pids: what a failure needs to show.
func (s *server) unmatched(c *testenv.PostgresContainer) string {
	recorded := map[uint32]bool{}
	for _, r := range s.records() {
		if r.Verdict == "crash-restart" {
			recorded[r.NSPid] = true
		}
	}
	var b strings.Builder
	for _, l := range testenv.CrashLines(c.Logs()) {
		if recorded[l.NSPid] {
			continue
		}
		fmt.Fprintf(&b, "no crash-restart record for %q; its records:", l.Text)
		for _, r := range s.records() {
			if r.NSPid == l.NSPid {
				how := r.Signal
				if r.ExitCode != nil {
					how = fmt.Sprintf("exit %d", *r.ExitCode)
				}
				fmt.Fprintf(&b, "\n  %s %s pid %d %s %s", r.Time.Format("15:04:05.000"), r.Verdict, r.PID, r.Comm, how)
			}
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "events lost %v, reaps missed %v", s.metric("orphanwatch_events_lost_total", ""), s.metric("orphanwatch_reaps_missed_total", ""))
	return b.String()
}

// metric sums a metric's samples from serve's /metrics.
func (s *server) metric(name, label string) float64 {
	s.t.Helper()
	code, body := httpGet(s.t, "http://"+s.Addr+"/metrics")
	if code != 200 {
		s.t.Fatalf("/metrics = %d: %s", code, body)
	}
	return sumSamples(body, name, label)
}

// waitMetric waits up to timeout for a metric to reach want, and returns
// its last value.
func (s *server) waitMetric(timeout time.Duration, name, label string, want float64) float64 {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := s.metric(name, label)
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
}
