package proxy

import (
	"fmt"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
)

// TestHostileCDNDialOutOfFDs: with the descriptor budget spent, requests
// fail with 503 and the origin is neither ejected nor charged a failure
// (it is the proxy's shortage); EMFILE and ENFILE from the kernel count the
// same way.
func TestHostileCDNDialOutOfFDs(t *testing.T) {
	b, err := fdlimit.New(fdlimit.Options{Limit: fdlimit.OpenNow() + 100, Accept: -1, Admin: -1, Dial: 10, CDN: 10, Other: 10})
	if err != nil {
		t.Fatal(err)
	}
	for b.Acquire(fdlimit.Dial, 1) {
	}
	log := slog.New(slog.DiscardHandler)
	p := &Proxy{fds: b, log: log}
	p.pools = &originPools{fds: b, log: log, pools: map[string]*origin{}}
	p.pools.setTimeouts(&Limits{UpstreamConnectTimeout: time.Second, UpstreamTimeout: time.Second})
	o, err := p.pools.get(mustURL("http://127.0.0.1:9"), OriginTLS{})
	if err != nil {
		t.Fatal(err)
	}
	rt := &route{origins: []weighted{{o: o, weight: 1}}, balance: RoundRobin, equalWeights: true}
	r := Retries{}
	r.SetDefaults()
	s := &site{passive: PassiveHealth{MaxFailures: 1, Ejection: time.Minute}, retries: r, budget: newRetryBudget(r),
		retried: prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})}
	for i := range 5 {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://127.0.0.1:9/")
		err := p.forward(s, rt, req, resp, &record{start: time.Now()}, nil)
		if !fdlimit.Exhausted(err) {
			t.Fatalf("request %d: %v, want the budget's refusal", i, err)
		}
		if st, _ := errorStatus(err); st != 503 {
			t.Errorf("request %d: status %d, want 503", i, st)
		}
	}
	if now := time.Now(); o.health.state(now) != "up" || o.failures.Load() != 0 || o.health.consecFails.Load() != 0 {
		t.Errorf("origin %s after 5 local refusals: %d failures", o.health.state(now), o.failures.Load())
	}
	// Active health checks that cannot get a descriptor are not recorded.
	// A timeout of its own: the default (the interval, 5 ms) could run out
	// under load before the budget refuses the dial, and fail the check.
	hc := HealthCheck{Path: "/", Interval: 5 * time.Millisecond, Timeout: time.Second, Unhealthy: 1}
	hc.SetDefaults()
	c := p.pools.startChecker(o, hc)
	time.Sleep(100 * time.Millisecond)
	c.stop()
	if now := time.Now(); o.health.state(now) != "up" {
		t.Errorf("origin %s after health checks the budget refused", o.health.state(now))
	}
	if got := b.Refused(fdlimit.Dial); got < 5+2 {
		t.Errorf("the budget refused %d dials, want the 5 requests' and the checks'", got)
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE} {
		err := &dialError{&net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("socket: %w", e)}}
		if originFault(err) {
			t.Errorf("%v counts against the origin", e)
		}
	}
	if !originFault(&dialError{syscall.ECONNREFUSED}) {
		t.Error("a refused connection is no longer the origin's fault")
	}
}
