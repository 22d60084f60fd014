package kubeevents

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/orphanwatch/orphanwatch/internal/report"
	"github.com/orphanwatch/orphanwatch/internal/testenv"
)

const (
	node   = "node-a"
	pg0UID = "6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
)

// pods is the namer's view: pg-0's API UID.
type pods map[string]string

func (p pods) PodUID(namespace, name string) string { return p[namespace+"/"+name] }

// start records into client-go's fake clientset, on a clock that stands
// still (no budget refills), and returns what the recorder logs.
func start(t *testing.T, client *fake.Clientset) (*Recorder, *testenv.Buffer) {
	t.Helper()
	var logged testenv.Buffer
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	r, err := New(t.Context(), Config{
		Client: client.EventsV1(), Node: node, Pods: pods{"db/pg-0": pg0UID},
		Log: slog.New(slog.NewTextHandler(&logged, nil)), Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r, &logged
}

// storedEvents waits until the fake API holds n Events in ns that satisfy
// ok, and returns them.
func storedEvents(t *testing.T, client *fake.Clientset, ns string, n int, ok func([]eventsv1.Event) bool) []eventsv1.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := client.EventsV1().Events(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) == n && (ok == nil || ok(list.Items)) {
			return list.Items
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API holds %d Events in %s, want %d: %+v", len(list.Items), ns, n, list.Items)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitStats(t *testing.T, r *Recorder, reason string, ok func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, s := range r.Stats() {
			if s.Reason == reason && ok(s) {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: stats %+v", reason, r.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The seed incident on a pod: one Warning regarding the pod (its UID from
// the namer) and its container, from orphanwatch on this node; repeats
// fold into the Event's series instead of new Events.
func TestCrashRestartEventRegardsThePodAndRepeatsFormASeries(t *testing.T) {
	client := fake.NewClientset()
	r, _ := start(t, client)
	rec := seedRecord()
	if err := r.Write(&rec); err != nil {
		t.Fatal(err)
	}
	ev := storedEvents(t, client, "db", 1, nil)[0]
	want := corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: "db", Name: "pg-0", UID: pg0UID, FieldPath: "spec.containers{postgres}"}
	if ev.Regarding != want || ev.Related != nil {
		t.Errorf("regarding %+v related %+v, want %+v", ev.Regarding, ev.Related, want)
	}
	if ev.Type != corev1.EventTypeWarning || ev.Reason != ReasonCrashRestart || ev.Action != "CrashRestart" ||
		ev.ReportingController != "orphanwatch" || ev.ReportingInstance != node || ev.EventTime.IsZero() {
		t.Errorf("event %s %s %s from %s/%s at %v", ev.Type, ev.Reason, ev.Action, ev.ReportingController, ev.ReportingInstance, ev.EventTime)
	}
	if o, _ := occurrenceOf(&rec); ev.Note != o.note {
		t.Errorf("note %q, want %q", ev.Note, o.note)
	}

	for range 4 {
		again := seedRecord()
		again.PID, again.NSPid = 15000, 11
		if err := r.Write(&again); err != nil {
			t.Fatal(err)
		}
	}
	stored := storedEvents(t, client, "db", 1, func(evs []eventsv1.Event) bool { return evs[0].Series != nil })[0]
	if stored.Series.Count != 2 || stored.Name != ev.Name {
		t.Errorf("after 5 incidents: %s with series %+v, want %s with count 2 (the recorder writes later counts at the series' heartbeat and end)", stored.Name, stored.Series, ev.Name)
	}
	s := waitStats(t, r, ReasonCrashRestart, func(s Stats) bool { return s.Written == 2 })
	if s.Recorded != 5 || s.Dropped != 0 || s.Errors != 0 {
		t.Errorf("stats %+v, want 5 recorded, 2 written (create, series patch)", s)
	}
}

// Records that name no pod (a Docker container, the host) make no Event,
// and PostmasterIsPID1 comes once per postmaster, however often the agent
// reports it (at start, after a sweep's rediscovery).
func TestOnlyPodsGetEventsAndPID1OncePerPostmaster(t *testing.T) {
	client := fake.NewClientset()
	r, _ := start(t, client)
	docker := seedRecord()
	docker.Namespace, docker.Pod = "", ""
	host := seedRecord()
	host.Namespace, host.Pod, host.Container, host.ContainerID = "", "", "", ""
	pid1 := func(containerID string, pm uint32) *report.Record {
		return &report.Record{Verdict: "postmaster-pid1", Kind: "running", PID: pm, NSPid: 1, ContainerID: containerID,
			Namespace: "db", Pod: "pg-0", Container: "postgres", Postmaster: &report.PostmasterRecord{PID: pm, NSPid: 1, PID1: true},
			Summary: fmt.Sprintf("postmaster postgres (pid %d, pid 1 in its namespace) is PID 1 of its PID namespace", pm)}
	}
	for _, rec := range []*report.Record{&docker, &host, pid1("c1", 100), pid1("c1", 100), pid1("c1", 100)} {
		if err := r.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	storedEvents(t, client, "db", 1, nil)
	// The container restarted: a new postmaster, the same pod and
	// container, so the same Event's series.
	r.Write(pid1("c2", 200))
	ev := storedEvents(t, client, "db", 1, func(evs []eventsv1.Event) bool { return evs[0].Series != nil })[0]
	if ev.Reason != ReasonPostmasterIsPID1 || ev.Series.Count != 2 {
		t.Errorf("%s series %+v, want PostmasterIsPID1 x2", ev.Reason, ev.Series)
	}
	if s := waitStats(t, r, ReasonPostmasterIsPID1, func(s Stats) bool { return s.Written == 2 }); s.Recorded != 2 {
		t.Errorf("PostmasterIsPID1 recorded %d times, want 2 (two container starts)", s.Recorded)
	}
	if s := r.Stats()[0]; s.Recorded != 0 {
		t.Errorf("records naming no pod recorded: %+v", s)
	}
}

// A pod that makes many distinct Events (here OOM kills in 15 containers)
// gets Burst writes, the rest dropped and counted, logged once; another
// pod's budget is its own. The recorder's own complaint about each refusal
// stays out of the log.
func TestEachPodHasABudgetOfWrites(t *testing.T) {
	client := fake.NewClientset()
	r, logged := start(t, client)
	oom := func(pod, container string) *report.Record {
		return &report.Record{Verdict: "oom-kill", Kind: "oom", Namespace: "db", Pod: pod, Container: container,
			Summary: "the OOM killer chose postgres (pid 12, server, oom_score_adj 0, memcg constraint)"}
	}
	for i := range 15 {
		r.Write(oom("pg-0", fmt.Sprintf("c%d", i)))
	}
	s := waitStats(t, r, ReasonOOMKill, func(s Stats) bool { return s.Written+s.Dropped == 15 })
	if s.Written != Burst || s.Dropped != 15-Burst || s.Recorded != 15 {
		t.Errorf("15 distinct Events on one pod: %+v, want %d written and %d dropped", s, Burst, 15-Burst)
	}
	storedEvents(t, client, "db", Burst, nil)

	r.Write(oom("pg-1", "postgres"))
	waitStats(t, r, ReasonOOMKill, func(s Stats) bool { return s.Written == Burst+1 })
	if n := strings.Count(logged.String(), "over budget"); n != 1 {
		t.Errorf("logged the budget %d times, want once:\n%s", n, logged)
	}
	if strings.Contains(logged.String(), "Server rejected event") {
		t.Errorf("the recorder's complaint about a refusal was logged:\n%s", logged)
	}
}

// The budget refills at one write a minute.
func TestBudgetRefills(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	b := newBudget(func() time.Time { return now })
	for i := range Burst {
		if ok, _ := b.take("db/pg-0"); !ok {
			t.Fatalf("write %d refused", i+1)
		}
	}
	if ok, first := b.take("db/pg-0"); ok || !first {
		t.Errorf("write %d: allowed %v, first refusal %v", Burst+1, ok, first)
	}
	if ok, first := b.take("db/pg-0"); ok || first {
		t.Errorf("write %d: allowed %v, first refusal %v", Burst+2, ok, first)
	}
	now = now.Add(Refill)
	if ok, _ := b.take("db/pg-0"); !ok {
		t.Error("refused a minute later")
	}
	if ok, _ := b.take("db/pg-0"); ok {
		t.Error("two writes allowed a minute later")
	}
	// A full bucket is forgotten: the map holds only pods that wrote lately.
	now = now.Add(Burst * Refill)
	b.take("db/pg-1")
	if _, ok := b.pods["db/pg-0"]; ok || len(b.pods) != 1 {
		t.Errorf("buckets kept: %v", b.pods)
	}
}

// A write the API server refuses is counted as an error.
func TestRefusedWritesAreCounted(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("create", "events", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "events.k8s.io", Resource: "events"}, "", fmt.Errorf("RBAC"))
	})
	r, logged := start(t, client)
	rec := seedRecord()
	r.Write(&rec)
	s := waitStats(t, r, ReasonCrashRestart, func(s Stats) bool { return s.Errors == 1 })
	if s.Written != 0 || s.Dropped != 0 {
		t.Errorf("stats %+v", s)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logged.String(), "level=WARN") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logged.String(), "level=WARN") || strings.Contains(logged.String(), "level=ERROR") {
		t.Errorf("the refusal should be logged at warn:\n%s", logged)
	}
}
