package proxy

import (
	"bytes"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

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
