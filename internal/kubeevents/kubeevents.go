// Package kubeevents posts what orphanwatch finds on the PostgreSQL pod it
// happened in, as events.k8s.io/v1 Events that `kubectl describe pod` and
// `kubectl get events` show: a crash-restart with its culprit, an OOM kill,
// a postmaster running as PID 1, a crash-restart whose culprit was not
// seen. client-go's events recorder folds repeats into an Event series;
// each pod has a budget of writes (budget.go), so a crash loop cannot
// flood the API server.
package kubeevents

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	eventsv1client "k8s.io/client-go/kubernetes/typed/events/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"

	"github.com/orphanwatch/orphanwatch/internal/report"
)

// Controller is the Events' reportingController.
const Controller = "orphanwatch"

// Pods tells a pod's API UID (container.KubernetesNamer does).
type Pods interface {
	PodUID(namespace, name string) string
}

// Config sets up a Recorder.
type Config struct {
	// Client writes Events (NewClient; client-go's fake in tests).
	Client eventsv1client.EventsV1Interface
	// Node is this node's name: the Events' reportingInstance.
	Node string
	// Pods gives the regarded pod's UID, without which kubectl describe
	// pod does not find the Event; may be nil (the record's pod UID then).
	Pods Pods
	Log  *slog.Logger
	// Now is the budget's clock (default time.Now).
	Now func() time.Time
}

// Recorder is an agent.Sink posting Events about records that name a
// Kubernetes pod.
type Recorder struct {
	recorder    events.EventRecorder
	broadcaster events.EventBroadcaster
	pods        Pods
	stats       *counters

	mu   sync.Mutex
	pid1 seen // postmasters already reported as PID 1
}

// NewClient is an events.k8s.io/v1 client (cfg from container.RESTConfig).
func NewClient(cfg *rest.Config) (eventsv1client.EventsV1Interface, error) {
	client, err := eventsv1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("events.k8s.io/v1 client: %w", err)
	}
	return client, nil
}

// New starts recording until ctx ends or Close.
func New(ctx context.Context, cfg Config) (*Recorder, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	stats := newCounters()
	b := events.NewBroadcaster(&budgetedSink{
		api:    &events.EventSinkImpl{Interface: cfg.Client},
		node:   reportingInstance(cfg.Node),
		budget: newBudget(cfg.Now),
		stats:  stats,
		log:    cfg.Log,
	})
	// The recorder logs through klog, from the context: to our logger.
	logger := logr.FromSlogHandler(recorderLog{cfg.Log.Handler()})
	if err := b.StartRecordingToSinkWithContext(klog.NewContext(ctx, logger)); err != nil {
		return nil, fmt.Errorf("starting the Kubernetes Events recorder: %w", err)
	}
	// Every Event is about an ObjectReference, so the scheme is never asked.
	rec := b.NewRecorder(runtime.NewScheme(), Controller).WithLogger(logger)
	return &Recorder{recorder: rec, broadcaster: b, pods: cfg.Pods, stats: stats, pid1: newSeen(seenMax)}, nil
}

// reportingInstance is the node name within the API's 128 characters.
func reportingInstance(node string) string {
	if len(node) > 128 {
		return node[:128]
	}
	return node
}

// Close stops recording; Events not yet written are dropped.
func (r *Recorder) Close() { r.broadcaster.Shutdown() }

// Write records the Event a record makes, if it makes one and names a
// pod. It never waits for the API server: the recorder writes from its own
// goroutines.
func (r *Recorder) Write(rec *report.Record) error {
	if rec.Namespace == "" || rec.Pod == "" {
		return nil
	}
	o, ok := occurrenceOf(rec)
	if !ok {
		return nil
	}
	if o.reason == ReasonPostmasterIsPID1 && !r.firstPID1(rec) {
		return nil
	}
	r.recorder.Eventf(r.regarding(rec), nil, corev1.EventTypeWarning, o.reason, o.action, "%s", o.note)
	r.stats.of(o.reason).recorded.Add(1)
	return nil
}

// firstPID1: PostmasterIsPID1 once per container start, which is once per
// postmaster; the /proc sweep may report one again that it rediscovers.
func (r *Recorder) firstPID1(rec *report.Record) bool {
	pid := rec.PID
	if rec.Postmaster != nil {
		pid = rec.Postmaster.PID
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pid1.add(fmt.Sprintf("%s/%d", rec.ContainerID, pid))
}

// regarding is the pod, and its container by fieldPath, as kubectl describe
// pod finds them: by namespace, name and UID.
func (r *Recorder) regarding(rec *report.Record) *corev1.ObjectReference {
	ref := &corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: rec.Namespace, Name: rec.Pod}
	if r.pods != nil {
		ref.UID = types.UID(r.pods.PodUID(rec.Namespace, rec.Pod))
	}
	if ref.UID == "" {
		ref.UID = types.UID(rec.PodUID)
	}
	if rec.Container != "" {
		ref.FieldPath = "spec.containers{" + rec.Container + "}"
	}
	return ref
}

// Stats are the counts by Event reason.
type Stats struct {
	Reason string
	// Recorded: occurrences (repeats count in the Event's series).
	Recorded uint64
	// Written: writes the API server took (creates and series patches).
	Written uint64
	// Dropped: writes not made, the pod's budget spent.
	Dropped uint64
	// Errors: writes that failed (the recorder retries when the server
	// could not be reached).
	Errors uint64
}

// Stats returns the counts of every reason, in Reasons' order.
func (r *Recorder) Stats() []Stats {
	out := make([]Stats, len(Reasons))
	for i, reason := range Reasons {
		c := r.stats.of(reason)
		out[i] = Stats{Reason: reason, Recorded: c.recorded.Load(), Written: c.written.Load(), Dropped: c.dropped.Load(), Errors: c.errors.Load()}
	}
	return out
}

type reasonCounters struct{ recorded, written, dropped, errors atomic.Uint64 }

// counters are the counts per reason; written by the recorder's goroutines.
type counters struct {
	byReason map[string]*reasonCounters
	other    reasonCounters // a reason not in Reasons: none today
}

func newCounters() *counters {
	c := &counters{byReason: make(map[string]*reasonCounters, len(Reasons))}
	for _, r := range Reasons {
		c.byReason[r] = new(reasonCounters)
	}
	return c
}

func (c *counters) of(reason string) *reasonCounters {
	if rc, ok := c.byReason[reason]; ok {
		return rc
	}
	return &c.other
}

// seenMax bounds the postmasters remembered as reported.
const seenMax = 4096

// seen is a set that forgets its oldest members beyond max.
type seen struct {
	max   int
	set   map[string]bool
	order []string
}

func newSeen(max int) seen { return seen{max: max, set: make(map[string]bool)} }

// add reports whether key is new, and remembers it.
func (s *seen) add(key string) bool {
	if s.set[key] {
		return false
	}
	if len(s.order) >= s.max {
		delete(s.set, s.order[0])
		s.order = s.order[1:]
	}
	s.set[key] = true
	s.order = append(s.order, key)
	return true
}
