package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// The request pipeline, one for every engine. An engine (HTTP/1.1 in
// h1.go, HTTP/2 in h2server.go and h2stream.go, HTTP/3 in h3.go) parses
// a request and checks what only its protocol can get wrong (framing,
// pseudo-headers, connection-specific headers: check.go, h2stream.go,
// h3head.go), then hands it to the same steps:
//
//	admit           forwarding-policy scan, CDN-Loop (508), site (421),
//	                body limit (413), route; rewrites the head for the origin
//	forwardCtx      origin choice (balance.go), retries, passive health (forward.go)
//	clientResponse  the origin's answer rewritten for the client
//	errorResponse   the proxy's own answer: an error page with the request id
//	upstreamFailed  an origin error turned into its status and page, logged
//	done            metrics and the access log line (record.go)
//
// Each engine writes the response in its own framing and calls done once
// the last byte is out, or the client is gone.

// admit runs a request's admission and, when it is admitted, rewrites
// req's head for the origin (the forwarding policy of policy.go).
//
// req holds the request in the origin's HTTP/1.1 form: method, the
// request target as the client sent it, Host, the client's headers, and
// the declared body length (req.Header.ContentLength: -1 unknown, sent
// chunked). rec has start, id, proto, edge, client, method, host and path
// set; path is the decoded path (percent-decoding undone, no query), which
// routes match after cleanPath.
//
// It returns the site and route, and the Upgrade header's value when the
// request asks to change protocol (HTTP/1.1 only; nil otherwise). A
// refused request gets rf (its status and message) and is not rewritten.
func (p *Proxy) admit(st *state, req *fasthttp.Request, rec *record, isTLS bool) (s *site, rt *route, upgrade []byte, rf *refusal) {
	var sc h1Scan
	scanRequest(&req.Header, &sc)
	if sc.spoofed > 0 {
		p.m.spoofed.Add(float64(sc.spoofed))
	}
	if loopIn(sc.loop, st.cfg.LoopID) {
		return nil, nil, nil, &refusal{status: 508, msg: "the request has been through this CDN already (CDN-Loop)"}
	}
	s = st.router.lookup(rec.host, rec.edge.Addr())
	if s == nil {
		return nil, nil, nil, &refusal{status: 421, msg: "no site " + rec.host + " on this address"}
	}
	rec.site = s.name
	if cl := req.Header.ContentLength(); int64(cl) > p.limits().MaxBodyBytes {
		return s, nil, nil, &refusal{status: 413, msg: "the request body is larger than the limit"}
	}
	rt = s.route(cleanPath(rec.path))
	if len(sc.upgrade) > 0 && headerHasToken(sc.conn, "upgrade") {
		upgrade = bytes.Clone(sc.upgrade) // the rewrite drops it, with the other hop-by-hop headers
	}
	rewriteRequest(&req.Header, &sc, rec.client, rec.edge, req.Host(), isTLS, st.cfg.LoopID, rec.id)
	return s, rt, upgrade, nil
}

// refuse answers a request the edge refused: rf's status and message in
// resp. A refusal with a reason (check.go) is counted by it.
func (p *Proxy) refuse(st *state, rec *record, rf *refusal, resp *fasthttp.Response, overTLS bool) {
	if rf.reason != "" {
		rec.refused = rf.reason
		p.m.refuse(rf.reason)
	}
	p.errorResponse(st, rec, rf.status, rf.msg, resp, overTLS)
}

// upstreamFailed answers a request whose forwarding failed with err: the
// status and page errorStatus gives it, and a log line unless the client
// went away.
func (p *Proxy) upstreamFailed(st *state, rec *record, err error, resp *fasthttp.Response, overTLS bool) {
	status, msg := errorStatus(err)
	if status != 499 {
		p.log.Info("cdn upstream error", "request_id", rec.id, "upstream", rec.upstream, "error", err)
	}
	p.errorResponse(st, rec, status, msg, resp, overTLS)
}

// errorResponse fills resp with the proxy's own answer: an error page that
// carries the request id, Server: edgeproxy, and Alt-Svc over TLS on TCP
// where HTTP/3 is served (not on a 421: the client asked the wrong
// address). It sets rec's status and bytes; the engine writes resp and
// calls done. A response already set to close its connection (HTTP/1.1)
// stays so.
func (p *Proxy) errorResponse(st *state, rec *record, status int, msg string, resp *fasthttp.Response, overTLS bool) {
	rec.status = status
	body := errorPage(status, rec.id, msg)
	closing := resp.ConnectionClose()
	resp.Reset()
	if closing {
		resp.SetConnectionClose()
	}
	resp.SetStatusCode(status)
	resp.Header.SetContentType("text/plain; charset=utf-8")
	resp.Header.SetServer(serverName)
	resp.Header.Set("X-Request-Id", rec.id)
	if alt := st.altSvcOver(overTLS); alt != "" && status != 421 {
		resp.Header.Set("Alt-Svc", alt)
	}
	resp.SetBody(body)
	rec.bytes = int64(len(body))
}

// clientResponse rewrites an origin's answer for the client: hop-by-hop
// headers out, the request id and Alt-Svc in (over TLS on TCP only), the
// origin's Server kept, else edgeproxy's. It sets rec's status.
func (p *Proxy) clientResponse(st *state, rec *record, resp *fasthttp.Response, overTLS bool) {
	rewriteResponse(&resp.Header, rec.id, st.altSvcOver(overTLS))
	if len(resp.Header.Server()) == 0 {
		resp.Header.SetServer(serverName)
	}
	rec.status = resp.StatusCode()
}

// serverName is the Server header of a response the origin sent none for,
// and of the proxy's own.
const serverName = "edgeproxy"

// altSvcOver is the Alt-Svc a response carries: HTTP/3 is advertised over
// TLS on TCP (HTTP/1.1 over TLS, HTTP/2) where it is served, never in
// cleartext nor over HTTP/3 itself.
func (st *state) altSvcOver(overTLS bool) string {
	if !overTLS {
		return ""
	}
	return st.altSvc
}

// limitedBody bounds a request body, counts what was read, and marks the
// client's read errors (errClientBody) apart from the origin's. The read
// that crosses the limit returns none of its bytes, and every read after
// it fails too: fasthttp's client drops an error that comes with data and
// reads on, which would send the whole body.
type limitedBody struct {
	r      io.Reader
	max, n int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.n > b.max {
		return 0, errBodyTooLarge
	}
	if room := b.max - b.n + 1; int64(len(p)) > room {
		p = p[:room] // one byte past the limit tells it is crossed
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > b.max {
		return 0, errBodyTooLarge
	}
	if err != nil && err != io.EOF && !errors.Is(err, errClientBody) && !errors.Is(err, errClientGone) {
		err = fmt.Errorf("%w: %w", errClientBody, err)
	}
	return n, err
}

// admitHead is admit for an HTTP/2 or HTTP/3 request, whose head is h
// (decoded and checked: reqHead) and whose body req carries (its declared
// length in req.Header.ContentLength, as for admit). A route whose origins
// all speak HTTP/1.1 gets its origin head written now, into h.origin, for
// the engine's exchange (streamAttempt); any other gets req completed
// from h and rewritten by the forwarding policy, for the fasthttp path.
func (p *Proxy) admitHead(st *state, h *reqHead, req *fasthttp.Request, rec *record) (s *site, rt *route, rf *refusal) {
	sc := &h.sc
	if sc.spoofed > 0 {
		p.m.spoofed.Add(float64(sc.spoofed))
	}
	if loopIn(sc.loop, st.cfg.LoopID) {
		return nil, nil, &refusal{status: 508, msg: "the request has been through this CDN already (CDN-Loop)"}
	}
	s = st.router.lookup(rec.host, rec.edge.Addr())
	if s == nil {
		return nil, nil, &refusal{status: 421, msg: "no site " + rec.host + " on this address"}
	}
	rec.site = s.name
	if cl := req.Header.ContentLength(); int64(cl) > p.limits().MaxBodyBytes {
		return s, nil, &refusal{status: 413, msg: "the request body is larger than the limit"}
	}
	rt = s.route(cleanPath(rec.path))
	host := unsafe.Slice(unsafe.StringData(h.authority), len(h.authority))
	if h1Only(rt) {
		sp := scratches.Get().(*[]byte)
		var f forwarded
		var sb []byte
		f, sb = forwardedValues((*sp)[:0], sc, rec.client, rec.edge, host, true, st.cfg.LoopID, rec.id)
		oh := originHeads.Get().(*reqOriginHead)
		oh.b = h.appendOrigin(oh.b[:0], &f)
		oh.contentType = h.hasContentType()
		*sp = sb[:0]
		scratches.Put(sp)
		h.origin = oh
		return s, rt, nil
	}
	h.toRequest()
	rewriteRequest(&req.Header, sc, rec.client, rec.edge, req.Host(), true, st.cfg.LoopID, rec.id)
	return s, rt, nil
}

// h1Only reports whether every origin of rt speaks HTTP/1.1 (none may
// speak HTTP/2): its requests take the engine's exchange.
func h1Only(rt *route) bool {
	for _, w := range rt.origins {
		if w.o.h2.tr != nil && w.o.h2.proto.Load() != protoH1 {
			return false
		}
	}
	return true
}
