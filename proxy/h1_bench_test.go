package proxy

import (
	"io"
	"net"
	"net/netip"
	"net/url"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// BenchmarkServeH1 measures the HTTP/1.1 path's own cost per request, with
// an in-memory origin: no kernel, no network.
func BenchmarkServeH1(b *testing.B) {
	b.Run("access-log-off", func(b *testing.B) { benchServeH1(b, nil) })
	b.Run("access-log-json", func(b *testing.B) {
		access := NewAccessLog(io.Discard, "bench")
		defer access.Close()
		benchServeH1(b, access)
	})
}

func benchServeH1(b *testing.B, access *AccessLog) {
	ln := fasthttputil.NewInmemoryListener()
	defer ln.Close()
	go fasthttp.Serve(ln, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("hello from the origin\n") })

	u, _ := url.Parse("http://origin.test")
	p, err := New(Options{AccessLog: access, Config: Config{HTTPPorts: []uint16{80}, Sites: []Site{{Hosts: []string{"*"}, Origins: []Origin{{URL: u}}}}}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.tcp.Close()
	o, _ := p.pools.get(u, OriginTLS{})
	o.hc.Dial = func(string) (net.Conn, error) { return ln.Dial() }

	var req fasthttp.Request
	req.SetRequestURI("http://www.example.com/path?q=1")
	req.Header.Set("User-Agent", "bench")
	req.Header.Set("Accept", "*/*")
	raddr := &net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 40000}
	var ctx fasthttp.RequestCtx
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		ctx.Init(&req, raddr, nil)
		p.serveH1(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
		if s := ctx.Response.BodyStream(); s != nil {
			buf := make([]byte, 64)
			for {
				if _, err := s.Read(buf); err != nil {
					break
				}
			}
		}
		ctx.Response.CloseBodyStream()
		ctx.Response.Reset()
	}
}

// BenchmarkH1EngineHeads measures the HTTP/1.1 engine's own work per
// request, without its reads and writes: the request head parsed and
// admitted, the origin's request written, the response head parsed and
// rewritten, the request's metrics.
func BenchmarkH1EngineHeads(b *testing.B) {
	u, _ := url.Parse("http://origin.test")
	p, err := New(Options{Config: Config{HTTPPorts: []uint16{80}, Sites: []Site{{Hosts: []string{"*"}, Origins: []Origin{{URL: u}}}}}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.tcp.Close()
	req := []byte("GET /path/to/object.js?v=3 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\n\r\n")
	resp := []byte("HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 14:20:25 GMT\r\nContent-Type: text/plain\r\nContent-Length: 22\r\nConnection: keep-alive\r\n\r\n")
	hc := &h1Conn{p: p, edge: netip.MustParseAddrPort("192.0.2.1:80"), client: netip.MustParseAddrPort("198.51.100.7:40000")}
	var out []byte
	b.ReportAllocs()
	for b.Loop() {
		hc.head = h1Heads.Get().(*h1Head)
		if !parseHead(req, hc.head) {
			b.Fatal("not the engine's")
		}
		if _, _, ok := hc.admit(); !ok {
			b.Fatal("not admitted")
		}
		r := h1Resps.Get().(*h1Resp)
		if err := parseResp(resp, r); err != nil {
			b.Fatal(err)
		}
		out = appendClientHead(out[:0], r, r.cl, hc.rec.id, hc.st.altSvc, false)
		hc.rec.status = r.status
		p.done(&hc.rec)
		h1Resps.Put(r)
		hc.putHead()
	}
}
