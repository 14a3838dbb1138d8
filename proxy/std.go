package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/edgeproxy/edgeproxy/internal/netaddr"
)

// stdHandler is the net/http handler of HTTP/2 and HTTP/3: the same
// routing and forwarding policy as the HTTP/1.1 path, through the same
// origin pools.
func (p *Proxy) stdHandler() http.Handler { return http.HandlerFunc(p.serveStd) }

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

	if loopDetected(r.Header.Values("CDN-Loop"), st.cfg.LoopID) {
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

	fw := newForwarded(r.Header.Values("X-Forwarded-For"), r.Header.Values("Forwarded"),
		r.Header.Values("CDN-Loop"), rec.client, rec.edge, r.Host, true, st.cfg.LoopID)
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.Header.DisableNormalizing()
	req.Header.SetMethod(r.Method)
	req.SetRequestURI(r.URL.RequestURI())
	req.Header.SetHost(r.Host)
	req.UseHostHeader = true // the URI has no host to take it from
	skip := map[string]bool{}
	for _, t := range connectionTokens(r.Header.Get("Connection")) {
		skip[http.CanonicalHeaderKey(t)] = true
	}
	for _, name := range hopHeaders {
		skip[name] = true
	}
	for name, vs := range r.Header {
		if skip[name] || name == "Host" || name == "Content-Length" {
			continue
		}
		for _, v := range vs {
			req.Header.Add(name, v)
		}
	}
	req.Header.Set("X-Forwarded-For", fw.xff)
	req.Header.Set("X-Forwarded-Proto", fw.proto)
	req.Header.Set("X-Forwarded-Host", fw.host)
	req.Header.Set("Forwarded", fw.elem)
	req.Header.Set("CDN-Loop", fw.loop)
	req.Header.Set("X-Edge-Addr", fw.edge)
	req.Header.Set("X-Request-Id", rec.id)
	var bodyRead func() int64
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		cl := int(r.ContentLength) // -1: unknown, sent chunked
		lb := &limitedBody{r: r.Body, max: p.limits.MaxBodyBytes}
		req.SetBodyStream(lb, cl)
		bodyRead = func() int64 { return lb.n }
	}

	up := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(up)
	if err := p.forward(s, rt, req, up, rec, bodyRead); err != nil {
		status, msg := errorStatus(err)
		p.log.Info("cdn upstream error", "request_id", rec.id, "upstream", rec.upstream, "error", err)
		fail(status, msg)
		return
	}
	defer up.CloseBodyStream()

	h := w.Header()
	skip = map[string]bool{}
	for _, t := range connectionTokens(string(up.Header.Peek("Connection"))) {
		skip[http.CanonicalHeaderKey(t)] = true
	}
	for _, name := range hopHeaders {
		skip[name] = true
	}
	for k, v := range up.Header.All() {
		name := http.CanonicalHeaderKey(string(k))
		if !skip[name] {
			h.Add(name, string(v))
		}
	}
	h.Set("X-Request-Id", rec.id)
	if st.altSvc != "" && !isH3 {
		h.Set("Alt-Svc", st.altSvc)
	}
	rec.status = up.StatusCode()
	w.WriteHeader(rec.status)
	if bs := up.BodyStream(); bs != nil {
		rc := http.NewResponseController(w)
		buf := make([]byte, 32<<10)
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
