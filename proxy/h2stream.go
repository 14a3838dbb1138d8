package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// HTTP/2 streams: a request's header block decoded straight into a
// fasthttp.Request with every check of RFC 9113 8.2 and 8.3 and of
// check.go, its body collected whole (a small one of a known length) or
// streamed to the origin through a pipe bounded by the stream's window,
// its response encoded into the connection's buffer.
//
// A malformed request (RFC 9113 8.1.1: pseudo-header rules, an upper-case
// name, a connection-specific header, TE other than trailers, a
// Content-Length that the DATA frames contradict, a bad :authority) is a
// stream error PROTOCOL_ERROR; one the edge refuses (check.go: the method,
// the target, a header name that is no token, a header value) is answered
// with the edge's error page, from the read loop. Trailers from the client
// are decoded, checked (no pseudo-headers; END_STREAM) and dropped: the
// origin request is framed by Content-Length or chunked before they come.

// h2Head is the header block being decoded.
type h2Head struct {
	reqHead
	id                  uint32
	st                  *h2Stream // trailers: their stream
	trailers, endStream bool
	ignore              bool          // a stream after our GOAWAY: decoded, dropped
	discard             http2.ErrCode // decode only, then reset the stream with this code (0: none)
	raw                 int           // the block's bytes
}

func (h *h2Head) release() {
	h.reset()
	*h = h2Head{reqHead: h.reqHead}
}

// processHeaders starts a header block: a new stream's request, or
// trailers of an open one.
func (c *h2Conn) processHeaders(f *http2.HeadersFrame) error {
	id := f.StreamID
	if id%2 != 1 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	s := c.streams[id]
	maxID := c.maxID
	if s == nil && id > maxID {
		c.maxID = id
		// Counted in a GOAWAY's last stream id from now on: the
		// connection stays open for it until endHeaders has acted.
		c.opening = true
	}
	// Both ends done: closed, though the worker that wrote the response
	// may not have taken the stream out yet.
	closed := s != nil && s.localDone && s.remoteDone
	c.mu.Unlock()
	h := &c.head
	h.release()
	h.id, h.endStream, h.cl = id, f.StreamEnded(), -1
	switch {
	case closed:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	case s != nil:
		h.st, h.trailers = s, true
		switch {
		case s.remoteDone:
			h.discard = http2.ErrCodeStreamClosed
		case s.gotTrailers:
			return http2.ConnectionError(http2.ErrCodeProtocol)
		case !f.StreamEnded():
			h.discard = http2.ErrCodeProtocol
		}
		s.gotTrailers = true
	case id <= maxID:
		return http2.ConnectionError(http2.ErrCodeProtocol) // a closed stream
	default:
		h.req = fasthttp.AcquireRequest()
		h.req.Header.DisableNormalizing()
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		h.discard = http2.ErrCodeProtocol // a stream cannot depend on itself
	}
	return c.headerFragment(f.HeaderBlockFragment(), f.HeadersEnded())
}

func (c *h2Conn) processContinuation(f *http2.ContinuationFrame) error {
	if len(f.HeaderBlockFragment()) == 0 && !f.HeadersEnded() {
		if err := c.floodErr("empty_continuation"); err != nil {
			return err
		}
	}
	return c.headerFragment(f.HeaderBlockFragment(), f.HeadersEnded())
}

// headerFragment decodes a fragment of the block; the block's end acts on
// it. Every block is decoded, even one that is refused: the decoder's
// state is the connection's. A block past twice max_header_bytes (a
// CONTINUATION flood) ends the connection; past max_header_bytes decoded,
// the request is answered 431.
func (c *h2Conn) headerFragment(frag []byte, end bool) error {
	h := &c.head
	h.raw += len(frag)
	if h.raw > 2*c.lim.MaxHeaderBytes {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if _, err := c.dec.Write(frag); err != nil {
		return http2.ConnectionError(http2.ErrCodeCompression)
	}
	if !end {
		return nil
	}
	if err := c.dec.Close(); err != nil {
		return http2.ConnectionError(http2.ErrCodeCompression)
	}
	if h.trailers {
		return c.endTrailers()
	}
	err := c.endHeaders()
	c.opened()
	return err
}

// opened ends a new stream's opening (a stream, an answer or a reset): a
// connection going away that has no stream left closes now, its frames
// written first, as shutdown does.
func (c *h2Conn) opened() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.opening {
		return
	}
	c.opening = false
	if c.goingAway && c.werr == nil {
		c.flushLocked(false)
		if len(c.streams) == 0 && !c.opening {
			c.closeLocked()
		}
	}
}

// emit takes one decoded field.
func (c *h2Conn) emit(hf hpack.HeaderField) {
	h := &c.head
	h.size += len(hf.Name) + len(hf.Value) + 32
	if h.size > c.lim.MaxHeaderBytes {
		h.tooLarge = true
	}
	if h.tooLarge || h.discard != 0 || h.malformed != "" || h.ignore {
		return
	}
	h.field(hf.Name, hf.Value, h.trailers)
}

// endTrailers ends a stream's trailers: dropped, the request body over.
func (c *h2Conn) endTrailers() error {
	h := &c.head
	s, code, malformed := h.st, h.discard, h.malformed
	h.release()
	switch {
	case code != 0:
		return http2.StreamError{StreamID: s.id, Code: code}
	case malformed != "":
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeProtocol}
	}
	return s.data(nil, 0, true)
}

// endHeaders acts on a new stream's request once its block is decoded.
func (c *h2Conn) endHeaders() error {
	h := &c.head
	p := c.p
	id := h.id
	reset := func(code http2.ErrCode) error {
		if h.reason != "" {
			p.m.refuse(h.reason)
		}
		h.release()
		return http2.StreamError{StreamID: id, Code: code}
	}
	if h.ignore {
		h.release()
		return nil
	}
	if h.discard != 0 {
		return reset(h.discard)
	}
	if h.malformed != "" {
		return reset(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	open := len(c.streams)
	c.mu.Unlock()
	if open >= h2MaxStreams {
		h.reason = ""
		return reset(http2.ErrCodeRefusedStream)
	}
	rf, malformed := h.check(h.endStream)
	if malformed {
		return reset(http2.ErrCodeProtocol)
	}
	// The stream and its record in one allocation (a refused request
	// leaves it to the collector).
	strm := &h2Stream{recv: record{
		start: c.lastNow, id: p.ids.next(), proto: "HTTP/2", edge: c.edge, client: c.client,
		method: h.method, host: h.authority, path: decodedPath(h.path),
	}}
	rec := &strm.recv
	st := p.state.Load()
	if rf != nil {
		c.answer(st, id, rec, rf, h.endStream)
		h.release()
		return nil
	}
	if p.streams.Add(1) > int64(p.limits().MaxStreams) {
		p.streams.Add(-1)
		c.refuseOverStreams(id, h.endStream)
		h.release()
		return nil
	}

	req := h.req
	h.frame(h.endStream)
	s, rt, rf := p.admitHead(st, &h.reqHead, req, rec)
	if rf != nil {
		p.streams.Add(-1)
		c.answer(st, id, rec, rf, h.endStream)
		h.release()
		return nil
	}

	c.openStream(strm, h, s, rt, rec)
	return nil
}

// refuseOverStreams answers stream id 503 with Retry-After: past the
// process's limits.max_streams.
func (c *h2Conn) refuseOverStreams(id uint32, endStream bool) {
	c.p.fm.streamsRefused.Inc()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hbuf = append(c.hbuf[:0], 0x08, 3, '5', '0', '3') // :status 503
	c.hbuf = appendHpackField(c.hbuf, []byte("retry-after"), []byte("1"))
	c.hbuf = appendHpackField(c.hbuf, []byte("content-length"), []byte("0"))
	c.appendHeadersLocked(id, c.hbuf, true)
	if !endStream {
		c.wbuf = appendRSTStream(c.wbuf, id, http2.ErrCodeNo)
	}
}

// openStream makes the admitted request of head h stream strm: the
// connection's, its request and origin head taken from h, and its body
// collected whole, piped, or none, and dispatched when it can go.
func (c *h2Conn) openStream(strm *h2Stream, h *h2Head, s *site, rt *route, rec *record) {
	p, id, req := c.p, h.id, h.req
	*strm = h2Stream{
		c: c, id: id, req: req, ohead: h.origin, recv: strm.recv, rec: rec, site: s, rt: rt, cl: h.cl,
		recvWin: h2StreamWindow, remoteDone: h.endStream,
	}
	h.origin = nil // the stream's
	expect := h.expect
	h.req = nil // the stream's now
	h.release()
	c.mu.Lock()
	strm.sendWin = c.peerWin
	c.streams[id] = strm
	if c.idleArmed {
		c.idleArmed = false
		c.conn.SetReadDeadline(time.Time{})
	}
	if expect && !strm.remoteDone {
		c.appendHeadersLocked(id, []byte{0x08, 3, '1', '0', '0'}, false) // :status 100
		c.responses--                                                    // not the response
	}
	c.mu.Unlock()
	switch {
	case strm.remoteDone:
		strm.dispatch()
	case strm.cl >= 0 && strm.cl <= h2SmallBody:
		strm.small = make([]byte, 0, strm.cl) // collected, then forwarded whole
		strm.collecting, strm.lastData = true, c.lastNow
		c.collecting++
	default:
		strm.pipe = &h2Pipe{s: strm, wake: make(chan struct{}, 1), timeout: c.lim.BodyTimeout}
		strm.body = &limitedBody{r: strm.pipe, max: p.limits().MaxBodyBytes}
		req.SetBodyStream(strm.body, int(strm.cl))
		strm.dispatch()
	}
}

// answer writes the edge's own answer to a request the read loop refused,
// and ends its record.
func (c *h2Conn) answer(st *state, id uint32, rec *record, rf *refusal, endStream bool) {
	p := c.p
	resp := fasthttp.AcquireResponse()
	p.refuse(st, rec, rf, resp, true)
	c.mu.Lock()
	c.appendResponseLocked(id, &upResp{fresp: resp}, resp.Body(), false)
	if !endStream {
		// RFC 9113 8.1: the answer is complete; the client need not
		// send the rest.
		c.wbuf = appendRSTStream(c.wbuf, id, http2.ErrCodeNo)
	}
	c.mu.Unlock()
	fasthttp.ReleaseResponse(resp)
	p.done(rec)
}

// decodedPath is the path part of a :path with its percent escapes
// undone (checkTarget has refused the malformed ones), as routes match.
func decodedPath(target string) string {
	path := target
	for i := 0; i < len(target); i++ {
		if target[i] == '?' {
			path = target[:i]
			break
		}
	}
	pct := -1
	for i := 0; i < len(path); i++ {
		if path[i] == '%' {
			pct = i
			break
		}
	}
	if pct < 0 {
		return path
	}
	b := make([]byte, 0, len(path))
	b = append(b, path[:pct]...)
	for i := pct; i < len(path); i++ {
		if path[i] == '%' && i+2 < len(path) && unhex(path[i+1]) < 16 && unhex(path[i+2]) < 16 {
			b = append(b, unhex(path[i+1])<<4|unhex(path[i+2]))
			i += 2
			continue
		}
		b = append(b, path[i])
	}
	return string(b)
}

// h2Stream is a request in flight.
type h2Stream struct {
	c  *h2Conn
	id uint32

	// The read loop's own.
	cl, got     int64 // declared body length (-1 unknown) and received
	small       []byte
	collecting  bool      // small is being collected
	lastData    time.Time // the last DATA of a body being collected
	pipe        *h2Pipe
	body        *limitedBody // the pipe held to the body limit, as the origin exchange reads it
	gotTrailers bool
	dispatched  bool

	// Under c.mu.
	recvWin    int64 // what the client may still send on the stream
	sendWin    int64
	remoteDone bool // the client's END_STREAM came
	localDone  bool // ours went out
	closed     bool // out of the connection's streams
	resetSent  bool
	timedOut   bool

	req    *fasthttp.Request
	ohead  *reqOriginHead // the head for the origin (admitHead), nil on the fasthttp path
	rec    *record        // &recv
	recv   record
	site   *site
	rt     *route
	ctx    context.Context
	cancel context.CancelFunc

	// The origin exchange (run's).
	x   exchange
	u   upResp
	att streamAttempt
}

// dispatch hands the request to a goroutine of its own: the origin
// exchange blocks. A parked worker takes it if there is one: its stack
// has grown on the request path already.
func (s *h2Stream) dispatch() {
	s.dispatched = true
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.x.ctx = s.ctx
	h2Idle.start(s)
}

// h2Idle are the HTTP/2 streams' parked workers.
var h2Idle workers[h2Stream]

func init() {
	h2Idle.run = func(s *h2Stream) time.Time { s.run(); return s.rec.start }
}

// data takes a DATA frame's payload (n with padding) on the read loop.
func (s *h2Stream) data(b []byte, n int64, end bool) error {
	c := s.c
	s.got += int64(len(b))
	if s.cl >= 0 && (s.got > s.cl || end && s.got != s.cl) {
		// RFC 9113 8.1.1: the DATA frames contradict Content-Length.
		return http2.StreamError{StreamID: s.id, Code: http2.ErrCodeProtocol}
	}
	if pad := n - int64(len(b)); pad > 0 {
		c.mu.Lock()
		s.recvWin += pad
		c.wbuf = appendWindowUpdate(c.wbuf, s.id, uint32(pad))
		c.mu.Unlock()
	}
	switch {
	case s.pipe != nil:
		if len(b) > 0 {
			s.pipe.write(b)
		}
		if end {
			s.pipe.close(io.EOF)
		}
	case len(b) > 0:
		s.small = append(s.small, b...)
		s.lastData = c.lastNow
	}
	if !end {
		return nil
	}
	c.mu.Lock()
	s.remoteDone = true
	done := s.localDone && !s.closed
	if done {
		c.closeStreamLocked(s)
	}
	c.mu.Unlock()
	if !s.dispatched {
		s.collected()
		s.req.SetBody(s.small)
		s.small = nil
		s.dispatch()
	}
	return nil
}

// collected ends the collection of a small body; on the read loop.
func (s *h2Stream) collected() {
	if s.collecting {
		s.collecting = false
		s.c.collecting--
	}
}

// sweepBodies answers 408 to the streams whose body, collected on the
// read loop, has not moved for the body timeout; on the read loop.
func (c *h2Conn) sweepBodies() {
	var late []*h2Stream
	c.mu.Lock()
	for _, s := range c.streams {
		if s.collecting && c.lastNow.Sub(s.lastData) >= c.lim.BodyTimeout {
			late = append(late, s)
			c.closeStreamLocked(s)
		}
	}
	c.mu.Unlock()
	for _, s := range late {
		s.collected()
		c.answer(c.p.state.Load(), s.id, s.rec, &refusal{status: 408, reason: refuseTimeout, msg: "the request body stopped coming"}, false)
		fasthttp.ReleaseRequest(s.req)
		s.req = nil
		s.putHead()
		c.p.streams.Add(-1)
	}
}

// closeStreamLocked takes s out of the connection's streams; under c.mu.
func (c *h2Conn) closeStreamLocked(s *h2Stream) {
	s.closed = true
	delete(c.streams, s.id)
	c.cond.Broadcast()
	if len(c.streams) == 0 {
		if c.goingAway {
			if !c.opening { // else opened closes it
				c.closeLocked()
			}
		} else if !c.idleArmed && c.werr == nil {
			c.idleArmed = true
			c.conn.SetReadDeadline(time.Now().Add(c.lim.IdleTimeout))
		}
	}
}

// clientReset handles the client's RST_STREAM: the stream ends, its
// origin exchange is abandoned, and a request still unanswered counts
// against the reset budgets.
func (s *h2Stream) clientReset() {
	c := s.c
	c.mu.Lock()
	if s.closed {
		c.mu.Unlock()
		return
	}
	answered := s.localDone
	c.closeStreamLocked(s)
	c.mu.Unlock()
	s.abort(errClientGone)
	if !answered && !c.sc.closed.Load() {
		c.p.streamReset(c.sc)
	}
}

// resetBy resets the stream for an error of ours or the client's.
func (s *h2Stream) resetBy(code http2.ErrCode) {
	c := s.c
	c.mu.Lock()
	if s.closed {
		c.mu.Unlock()
		return
	}
	s.resetSent = true
	c.wbuf = appendRSTStream(c.wbuf, s.id, code)
	c.closeStreamLocked(s)
	c.mu.Unlock()
	s.abort(fmt.Errorf("%w: stream reset (%v)", errClientBody, code))
}

// abort ends what the stream has in progress: a dispatched request's
// context and body, or a request never dispatched.
func (s *h2Stream) abort(err error) {
	if s.dispatched {
		s.cancel()
		s.x.cut(&s.c.p.pools.exchanges)
		if s.pipe != nil {
			s.pipe.close(err)
		}
		return
	}
	if s.req != nil { // collecting its body: never forwarded
		s.collected()
		s.rec.status = 499
		s.c.p.done(s.rec)
		fasthttp.ReleaseRequest(s.req)
		s.req = nil
		s.putHead()
		s.c.p.streams.Add(-1)
	}
}

// run forwards the request and writes the response, on the stream's own
// goroutine.
func (s *h2Stream) run() {
	c, p := s.c, s.c.p
	rec := s.rec
	var bodyRead func() int64
	if s.body != nil {
		bodyRead = func() int64 { return s.body.n }
	}
	st := p.state.Load()
	// A stream reset abandons its origin exchange (abort cuts s.x).
	p.respond(s.ctx, st, s.site, s.rt, s.req, s.ohead, rec, bodyRead, &s.x, &s.u, &s.att, true)
	c.writeResponse(s, &s.u)
	s.x.end()
	s.u.finish(&p.pools.exchanges)
	s.att.release()
	c.mu.Lock()
	if !s.closed {
		s.localDone = true
		rst := !s.remoteDone
		if rst {
			// RFC 9113 8.1: the response is complete; the rest of the
			// request body is not wanted.
			s.resetSent = true
			c.wbuf = appendRSTStream(c.wbuf, s.id, http2.ErrCodeNo)
		}
		c.closeStreamLocked(s)
		if rst {
			c.flushLocked(true)
		}
	}
	c.mu.Unlock()
	if s.pipe != nil {
		s.pipe.close(errClientGone)
	}
	s.cancel()
	p.streams.Add(-1)
	p.done(rec)
	fasthttp.ReleaseRequest(s.req)
	s.req = nil
	s.putHead()
}

// putHead gives the origin head's buffer back.
func (s *h2Stream) putHead() {
	if s.ohead != nil {
		putOriginHead(s.ohead)
		s.ohead = nil
	}
}

var (
	errH2SendTimeout = errors.New("http2: the client did not open its window within the send timeout")
	h2BodyBufs       = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}
)

// writeResponse writes resp on stream s: HEADERS, and a body read whole
// in the same append as DATA; a streamed body chunk by chunk.
func (c *h2Conn) writeResponse(s *h2Stream, resp *upResp) {
	rec := s.rec
	status := resp.status()
	noBody := rec.method == "HEAD" || status == 204 || status == 304
	var bs io.Reader
	var body []byte
	if !noBody {
		body, bs = resp.bodyOf()
	}
	bp := h2BodyBufs.Get().(*[]byte)
	defer h2BodyBufs.Put(bp)
	buf := *bp
	if cl := resp.contentLength(); bs != nil && cl >= 0 && cl <= len(buf) {
		// A small body of a known length, streamed by the origin client:
		// read whole, it goes out with its HEADERS in one append.
		if _, err := io.ReadFull(bs, buf[:cl]); err != nil {
			s.resetBy(http2.ErrCodeInternal) // the origin broke off
			return
		}
		body, bs = buf[:cl], nil
	}
	c.mu.Lock()
	if s.closed || c.werr != nil {
		c.mu.Unlock()
		return
	}
	if bs == nil {
		if !c.appendResponseLocked(s.id, resp, body, noBody || len(body) == 0) {
			c.sendDataLocked(s, body, true)
		}
		rec.bytes = int64(len(body))
		c.flushLocked(true)
		c.mu.Unlock()
		return
	}
	c.appendHeadersFromLocked(s.id, resp, -1, false)
	c.flushLocked(true)
	c.mu.Unlock()
	for {
		n, err := bs.Read(buf)
		end := err == io.EOF
		if n > 0 || end {
			c.mu.Lock()
			ok := c.sendDataLocked(s, buf[:n], end)
			c.flushLocked(true)
			c.mu.Unlock()
			if !ok {
				return
			}
			rec.bytes += int64(n)
		}
		if end {
			return
		}
		if err != nil {
			// The origin broke off: the client must not take a
			// truncated body for a whole one.
			s.resetBy(http2.ErrCodeInternal)
			return
		}
	}
}

// appendResponseLocked appends the HEADERS of resp and, when it fits the
// windows, its whole body as DATA; it reports whether the stream is done
// (false: the caller sends the body, or what remains of it).
func (c *h2Conn) appendResponseLocked(id uint32, resp *upResp, body []byte, noBody bool) bool {
	end := noBody || len(body) == 0
	bodyLen := len(body)
	if noBody {
		bodyLen = -1 // a HEAD's, 204's or 304's Content-Length is the origin's
	}
	c.appendHeadersFromLocked(id, resp, bodyLen, end)
	if end {
		if s := c.streams[id]; s != nil {
			s.localDone = true
		}
		return true
	}
	s := c.streams[id]
	if s == nil { // answered from the read loop: the stream was never opened
		return c.sendDataFree(id, body)
	}
	return false
}

// sendDataFree sends the body of an answer from the read loop, on a
// stream that was never opened: within the connection window and the
// client's initial stream window, else the answer is cut short.
func (c *h2Conn) sendDataFree(id uint32, body []byte) bool {
	n := int64(len(body))
	if n > c.sendConn || n > c.peerWin {
		c.wbuf = appendRSTStream(c.wbuf, id, http2.ErrCodeRefusedStream)
		return true
	}
	c.sendConn -= n
	for len(body) > 0 {
		k := min(len(body), c.peerMax)
		flags := http2.Flags(0)
		if k == len(body) {
			flags = http2.FlagDataEndStream
		}
		c.wbuf = appendFrameHeader(c.wbuf, k, http2.FrameData, flags, id)
		c.wbuf = append(c.wbuf, body[:k]...)
		body = body[k:]
	}
	return true
}

// appendHeadersFromLocked encodes resp's status and headers for the
// client: names in lower case, connection-specific headers dropped, and
// Content-Length when the body's length is known (bodyLen >= 0).
func (c *h2Conn) appendHeadersFromLocked(id uint32, resp *upResp, bodyLen int, end bool) {
	b := appendHpackStatus(c.hbuf[:0], resp.status())
	b = resp.appendFields(b, bodyLen, &c.nameBuf, c.numBuf[:], appendHpackField)
	c.hbuf = b
	c.appendHeadersLocked(id, b, end)
}

// appendHeadersLocked appends a header block as HEADERS and, past the
// client's frame size, CONTINUATION frames.
func (c *h2Conn) appendHeadersLocked(id uint32, block []byte, end bool) {
	c.responses++
	typ, flags := http2.FrameHeaders, http2.Flags(0)
	if end {
		flags = http2.FlagHeadersEndStream
	}
	for first := true; first || len(block) > 0; first = false {
		k := min(len(block), c.peerMax)
		f := flags
		if k == len(block) {
			f |= http2.FlagHeadersEndHeaders
		}
		c.wbuf = appendFrameHeader(c.wbuf, k, typ, f, id)
		c.wbuf = append(c.wbuf, block[:k]...)
		block = block[k:]
		typ, flags = http2.FrameContinuation, 0
	}
}

// sendDataLocked appends data as DATA frames within the stream's and the
// connection's windows, waiting for WINDOW_UPDATE (at most the send
// timeout: then the connection is closed) and for the flusher when much
// is pending. end sets END_STREAM on the last. It reports false when the
// stream or the connection has ended.
func (c *h2Conn) sendDataLocked(s *h2Stream, data []byte, end bool) bool {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if s.closed || c.werr != nil {
			return false
		}
		if s.timedOut {
			c.mu.Unlock()
			c.fail(errH2SendTimeout)
			c.mu.Lock()
			return false
		}
		if len(c.wbuf) >= h2MaxBuffered {
			if !c.flushing {
				c.flushLocked(false)
				continue
			}
			c.cond.Wait()
			continue
		}
		n := int64(len(data))
		if n > 0 {
			n = min(n, s.sendWin, c.sendConn, int64(c.peerMax))
		}
		if n <= 0 && len(data) > 0 {
			if timer == nil {
				timer = time.AfterFunc(c.lim.SendTimeout, func() {
					c.mu.Lock()
					s.timedOut = true
					c.cond.Broadcast()
					c.mu.Unlock()
				})
			}
			if len(c.wbuf) > 0 && !c.flushing {
				c.flushLocked(false) // unlocks: look at the windows again
				continue
			}
			c.cond.Wait()
			continue
		}
		flags := http2.Flags(0)
		last := n == int64(len(data))
		if last && end {
			flags = http2.FlagDataEndStream
		}
		c.wbuf = appendFrameHeader(c.wbuf, int(n), http2.FrameData, flags, s.id)
		c.wbuf = append(c.wbuf, data[:n]...)
		s.sendWin -= n
		c.sendConn -= n
		data = data[n:]
		if last {
			if end {
				s.localDone = true
			}
			return true
		}
		if timer != nil {
			timer.Reset(c.lim.SendTimeout) // progress
		}
	}
}

// h2Pipe carries a streamed request body from the read loop to the
// origin exchange. It holds at most the stream's window: the window is
// given back as the exchange reads.
type h2Pipe struct {
	s       *h2Stream
	mu      sync.Mutex
	buf     []byte
	off     int
	err     error
	wake    chan struct{}
	timeout time.Duration
	timer   *time.Timer
	credit  int64 // read, not yet given back
}

func (p *h2Pipe) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *h2Pipe) write(b []byte) {
	p.mu.Lock()
	if p.err == nil {
		if p.off > 0 && p.off == len(p.buf) {
			p.buf, p.off = p.buf[:0], 0
		}
		p.buf = append(p.buf, b...)
	}
	p.mu.Unlock()
	p.signal()
}

func (p *h2Pipe) close(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
	p.signal()
}

var errH2BodyTimeout = errors.New("http2: the request body stopped coming (limits.body_timeout)")

// Read gives the body to the origin exchange (through limitedBody, which
// holds it to the body limit).
func (p *h2Pipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	for p.off == len(p.buf) && p.err == nil {
		p.mu.Unlock()
		if p.timer == nil {
			p.timer = time.NewTimer(p.timeout)
		} else {
			p.timer.Reset(p.timeout)
		}
		select {
		case <-p.wake:
			p.timer.Stop()
		case <-p.timer.C:
			p.close(errH2BodyTimeout)
		}
		p.mu.Lock()
	}
	n := copy(b, p.buf[p.off:])
	p.off += n
	if n == 0 {
		err := p.err
		p.mu.Unlock()
		if err != io.EOF && !errors.Is(err, errClientBody) && !errors.Is(err, errClientGone) {
			err = fmt.Errorf("%w: %w", errClientBody, err) // the client's fault, not the origin's
		}
		return 0, err
	}
	p.credit += int64(n)
	give := p.credit
	if give < h2StreamWindow/2 {
		give = 0
	} else {
		p.credit = 0
	}
	p.mu.Unlock()
	if give > 0 {
		c := p.s.c
		c.mu.Lock()
		if !p.s.closed && !p.s.remoteDone {
			p.s.recvWin += give
			c.wbuf = appendWindowUpdate(c.wbuf, p.s.id, uint32(give))
			c.flushLocked(false)
		}
		c.mu.Unlock()
	}
	return n, nil
}

// HPACK, encoding: the static table's names, and literals without
// indexing (RFC 7541 6.2.2). No dynamic table: nothing to keep in step
// with the client's SETTINGS_HEADER_TABLE_SIZE, and no header is copied
// to be remembered.

var hpackStatic = func() map[string]int {
	names := []string{
		":authority", ":method", ":method", ":path", ":path", ":scheme", ":scheme", ":status", ":status",
		":status", ":status", ":status", ":status", ":status", "accept-charset", "accept-encoding",
		"accept-language", "accept-ranges", "accept", "access-control-allow-origin", "age", "allow",
		"authorization", "cache-control", "content-disposition", "content-encoding", "content-language",
		"content-length", "content-location", "content-range", "content-type", "cookie", "date", "etag",
		"expect", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match", "if-range",
		"if-unmodified-since", "last-modified", "link", "location", "max-forwards", "proxy-authenticate",
		"proxy-authorization", "range", "referer", "refresh", "retry-after", "server", "set-cookie",
		"strict-transport-security", "transfer-encoding", "user-agent", "vary", "via", "www-authenticate",
	}
	m := map[string]int{}
	for i, n := range names {
		if _, ok := m[n]; !ok {
			m[n] = i + 1
		}
	}
	return m
}()

// appendHpackInt appends v with a prefix of that many bits (RFC 7541 5.1;
// QPACK's integers are the same, RFC 9204 4.1.1).
func appendHpackInt(b []byte, first byte, prefix uint, v int) []byte {
	limit := 1<<prefix - 1
	if v < limit {
		return append(b, first|byte(v))
	}
	b = append(b, first|byte(limit))
	v -= limit
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// appendHpackStatus encodes :status: indexed when the static table has
// it, else a literal with the indexed name.
func appendHpackStatus(b []byte, status int) []byte {
	switch status {
	case 200:
		return append(b, 0x88)
	case 204:
		return append(b, 0x89)
	case 206:
		return append(b, 0x8a)
	case 304:
		return append(b, 0x8b)
	case 400:
		return append(b, 0x8c)
	case 404:
		return append(b, 0x8d)
	case 500:
		return append(b, 0x8e)
	}
	if status < 100 || status > 999 {
		status = 502
	}
	return append(b, 0x08, 3, byte('0'+status/100), byte('0'+status/10%10), byte('0'+status%10))
}

// appendHpackField encodes a field (its name in lower case) as a literal
// without indexing.
func appendHpackField(b, name, value []byte) []byte {
	if i := hpackStatic[string(name)]; i > 0 {
		b = appendHpackInt(b, 0, 4, i)
	} else {
		b = append(b, 0)
		b = appendHpackInt(b, 0, 7, len(name))
		b = append(b, name...)
	}
	b = appendHpackInt(b, 0, 7, len(value))
	return append(b, value...)
}
