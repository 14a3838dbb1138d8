package proxy

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
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

// TestPassiveEjection: failures in a row eject, for longer each time it
// keeps failing; a success resets the run.
func TestPassiveEjection(t *testing.T) {
	var h originHealth
	ph := PassiveHealth{MaxFailures: 3, Ejection: 10 * time.Second}
	now := time.Now()
	err := errors.New("refused")
	h.failed(now, err, ph)
	h.failed(now, err, ph)
	h.succeeded()
	h.failed(now, err, ph)
	if !h.usable(now) {
		t.Fatal("ejected without three failures in a row")
	}
	h.failed(now, err, ph)
	if !h.failed(now, err, ph) || h.usable(now) || h.state(now) != "ejected" {
		t.Fatal("not ejected after three failures in a row")
	}
	if !h.usable(now.Add(10 * time.Second)) {
		t.Fatal("still ejected after the ejection time")
	}
	for range 3 {
		h.failed(now, err, ph)
	}
	if h.usable(now.Add(15*time.Second)) || !h.usable(now.Add(20*time.Second)) {
		t.Fatal("a second ejection in a row does not last twice as long")
	}
}

// TestActiveHealth: thresholds in a row move the state both ways, and a
// good check ends a passive ejection.
func TestActiveHealth(t *testing.T) {
	var h originHealth
	hc := HealthCheck{Healthy: 2, Unhealthy: 3}
	now := time.Now()
	bad := errors.New("status 500")
	for i, step := range []struct {
		err     error
		changed bool
		state   string
	}{
		{bad, false, "up"}, {bad, false, "up"}, {nil, false, "up"}, {bad, false, "up"}, {bad, false, "up"},
		{bad, true, "down"}, {bad, false, "down"}, {nil, false, "down"}, {nil, true, "up"}, {nil, false, "up"},
	} {
		if changed := h.checked(now, step.err, hc); changed != step.changed || h.state(now) != step.state {
			t.Fatalf("check %d (%v): changed %v, state %s; want %v, %s", i, step.err, changed, h.state(now), step.changed, step.state)
		}
	}
	h.ejectedUntil.Store(now.Add(time.Hour).UnixNano())
	h.checked(now, bad, hc)
	h.checked(now, bad, hc)
	h.checked(now, bad, hc)
	h.checked(now, nil, hc)
	h.checked(now, nil, hc)
	if !h.usable(now) {
		t.Error("an origin whose check recovered is still ejected")
	}
}

// TestRetryBudget: retries are a share of requests, plus a floor per second.
func TestRetryBudget(t *testing.T) {
	b := newRetryBudget(Retries{Budget: 0.1, MinPerSecond: 1})
	now := time.Unix(0, b.last.Load())
	spent := 0
	for b.withdraw(now) {
		spent++
	}
	if spent != 10 {
		t.Errorf("a fresh budget allows %d retries, want 10", spent)
	}
	for range 100 {
		b.deposit()
	}
	spent = 0
	for b.withdraw(now) {
		spent++
	}
	if spent != 10 {
		t.Errorf("100 requests at 0.1 allow %d retries, want 10", spent)
	}
	if !b.withdraw(now.Add(1100*time.Millisecond)) || b.withdraw(now.Add(1100*time.Millisecond)) {
		t.Error("the floor of one per second does not hold")
	}
	var wg sync.WaitGroup // concurrent use keeps the count
	b = newRetryBudget(Retries{Budget: 1, MinPerSecond: 1})
	now = time.Unix(0, b.last.Load())
	var mu sync.Mutex
	spent = 0
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				b.deposit()
				if b.withdraw(now) {
					mu.Lock()
					spent++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for b.withdraw(now) {
		spent++
	}
	if spent != 8000+10 {
		t.Errorf("8000 requests at 1.0 plus 10 saved: %d retries", spent)
	}
}

// TestRetryable: what may be sent again.
func TestRetryable(t *testing.T) {
	req := func(method string, cl int) *fasthttp.Request {
		r := &fasthttp.Request{}
		r.Header.SetMethod(method)
		r.Header.SetContentLength(cl)
		if cl == -2 {
			r.Header.SetContentLength(-2)
		}
		return r
	}
	none := func() int64 { return 0 }
	some := func() int64 { return 5 }
	for _, tc := range []struct {
		name string
		err  error
		req  *fasthttp.Request
		body func() int64
		want bool
	}{
		{"dial, GET", &dialError{errors.New("refused")}, req("GET", -2), nil, true},
		{"dial, POST, body unread", &dialError{errors.New("refused")}, req("POST", 7), none, true},
		{"dial, POST, body read", &dialError{errors.New("refused")}, req("POST", 7), some, false},
		{"closed, GET", fasthttp.ErrConnectionClosed, req("GET", -2), nil, true},
		{"closed, POST", fasthttp.ErrConnectionClosed, req("POST", 7), none, false},
		{"closed, PUT with a body", fasthttp.ErrConnectionClosed, req("PUT", 7), none, false},
		{"closed, DELETE", fasthttp.ErrConnectionClosed, req("DELETE", -2), nil, true},
		{"timeout, GET", fasthttp.ErrTimeout, req("GET", -2), nil, false},
		{"h2 refused, POST, body unread", fmt.Errorf("round trip: %w", http2.StreamError{StreamID: 1, Code: http2.ErrCodeRefusedStream}), req("POST", 7), none, true},
		{"h2 reset, GET", http2.StreamError{StreamID: 1, Code: http2.ErrCodeInternal}, req("GET", -2), nil, false},
		{"h2 timeout, GET", errH2Timeout, req("GET", -2), nil, false},
		{"other, GET", errors.New("malformed response"), req("GET", -2), nil, false},
	} {
		if got := retryable(tc.err, tc.req, tc.body); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
