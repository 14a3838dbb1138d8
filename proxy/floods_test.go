package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestHostilePanicModeOnlyOrigin: the only origin of a site fails as often
// as its passive threshold and is ejected; it comes back at once, and the
// next request is answered (panic mode), not refused for the 30 s
// ejection. The good answer ends the ejection.
func TestHostilePanicModeOnlyOrigin(t *testing.T) {
	ns := netns.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // refused until it comes back

	reg := prometheus.NewRegistry()
	p, err := New(Options{
		Config:     Config{Sites: []Site{{Hosts: []string{"a.example"}, Origins: origins("http://" + addr)}}},
		Registerer: reg,
		Dial:       ns.Dial,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.tcp.Close()
	st := p.state.Load()
	s := st.router.lookup("a.example", netip.Addr{})
	rt := s.route("/")
	o := rt.origins[0].o
	do := func() (int, error) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("/")
		req.Header.SetHost("a.example")
		rec := &record{start: time.Now()}
		if err := p.forward(s, rt, req, resp, rec, nil); err != nil {
			return 0, err
		}
		resp.BodyStream() // streamed: read nothing, close
		resp.CloseBodyStream()
		return resp.StatusCode(), nil
	}
	for i := range 3 { // the default passive threshold
		if _, err := do(); err == nil {
			t.Fatalf("attempt %d reached a closed port", i)
		}
	}
	if got := o.health.state(time.Now()); got != "ejected" {
		t.Fatalf("after 3 failures the origin is %s, want ejected", got)
	}

	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "back") })}
	go srv.Serve(ln)
	defer srv.Close()

	start := time.Now()
	code, err := do()
	if errors.Is(err, errNoHealthyOrigin) {
		t.Fatalf("the origin is back but the request was refused: %v", err)
	}
	if err != nil || code != 200 {
		t.Fatalf("after the origin came back: %d, %v", code, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("answered after %v, want within 1 s", d)
	}
	if got := o.health.state(time.Now()); got != "up" {
		t.Errorf("after a good answer the origin is %s, want up", got)
	}
	if n := testutil.ToFloat64(p.fm.panicked.WithLabelValues("a.example")); n != 1 {
		t.Errorf("edgeproxy_cdn_panic_requests_total = %v, want 1", n)
	}
	if code, err := do(); err != nil || code != 200 {
		t.Errorf("the next request: %d, %v", code, err)
	}
	t.Logf("attack: the only origin, ejected after 3 failures, answered %v after it came back", time.Since(start).Round(time.Millisecond))
}

// TestHostileResetAbandonsOriginExchange: a client that resets its stream
// while its request waits for the origin gets that origin connection cut
// at once (the origin sees its request end), not after the upstream
// timeout; a request whose client is gone before it is sent never reaches
// the origin; and exchanges that end normally leave their connections in
// the pool (no churn).
func TestHostileResetAbandonsOriginExchange(t *testing.T) {
	for _, scheme := range []string{"http", "https"} {
		t.Run(scheme, func(t *testing.T) { testResetAbandons(t, scheme) })
	}
}

// testResetAbandons is TestHostileResetAbandonsOriginExchange against an
// HTTP/1.1 origin over scheme, in a namespace of its own (a subtest runs
// on a goroutine of its own).
func testResetAbandons(t *testing.T, scheme string) {
	ns := netns.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var got, cut atomic.Int64
	hang := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Add(1)
		if r.URL.Path == "/hang" {
			hang <- struct{}{}
			select {
			case <-r.Context().Done(): // the proxy closed the connection
				cut.Add(1)
			case <-time.After(5 * time.Second):
			}
			return
		}
		fmt.Fprint(w, "ok")
	})}
	if scheme == "https" {
		ts := httptest.NewUnstartedServer(srv.Handler)
		ts.Listener.Close()
		ts.Listener = ln
		ts.StartTLS() // HTTP/1.1 only: the fasthttp pool, over TLS
		defer ts.Close()
	} else {
		go srv.Serve(ln)
		defer srv.Close()
	}

	p, err := New(Options{
		Config: Config{Sites: []Site{{Hosts: []string{"a.example"}, Origins: origins(scheme + "://" + ln.Addr().String()),
			OriginTLS: OriginTLS{InsecureSkipVerify: scheme == "https"}}}},
		Limits: Limits{UpstreamTimeout: 10 * time.Second},
		Dial:   ns.Dial,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.tcp.Close()
	st := p.state.Load()
	s := st.router.lookup("a.example", netip.Addr{})
	rt := s.route("/")
	o := rt.origins[0].o
	do := func(ctx context.Context, path string) error {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		rec := &record{start: time.Now(), id: p.ids.next()}
		req.SetRequestURI(path)
		req.Header.SetHost("a.example")
		req.Header.Set("X-Request-Id", rec.id) // as the forwarding policy adds it
		x := p.pools.exchanges.start(ctx, rec.id)
		defer p.pools.exchanges.finish(rec.id, x)
		if err := p.forwardCtx(ctx, s, rt, req, resp, rec, nil); err != nil {
			return err
		}
		if bs := resp.BodyStream(); bs != nil {
			io.Copy(io.Discard, bs)
		}
		return resp.CloseBodyStream()
	}

	for range 3 {
		if err := do(context.Background(), "/"); err != nil {
			t.Fatal(err)
		}
	}
	if n := o.connects.Load(); n != 1 {
		t.Fatalf("%d connections for 3 requests in a row, want 1", n)
	}

	// Reset while the origin works on it.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- do(ctx, "/hang") }()
	<-hang
	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, errClientGone) {
			t.Errorf("reset request: %v, want errClientGone", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the reset request still waits for the origin after 2 s")
	}
	abandonedIn := time.Since(start)
	deadline := time.Now().Add(2 * time.Second)
	for cut.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if cut.Load() != 1 {
		t.Error("the origin never saw the abandoned request end")
	}
	if n := testutil.ToFloat64(p.pools.exchanges.inFlight); n != 1 {
		t.Errorf("in_progress abandoned %v, want 1", n)
	}
	if o.health.state(time.Now()) != "up" || o.failures.Load() != 0 {
		t.Errorf("a client's reset counted against the origin: %s, %d failures", o.health.state(time.Now()), o.failures.Load())
	}

	// Gone before it is sent: not sent.
	before := got.Load()
	gone, cancelGone := context.WithCancel(context.Background())
	cancelGone()
	if err := do(gone, "/"); !errors.Is(err, errClientGone) {
		t.Errorf("request of a client already gone: %v", err)
	}
	if got.Load() != before {
		t.Error("a request whose client was gone reached the origin")
	}

	// Normal exchanges whose clients go afterwards keep their connection.
	conns := o.connects.Load()
	for range 5 {
		ctx, cancel := context.WithCancel(context.Background())
		if err := do(ctx, "/"); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	if n := o.connects.Load() - conns; n > 1 {
		t.Errorf("%d new connections for 5 requests in a row whose clients left after the answer, want at most 1", n)
	}
	// A client that goes after its response was read in full, before its
	// exchange ends: the connection is back in the pool and the next
	// request on it (an HTTP/1.1 client's, with no exchange) is sound.
	conns = o.connects.Load()
	{
		ctx, cancel := context.WithCancel(context.Background())
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		rec := &record{start: time.Now(), id: p.ids.next()}
		req.SetRequestURI("/")
		req.Header.SetHost("a.example")
		req.Header.Set("X-Request-Id", rec.id)
		x := p.pools.exchanges.start(ctx, rec.id)
		if err := p.forwardCtx(ctx, s, rt, req, resp, rec, nil); err != nil {
			t.Fatal(err)
		}
		if bs := resp.BodyStream(); bs != nil {
			io.Copy(io.Discard, bs)
		}
		resp.CloseBodyStream() // the connection goes back to the pool
		cancel()               // the client goes before the exchange ends
		time.Sleep(10 * time.Millisecond)
		p.pools.exchanges.finish(rec.id, x)
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	for i := range 3 {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("/")
		req.Header.SetHost("a.example")
		req.Header.Set("X-Request-Id", p.ids.next())
		if err := p.forward(s, rt, req, resp, &record{start: time.Now()}, nil); err != nil {
			t.Errorf("HTTP/1.1 request %d after a late reset on its connection: %v", i, err)
		}
		if bs := resp.BodyStream(); bs != nil {
			io.Copy(io.Discard, bs)
		}
		resp.CloseBodyStream()
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	if n := o.connects.Load() - conns; n != 0 {
		t.Errorf("%d new connections after a late reset, want 0 (the pooled one is sound)", n)
	}
	t.Logf("attack: a reset exchange was abandoned after %v; %d origin connections for %d requests", abandonedIn.Round(time.Microsecond), o.connects.Load(), o.requests.Load())
}

// TestHostileStreamLimit: past limits.max_streams HTTP/3 requests in
// flight in the process, a new one is refused (answered 503) and counted,
// whatever connection it comes on; under it, admitted and counted in
// flight.
func TestHostileStreamLimit(t *testing.T) {
	ns := netns.New(t)
	p, err := New(Options{Limits: Limits{MaxStreams: 3}, Dial: ns.Dial})
	if err != nil {
		t.Fatal(err)
	}
	defer p.tcp.Close()
	p.streams.Store(3) // three in flight on other connections
	if p.admitStream() {
		t.Error("over the limit: admitted")
	}
	if n := testutil.ToFloat64(p.fm.streamsRefused); n != 1 {
		t.Errorf("edgeproxy_cdn_streams_refused_total = %v, want 1", n)
	}
	if p.streams.Load() != 3 {
		t.Errorf("%d in flight after the refusal, want 3", p.streams.Load())
	}
	p.streams.Store(2)
	if !p.admitStream() || p.streams.Load() != 3 {
		t.Errorf("under the limit: refused, or %d in flight after, want 3", p.streams.Load())
	}
}

// TestHostileResetBudgets: a connection over its reset budget is cut; a
// client over its own, across connections, is banned for the ban time
// (IPv6 by /64); the table of clients never grows past its bound.
func TestHostileResetBudgets(t *testing.T) {
	g := newResetGuard(5, 12, time.Minute, 100)
	now := time.Now()
	a := netip.MustParseAddr("198.51.100.7")
	c1 := &streamConn{client: a}
	for i := range 5 {
		if cut, ban := g.reset(c1, now); cut || ban {
			t.Fatalf("reset %d within the budget: cut %v ban %v", i+1, cut, ban)
		}
	}
	if cut, _ := g.reset(c1, now); !cut {
		t.Error("the 6th reset on a connection with a budget of 5 did not cut it")
	}
	c2 := &streamConn{client: a}
	var banned bool
	for range 7 {
		_, b := g.reset(c2, now)
		banned = banned || b
	}
	if !banned || !g.banned(a, now) || g.banned(a, now.Add(61*time.Second)) {
		t.Errorf("13 resets over two connections: banned %v, now %v, after the ban %v", banned, g.banned(a, now), g.banned(a, now.Add(61*time.Second)))
	}
	if cut, _ := g.reset(&streamConn{client: a}, now); !cut {
		t.Error("a banned client's new connection was not cut at its first reset")
	}
	v6 := &streamConn{client: netip.MustParseAddr("2001:db8:1:2::1")}
	for range 13 {
		g.reset(v6, now)
	}
	if !g.banned(netip.MustParseAddr("2001:db8:1:2:ffff::9"), now) {
		t.Error("an IPv6 client's /64 is not banned with it")
	}
	for i := range 1000 {
		g.reset(&streamConn{client: netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})}, now)
	}
	if n := len(g.clients); n > 100 {
		t.Errorf("%d clients in a table bounded at 100", n)
	}
	g.reset(&streamConn{client: netip.MustParseAddr("203.0.113.250")}, now.Add(resetWindow+time.Second))
	if n := len(g.clients); n > 100 {
		t.Errorf("%d clients after a sweep", n)
	}
}
