package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
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
	netns.New(t)
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
