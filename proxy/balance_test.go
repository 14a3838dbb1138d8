package proxy

import (
	"fmt"
	"testing"
	"time"
)

func testRoute(balance Balance, weights ...int) *route {
	rt := &route{balance: balance, equalWeights: true}
	for i, w := range weights {
		rt.origins = append(rt.origins, weighted{o: &origin{name: fmt.Sprint("o", i)}, weight: w})
		if w != weights[0] {
			rt.equalWeights = false
		}
	}
	return rt
}

func counts(rt *route, n int, now time.Time) map[string]int {
	c := map[string]int{}
	for range n {
		o := rt.pick(now, nil)
		if o == nil {
			c["none"]++
			continue
		}
		c[o.name]++
	}
	return c
}

// TestPickWeights: smooth weighted round-robin gives each origin its share
// exactly, and spreads the heavy one out rather than in a burst.
func TestPickWeights(t *testing.T) {
	now := time.Now()
	rt := testRoute(RoundRobin, 5, 1, 1)
	var seq []string
	for range 7 {
		seq = append(seq, rt.pick(now, nil).name)
	}
	// nginx's documented sequence for weights 5, 1, 1.
	if got := fmt.Sprint(seq); got != "[o0 o0 o1 o0 o2 o0 o0]" {
		t.Errorf("sequence %s", got)
	}
	if c := counts(testRoute(RoundRobin, 1, 2, 3), 600, now); c["o0"] != 100 || c["o1"] != 200 || c["o2"] != 300 {
		t.Errorf("1:2:3 over 600: %v", c)
	}
	if c := counts(testRoute(RoundRobin, 1, 1, 1), 300, now); c["o0"] != 100 || c["o1"] != 100 || c["o2"] != 100 {
		t.Errorf("equal over 300: %v", c)
	}
}

// TestPickSkipsUnusable: down, ejected and tried origins are skipped; when
// none is left, nil.
func TestPickSkipsUnusable(t *testing.T) {
	now := time.Now()
	for _, b := range []Balance{RoundRobin, LeastConnections} {
		for _, weights := range [][]int{{1, 1, 1}, {1, 2, 3}} {
			rt := testRoute(b, weights...)
			o0, o1, o2 := rt.origins[0].o, rt.origins[1].o, rt.origins[2].o
			o1.health.down.Store(true)
			o2.health.ejectedUntil.Store(now.Add(time.Second).UnixNano())
			if c := counts(rt, 30, now); c["o0"] != 30 {
				t.Errorf("%s %v: %v, want only o0", b, weights, c)
			}
			if o := rt.pick(now, []*origin{o0}); o != nil {
				t.Errorf("%s %v: picked %s with every origin down, ejected or tried", b, weights, o.name)
			}
			if c := counts(rt, 30, now.Add(2*time.Second)); c["o1"] != 0 || c["o2"] == 0 {
				t.Errorf("%s %v: after the ejection ends: %v", b, weights, c)
			}
		}
	}
}

// TestPickLeastConnections: the origin with the fewest requests in flight
// per weight wins.
func TestPickLeastConnections(t *testing.T) {
	now := time.Now()
	rt := testRoute(LeastConnections, 1, 1, 2)
	rt.origins[0].o.active.Store(3)
	rt.origins[1].o.active.Store(1)
	rt.origins[2].o.active.Store(3) // 1.5 per weight
	if o := rt.pick(now, nil); o.name != "o1" {
		t.Errorf("picked %s, want o1", o.name)
	}
	rt.origins[2].o.active.Store(1) // 0.5 per weight
	if o := rt.pick(now, nil); o.name != "o2" {
		t.Errorf("picked %s, want o2", o.name)
	}
}
