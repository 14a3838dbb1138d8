package proxy

import (
	"io"
	"net"
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
