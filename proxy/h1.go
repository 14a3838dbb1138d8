package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/edgeproxy/edgeproxy/internal/netaddr"
)

// serveH1 is the HTTP/1.1 hot path, cleartext and TLS.
func (p *Proxy) serveH1(ctx *fasthttp.RequestCtx) {
	st := p.state.Load()
	req := &ctx.Request
	rec := &record{
		start: ctx.Time(), id: p.ids.next(), proto: h1Proto(&req.Header),
		edge: netaddr.AddrPort(ctx.LocalAddr()), client: netaddr.AddrPort(ctx.RemoteAddr()),
		method: string(req.Header.Method()), host: string(req.Host()), path: string(req.URI().Path()),
	}
	isTLS := ctx.IsTLS()

	// Ambiguous framing is refused, never normalized: an origin might frame
	// the request another way (request smuggling). fasthttp refuses
	// duplicate Content-Length and unknown codings itself, and drops a
	// Content-Length beside Transfer-Encoding, which must be refused.
	if framingAmbiguous(req.Header.RawHeaders()) {
		ctx.SetConnectionClose()
		p.failH1(ctx, st, rec, 400, "the request has both Content-Length and Transfer-Encoding")
		return
	}
	if r := checkH1(req); r != nil {
		if r.status == 400 {
			ctx.SetConnectionClose()
		}
		p.refuseH1(ctx, st, rec, r)
		return
	}
	s, rt, upgrade, rf := p.admit(st, req, rec, isTLS)
	if rf != nil {
		if rf.status == 413 {
			ctx.SetConnectionClose() // the body is unread
		}
		p.refuseH1(ctx, st, rec, rf)
		return
	}
	if upgrade != nil {
		p.serveUpgrade(ctx, st, s, rt, rec, upgrade)
		return
	}
	h := &req.Header
	var bodyRead func() int64
	if req.IsBodyStream() && hasBody(h) {
		rb := &requestBody{limitedBody: limitedBody{r: req.BodyStream(), max: p.limits().MaxBodyBytes}, conn: ctx.Conn(), timeout: p.limits().BodyTimeout}
		req.SetBodyStream(rb, h.ContentLength())
		bodyRead = func() int64 { return rb.n }
	}

	up := fasthttp.AcquireResponse()
	if err := p.forward(s, rt, req, up, rec, bodyRead); err != nil {
		fasthttp.ReleaseResponse(up)
		if status, _ := errorStatus(err); status == 413 || status == 400 || bodyRead != nil {
			ctx.SetConnectionClose() // the rest of the body is unread
		}
		p.upstreamFailed(st, rec, err, &ctx.Response, isTLS)
		p.done(rec)
		return
	}

	resp := &ctx.Response
	up.Header.CopyTo(&resp.Header)
	// CopyTo took up's flags: no Content-Type the origin did not send, the
	// client's connection does not end because the origin's does, and the
	// version is the edge's own.
	resp.Header.SetNoDefaultContentType(true)
	resp.Header.ResetConnectionClose()
	resp.Header.SetProtocol([]byte("HTTP/1.1"))
	p.clientResponse(st, rec, resp, isTLS)
	if bs := up.BodyStream(); bs != nil {
		cl := up.Header.ContentLength()
		if cl == -2 {
			cl = -1 // delimited by the origin's close: chunked to the client, whose connection stays
		}
		resp.SetBodyStream(&responseBody{r: bs, up: up, conn: ctx.Conn(), timeout: p.limits().SendTimeout, rec: rec, p: p}, cl)
		return
	}
	// A body read whole (originTransport) moves to the client's response
	// without a copy: it goes out with the head, in one write.
	b := up.SwapBody(nil)
	rec.bytes = int64(len(b))
	up.SwapBody(resp.SwapBody(b))
	fasthttp.ReleaseResponse(up)
	p.done(rec)
}

// h1Proto names a request's protocol for the metrics and the access log.
func h1Proto(h *fasthttp.RequestHeader) string {
	if h.IsHTTP11() {
		return "HTTP/1.1"
	}
	return "HTTP/1.0"
}

// failH1 answers with an error page that carries the request id, and
// ends the request.
func (p *Proxy) failH1(ctx *fasthttp.RequestCtx, st *state, rec *record, status int, msg string) {
	p.refuseH1(ctx, st, rec, &refusal{status: status, msg: msg})
}

// refuseH1 answers a request the edge refused (check.go, admit), counts
// it, and ends it.
func (p *Proxy) refuseH1(ctx *fasthttp.RequestCtx, st *state, rec *record, r *refusal) {
	p.refuse(st, rec, r, &ctx.Response, ctx.IsTLS())
	p.done(rec)
}

// parseErrorH1 is fasthttp's ErrorHandler: a request its parser refused
// (a head over max_header_bytes, one that did not arrive in time, or a
// malformed one) is answered like the proxy's own errors, with a request
// id, and counted and logged like any request.
func (p *Proxy) parseErrorH1(ctx *fasthttp.RequestCtx, err error) {
	rec := &record{
		start: ctx.Time(), id: p.ids.next(), proto: "HTTP/1.1",
		edge: netaddr.AddrPort(ctx.LocalAddr()), client: netaddr.AddrPort(ctx.RemoteAddr()),
	}
	r := &refusal{status: 400, reason: refuseMalformed, msg: "the request is not valid HTTP/1.1"}
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.As(err, &small):
		r = &refusal{status: 431, reason: refuseHeadLarge, msg: "the request head is larger than the limit"}
	case errors.As(err, &ne) && ne.Timeout():
		r = &refusal{status: 408, reason: refuseTimeout, msg: "the request head did not arrive in time"}
	}
	p.log.Debug("cdn refused a request", "request_id", rec.id, "client", rec.client, "error", err)
	p.refuseH1(ctx, p.state.Load(), rec, r)
}

// framingAmbiguous reports whether a raw header block has both
// Content-Length and Transfer-Encoding.
func framingAmbiguous(raw []byte) bool {
	var cl, te bool
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		name, _, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			cl = true
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			te = true
		}
	}
	return cl && te
}

var errBodyTooLarge = errors.New("request body larger than the limit")

// requestBody streams a request body to the origin, bounding each read by
// the body timeout (a client that stops sending is cut) and the total by
// the body limit.
type requestBody struct {
	limitedBody
	conn    net.Conn
	timeout time.Duration
}

func (b *requestBody) Read(p []byte) (int, error) {
	pushDeadline(b.timeout, b.conn.SetReadDeadline)
	return b.limitedBody.Read(p)
}

// responseBody streams an origin's body to the client, bounding each write
// by the send timeout (a client that stops reading is cut), and ends the
// request's record when fasthttp closes it.
type responseBody struct {
	r       io.Reader
	up      *fasthttp.Response
	conn    net.Conn
	timeout time.Duration
	rec     *record
	p       *Proxy
	closed  bool
}

func (b *responseBody) Read(p []byte) (int, error) {
	// fasthttp set a write deadline for the response; once the body goes
	// past its first read, each further chunk gets the send timeout.
	if b.rec.bytes > 0 {
		pushDeadline(b.timeout, b.conn.SetWriteDeadline)
	}
	n, err := b.r.Read(p)
	b.rec.bytes += int64(n)
	return n, err
}

func (b *responseBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	err := b.up.CloseBodyStream()
	fasthttp.ReleaseResponse(b.up)
	b.p.done(b.rec)
	return err
}
