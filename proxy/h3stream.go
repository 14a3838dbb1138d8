package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/quic-go/qpack"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"
	"github.com/valyala/fasthttp"
)

// HTTP/3 request streams (RFC 9114 4): the HEADERS frame's field section
// decoded (QPACK, static table only: the proxy allows the client no
// dynamic table) straight into a fasthttp.Request with the checks of
// h3head.go and check.go, the body read from the DATA frames (a small one
// of a known length whole, a larger one streamed to the origin), and the
// response written from the fasthttp.Response as HEADERS and DATA frames.
//
// A malformed request (RFC 9114 4.1.2) is a stream error
// H3_MESSAGE_ERROR; one the edge refuses is answered with its error page.
// Frames of a type the request stream must not carry (SETTINGS, GOAWAY,
// CANCEL_PUSH, MAX_PUSH_ID, PUSH_PROMISE from a client, HTTP/2's reserved
// types) end the connection with H3_FRAME_UNEXPECTED; unknown and
// reserved (grease) types are skipped.

// HTTP/3 frame types (RFC 9114 7.2).
const (
	h3FrameData        = 0x0
	h3FrameHeaders     = 0x1
	h3FrameCancelPush  = 0x3
	h3FrameSettings    = 0x4
	h3FramePushPromise = 0x5
	h3FrameGoAway      = 0x7
	h3FrameMaxPushID   = 0xd
)

// HTTP/3 error codes (RFC 9114 8.1, RFC 9204 6).
const (
	h3NoError              = 0x100
	h3GeneralProtocol      = 0x101
	h3InternalError        = 0x102
	h3StreamCreation       = 0x103
	h3ClosedCritical       = 0x104
	h3FrameUnexpected      = 0x105
	h3FrameError           = 0x106
	h3ExcessiveLoad        = 0x107
	h3IDError              = 0x108
	h3SettingsError        = 0x109
	h3MissingSettings      = 0x10a
	h3RequestRejected      = 0x10b
	h3RequestCanceled      = 0x10c
	h3RequestIncomplete    = 0x10d
	h3MessageError         = 0x10e
	h3QPACKDecompression   = 0x200
	h3StreamBufSize        = 4 << 10  // a stream's read buffer: a request head fits
	h3SmallBody            = 64 << 10 // bodies of a known length up to this are read whole before forwarding
	h3WriteBufSize         = 16 << 10 // a response's write buffer: a small response goes in one write
	h3FrameHeaderRoom      = 16       // room before a DATA payload for its frame header
	h3MaxSkippedFrameBytes = 64 << 10 // an unknown frame larger than this ends the stream
)

// unexpectedOnRequest reports the frame types a request stream must not
// carry: the control stream's, push's, and HTTP/2's reserved ones
// (RFC 9114 7.2.8).
func unexpectedOnRequest(typ uint64) bool {
	switch typ {
	case h3FrameCancelPush, h3FrameSettings, h3FramePushPromise, h3FrameGoAway, h3FrameMaxPushID,
		0x2, 0x6, 0x8, 0x9:
		return true
	}
	return false
}

var (
	errH3Frame   = errors.New("http3: a malformed frame")
	errH3Message = errors.New("http3: a malformed request body (RFC 9114 4.1.2)")
)

// h3Error is an HTTP/3 error: of the stream, or (conn) of the
// connection.
type h3Error struct {
	code uint64
	conn bool
	why  string
}

func (e *h3Error) Error() string { return fmt.Sprintf("http3: %s (%#x)", e.why, e.code) }

// h3Stream is one request stream and its request in flight.
type h3Stream struct {
	c   *h3Conn
	str *quic.Stream
	buf []byte // rbuf, the stream's read buffer
	r   int
	w   int
	eof bool  // the client's FIN has been read into buf
	err error // the read error other than EOF

	// The request body.
	cl, got  int64   // declared length (-1 unknown) and received
	left     uint64  // payload left in the current DATA frame
	bodyDone bool    // the stream's end was reached
	peek     [1]byte // a body of unknown length's first byte (serve)
	trailers bool
	reset    bool // the proxy reset the stream itself

	rec record // the request's (done reads it before the stream is pooled again)

	// The origin exchange, its response and attempt.
	x   exchange
	u   upResp
	att streamAttempt

	rbuf [h3StreamBufSize]byte
}

// clear readies s for its pool: everything but the buffer's bytes.
func (s *h3Stream) clear() {
	s.c, s.str, s.buf, s.r, s.w, s.eof, s.err = nil, nil, nil, 0, 0, false, nil
	s.cl, s.got, s.left, s.bodyDone, s.trailers, s.reset = 0, 0, 0, false, false, false
	s.rec, s.x, s.u, s.att = record{}, exchange{}, upResp{}, streamAttempt{}
}

// h3Streams are the request streams' states with their read buffers.
var h3Streams = sync.Pool{New: func() any { return new(h3Stream) }}

// fill reads more of the stream into buf, compacting it first.
func (s *h3Stream) fill() error {
	if s.err != nil {
		return s.err
	}
	if s.eof {
		return io.ErrUnexpectedEOF
	}
	if s.r > 0 {
		s.w = copy(s.buf, s.buf[s.r:s.w])
		s.r = 0
	}
	n, err := s.str.Read(s.buf[s.w:])
	s.w += n
	switch {
	case err == io.EOF:
		s.eof = true
	case err != nil:
		s.err = err
		if n == 0 {
			return err
		}
	}
	return nil
}

// ensure makes n bytes of buf readable (n at most len(buf)).
func (s *h3Stream) ensure(n int) error {
	for s.w-s.r < n {
		if err := s.fill(); err != nil {
			return err
		}
	}
	return nil
}

// varint reads a variable-length integer (RFC 9000 16).
func (s *h3Stream) varint() (uint64, error) {
	if err := s.ensure(1); err != nil {
		return 0, err
	}
	l := 1 << (s.buf[s.r] >> 6)
	if err := s.ensure(l); err != nil {
		return 0, err
	}
	v, n, err := quicvarint.Parse(s.buf[s.r : s.r+l])
	if err != nil {
		return 0, errH3Frame
	}
	s.r += n
	return v, nil
}

// frameHeader reads a frame's type and length; io.EOF at the stream's
// clean end.
func (s *h3Stream) frameHeader() (typ, length uint64, err error) {
	if s.r == s.w {
		if s.eof {
			return 0, 0, io.EOF
		}
		if err := s.fill(); err != nil {
			return 0, 0, err
		}
		if s.r == s.w && s.eof {
			return 0, 0, io.EOF
		}
	}
	if typ, err = s.varint(); err != nil {
		return 0, 0, err
	}
	if length, err = s.varint(); err != nil {
		return 0, 0, err
	}
	return typ, length, nil
}

// skip discards n bytes of the stream.
func (s *h3Stream) skip(n uint64) error {
	for n > 0 {
		if s.r == s.w {
			if err := s.fill(); err != nil {
				return err
			}
		}
		k := min(n, uint64(s.w-s.r))
		s.r += int(k)
		n -= k
	}
	return nil
}

// block reads a field section of n bytes: from buf when it fits, else
// into a slice of its own.
func (s *h3Stream) block(n uint64) ([]byte, error) {
	if n <= uint64(len(s.buf)) {
		if err := s.ensure(int(n)); err != nil {
			return nil, err
		}
		b := s.buf[s.r : s.r+int(n)]
		s.r += int(n)
		return b, nil
	}
	b := make([]byte, n)
	k := copy(b, s.buf[s.r:s.w])
	s.r += k
	if _, err := io.ReadFull(s.str, b[k:]); err != nil {
		return nil, err
	}
	return b, nil
}

// resetWith resets both directions of the stream with code.
func (s *h3Stream) resetWith(code uint64) {
	s.reset = true
	s.str.CancelRead(quic.StreamErrorCode(code))
	s.str.CancelWrite(quic.StreamErrorCode(code))
}

// fail acts on an HTTP/3 error: the stream or the connection is ended
// with its code.
func (s *h3Stream) fail(e *h3Error) {
	if e.conn {
		s.reset = true
		s.c.c.CloseWithError(quic.ApplicationErrorCode(e.code), e.why)
		return
	}
	s.resetWith(e.code)
}

// Read gives the request body, DATA frames' payloads, to the origin
// exchange (through limitedBody), each read bounded by the body timeout.
func (s *h3Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.str.SetReadDeadline(time.Unix(0, dueIn(s.c.lim.BodyTimeout)))
	for s.left == 0 {
		if s.bodyDone {
			return 0, io.EOF
		}
		if err := s.nextBodyFrame(); err != nil {
			return 0, err
		}
	}
	var n int
	if s.r < s.w {
		n = copy(p[:min(uint64(len(p)), s.left)], s.buf[s.r:s.w])
		s.r += n
	} else {
		var err error
		n, err = s.str.Read(p[:min(uint64(len(p)), s.left)])
		if err == io.EOF {
			s.eof = true
			if uint64(n) < s.left {
				s.fail(&h3Error{code: h3FrameError, why: "a DATA frame cut short"})
				return 0, fmt.Errorf("%w: %w", errClientBody, errH3Frame)
			}
		} else if err != nil {
			s.err = err
			if n == 0 {
				return 0, s.readErr(err)
			}
		}
	}
	s.left -= uint64(n)
	s.got += int64(n)
	return n, nil
}

// readErr is the error of a body read that failed: the client's, or its
// stream's reset.
func (s *h3Stream) readErr(err error) error {
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote {
		return fmt.Errorf("%w: %w", errClientGone, err)
	}
	return fmt.Errorf("%w: %w", errClientBody, err)
}

// nextBodyFrame reads frames up to the next DATA frame's payload, or the
// stream's end (trailers, decoded, checked and dropped, may come last).
func (s *h3Stream) nextBodyFrame() error {
	typ, length, err := s.frameHeader()
	switch {
	case err == io.EOF:
		s.bodyDone = true
		if s.cl >= 0 && s.got != s.cl {
			s.fail(&h3Error{code: h3MessageError, why: "a body shorter than its Content-Length"})
			return fmt.Errorf("%w: %w", errClientBody, errH3Message)
		}
		return nil
	case err != nil:
		return s.readErr(err)
	}
	switch {
	case typ == h3FrameData:
		if s.trailers {
			s.fail(&h3Error{code: h3FrameUnexpected, conn: true, why: "DATA after trailers"})
			return fmt.Errorf("%w: %w", errClientBody, errH3Frame)
		}
		if s.cl >= 0 && uint64(s.got)+length > uint64(s.cl) {
			s.fail(&h3Error{code: h3MessageError, why: "a body longer than its Content-Length"})
			return fmt.Errorf("%w: %w", errClientBody, errH3Message)
		}
		s.left = length
	case typ == h3FrameHeaders:
		if s.trailers {
			s.fail(&h3Error{code: h3FrameUnexpected, conn: true, why: "a HEADERS frame after trailers"})
			return fmt.Errorf("%w: %w", errClientBody, errH3Frame)
		}
		s.trailers = true
		if e := s.readTrailers(length); e != nil {
			s.fail(e)
			return fmt.Errorf("%w: %w", errClientBody, e)
		}
	case unexpectedOnRequest(typ):
		s.fail(&h3Error{code: h3FrameUnexpected, conn: true, why: "a frame a request stream cannot carry"})
		return fmt.Errorf("%w: %w", errClientBody, errH3Frame)
	default:
		if length > h3MaxSkippedFrameBytes {
			s.fail(&h3Error{code: h3ExcessiveLoad, why: "an unknown frame too large"})
			return fmt.Errorf("%w: %w", errClientBody, errH3Frame)
		}
		if err := s.skip(length); err != nil {
			return s.readErr(err)
		}
	}
	return nil
}

// readTrailers decodes trailers and checks them: no pseudo-header, names
// lower-case tokens, values clean; they are not forwarded (the origin
// request is framed before they come).
func (s *h3Stream) readTrailers(length uint64) *h3Error {
	if length > uint64(2*s.c.lim.MaxHeaderBytes) {
		return &h3Error{code: h3ExcessiveLoad, why: "trailers too large"}
	}
	b, err := s.block(length)
	if err != nil {
		return &h3Error{code: h3RequestIncomplete, why: "trailers cut short"}
	}
	dec := s.c.dec.Decode(b)
	size := 0
	for {
		hf, err := dec()
		if err == io.EOF {
			break
		}
		if err != nil {
			return &h3Error{code: h3QPACKDecompression, why: "trailers do not decode"}
		}
		size += len(hf.Name) + len(hf.Value) + 32
		if size > s.c.lim.MaxHeaderBytes || len(hf.Name) == 0 || hf.Name[0] == ':' ||
			!isLowerToken(hf.Name) || !validValue(hf.Value) {
			return &h3Error{code: h3MessageError, why: "malformed trailers"}
		}
	}
	return nil
}

func isLowerToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return false
		}
	}
	return isToken(s)
}

// serve reads the request on the stream, forwards it, and writes the
// response; on the stream's own goroutine.
func (s *h3Stream) serve() {
	c, p := s.c, s.c.p
	s.buf = s.rbuf[:]
	s.str.SetReadDeadline(time.Unix(0, dueIn(c.lim.ReadHeaderTimeout))) // the coarse clock (clock.go)
	length, ok := s.headersFrame()
	if !ok {
		return
	}
	s.rec = record{start: time.Now(), proto: "HTTP/3", edge: c.edge, client: c.client}
	rec := &s.rec
	st := p.state.Load()
	if length > uint64(c.lim.MaxHeaderBytes) {
		// Not read: the client must not send the rest.
		rec.id = p.ids.next()
		s.str.CancelRead(quic.StreamErrorCode(h3ExcessiveLoad))
		s.refuseAndClose(st, rec, &refusal{status: 431, reason: refuseHeadLarge, msg: "the request head is larger than the limit"})
		return
	}
	h := h3Heads.Get().(*h3Head)
	defer h.release()
	if !s.decodeHead(h, length) {
		return
	}
	// The stream's end already read: no body.
	noBody := s.eof && s.r == s.w
	s.cl = h.cl
	rf, malformed := h.check(noBody)
	if malformed {
		if h.reason != "" {
			p.m.refuse(h.reason)
		}
		s.resetWith(h3MessageError)
		return
	}
	rec.id, rec.method, rec.host, rec.path = p.ids.next(), h.method, h.authority, decodedPath(h.path)
	if rf != nil {
		s.refuseAndClose(st, rec, rf)
		return
	}
	if !p.admitStream() {
		s.writeBare(503, true)
		s.finish()
		return
	}
	defer p.streams.Add(-1)

	req := h.req
	h.frame(noBody)
	sv, rt, rf := p.admitHead(st, &h.reqHead, req, rec)
	if rf != nil {
		s.refuseAndClose(st, rec, rf)
		return
	}
	if h.expect && !noBody {
		s.writeBare(100, false)
	}
	bodyRead, ok := s.requestBody(st, h, rec, noBody)
	if !ok {
		return
	}

	ctx := s.str.Context()
	// A stream reset or cancelled abandons its origin exchange.
	xs := &p.pools.exchanges
	s.x.ctx = ctx
	xs.watch(&s.x)
	p.respond(ctx, st, sv, rt, req, h.origin, rec, bodyRead, &s.x, &s.u, &s.att, false)
	s.writeResponse(&s.u, rec)
	xs.unwatch(&s.x)
	s.x.end()
	s.u.finish(xs)
	s.att.release()
	s.countReset()
	s.finish()
	p.done(rec)
}

// headersFrame reads up to the request's HEADERS frame, skipping unknown
// and reserved frame types before it, and returns its length. On false
// the stream or the connection has been ended.
func (s *h3Stream) headersFrame() (uint64, bool) {
	typ, length, err := s.frameHeader()
	for err == nil && typ != h3FrameHeaders && !unexpectedOnRequest(typ) && typ != h3FrameData {
		if length > h3MaxSkippedFrameBytes {
			s.resetWith(h3ExcessiveLoad)
			return 0, false
		}
		if err = s.skip(length); err == nil {
			typ, length, err = s.frameHeader()
		}
	}
	if err != nil {
		s.resetWith(h3RequestIncomplete)
		return 0, false
	}
	if typ != h3FrameHeaders {
		s.c.c.CloseWithError(quic.ApplicationErrorCode(h3FrameUnexpected), "a request stream must start with HEADERS")
		return 0, false
	}
	return length, true
}

// decodeHead reads the HEADERS frame's block of length bytes and decodes
// it into h. On false the stream has been reset.
func (s *h3Stream) decodeHead(h *h3Head, length uint64) bool {
	block, err := s.block(length)
	if err != nil {
		s.resetWith(h3RequestIncomplete)
		return false
	}
	h.req = fasthttp.AcquireRequest()
	h.req.Header.DisableNormalizing()
	h.cl, h.maxSize = -1, s.c.lim.MaxHeaderBytes
	dec := s.c.dec.Decode(block)
	for {
		hf, err := dec()
		if err == io.EOF {
			return true
		}
		if err != nil {
			s.resetWith(h3QPACKDecompression)
			return false
		}
		h.field(hf.Name, hf.Value)
	}
}

// writeBare writes a HEADERS frame of status alone: a 100 Continue, or an
// answer without a body and, with retry, Retry-After: 1.
func (s *h3Stream) writeBare(status int, retry bool) {
	o := h3Outs.Get().(*h3Out)
	fs := qpackStatus(o.fs[:0], status)
	if retry {
		fs = qpackLiteral(fs, []byte("retry-after"), []byte("1"))
		fs = qpackLiteral(fs, []byte("content-length"), []byte("0"))
	}
	o.fs = fs
	b := quicvarint.Append(o.buf[:0], h3FrameHeaders)
	b = quicvarint.Append(b, uint64(len(o.fs)))
	s.write(append(b, o.fs...))
	h3Outs.Put(o)
}

// requestBody sets the request's body up: none, read whole when small, or
// streamed under the body limit, whose bytes read so far bodyRead tells.
// On false the request has been answered or counted.
func (s *h3Stream) requestBody(st *state, h *h3Head, rec *record, noBody bool) (bodyRead func() int64, ok bool) {
	p, req := s.c.p, h.req
	// No length, and the stream's end not read yet: whether a body
	// follows shows at its first byte or at the end (a GET's FIN may come
	// in a packet after its HEADERS). A request without one goes without
	// one, not with an empty chunked body.
	var first []byte
	if !noBody && h.cl < 0 {
		n, err := s.Read(s.peek[:])
		switch {
		case n > 0:
			first = s.peek[:n]
		case err == io.EOF:
			noBody = true
			req.Header.SetContentLength(0) // not chunked on the fasthttp path either
		case errors.Is(err, errClientGone):
			s.clientGone(rec)
			return nil, false
		default:
			s.refuseAndClose(st, rec, &refusal{status: 400, msg: "the request body could not be read"})
			return nil, false
		}
	}
	switch {
	case noBody:
		s.bodyDone = true
	case h.cl == 0:
		// Nothing may come but trailers and unknown frames.
		if _, err := s.Read(make([]byte, 1)); err != io.EOF {
			s.refuseAndClose(st, rec, &refusal{status: 400, msg: "the request body could not be read"})
			return nil, false
		}
	case h.cl > 0 && h.cl <= h3SmallBody && h.cl <= p.limits().MaxBodyBytes:
		// Read whole, then forwarded with its length.
		body := req.SwapBody(nil)
		body = append(body[:0], make([]byte, h.cl)...)
		_, err := io.ReadFull(s, body)
		req.SwapBody(body)
		if errors.Is(err, errClientGone) {
			s.clientGone(rec)
			return nil, false
		}
		if err != nil {
			s.refuseAndClose(st, rec, &refusal{status: 400, msg: "the request body could not be read"})
			return nil, false
		}
	default:
		lb := &limitedBody{r: s, max: p.limits().MaxBodyBytes}
		if first != nil {
			lb.r = io.MultiReader(bytes.NewReader(first), s)
		}
		req.SetBodyStream(lb, int(h.cl))
		bodyRead = func() int64 { return lb.n }
	}
	return bodyRead, true
}

// clientGone counts a request whose client went before its body came.
func (s *h3Stream) clientGone(rec *record) {
	rec.status = 499
	s.c.p.done(rec)
	s.countReset()
}

// countReset counts a request whose stream the client reset or stopped
// before its response was done, while the connection lives on.
func (s *h3Stream) countReset() {
	if !s.reset && s.str.Context().Err() != nil && !s.c.sc.closed.Load() {
		s.c.p.streamReset(s.c.sc)
	}
}

// finish ends the stream once its response is written: the rest of the
// request is not wanted (RFC 9114 4.1), FIN after the response.
func (s *h3Stream) finish() {
	if s.reset {
		return
	}
	if !s.bodyDone {
		s.str.CancelRead(quic.StreamErrorCode(h3NoError))
	}
	s.str.Close()
}

// refuseAndClose answers a request the edge refused with its page, ends
// the stream and the record.
func (s *h3Stream) refuseAndClose(st *state, rec *record, rf *refusal) {
	p := s.c.p
	resp := fasthttp.AcquireResponse()
	p.refuse(st, rec, rf, resp, false)
	s.writeResponse(&upResp{fresp: resp}, rec)
	fasthttp.ReleaseResponse(resp)
	s.finish()
	p.done(rec)
}

// h3Out is a response's scratch: its field section and the buffer its
// frames are written from.
type h3Out struct {
	fs, name []byte
	num      [20]byte
	buf      [h3WriteBufSize]byte
}

var h3Outs = sync.Pool{New: func() any { return new(h3Out) }}

// writeResponse writes resp on the stream: HEADERS and a body read whole
// in one write, a streamed body chunk by chunk as DATA frames, each write
// bounded by the send timeout. It sets rec's bytes.
func (s *h3Stream) writeResponse(resp *upResp, rec *record) {
	status := resp.status()
	noBody := rec.method == "HEAD" || status == 204 || status == 304
	var bs io.Reader
	var body []byte
	if !noBody {
		body, bs = resp.bodyOf()
	}
	o := h3Outs.Get().(*h3Out)
	defer h3Outs.Put(o)
	buf := o.buf[:]
	cl := resp.contentLength()
	small := bs != nil && cl >= 0 && cl < len(buf)/2
	bodyLen := len(body)
	switch {
	case noBody:
		bodyLen = -1 // a HEAD's, 204's or 304's Content-Length is the origin's
	case small:
		bodyLen = cl
	case bs != nil:
		bodyLen = -1 // streamed: as long as it is
	}
	o.appendFields(resp, bodyLen)
	b := quicvarint.Append(buf[:0], h3FrameHeaders)
	b = quicvarint.Append(b, uint64(len(o.fs)))
	headers := len(b) + len(o.fs)
	if bodyLen > 0 {
		headers += quicvarint.Len(h3FrameData) + quicvarint.Len(uint64(bodyLen))
	}
	if headers+max(bodyLen, 0) > len(buf) {
		small = false
		if bs == nil {
			// Headers, and a body too large to copy: two writes.
			b = append(b, o.fs...)
			if bodyLen > 0 {
				b = quicvarint.Append(b, h3FrameData)
				b = quicvarint.Append(b, uint64(bodyLen))
			}
			if s.write(b) && len(body) > 0 && s.write(body) {
				rec.bytes = int64(len(body))
			}
			return
		}
	}
	b = append(b, o.fs...)
	switch {
	case small:
		// A small body of a known length, streamed by the origin client:
		// read whole, it goes out with its HEADERS in one write.
		if cl > 0 {
			b = quicvarint.Append(b, h3FrameData)
			b = quicvarint.Append(b, uint64(cl))
			if _, err := io.ReadFull(bs, buf[len(b):len(b)+cl]); err != nil {
				s.resetWith(h3InternalError) // the origin broke off
				return
			}
			b = buf[:len(b)+cl]
		}
		if s.write(b) {
			rec.bytes = int64(cl)
		}
		return
	case bs == nil:
		if len(body) > 0 {
			b = quicvarint.Append(b, h3FrameData)
			b = quicvarint.Append(b, uint64(len(body)))
			b = append(b, body...)
		}
		if s.write(b) {
			rec.bytes = int64(len(body))
		}
		return
	}
	if s.write(b) {
		s.streamBody(bs, buf, rec)
	}
}

// streamBody sends bs as DATA frames, a read a frame, through buf, the
// frame's header put just in front of the bytes read.
func (s *h3Stream) streamBody(bs io.Reader, buf []byte, rec *record) {
	for {
		n, err := bs.Read(buf[h3FrameHeaderRoom:])
		if n > 0 {
			var hdr [h3FrameHeaderRoom]byte
			h := quicvarint.Append(quicvarint.Append(hdr[:0], h3FrameData), uint64(n))
			start := h3FrameHeaderRoom - len(h)
			copy(buf[start:], h)
			if !s.write(buf[start : h3FrameHeaderRoom+n]) {
				return
			}
			rec.bytes += int64(n)
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			// The origin broke off: the client must not take a
			// truncated body for a whole one.
			s.resetWith(h3InternalError)
			return
		}
	}
}

// write writes b within the send timeout; false when the stream has
// ended (reset, stopped, timed out: then reset).
func (s *h3Stream) write(b []byte) bool {
	s.str.SetWriteDeadline(time.Unix(0, dueIn(s.c.lim.SendTimeout)))
	if _, err := s.str.Write(b); err != nil {
		var se *quic.StreamError
		if !errors.As(err, &se) {
			s.resetWith(h3RequestCanceled) // the send timeout
		}
		return false
	}
	return true
}

// appendFields encodes resp's status and headers for the client: names
// in lower case, connection-specific headers dropped, and Content-Length
// when the body's length is known (bodyLen >= 0).
func (o *h3Out) appendFields(resp *upResp, bodyLen int) {
	fs := qpackStatus(o.fs[:0], resp.status())
	fs = resp.appendFields(fs, bodyLen, &o.name, o.num[:], qpackLiteral)
	o.fs = fs
}

// QPACK, encoding (RFC 9204 4.5): a field section that refers to no
// dynamic table (the prefix 0, 0), :status from the static table, every
// other field a literal with a literal name, not Huffman coded. Its
// integers are HPACK's (RFC 7541 5.1: appendHpackInt).

// qpackStatus starts a field section with its prefix and :status.
func qpackStatus(b []byte, status int) []byte {
	b = append(b, 0, 0) // Required Insert Count 0, Delta Base 0
	idx := -1
	switch status {
	case 200:
		idx = 25
	case 304:
		idx = 26
	case 404:
		idx = 27
	case 503:
		idx = 28
	case 100:
		idx = 63
	case 204:
		idx = 64
	case 206:
		idx = 65
	case 302:
		idx = 66
	case 400:
		idx = 67
	case 403:
		idx = 68
	case 421:
		idx = 69
	case 500:
		idx = 71
	}
	if idx >= 0 {
		return appendHpackInt(b, 0xc0, 6, idx) // indexed field line, static
	}
	if status < 100 || status > 999 {
		status = 502
	}
	// A literal with the static name :status (index 24).
	b = appendHpackInt(b, 0x50, 4, 24)
	return append(b, 3, byte('0'+status/100), byte('0'+status/10%10), byte('0'+status%10))
}

// qpackLiteral appends a field line with a literal name (lower case).
func qpackLiteral(b, name, value []byte) []byte {
	b = appendHpackInt(b, 0x20, 3, len(name))
	b = append(b, name...)
	b = appendHpackInt(b, 0, 7, len(value))
	return append(b, value...)
}

// h3Decoder decodes field sections: quic-go's QPACK decoder, static table
// only (the proxy's SETTINGS allow no dynamic table).
type h3Decoder = qpack.Decoder
