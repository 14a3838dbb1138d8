package proxy

import (
	"time"

	"github.com/edgeproxy/edgeproxy/proxy/cdnconf"
)

// Balance is how a route chooses among its origins (cdnconf.Balance).
type Balance = cdnconf.Balance

// The ways of Balance.
const (
	RoundRobin       = cdnconf.RoundRobin
	LeastConnections = cdnconf.LeastConnections
)

// Origin is an origin of a site with its weight (cdnconf.Origin).
type Origin = cdnconf.Origin

// weighted is an origin of a route with its weight.
type weighted struct {
	o      *origin
	weight int
	cur    int // smooth round-robin state, under route.mu
}

// pick returns the origin for the next attempt, skipping origins that are
// down, ejected or already tried; nil when none is left.
func (rt *route) pick(now time.Time, tried []*origin) *origin {
	n := len(rt.origins)
	if n == 1 {
		if o := rt.origins[0].o; o.health.usable(now) && len(tried) == 0 {
			return o
		}
		return nil
	}
	ok := func(o *origin) bool {
		if !o.health.usable(now) {
			return false
		}
		for _, t := range tried {
			if t == o {
				return false
			}
		}
		return true
	}
	switch {
	case rt.balance == LeastConnections:
		start := int(rt.next.Add(1))
		var best *origin
		var bestW int
		for i := range n {
			w := &rt.origins[(start+i)%n]
			if !ok(w.o) {
				continue
			}
			// active/weight < bestActive/bestWeight, without division.
			if best == nil || w.o.active.Load()*int64(bestW) < best.active.Load()*int64(w.weight) {
				best, bestW = w.o, w.weight
			}
		}
		return best
	case rt.equalWeights:
		start := int(rt.next.Add(1))
		for i := range n {
			if o := rt.origins[(start+i)%n].o; ok(o) {
				return o
			}
		}
		return nil
	}
	// Smooth weighted round-robin: every usable origin gains its weight,
	// the richest is chosen and pays the total.
	rt.mu.Lock()
	defer rt.mu.Unlock()
	var best *weighted
	total := 0
	for i := range rt.origins {
		w := &rt.origins[i]
		if !ok(w.o) {
			continue
		}
		w.cur += w.weight
		total += w.weight
		if best == nil || w.cur > best.cur {
			best = w
		}
	}
	if best == nil {
		return nil
	}
	best.cur -= total
	return best.o
}

// panicPick is panic mode, as Envoy and nginx have it: when every origin
// of the route is ejected by passive health, a request is sent anyway to
// the one whose ejection ends first, rather than refused. Without it the
// only origin of a site that failed once stays out for the whole ejection
// though it came back at once; its first good answer ends the ejection,
// another failure extends it. Origins that the active check holds down
// stay out: the check probes them and brings them back. nil when some
// origin is usable (pick chooses) or none is merely ejected.
func (rt *route) panicPick(now time.Time) *origin {
	var best *origin
	var bestUntil int64
	for i := range rt.origins {
		o := rt.origins[i].o
		if o.health.usable(now) {
			return nil
		}
		if o.health.down.Load() {
			continue
		}
		if u := o.health.ejectedUntil.Load(); best == nil || u < bestUntil {
			best, bestUntil = o, u
		}
	}
	return best
}
