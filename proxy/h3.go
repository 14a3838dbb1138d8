package proxy

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/valyala/fasthttp"

	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
	"github.com/edgeproxy/edgeproxy/internal/netaddr"
)

// stdHandler is the net/http handler of HTTP/3 (quic-go's http3 serves
// only through net/http): its requests are copied into fasthttp's and go
// through the same pipeline as every other engine's.
func (p *Proxy) stdHandler() http.Handler { return http.HandlerFunc(p.guardStd) }

func (p *Proxy) serveStd(w http.ResponseWriter, r *http.Request) {
	st := p.state.Load()
	rec := &record{
		start: time.Now(), id: p.ids.next(), proto: protoName(r),
		method: r.Method, host: r.Host, path: r.URL.Path,
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		rec.edge = netaddr.AddrPort(la)
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		rec.client = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	isH3 := r.ProtoMajor == 3

	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	fail := func(rf *refusal) {
		p.refuse(st, rec, rf, resp, isH3)
		p.writeStd(w, resp, rec)
		p.done(rec)
	}
	// The request for the origin, with the client's headers, checked
	// (h3head.go), then the pipeline's admission, as for HTTP/1.1.
	if rf := convertStd(r, req); rf != nil {
		fail(rf)
		return
	}
	if r.ContentLength != 0 {
		req.Header.SetContentLength(int(r.ContentLength)) // -1: unknown, sent chunked
	}
	s, rt, _, rf := p.admit(st, req, rec, true)
	if rf != nil {
		fail(rf)
		return
	}
	var bodyRead func() int64
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		lb := &limitedBody{r: r.Body, max: p.limits().MaxBodyBytes}
		req.SetBodyStream(lb, int(r.ContentLength))
		bodyRead = func() int64 { return lb.n }
	}

	// A stream reset or cancelled abandons its origin exchange.
	x := p.pools.exchanges.start(r.Context(), rec.id)
	defer p.pools.exchanges.finish(rec.id, x)
	if err := p.forwardCtx(r.Context(), s, rt, req, resp, rec, bodyRead); err != nil {
		p.upstreamFailed(st, rec, err, resp, isH3)
	} else {
		p.clientResponse(st, rec, resp, isH3)
	}
	p.writeStd(w, resp, rec)
	resp.CloseBodyStream()
	p.done(rec)
}

// writeStd writes resp to an HTTP/3 client through net/http,
// streaming a streamed body chunk by chunk, each write bounded by the send
// timeout. It adds what was written to rec's bytes.
func (p *Proxy) writeStd(w http.ResponseWriter, resp *fasthttp.Response, rec *record) {
	h := w.Header()
	for k, v := range resp.Header.All() {
		if !bytes.EqualFold(k, hTE) { // net/http frames the body itself
			h.Add(string(k), string(v))
		}
	}
	w.WriteHeader(resp.StatusCode())
	bs := resp.BodyStream()
	if bs == nil {
		if b := resp.Body(); len(b) > 0 {
			w.Write(b)
			rec.bytes = int64(len(b))
		}
		return
	}
	rc := http.NewResponseController(w)
	bp := bodyBufs.Get().(*[]byte)
	defer bodyBufs.Put(bp)
	buf := *bp
	for {
		n, err := bs.Read(buf)
		if n > 0 {
			rc.SetWriteDeadline(time.Now().Add(p.limits().SendTimeout))
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			rec.bytes += int64(n)
			rc.Flush()
		}
		if err != nil {
			return
		}
	}
}

// bodyBufs are the buffers that copy response bodies to HTTP/3
// clients: a flood of requests does not allocate one each.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func protoName(r *http.Request) string {
	if r.ProtoMajor == 3 {
		return "HTTP/3"
	}
	return r.Proto
}

// h3Conn is one HTTP/3 connection. Each is served by an http3.Server of
// its own: quic-go's server sends GOAWAY only to all its connections at
// once (Shutdown), and a move tells only the connections on the moved
// addresses to go.
type h3Conn struct {
	c    *quic.Conn
	edge netip.AddrPort // the address the client dialled
	srv  *http3.Server
	sc   *streamConn
	once sync.Once
}

// h3Quiet is how often a connection told to go checks whether a request
// is still in flight; it closes after two checks in a row found none.
const h3Quiet = 50 * time.Millisecond

// acceptH3 serves every connection the listener accepts (a handshake
// completed) until it is closed.
func (p *Proxy) acceptH3(ln *quic.Listener) {
	for {
		c, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		go p.serveH3Conn(c)
	}
}

// serveH3Conn gives the connection its connected socket (so it keeps its
// datagrams after a move or an upgrade) and serves its requests.
func (p *Proxy) serveH3Conn(c *quic.Conn) {
	ctx := c.Context()
	p.quicHandshakeDone(ctx)
	p.amp.validated(c.RemoteAddr())
	hc := &h3Conn{c: c, edge: netaddr.AddrPort(c.LocalAddr())}
	release, err := p.qs.attach(netaddr.AddrPort(c.RemoteAddr()), hc.edge,
		func() bool { return p.fds.Acquire(fdlimit.CDN, 1) },
		func() { p.fds.Release(fdlimit.CDN, 1) })
	if err != nil {
		p.log.Debug("cdn: http3 connection stays on the listener", "client", c.RemoteAddr(), "error", err)
	} else {
		context.AfterFunc(ctx, release)
	}
	hc.sc = &streamConn{client: netaddr.AddrPort(c.RemoteAddr()).Addr(), close: func() {
		c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeExcessiveLoad), "too many streams reset")
	}}
	context.AfterFunc(ctx, func() { hc.sc.closed.Store(true) })
	l := p.limits()
	hc.srv = &http3.Server{
		Handler:        p.stdHandler(),
		IdleTimeout:    l.IdleTimeout,
		MaxHeaderBytes: l.MaxHeaderBytes,
		ConnContext: func(ctx context.Context, _ *quic.Conn) context.Context {
			return context.WithValue(ctx, streamConnKey{}, hc.sc)
		},
	}
	defer c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
	if !p.h3conns.add(hc, p.closing) {
		return
	}
	defer p.h3conns.remove(hc)
	p.m.active.WithLabelValues("h3").Inc()
	defer p.m.active.WithLabelValues("h3").Dec()
	hc.srv.ServeQUICConn(c)
}

// leave tells the connection to go (its address left the cdn): GOAWAY,
// then closed once its requests are done, within the idle timeout.
func (p *Proxy) leaveH3(hc *h3Conn) func() {
	return func() {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), p.limits().IdleTimeout)
			defer cancel()
			hc.goAway(ctx)
		}()
	}
}

// kill closes the connection at once.
func (hc *h3Conn) kill() {
	hc.c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
}

// goAway sends GOAWAY, lets the requests in flight finish, and closes the
// connection once none has been in flight for two checks in a row (a
// client keeps a connection open after GOAWAY), or when ctx is done. Once
// per connection.
func (hc *h3Conn) goAway(ctx context.Context) {
	hc.once.Do(func() {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			t := time.NewTicker(h3Quiet)
			defer t.Stop()
			quiet := 0
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if hc.sc.inflight.Load() > 0 {
						quiet = 0
						continue
					}
					if quiet++; quiet >= 2 {
						cancel()
						return
					}
				}
			}
		}()
		hc.srv.Shutdown(ctx)
	})
}

// shutdownH3 tells every HTTP/3 connection to go and waits for them until
// ctx is done, then closes those left.
func (p *Proxy) shutdownH3(ctx context.Context) error {
	for _, hc := range p.h3conns.all() {
		go hc.goAway(ctx)
	}
	return p.h3conns.wait(ctx, (*h3Conn).kill)
}
