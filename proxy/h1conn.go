package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httputil"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/internal/netaddr"
)

// The HTTP/1.1 engine: edgeproxy's own connection loop for HTTP/1.1, in
// the clear and over TLS (a TLS connection that negotiates h2 goes to
// h2server.go). It serves what an edge gets most, a GET or HEAD without a
// body for an HTTP/1.1 origin, in one pass over each head (h1head.go):
// the request is checked and scanned as it is parsed, written for the
// origin with the forwarding policy applied as it is copied, and the
// origin's response head is rewritten as it is copied to the client,
// with a small body in the same write.
//
// Everything else (a request with a body, an Upgrade, HTTP/1.0, a head
// the checks refuse or that is larger than the engine's buffer, a request
// the admission refuses, a route with an HTTP/2 origin) it hands over,
// with the connection and the bytes read so far, to the fasthttp server
// (h1.go), which serves the connection from then on: both run the same
// pipeline (pipeline.go), the policy and the checks from the same
// functions, so a connection's answers do not depend on the engine.

// h1BufSize is the engine's read buffer: a head that does not fit goes to
// the fasthttp path, whose buffer is max_header_bytes.
const h1BufSize = 4 << 10

// h1OriginHead bounds an origin's response head.
const h1OriginHead = 8 << 10

// h1Conn is a client connection on the engine.
type h1Conn struct {
	p            *Proxy
	c            net.Conn
	isTLS        bool
	edge, client netip.AddrPort
	buf          []byte     // the read buffer; buf[r:w] is unread
	bufp         *[]byte    // buf's, from h1BufPool
	scr          *h1Scratch // req's, scratch's and hostBuf's, from h1Scratches
	r, w         int
	idleDue      int64         // while waiting for a later request: its idle timeout, Unix nanoseconds
	idleFor      time.Duration // the idle timeout idleDue is from
	parking      bool          // the read deadline is the park's (parkAfter), not the idle timeout

	head    *h1Head // during a request (h1Heads)
	closeRq bool    // the client asked to close after this request
	rec     record
	st      *state
	req     []byte // the origin's request, without its final CRLF
	scratch []byte // the lower-cased host and the policy's values
	hostBuf []byte

	idle atomic.Bool // waiting for a request's first byte
	stop atomic.Bool // shutting down: the connection ends after its request

	// In the idle set (h1idle.go), guarded by its lock.
	slot               int32
	parkGen            uint32
	parkFD             int
	parkDue            int64
	parkList           *h1List
	parkPrev, parkNext *h1Conn
	active             interface{ Dec() }
}

// h1Bufs are the buffers of an exchange: the origin's reads, and the
// client's response (a head with a small body).
var h1Bufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// serveH1Conn serves a client connection from its start.
func (p *Proxy) serveH1Conn(c net.Conn, isTLS bool) {
	active := p.activeH1
	if isTLS {
		active = p.activeH1TLS
	}
	p.conns.Add(1)
	active.Inc()
	ended := false // the connection went to the engine, which ends it
	defer func() {
		if !ended {
			active.Dec()
			p.conns.Add(-1)
		}
	}()
	// The TLS handshake and the first request's head, within the head
	// timeout from the connection's start.
	c.SetReadDeadline(time.Unix(0, dueIn(p.limits().ReadHeaderTimeout)))
	if isTLS {
		tc := c.(*tls.Conn)
		pushDeadline(p.limits().SendTimeout, c.SetWriteDeadline)
		if err := tc.Handshake(); err != nil {
			p.log.Debug("cdn tls handshake", "client", c.RemoteAddr(), "error", err)
			c.Close()
			return
		}
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			c.SetDeadline(time.Time{}) // the HTTP/2 server sets its own
			p.serveH2(c)
			c.Close()
			return
		}
	}
	hc := &h1Conn{
		p: p, c: c, isTLS: isTLS, active: active, parkFD: -1,
		edge: netaddr.AddrPort(c.LocalAddr()), client: netaddr.AddrPort(c.RemoteAddr()),
	}
	if !p.h1conns.add(hc, p.closing) {
		c.Close() // shutting down
		return
	}
	ended = true
	hc.takeBuf()
	if p.ownsTCP != nil && !p.ownsTCP(hc.edge) {
		// Its address left the cdn while it was accepted or shook
		// hands, before the set had it for Reowned to find: it goes
		// after its first request.
		hc.leave()
	}
	hc.run(true)
}

// run serves the connection on the calling goroutine until it ends or
// parks (h1idle.go).
func (hc *h1Conn) run(first bool) {
	if !hc.serve(first) {
		hc.finish()
	}
}

// finish ends the connection (closed, or handed over and served to its
// end): once, by its goroutine or by the idle set's taker.
func (hc *h1Conn) finish() {
	hc.p.h1conns.remove(hc)
	hc.release()
	hc.active.Dec()
	hc.p.conns.Add(-1)
}

// serve serves requests; it reports true when the connection parked, and
// then belongs to the idle set.
func (hc *h1Conn) serve(first bool) (parked bool) {
	for ; ; first = false {
		n, ok, parked := hc.readHead(first)
		if !ok {
			return parked
		}
		hc.head = h1Heads.Get().(*h1Head)
		ok = parseHead(hc.buf[hc.r:hc.r+n], hc.head)
		var s *site
		var rt *route
		if ok {
			hc.closeRq = hc.head.close
			s, rt, ok = hc.admit()
		}
		if !ok {
			hc.putHead()
			hc.handoff()
			return false
		}
		keep := hc.exchange(s, rt)
		hc.putHead()
		hc.r += n
		if hc.r == hc.w {
			hc.r, hc.w = 0, 0
		}
		if !keep {
			hc.c.Close()
			return false
		}
		if hc.w > hc.r {
			// The next request's head came with this one (pipelined): its
			// head timeout runs from now.
			hc.c.SetReadDeadline(time.Unix(0, dueIn(hc.p.limits().ReadHeaderTimeout)))
		} else {
			hc.idleFor = hc.p.limits().IdleTimeout
			hc.idleDue = dueIn(hc.idleFor)
			hc.c.SetReadDeadline(time.Unix(0, hc.idleDue))
		}
	}
}

// readHead reads until buf[r:] starts with a whole head, and returns its
// length. It reports false when the connection ended: closed by the
// client, idle at shutdown, handed over, or answered (a head that did not
// arrive in time); or, parked true, when it parked: the connection is the
// idle set's then.
func (hc *h1Conn) readHead(first bool) (n int, ok, parked bool) {
	from := 0
	// A head over max_header_bytes (when it is below the buffer) goes to
	// the fasthttp path, whose buffer is that limit: it answers 431.
	max := min(len(hc.buf), hc.p.limits().MaxHeaderBytes)
	for {
		if hc.w > hc.r {
			if end := headEnd(hc.buf[hc.r:hc.w], from); end >= 0 {
				if end > max {
					hc.handoff()
					return 0, false, false
				}
				return end, true, false
			}
			from = hc.w - hc.r
			if from >= max && max < len(hc.buf) {
				hc.handoff()
				return 0, false, false
			}
		}
		if hc.w == len(hc.buf) {
			if hc.r == 0 {
				hc.handoff() // a head larger than the engine's buffer
				return 0, false, false
			}
			hc.w = copy(hc.buf, hc.buf[hc.r:hc.w])
			hc.r = 0
		}
		pending := hc.w > hc.r
		if !pending {
			hc.r, hc.w = 0, 0
			hc.idle.Store(true)
			// Told to go: closed, unless a request is on its way in
			// (the first of the connection, or one that arrived as it
			// was told), which is answered with Connection: close.
			if hc.stop.Load() && !first && !unread(hc.c) {
				hc.c.Close()
				return 0, false, false
			}
			// Waited for parkAfter, a later request's wait goes on in
			// the idle set.
			if !first && !hc.parking && hc.p.idle != nil && hc.idleDue-coarseNanos() > int64(2*parkAfter) {
				hc.parking = true
				hc.c.SetReadDeadline(time.Unix(0, dueIn(parkAfter)))
			}
		}
		n, err := hc.c.Read(hc.buf[hc.w:])
		if hc.parking && !pending {
			hc.parking = false
			if n == 0 && isTimeout(err) && coarseNanos() < hc.idleDue {
				hc.release()
				if hc.park() {
					return 0, false, true // the set's now: hc is not ours
				}
				hc.takeBuf()
				// Not parked (told to go, or the set is closed): the idle
				// timeout stands, and the check above.
				hc.c.SetReadDeadline(time.Unix(0, hc.idleDue))
				continue
			}
		}
		hc.idle.Store(false)
		if n > 0 {
			if !pending && !first {
				// A later request's first byte is in: its head within
				// the head timeout from it.
				hc.c.SetReadDeadline(time.Unix(0, dueIn(hc.p.limits().ReadHeaderTimeout)))
			}
			hc.w += n
			continue
		}
		var ne net.Error
		if pending && errors.As(err, &ne) && ne.Timeout() {
			hc.refuseHead(&refusal{status: 408, reason: refuseTimeout, msg: "the request head did not arrive in time"})
		}
		hc.c.Close()
		return 0, false, false
	}
}

// admit runs the admission of the pipeline for the engine's request; it
// reports false, having changed nothing, for a request the fasthttp path
// must answer: a loop, no site, a route with an HTTP/2 origin, a path
// fasthttp would normalize.
func (hc *h1Conn) admit() (*site, *route, bool) {
	h := hc.head
	st := hc.p.state.Load()
	if loopIn(h.sc.loop, st.cfg.LoopID) {
		return nil, nil, false
	}
	host := h.host
	if hasUpper(host) {
		hc.hostBuf = lowerASCII(append(hc.hostBuf[:0], host...))
		host = hc.hostBuf
	}
	hostStr := string(host)
	s := st.router.lookup(hostStr, hc.edge.Addr())
	if s == nil {
		return nil, nil, false
	}
	path := decodedPath(string(h.target))
	if strings.Contains(path, "//") {
		return nil, nil, false // fasthttp's path merges the slashes
	}
	rt := s.route(cleanPath(path))
	for _, w := range rt.origins {
		if w.o.h2.tr != nil && w.o.h2.proto.Load() != protoH1 {
			return nil, nil, false // it may speak HTTP/2: doH2 takes fasthttp's request
		}
	}
	if h.sc.spoofed > 0 {
		hc.p.m.spoofed.Add(float64(h.sc.spoofed))
	}
	method := "GET"
	if string(h.method) == "HEAD" {
		method = "HEAD"
	}
	hc.st = st
	hc.rec = record{
		start: time.Now(), id: hc.p.ids.next(), proto: "HTTP/1.1", edge: hc.edge, client: hc.client,
		method: method, host: hostStr, path: path, site: s.name,
	}
	sb := hc.scratch[:0]
	var f forwarded
	f, sb = forwardedValues(sb, &h.sc, hc.client, hc.edge, host, hc.isTLS, st.cfg.LoopID, hc.rec.id)
	var conn []byte
	if h.sc.drop {
		start := len(sb)
		sb = joinList(sb, h.sc.conn)
		conn = sb[start:]
	}
	hc.req = appendOriginRequest(hc.req[:0], h, host, &f, conn)
	hc.scratch = sb
	return s, rt, true
}

// exchange forwards the admitted request and answers the client; it
// reports whether the connection takes another request.
func (hc *h1Conn) exchange(s *site, rt *route) bool {
	p := hc.p
	err := p.forwardLoop(context.Background(), s, rt, &hc.rec, hc)
	defer p.done(&hc.rec)
	if err == nil {
		return !hc.closing()
	}
	var se *sentError
	if errors.As(err, &se) {
		// The response had begun: the client cannot be told otherwise.
		if !errors.Is(err, errClientGone) {
			p.log.Info("cdn upstream error", "request_id", hc.rec.id, "upstream", hc.rec.upstream, "error", err)
		}
		return false
	}
	return hc.answer(func(resp *fasthttp.Response) { p.upstreamFailed(hc.st, &hc.rec, err, resp, hc.isTLS) })
}

// closing reports whether the connection ends after this request.
func (hc *h1Conn) closing() bool { return hc.closeRq || hc.stop.Load() }

// The heads of requests and responses in progress: an idle connection
// holds neither.
var (
	h1Heads = sync.Pool{New: func() any { return new(h1Head) }}
	h1Resps = sync.Pool{New: func() any { return new(h1Resp) }}
)

// putHead gives the request's head back; its slices point into buf.
func (hc *h1Conn) putHead() {
	hc.head.reset()
	h1Heads.Put(hc.head)
	hc.head = nil
}

// sentError is a failure after the response began: it is not retried,
// and no error page can follow.
type sentError struct{ err error }

func (e *sentError) Error() string { return "after the response began: " + e.err.Error() }
func (e *sentError) Unwrap() error { return e.err }

// staleTries bounds the pooled connections a request tries in turn when
// each turns out closed by the origin while it was idle.
const staleTries = 4

// try is the engine's attempt (forwardLoop): the request to o, and the
// response to the client. A pooled connection that the origin closed
// while it was idle (nothing comes back on it) is closed and the request
// goes on the next: GET and HEAD may be sent again.
func (hc *h1Conn) try(o *origin) error {
	for tries := 1; ; tries++ {
		cc, err := o.hc.AcquireConn(0, false)
		if err != nil {
			return err
		}
		reused := !cc.LastUseTime().IsZero()
		conn := cc.Conn()
		// Past its age, the connection carries one more request and closes.
		aged := o.hc.MaxConnDuration > 0 && coarseNow().Sub(cc.CreatedTime()) > o.hc.MaxConnDuration
		n := len(hc.req)
		if aged {
			hc.req = append(hc.req, "Connection: close\r\n\r\n"...)
		} else {
			hc.req = append(hc.req, "\r\n"...)
		}
		_, err = conn.Write(hc.req)
		hc.req = hc.req[:n]
		keep := false
		if err == nil {
			keep, err = hc.relay(conn)
		} else {
			err = originTimeout(err)
		}
		if keep && !aged {
			o.hc.ReleaseConn(cc)
		} else {
			o.hc.CloseConn(cc)
		}
		if err != nil && reused && tries < staleTries && staleConn(err) {
			continue
		}
		return err
	}
}

// staleConn reports whether err says a connection was closed by its peer
// before any byte of a response: one an idle pooled connection gives.
func staleConn(err error) bool {
	var se *sentError
	return !errors.As(err, &se) && (errors.Is(err, fasthttp.ErrConnectionClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE))
}

func (hc *h1Conn) retryable(err error) bool {
	var se *sentError
	var de *dialError
	switch {
	case errors.As(err, &se):
		return false
	case errors.As(err, &de):
		return true
	case upstreamStatus(err) == 504:
		return false
	}
	return connectionLost(err) // GET and HEAD, without a body
}

func (hc *h1Conn) reset() {}

// originTimeout gives a timeout on an origin's connection the error
// fasthttp's client gives it.
func originTimeout(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fasthttp.ErrTimeout
	}
	return err
}

// readRespHead reads an origin's response head on conn into ib and parses
// it into r, past interim (1xx) responses: it returns the bytes read and
// where the head ends (what follows is the body's). An error is the
// origin's: a head over ib, a connection closed or timed out before a
// whole head, a malformed head, too many interim responses, a 101 (the
// proxy never asks for one here).
func readRespHead(conn net.Conn, ib []byte, r *h1Resp) (n, end int, err error) {
	for interim := 0; ; {
		for scanned := 0; ; {
			if end = respHeadEnd(ib[:n], scanned); end >= 0 {
				break
			}
			if n == len(ib) {
				return 0, 0, &errOriginHead{"larger than 8 KiB"}
			}
			scanned = n
			m, err := conn.Read(ib[n:])
			n += m
			if err != nil && respHeadEnd(ib[:n], scanned) < 0 {
				switch {
				case n == 0 && err == io.EOF:
					return 0, 0, fasthttp.ErrConnectionClosed
				case err == io.EOF:
					err = io.ErrUnexpectedEOF
				}
				return 0, 0, originTimeout(err)
			}
		}
		if err := parseResp(ib[:end], r); err != nil {
			return 0, 0, err
		}
		if st := r.status; st >= 200 || st == 101 {
			break
		}
		if interim++; interim > maxInterim {
			return 0, 0, errTooManyInterim
		}
		n = copy(ib, ib[end:n])
	}
	if r.status == 101 {
		return 0, 0, &errOriginHead{"101 Switching Protocols to a request without Upgrade"}
	}
	return n, end, nil
}

// relay reads the origin's response on conn and sends it to the client.
// It reports whether conn may carry another request. An error before the
// first byte to the client is the origin's, with nothing sent (an error
// page follows); after it, a sentError.
func (hc *h1Conn) relay(conn net.Conn) (keep bool, err error) {
	ibp := h1Bufs.Get().(*[]byte)
	defer h1Bufs.Put(ibp)
	ib := (*ibp)[:h1OriginHead]
	r := h1Resps.Get().(*h1Resp)
	defer h1Resps.Put(r)
	n, end, err := readRespHead(conn, ib, r)
	if err != nil {
		return false, err
	}
	hc.rec.status = r.status
	st := hc.st
	body := ib[end:n]
	isHead := hc.rec.method == "HEAD"
	obp := h1Bufs.Get().(*[]byte)
	out := (*obp)[:0]
	defer func() {
		if cap(out) <= 2*smallBody {
			*obp = out[:0]
		}
		h1Bufs.Put(obp)
	}()
	out = appendClientHead(out, r, clientLength(isHead, r), hc.rec.id, st.altSvcOver(hc.isTLS), hc.closing())
	switch {
	case bodyless(isHead, r.status):
		if err := hc.write(out); err != nil {
			return false, err
		}
		return !r.close && len(body) == 0, nil
	case r.cl >= 0:
		out, keep, err = hc.relayLength(conn, r, out, body, ib)
		return keep, err
	case r.chunked:
		if err := hc.write(out); err != nil {
			return false, err
		}
		return hc.relayChunked(conn, r, body, ib)
	default: // delimited by the origin's closing the connection
		if err := hc.write(out); err != nil {
			return false, err
		}
		src := io.MultiReader(bytes.NewReader(body), conn)
		if err := hc.copyBody(src, -1, true, ib); err != nil {
			return false, err
		}
		return false, nil
	}
}

// clientLength is the Content-Length the client's head says: -1 for none
// (chunked, or to the close), -2 for none of a bodiless answer whose
// framing the origin did not give.
func clientLength(isHead bool, r *h1Resp) int64 {
	switch {
	case !bodyless(isHead, r.status):
		return r.cl
	case r.status == 204 || r.status < 200:
		return -2
	case r.cl >= 0:
		return r.cl // a HEAD's or 304's framing is the origin's
	case r.chunked:
		return -1
	}
	return -2
}

// relayLength sends a response of r.cl bytes after the head in out, of
// which body came with the head: a small one read whole and sent with the
// head in one write, a larger one copied. It returns out, grown.
func (hc *h1Conn) relayLength(conn net.Conn, r *h1Resp, out, body, ib []byte) ([]byte, bool, error) {
	exact := int64(len(body)) <= r.cl
	if !exact {
		body = body[:r.cl] // more than it announced: the rest is not a response
	}
	out = append(out, body...)
	if r.cl > smallBody {
		if err := hc.write(out); err != nil {
			return out, false, err
		}
		hc.rec.bytes = int64(len(body))
		rest := r.cl - int64(len(body))
		if err := hc.copyBody(io.LimitReader(conn, rest), rest, false, ib); err != nil {
			return out, false, err
		}
		return out, exact && !r.close, nil
	}
	need := int(r.cl) - len(body)
	out = slices.Grow(out, need)
	for need > 0 {
		m, err := conn.Read(out[len(out) : len(out)+need])
		out = out[:len(out)+m]
		need -= m
		if err != nil && need > 0 {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return out, false, originTimeout(err)
		}
	}
	if err := hc.write(out); err != nil {
		return out, false, err
	}
	hc.rec.bytes = r.cl
	return out, exact && !r.close, nil
}

// relayChunked copies a chunked body, of which body came with the head,
// and reads the trailer section to its end without forwarding it.
func (hc *h1Conn) relayChunked(conn net.Conn, r *h1Resp, body, ib []byte) (bool, error) {
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(body), conn), 4096)
	if err := hc.copyBody(httputil.NewChunkedReader(br), -1, true, ib); err != nil {
		return false, err
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return false, &sentError{err}
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
	}
	return !r.close && br.Buffered() == 0, nil
}

// copyBody copies the rest of a body from src to the client: n bytes, or
// to src's end (n -1); chunked frames it. Every failure is a sentError.
func (hc *h1Conn) copyBody(src io.Reader, n int64, chunked bool, buf []byte) error {
	buf = buf[:cap(buf)]
	var w io.Writer = clientWriter{hc}
	var cw io.WriteCloser
	if chunked {
		cw = httputil.NewChunkedWriter(w)
		w = cw
	}
	for n != 0 {
		m, err := src.Read(buf)
		if m > 0 {
			if _, werr := w.Write(buf[:m]); werr != nil {
				return werr
			}
			hc.rec.bytes += int64(m)
			if n > 0 {
				n -= int64(m)
			}
		}
		if err == io.EOF && n <= 0 {
			break
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return &sentError{err}
		}
	}
	if chunked {
		cw.Close()
		if err := hc.write([]byte("\r\n")); err != nil {
			return err
		}
	}
	return nil
}

type clientWriter struct{ hc *h1Conn }

func (w clientWriter) Write(b []byte) (int, error) {
	if err := w.hc.write(b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// write sends b to the client within the send timeout; a failure is the
// client's going away, after the response began.
func (hc *h1Conn) write(b []byte) error {
	pushDeadline(hc.p.limits().SendTimeout, hc.c.SetWriteDeadline)
	if _, err := hc.c.Write(b); err != nil {
		return &sentError{fmt.Errorf("%w: %w", errClientGone, err)}
	}
	return nil
}

// answer sends a response the proxy makes (fill fills it: an error page),
// and reports whether the connection takes another request.
func (hc *h1Conn) answer(fill func(resp *fasthttp.Response)) bool {
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	fill(resp)
	closing := hc.closing()
	if closing {
		resp.SetConnectionClose()
	}
	resp.Header.SetServer(serverName)
	resp.Header.SetContentLength(len(resp.Body()))
	obp := h1Bufs.Get().(*[]byte)
	defer h1Bufs.Put(obp)
	out := resp.Header.AppendBytes((*obp)[:0])
	if hc.rec.method != "HEAD" {
		out = append(out, resp.Body()...)
	}
	*obp = out[:0]
	return hc.write(out) == nil && !closing
}

// refuseHead answers a head the engine refused itself (one that did not
// arrive in time), as the fasthttp path's parseErrorH1 does, and ends the
// connection.
func (hc *h1Conn) refuseHead(r *refusal) {
	p := hc.p
	hc.closeRq = true
	hc.rec = record{start: time.Now(), id: p.ids.next(), proto: "HTTP/1.1", edge: hc.edge, client: hc.client}
	hc.answer(func(resp *fasthttp.Response) { p.refuse(p.state.Load(), &hc.rec, r, resp, hc.isTLS) })
	p.done(&hc.rec)
}

// handoff gives the connection, with what was read of it, to the
// fasthttp server, which serves it from then on.
func (hc *h1Conn) handoff() {
	hc.p.m.handoffs.Inc()
	hc.p.h1conns.remove(hc) // fasthttp's shutdown reaches it now
	// The read deadline stands: the head timeout of the request handed
	// over, from its first byte.
	hoc := &handoffConn{Conn: hc.c, pending: bytes.Clone(hc.buf[hc.r:hc.w]), edge: hc.edge}
	hc.release() // the engine is done with the connection
	hoc.fresh.Store(true)
	hc.p.handoffs.add(hoc, nil)
	defer hc.p.handoffs.remove(hoc)
	if hc.stop.Load() {
		hoc.gone.Store(true) // told to go while the engine had it
	}
	// The servers in force now serve it to its end (limits.go).
	s := hc.p.useServers()
	defer hc.p.doneServers(s)
	if tc, ok := hc.c.(*tls.Conn); ok {
		s.h1TLS.ServeConn(&handoffTLSConn{hoc, tc})
		return
	}
	s.h1.ServeConn(hoc)
}

// leave tells the connection to go: after its request in progress, or now
// when it is waiting for one (parked or not).
func (hc *h1Conn) leave() {
	hc.stop.Store(true)
	if hc.p.idle != nil && hc.p.idle.takeConn(hc) {
		if unread(hc.c) {
			go hc.resume() // answered with Connection: close
			return
		}
		hc.closeParked()
		return
	}
	if hc.idle.Load() && !unread(hc.c) {
		hc.c.Close()
	}
}

// kill closes the connection now, parked or not.
func (hc *h1Conn) kill() {
	hc.stop.Store(true)
	if hc.p.idle != nil && hc.p.idle.takeConn(hc) {
		hc.closeParked()
		return
	}
	hc.c.Close()
}

// unread reports whether bytes from the client wait unread in c's
// socket: a request sent as the connection was told to go. Closing over
// them would reset the connection and lose the response the client waits
// for; the connection's goroutine reads it and answers it with
// Connection: close instead. (A request still on the wire when the
// connection closes is the race RFC 9112 9.3.1 lets clients retry.)
func unread(c net.Conn) bool {
	l := lazyOf(c)
	if l == nil || l.tcp == nil {
		return false
	}
	rc, err := l.tcp.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n > 0
}

// handoffConn is a client connection handed to the fasthttp server: its
// first reads return what the engine read already.
type handoffConn struct {
	net.Conn
	pending []byte
	edge    netip.AddrPort
	fresh   atomic.Bool // before fasthttp's first request (connState)
	idle    atomic.Bool // between requests (connState)
	gone    atomic.Bool // told to go: it closes when it is next idle
}

// leave is h1Conn.leave for a handed-over connection.
func (c *handoffConn) leave() {
	c.gone.Store(true)
	if c.idle.Load() {
		c.Close()
	}
}

func (c *handoffConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite shuts the sending side down (a relayed upgrade).
func (c *handoffConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *handoffConn) handedOff() *handoffConn { return c }

// handoffTLSConn is a handed-over TLS connection: fasthttp takes it for
// TLS by these methods.
type handoffTLSConn struct {
	*handoffConn
	tc *tls.Conn
}

func (c *handoffTLSConn) Handshake() error                     { return c.tc.Handshake() }
func (c *handoffTLSConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// shutdownH1 ends the engine's connections: idle ones now, the others
// after their request, or all when ctx is done.
func (p *Proxy) shutdownH1(ctx context.Context) error {
	for _, hc := range p.h1conns.all() {
		hc.leave()
	}
	return p.h1conns.wait(ctx, (*h1Conn).kill)
}
