package server

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

// The traffic of each binding, from the data plane's per-binding counters.
// They are sampled every trafficEvery, so that the API and a plan can say
// what a binding carried over the last trafficWindow; /metrics names the
// bindings that carried the most then.

const (
	trafficEvery  = 10 * time.Second
	trafficWindow = 5 * time.Minute
	// trafficFresh is how old the counts the API shows may be: a
	// listing of many bindings reads the kernel's counters once.
	trafficFresh = time.Second
	// topBindings is how many bindings /metrics names.
	topBindings = 10
)

type trafficSample struct {
	at     time.Time
	counts map[dispatch.BindingKey]dispatch.BindingCount
}

// traffic keeps the samples of the counters over the window.
type traffic struct {
	read func() (map[dispatch.BindingKey]dispatch.BindingCount, error)
	m    *bindings.Manager

	mu sync.Mutex
	// samples are oldest first, the first at or before the window's
	// start once the node has counted that long.
	samples []trafficSample
	last    trafficSample // the freshest read
}

func newTraffic(read func() (map[dispatch.BindingKey]dispatch.BindingCount, error), m *bindings.Manager) *traffic {
	t := &traffic{read: read, m: m}
	t.sample(time.Now())
	return t
}

// run samples until ctx ends.
func (t *traffic) run(ctx context.Context) {
	tick := time.NewTicker(trafficEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			t.sample(now)
		}
	}
}

// sample reads the counters and keeps them as of now.
func (t *traffic) sample(now time.Time) {
	c, err := t.read()
	if err != nil {
		return // the next sample tries again; the API shows the last
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s := trafficSample{at: now, counts: c}
	t.last = s
	t.samples = append(t.samples, s)
	start := now.Add(-trafficWindow)
	for len(t.samples) > 1 && !t.samples[1].at.After(start) {
		t.samples = t.samples[1:]
	}
}

// latest returns the freshest counts (read again when older than
// trafficFresh, or when fresh) and the sample the window starts at.
func (t *traffic) latest(fresh bool) (cur, base trafficSample) {
	now := time.Now()
	t.mu.Lock()
	stale := fresh || now.Sub(t.last.at) >= trafficFresh
	t.mu.Unlock()
	if stale {
		if c, err := t.read(); err == nil {
			t.mu.Lock()
			if now.After(t.last.at) {
				t.last = trafficSample{at: now, counts: c}
			}
			t.mu.Unlock()
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	cur = t.last
	if len(t.samples) > 0 {
		base = t.samples[0]
	}
	return cur, base
}

// since is what n counted after base; a binding whose counters began
// again (removed and made anew) counts from zero.
func since(n, base dispatch.BindingCount) dispatch.BindingCount {
	if n.Steered < base.Steered || n.Refused < base.Refused || n.Missed < base.Missed {
		return n
	}
	return dispatch.BindingCount{Steered: n.Steered - base.Steered, Refused: n.Refused - base.Refused, Missed: n.Missed - base.Missed}
}

func toTraffic(n dispatch.BindingCount) admin.Traffic {
	return admin.Traffic{Steered: n.Steered, Refused: n.Refused, Missed: n.Missed}
}

// of is admin.Options.Traffic.
func (t *traffic) of(b bindings.Binding) (total, recent admin.Traffic, window time.Duration, ok bool) {
	cur, base := t.latest(false)
	n, ok := cur.counts[b.Key()]
	if !ok {
		// Made since the counts were read?
		cur, base = t.latest(true)
		if n, ok = cur.counts[b.Key()]; !ok {
			return admin.Traffic{}, admin.Traffic{}, 0, false
		}
	}
	return toTraffic(n), toTraffic(since(n, base.counts[b.Key()])), cur.at.Sub(base.at), true
}

var (
	descBindingTraffic = prometheus.NewDesc("edgeproxy_binding_traffic_total",
		"Connections and datagrams of the bindings that carried the most over the last five minutes (at most ten), by outcome: steered, refused, missed.",
		[]string{"binding_id", "cidr", "scope", "service", "outcome"}, nil)
	descBindingsCounted = prometheus.NewDesc("edgeproxy_bindings_counted",
		"Bindings whose traffic the data plane counts.", nil, nil)
)

// Describe implements prometheus.Collector.
func (t *traffic) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBindingTraffic
	ch <- descBindingsCounted
}

// Collect implements prometheus.Collector: the top bindings by their
// recent traffic, with their totals.
func (t *traffic) Collect(ch chan<- prometheus.Metric) {
	cur, base := t.latest(false)
	ch <- prometheus.MustNewConstMetric(descBindingsCounted, prometheus.GaugeValue, float64(len(cur.counts)))
	type ranked struct {
		key    dispatch.BindingKey
		recent uint64
	}
	var top []ranked
	for k, n := range cur.counts {
		r := since(n, base.counts[k])
		if sum := r.Steered + r.Refused + r.Missed; sum > 0 {
			top = append(top, ranked{k, sum})
		}
	}
	slices.SortFunc(top, func(a, b ranked) int {
		return cmp.Or(cmp.Compare(b.recent, a.recent), cmp.Compare(a.key.String(), b.key.String()))
	})
	if len(top) > topBindings {
		top = top[:topBindings]
	}
	if len(top) == 0 {
		return
	}
	st, _ := t.m.Current()
	byKey := make(map[dispatch.BindingKey]bindings.Binding, len(top))
	for _, b := range st.AllBindings() {
		byKey[b.Key()] = b
	}
	for _, r := range top {
		b, ok := byKey[r.key]
		if !ok {
			continue // gone since
		}
		scope := "*"
		if b.PortScoped() {
			scope = fmt.Sprintf("%s/%d", b.Protocol, b.Port)
		}
		n := cur.counts[r.key]
		for outcome, v := range map[string]uint64{"steered": n.Steered, "refused": n.Refused, "missed": n.Missed} {
			ch <- prometheus.MustNewConstMetric(descBindingTraffic, prometheus.CounterValue, float64(v), b.ID, b.CIDR.String(), scope, string(b.Service), outcome)
		}
	}
}
