package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"strconv"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// The origin exchange of HTTP/2 and HTTP/3 requests with an HTTP/1.1
// origin: the request is written on a pooled connection of the origin's
// HostClient by writeRequest, framed as fasthttp's Request.Write frames it
// (the head admitHead wrote, a body read whole or streamed, sized or
// chunked), and the response head is
// read and checked by the HTTP/1.1 engine's parseResp (h1head.go), not by
// fasthttp's client: the client's writer then encodes it from the
// engine's h1Resp (appendOriginFields) without a fasthttp.Response in
// between. A body of a known length up to smallBody is read whole with
// the head; a larger one, a chunked one or one delimited by the origin's
// close streams (originBody), and the connection goes back to the pool
// once it was read to its end.
//
// The exchange binds the origin connection to the request's exchange
// itself (no lookup by request id): a client that goes away cuts that
// connection, and only it.
//
// A route that may have an HTTP/2 origin takes the fasthttp path
// (fasthttpAttempt): doH2 takes fasthttp's request and response.

// upResp is the response a stream's writer sends: an origin's head read
// by the exchange (r, with body or stream), or a fasthttp.Response (an
// error page, or an HTTP/2 origin's answer).
type upResp struct {
	fresp  *fasthttp.Response
	r      *h1Resp
	body   []byte      // r's body, read whole
	stream *originBody // r's body, streamed
	id     string      // the request id, for r's fields
	altSvc string      // Alt-Svc for r's fields ("" none)
	fx     *exchange   // fresp's exchange, found by the request id (exchanges.start)
}

func (u *upResp) status() int {
	if u.r != nil {
		return u.r.status
	}
	return u.fresp.StatusCode()
}

// bodyOf gives the body: whole, or a stream (nil when whole).
func (u *upResp) bodyOf() ([]byte, io.Reader) {
	if u.r != nil {
		if u.stream != nil {
			return nil, u.stream
		}
		return u.body, nil
	}
	if bs := u.fresp.BodyStream(); bs != nil {
		return nil, bs
	}
	return u.fresp.Body(), nil
}

// contentLength is the origin's Content-Length, -1 when it has none.
func (u *upResp) contentLength() int {
	if u.r != nil {
		if u.r.cl < 0 || u.r.chunked {
			return -1
		}
		return int(u.r.cl)
	}
	return u.fresp.Header.ContentLength()
}

// appendFields appends the response's headers (appendRespFields).
func (u *upResp) appendFields(b []byte, bodyLen int, name *[]byte, num []byte, field func(b, name, value []byte) []byte) []byte {
	if u.r == nil {
		return appendRespFields(b, u.fresp, bodyLen, name, num, field)
	}
	return appendOriginFields(b, u.r, bodyLen, u.id, u.altSvc, name, num, field)
}

// finish ends the response once it is written: a streamed body's
// connection back to the pool when it was read to its end, else closed;
// the fasthttp response released.
func (u *upResp) finish(xs *exchanges) {
	if u.stream != nil {
		u.stream.close()
		u.stream = nil
	}
	if u.fresp != nil {
		u.fresp.CloseBodyStream()
		if u.fx != nil {
			xs.finish(u.id, u.fx)
			u.fx = nil
		}
		fasthttp.ReleaseResponse(u.fresp)
		u.fresp = nil
	}
	u.r, u.body = nil, nil
}

// appendOriginFields is appendRespFields for an origin head the exchange
// read: the rewriting of clientResponse (hop-by-hop headers and those
// named in Connection dropped, the origin's X-Request-Id and look-alikes
// out, the request id and Alt-Svc in), names in lower case. The origin's
// Server is kept (else edgeproxy's), its Date is the edge's (as the HTTP/1.1 engine sends
// it), and Content-Length is bodyLen when it is known (bodyLen >= 0), else
// the origin's when it sent one (a HEAD's, 304's or a streamed body's).
func appendOriginFields(b []byte, r *h1Resp, bodyLen int, id, altSvc string, name *[]byte, num []byte, field func(b, name, value []byte) []byte) []byte {
	lower := func(k []byte) []byte {
		nb := (*name)[:0]
		for _, ch := range k {
			if ch >= 'A' && ch <= 'Z' {
				ch += 'a' - 'A'
			}
			nb = append(nb, ch)
		}
		*name = nb
		return nb
	}
	if r.server != nil {
		b = field(b, fServer, r.server)
	} else {
		b = field(b, fServer, fServerName)
	}
	if d := dateLine(); len(d) > len("Date: \r\n") {
		b = field(b, fDate, d[len("Date: "):len(d)-2])
	}
	for i := range r.n {
		k := r.names[i]
		if r.dropSome && (isOneOf(k, hopBytes) || sameName(k, hReqID, false) || lookalike(k) ||
			altSvc != "" && sameName(k, hAltSvc, false) || len(r.conn) > 0 && connNames(r.conn, k)) {
			continue
		}
		nb := lower(k)
		switch string(nb) {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "x-request-id":
			continue
		}
		b = field(b, nb, r.values[i])
	}
	switch {
	case bodyLen >= 0:
		b = field(b, fContentLength, strconv.AppendInt(num[:0], int64(bodyLen), 10))
	case r.cl >= 0:
		b = field(b, fContentLength, strconv.AppendInt(num[:0], r.cl, 10))
	}
	b = field(b, fRequestID, unsafe.Slice(unsafe.StringData(id), len(id)))
	if altSvc != "" {
		b = field(b, fAltSvc, unsafe.Slice(unsafe.StringData(altSvc), len(altSvc)))
	}
	return b
}

// The field names appendOriginFields writes (a []byte conversion in the
// call would allocate: field is a function value).
var (
	fServer        = []byte("server")
	fServerName    = []byte(serverName)
	fDate          = []byte("date")
	fContentLength = []byte("content-length")
	fRequestID     = []byte("x-request-id")
	fAltSvc        = []byte("alt-svc")
)

// streamAttempt is the exchange of an HTTP/2 or HTTP/3 request with an
// HTTP/1.1 origin (forwardLoop's attempt).
type streamAttempt struct {
	p        *Proxy
	ctx      context.Context
	req      *fasthttp.Request // the body, and the head when head is nil
	head     *reqOriginHead    // the head admitHead wrote (nil: req.Write)
	bodyRead func() int64
	x        *exchange
	isHead   bool
	retry    bool // the request may go again on another pooled connection: idempotent, no body

	r    *h1Resp
	ibp  *[]byte // the head's buffer (h1Bufs), and a small body's
	body []byte
	strm *originBody
}

func (a *streamAttempt) retryable(err error) bool {
	var se *sentError
	if errors.As(err, &se) {
		return false
	}
	return retryable(err, a.req, a.bodyRead)
}

func (a *streamAttempt) reset() {
	a.body = nil
	if a.strm != nil {
		a.strm.close()
		a.strm = nil
	}
}

// release gives the buffers back once the response is written.
func (a *streamAttempt) release() {
	a.reset()
	if a.r != nil {
		h1Resps.Put(a.r)
		a.r = nil
	}
	if a.ibp != nil {
		h1Bufs.Put(a.ibp)
		a.ibp = nil
	}
}

func (a *streamAttempt) try(o *origin) error {
	a.req.URI().SetSchemeBytes(o.scheme)
	a.req.URI().DisablePathNormalizing = true
	hasStream := a.req.IsBodyStream()
	for tries := 1; ; tries++ {
		cc, err := o.hc.AcquireConn(0, a.req.ConnectionClose())
		if err != nil {
			return err
		}
		reused := !cc.LastUseTime().IsZero()
		conn := cc.Conn()
		// Past its age, the connection carries one more request and closes.
		aged := false
		if o.hc.MaxConnDuration > 0 && !a.req.ConnectionClose() && coarseNow().Sub(cc.CreatedTime()) > o.hc.MaxConnDuration {
			if a.head == nil {
				a.req.SetConnectionClose()
			}
			aged = true
		}
		if a.head != nil {
			err = a.writeRequest(conn, aged)
		} else {
			bw := o.hc.AcquireWriter(conn)
			err = a.req.Write(bw)
			if aged {
				a.req.Header.ResetConnectionClose()
			}
			if err == nil {
				err = bw.Flush()
			}
			o.hc.ReleaseWriter(bw)
			err = originTimeout(err)
		}
		keep := false
		if err == nil {
			if err = a.bind(conn); err == nil {
				keep, err = a.read(conn)
				if err == nil && a.strm != nil {
					// The stream gives the connection back.
					a.strm.done = func(keep bool) {
						if keep && !aged {
							o.hc.ReleaseConn(cc)
						} else {
							o.hc.CloseConn(cc)
						}
					}
					return nil
				}
			}
		}
		if keep && !aged {
			o.hc.ReleaseConn(cc)
		} else {
			o.hc.CloseConn(cc)
		}
		if err != nil && reused && a.retry && !hasStream && tries < staleTries && staleConn(err) {
			continue
		}
		return err
	}
}

// bind makes conn the exchange's: a client that goes from now on cuts it
// (exchange.cut); one gone already leaves it unread.
func (a *streamAttempt) bind(conn net.Conn) error {
	x := a.x
	if x == nil {
		return nil
	}
	ic := idleOf(conn)
	if ic == nil {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done {
		return nil
	}
	if x.ctx.Err() != nil {
		a.p.pools.exchanges.inFlight.Inc()
		return errClientGone
	}
	ic.mu.Lock()
	ic.owner.Store(x)
	ic.mu.Unlock()
	x.conn = ic
	return nil
}

func idleOf(c net.Conn) *idleConn {
	switch c := c.(type) {
	case *idleConn:
		return c
	case *tlsIdleConn:
		return c.idleConn
	}
	return nil
}

// cut is the exchange's abort when its client went: the origin
// connection it is bound to is cut.
func (x *exchange) cut(xs *exchanges) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done || x.conn == nil || x.cutDone {
		return
	}
	x.cutDone = true
	if x.conn.abort(x) {
		xs.inFlight.Inc()
	}
}

// end ends the exchange: its connection belongs to the pool again.
func (x *exchange) end() {
	if x.stop != nil {
		x.stop()
	}
	x.mu.Lock()
	x.done = true
	x.conn = nil
	x.mu.Unlock()
}

// read reads the origin's response head on conn and, whole or as a
// stream, its body. It reports whether conn may carry another request
// (when its body is not streamed: a stream gives it back itself, through
// its done).
func (a *streamAttempt) read(conn net.Conn) (keep bool, err error) {
	if a.ibp == nil {
		a.ibp = h1Bufs.Get().(*[]byte)
	}
	ib := (*a.ibp)[:h1OriginHead]
	if a.r == nil {
		a.r = h1Resps.Get().(*h1Resp)
	}
	r := a.r
	n, end, err := readRespHead(conn, ib, r)
	if err != nil {
		return false, err
	}
	// r's slices point into ib[:end]: the body goes after it.
	rest := ib[end:n]
	full := (*a.ibp)[:cap(*a.ibp)]
	switch {
	case bodyless(a.isHead, r.status):
		return !r.close && len(rest) == 0, nil
	case r.cl >= 0 && r.cl <= smallBody:
		exact := int64(len(rest)) <= r.cl
		if !exact {
			rest = rest[:r.cl] // more than it announced: the rest is not a response
		}
		var body []byte
		if int64(end)+r.cl <= int64(len(full)) {
			body = full[end : end+int(r.cl)]
		} else {
			body = make([]byte, r.cl)
			copy(body, rest)
		}
		if _, err := io.ReadFull(conn, body[len(rest):]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return false, originTimeout(err)
		}
		a.body = body
		return exact && !r.close, nil
	}
	// Streamed: the body's first bytes are moved to the buffer's second
	// half (the head stays where r points), the rest is read from conn.
	pend := full[h1OriginHead : h1OriginHead+copy(full[h1OriginHead:], rest)]
	ob := &originBody{conn: conn, pending: pend, keep: !r.close}
	switch {
	case r.cl >= 0:
		ob.left = r.cl
		if int64(len(pend)) > r.cl {
			ob.pending, ob.keep = pend[:r.cl], false
		}
	case r.chunked:
		ob.br = bufio.NewReaderSize(ob.raw(), 4096)
		ob.chunks = httputil.NewChunkedReader(ob.br)
	default:
		ob.left, ob.keep = -1, false // to the origin's close
	}
	a.strm = ob
	return false, nil
}

// originBody is a streamed origin body.
type originBody struct {
	conn    net.Conn
	pending []byte // read with the head
	left    int64  // sized: bytes to come; -1 to the connection's end
	br      *bufio.Reader
	chunks  io.Reader // chunked: the decoder over br
	keep    bool      // the connection may go back to the pool once the body is read
	eof     bool
	err     error
	done    func(keep bool)
}

// raw reads pending, then the connection.
func (b *originBody) raw() io.Reader { return (*rawBody)(b) }

type rawBody originBody

func (r *rawBody) Read(p []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		return n, nil
	}
	return r.conn.Read(p)
}

func (b *originBody) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.chunks != nil {
		n, err := b.chunks.Read(p)
		if err == io.EOF {
			// The trailer section is not forwarded: read to its end.
			for {
				line, lerr := b.br.ReadSlice('\n')
				if lerr != nil {
					b.err = io.ErrUnexpectedEOF
					return n, b.err
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					break
				}
			}
			b.eof = true
			if b.br.Buffered() > 0 {
				b.keep = false
			}
			return n, io.EOF
		}
		if err != nil {
			b.err = err
		}
		return n, err
	}
	if b.left == 0 {
		b.eof = true
		return 0, io.EOF
	}
	if b.left > 0 && int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := (*rawBody)(b).Read(p)
	if b.left > 0 {
		b.left -= int64(n)
		if b.left == 0 {
			b.eof = true
			return n, io.EOF
		}
	}
	switch {
	case err == io.EOF && b.left < 0:
		b.eof = true
	case err == io.EOF:
		b.err = io.ErrUnexpectedEOF
		return n, b.err
	case err != nil:
		b.err = originTimeout(err)
		return n, b.err
	}
	return n, err
}

// close gives the connection back to the pool when the body was read to
// its end, else closes it.
func (b *originBody) close() {
	if b.done != nil {
		b.done(b.eof && b.err == nil && b.keep)
		b.done = nil
	}
}

// forwardStream forwards an HTTP/2 or HTTP/3 request (admitted: its head
// in head as admitHead wrote it, or in req; its body in req) for a client
// whose going away ends ctx, and fills u with the origin's response; x is
// the request's exchange, ended by the caller (x.end). A route whose
// origins all speak HTTP/1.1 takes the exchange above; others the
// fasthttp path, into u.fresp (acquired here).
func (p *Proxy) forwardStream(ctx context.Context, s *site, rt *route, req *fasthttp.Request, head *reqOriginHead, rec *record, bodyRead func() int64, x *exchange, u *upResp, a *streamAttempt) error {
	if head == nil && !h1Only(rt) {
		// fasthttp's client: the origin connection is found by the
		// request id it writes (exchanges.start).
		u.fresp = fasthttp.AcquireResponse()
		u.id, u.fx = rec.id, p.pools.exchanges.start(ctx, rec.id)
		return p.forwardCtx(ctx, s, rt, req, u.fresp, rec, bodyRead)
	}
	method := req.Header.Method()
	*a = streamAttempt{p: p, ctx: ctx, req: req, head: head, bodyRead: bodyRead, x: x, isHead: string(method) == "HEAD",
		retry: idempotent(method) && bodyRead == nil && !hasBody(&req.Header)}
	err := p.forwardLoop(ctx, s, rt, rec, a)
	if err != nil {
		return err
	}
	u.r, u.body, u.stream, u.id = a.r, a.body, a.strm, rec.id
	a.strm = nil // u's now
	return nil
}

// respond forwards an HTTP/2 or HTTP/3 request (forwardStream) and makes
// u the response to write: the origin's, rewritten for the client, or
// the proxy's error page. The caller writes it, then calls u.finish,
// a.release and x.end.
func (p *Proxy) respond(ctx context.Context, st *state, s *site, rt *route, req *fasthttp.Request, head *reqOriginHead, rec *record, bodyRead func() int64, x *exchange, u *upResp, a *streamAttempt, overTLS bool) {
	if err := p.forwardStream(ctx, s, rt, req, head, rec, bodyRead, x, u, a); err != nil {
		u.r, u.body, u.stream = nil, nil, nil
		if u.fresp == nil {
			u.fresp = fasthttp.AcquireResponse()
		}
		p.upstreamFailed(st, rec, err, u.fresp, overTLS)
		return
	}
	if u.r != nil {
		rec.status = u.r.status
		u.altSvc = st.altSvcOver(overTLS)
		return
	}
	p.clientResponse(st, rec, u.fresp, overTLS)
}

// defaultReqType is the Content-Type fasthttp's Request.Write gives a
// request body of a known length that has none: the fasthttp path's
// origins got it, so these do.
const defaultReqType = "Content-Type: application/octet-stream\r\n"

// writeRequest writes the head admitHead wrote, its framing (the body's
// Content-Length, chunked for a body of unknown length, Content-Length: 0
// for a method other than GET and HEAD without one, as Request.Write
// frames it), Connection: close when the connection is past its age, and
// the body: a whole one in the head's write when it is small, a streamed
// one as it is read. An error reading the body is the client's, as the
// body reader gives it; writing, the origin's.
func (a *streamAttempt) writeRequest(conn net.Conn, aged bool) error {
	req, oh := a.req, a.head
	b := oh.b
	n := len(b)
	defer func() { oh.b = b[:n] }()
	stream := req.BodyStream()
	cl := req.Header.ContentLength()
	var body []byte
	switch {
	case stream != nil && cl >= 0:
		if cl > 0 && !oh.contentType {
			b = append(b, defaultReqType...)
		}
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(cl), 10)
		b = append(b, "\r\n"...)
	case stream != nil:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	default:
		body = req.Body()
		if m := req.Header.Method(); len(body) > 0 || string(m) != "GET" && string(m) != "HEAD" {
			if len(body) > 0 && !oh.contentType {
				b = append(b, defaultReqType...)
			}
			b = append(b, "Content-Length: "...)
			b = strconv.AppendInt(b, int64(len(body)), 10)
			b = append(b, "\r\n"...)
		}
	}
	if aged {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	if len(body) <= smallBody {
		b = append(b, body...)
		body = nil
	}
	if _, err := conn.Write(b); err != nil {
		return originTimeout(err)
	}
	if len(body) > 0 {
		if _, err := conn.Write(body); err != nil {
			return originTimeout(err)
		}
	}
	if stream == nil {
		return nil
	}
	if a.ibp == nil {
		a.ibp = h1Bufs.Get().(*[]byte)
	}
	buf := (*a.ibp)[:cap(*a.ibp)]
	if cl >= 0 {
		return writeLength(conn, stream, buf, int64(cl))
	}
	return writeChunked(conn, stream, buf)
}

// writeLength copies a body of cl bytes from stream to conn through buf.
func writeLength(conn net.Conn, stream io.Reader, buf []byte, cl int64) error {
	for left := cl; left > 0; {
		m, err := stream.Read(buf[:min(int64(len(buf)), left)])
		if m > 0 {
			if _, werr := conn.Write(buf[:m]); werr != nil {
				return originTimeout(werr)
			}
			left -= int64(m)
		}
		switch {
		case err == io.EOF && left > 0:
			return fmt.Errorf("%w: %w", errClientBody, io.ErrUnexpectedEOF)
		case err != nil && err != io.EOF:
			return err
		}
	}
	return nil
}

// writeChunked copies stream to conn chunked, a chunk a read through buf,
// its size line in the room before it, and the last chunk at the end.
func writeChunked(conn net.Conn, stream io.Reader, buf []byte) error {
	const room = 18
	for {
		m, err := stream.Read(buf[room : len(buf)-2])
		if m > 0 {
			var hdr [room]byte
			h := append(strconv.AppendInt(hdr[:0], int64(m), 16), "\r\n"...)
			start := room - len(h)
			copy(buf[start:], h)
			end := room + m
			buf[end], buf[end+1] = '\r', '\n'
			if _, werr := conn.Write(buf[start : end+2]); werr != nil {
				return originTimeout(werr)
			}
		}
		if err == io.EOF {
			if _, werr := conn.Write([]byte("0\r\n\r\n")); werr != nil {
				return originTimeout(werr)
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}
