package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
	"golang.org/x/net/http2"
)

// h2Fixture is a proxy whose HTTP/2 server is reached over in-memory
// connections (no kernel), with an in-memory fasthttp origin.
type h2Fixture struct {
	p      *Proxy
	ln     *fasthttputil.InmemoryListener // the proxy's
	origin *fasthttputil.InmemoryListener
	conns  chan *countingConn
}

// countingConn counts the writes the server makes.
type countingConn struct {
	net.Conn
	writes, bytes int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes++
	c.bytes += int64(len(b))
	return c.Conn.Write(b)
}

func newH2Fixture(t testing.TB, lim Limits, origin fasthttp.RequestHandler) *h2Fixture {
	t.Helper()
	f := &h2Fixture{ln: fasthttputil.NewInmemoryListener(), origin: fasthttputil.NewInmemoryListener(), conns: make(chan *countingConn, 64)}
	osrv := &fasthttp.Server{Handler: origin, StreamRequestBody: true, MaxRequestBodySize: 1 << 30, DisableHeaderNamesNormalizing: true}
	go osrv.Serve(f.origin)
	u, _ := url.Parse("http://origin.test")
	p, err := New(Options{Limits: lim, Config: Config{HTTPSPorts: []uint16{443}, Sites: []Site{{Hosts: []string{"*"}, Origins: []Origin{{URL: u}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	f.p = p
	o, _ := p.pools.get(u, OriginTLS{})
	o.hc.Dial = func(string) (net.Conn, error) { return f.origin.Dial() }
	go func() {
		for {
			c, err := f.ln.Accept()
			if err != nil {
				return
			}
			cc := &countingConn{Conn: c}
			select {
			case f.conns <- cc:
			default:
			}
			go p.serveH2(cc)
		}
	}()
	t.Cleanup(func() {
		f.ln.Close()
		p.closeH2()
		p.tcp.Close()
		osrv.Shutdown()
		f.origin.Close()
	})
	return f
}

func (f *h2Fixture) client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(context.Context, string, string, *tls.Config) (net.Conn, error) {
			return f.ln.Dial()
		},
	}}
}

func echoOrigin(ctx *fasthttp.RequestCtx) {
	body := ctx.Request.Body()
	fmt.Fprintf(ctx, "%s %s len=%d ", ctx.Method(), ctx.RequestURI(), len(body))
	ctx.Write(body)
}

func TestH2Smoke(t *testing.T) {
	f := newH2Fixture(t, Limits{}, echoOrigin)
	c := f.client()
	resp, err := c.Get("http://a.example/hello?x=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("%d %q %v", resp.StatusCode, b, resp.Header)
	resp, err = c.Post("http://a.example/post", "text/plain", bytes.NewReader(bytes.Repeat([]byte("x"), 100000)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	t.Logf("%d %q", resp.StatusCode, b[:40])
	_ = strconv.Itoa
}
