package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/edgeproxy/edgeproxy/internal/netaddr"
)

// stdHandler is the net/http handler of HTTP/2 and HTTP/3: the same
// routing and forwarding policy as the HTTP/1.1 path, through the same
// origin pools.
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

	fail := func(status int, msg string) {
		rec.status = status
		body := errorPage(status, rec.id, msg)
		h := w.Header()
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("X-Request-Id", rec.id)
		h.Set("Content-Length", strconv.Itoa(len(body)))
		if st.altSvc != "" && !isH3 && status != 421 {
			h.Set("Alt-Svc", st.altSvc)
		}
		w.WriteHeader(status)
		w.Write(body)
		rec.bytes = int64(len(body))
		p.done(rec)
	}

	// The request for the origin, with the client's headers, checked
	// (stdhead.go): the one forwarding policy of h1headers.go applies to it
	// as to HTTP/1.1.
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	var sc h1Scan
	if rf := p.stdOriginRequest(r, req, &sc, rec); rf != nil {
		fail(rf.status, rf.msg)
		return
	}
	if loopIn(sc.loop, st.cfg.LoopID) {
		fail(508, "the request has been through this CDN already (CDN-Loop)")
		return
	}
	s := st.router.lookup(r.Host, rec.edge.Addr())
	if s == nil {
		fail(421, "no site "+r.Host+" on this address")
		return
	}
	rec.site = s.name
	if r.ContentLength > p.limits.MaxBodyBytes {
		fail(413, "the request body is larger than the limit")
		return
	}
	rt := s.route(cleanPath(r.URL.Path))
	rewriteRequest(&req.Header, &sc, rec.client, rec.edge, []byte(r.Host), true, st.cfg.LoopID, rec.id)
	var bodyRead func() int64
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		cl := int(r.ContentLength) // -1: unknown, sent chunked
		lb := &limitedBody{r: r.Body, max: p.limits.MaxBodyBytes}
		req.SetBodyStream(lb, cl)
		bodyRead = func() int64 { return lb.n }
	}

	up := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(up)
	// A stream reset or cancelled abandons its origin exchange.
	x := p.pools.exchanges.start(r.Context(), rec.id)
	defer p.pools.exchanges.finish(rec.id, x)
	if err := p.forwardCtx(r.Context(), s, rt, req, up, rec, bodyRead); err != nil {
		status, msg := errorStatus(err)
		if status != 499 {
			p.log.Info("cdn upstream error", "request_id", rec.id, "upstream", rec.upstream, "error", err)
		}
		fail(status, msg)
		return
	}
	defer up.CloseBodyStream()

	altSvc := st.altSvc
	if isH3 {
		altSvc = "" // HTTP/3 responses do not announce it again
	}
	rewriteResponse(&up.Header, rec.id, altSvc)
	h := w.Header()
	for k, v := range up.Header.All() {
		if !bytes.EqualFold(k, hTE) { // net/http frames the body itself
			h.Add(string(k), string(v))
		}
	}
	rec.status = up.StatusCode()
	w.WriteHeader(rec.status)
	if bs := up.BodyStream(); bs != nil {
		rc := http.NewResponseController(w)
		bp := bodyBufs.Get().(*[]byte)
		defer bodyBufs.Put(bp)
		buf := *bp
		for {
			n, err := bs.Read(buf)
			if n > 0 {
				rc.SetWriteDeadline(time.Now().Add(p.limits.SendTimeout))
				if _, werr := w.Write(buf[:n]); werr != nil {
					break
				}
				rec.bytes += int64(n)
				rc.Flush()
			}
			if err != nil {
				break
			}
		}
	} else if b := up.Body(); len(b) > 0 {
		w.Write(b)
		rec.bytes = int64(len(b))
	}
	p.done(rec)
}

// bodyBufs are the buffers that copy response bodies to HTTP/2 and
// HTTP/3 clients: a flood of requests does not allocate one each.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func protoName(r *http.Request) string {
	switch r.ProtoMajor {
	case 3:
		return "HTTP/3"
	case 2:
		return "HTTP/2"
	}
	return r.Proto
}

// limitedBody bounds a request body, counts what was read, and marks the
// client's read errors (errClientBody) apart from the origin's.
type limitedBody struct {
	r      io.Reader
	max, n int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > b.max {
		return n, errBodyTooLarge
	}
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %w", errClientBody, err)
	}
	return n, err
}
