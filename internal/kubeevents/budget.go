package kubeevents

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
)

// The budget of Event writes (creates and series patches) per pod: a
// token bucket of Burst writes, refilled at one a minute. An incident
// costs one write (a repeat the recorder folds into its series costs none
// until the series is written: at its second occurrence, every 30 minutes
// while it lasts, and once it has ended), so the bucket only empties when
// something makes many distinct Events on one pod; it then bounds that pod
// to Burst+1 writes in any minute and 60 an hour. The kubelet's own spam
// filter (client-go tools/record) allows 25 and then one per 5 minutes per
// object: this is stricter at once, since an agent on every node could
// otherwise multiply one noisy workload's writes.
const (
	Burst  = 10
	Refill = time.Minute
)

// errBudget is what the sink answers a write over budget: an API status
// error, so that the recorder gives up on it rather than retry, and a
// single value, so that the recorder's log of it can be left out (the
// sink logs and counts it).
var errBudget = apierrors.NewTooManyRequests("orphanwatch: this pod's budget of Event writes is spent", int(Refill.Seconds()))

// budget is a token bucket per pod.
type budget struct {
	now  func() time.Time
	mu   sync.Mutex
	pods map[string]*podBudget
}

type podBudget struct {
	limiter *rate.Limiter
	spent   bool // refused since it was last allowed: logged once
}

func newBudget(now func() time.Time) *budget {
	return &budget{now: now, pods: make(map[string]*podBudget)}
}

// take takes a write from pod's bucket; first is true for the first
// refusal since the pod last wrote.
func (b *budget) take(pod string) (ok, first bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	p := b.pods[pod]
	if p == nil {
		b.forgetFull(now)
		p = &podBudget{limiter: rate.NewLimiter(rate.Every(Refill), Burst)}
		b.pods[pod] = p
	}
	if p.limiter.AllowN(now, 1) {
		p.spent = false
		return true, false
	}
	first, p.spent = !p.spent, true
	return false, first
}

// forgetFull drops the buckets that have refilled: a new one is the same,
// so the map holds only pods that wrote in the last Burst minutes.
func (b *budget) forgetFull(now time.Time) {
	for pod, p := range b.pods {
		if p.limiter.TokensAt(now) >= Burst {
			delete(b.pods, pod)
		}
	}
}

// budgetedSink is the recorder's way to the API: it spends the regarded
// pod's budget on each write, counts what happens, and names this node as
// the reporting instance (the recorder would use the pod's hostname).
type budgetedSink struct {
	api    events.EventSink
	node   string
	budget *budget
	stats  *counters
	log    *slog.Logger
}

func (s *budgetedSink) Create(ctx context.Context, ev *eventsv1.Event) (*eventsv1.Event, error) {
	ev = ev.DeepCopy() // the recorder's cache may hold it
	ev.ReportingInstance = s.node
	return s.write(ev, func() (*eventsv1.Event, error) { return s.api.Create(ctx, ev) })
}

// Update is not used by the recorder (RBAC grants create and patch only).
func (s *budgetedSink) Update(ctx context.Context, ev *eventsv1.Event) (*eventsv1.Event, error) {
	return s.write(ev, func() (*eventsv1.Event, error) { return s.api.Update(ctx, ev) })
}

func (s *budgetedSink) Patch(ctx context.Context, ev *eventsv1.Event, data []byte) (*eventsv1.Event, error) {
	return s.write(ev, func() (*eventsv1.Event, error) { return s.api.Patch(ctx, ev, data) })
}

func (s *budgetedSink) write(ev *eventsv1.Event, do func() (*eventsv1.Event, error)) (*eventsv1.Event, error) {
	pod := ev.Regarding.Namespace + "/" + ev.Regarding.Name
	c := s.stats.of(ev.Reason)
	ok, first := s.budget.take(pod)
	if !ok {
		c.dropped.Add(1)
		if first {
			s.log.Warn("Kubernetes Events on this pod are over budget: more are dropped until it refills (orphanwatch_kubernetes_events_dropped_total counts them)",
				"pod", pod, "burst", Burst, "refill", Refill, "reason", ev.Reason)
		}
		return nil, errBudget
	}
	out, err := do()
	if err != nil {
		c.errors.Add(1)
		return out, err
	}
	c.written.Add(1)
	return out, nil
}

// recorderLog carries client-go's recorder logs to the agent's logger:
// without its complaints about the budget's refusals, which the sink
// reports itself, and at most at warn level (it logs a refused Event as
// an error; the agent goes on, and a metric counts it).
type recorderLog struct{ slog.Handler }

func (h recorderLog) Enabled(ctx context.Context, l slog.Level) bool {
	return h.Handler.Enabled(ctx, min(l, slog.LevelWarn))
}

func (h recorderLog) Handle(ctx context.Context, r slog.Record) error {
	refused := false
	r.Attrs(func(a slog.Attr) bool {
		refused = a.Value.Kind() == slog.KindAny && a.Value.Any() == any(errBudget)
		return !refused
	})
	if refused {
		return nil
	}
	r.Level = min(r.Level, slog.LevelWarn)
	return h.Handler.Handle(ctx, r)
}

func (h recorderLog) WithAttrs(attrs []slog.Attr) slog.Handler {
	return recorderLog{h.Handler.WithAttrs(attrs)}
}

func (h recorderLog) WithGroup(name string) slog.Handler {
	return recorderLog{h.Handler.WithGroup(name)}
}
