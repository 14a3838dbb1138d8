package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/edgeproxy/edgeproxy/internal/netaddr"
)

// The HTTP/2 server for client connections, built for proxying: frames
// are read and decoded on the connection's goroutine (x/net's Framer and
// hpack decoder), HEADERS straight into the fasthttp.Request the origin
// pools take; only a request that goes to an origin gets a goroutine
// (h2stream.go). Every stream's frames are appended to one connection
// buffer, and one writer at a time writes it whole: one tls.Conn.Write per
// batch, whatever the number of streams in it.
//
// RFC 7540 priorities are ignored (PRIORITY frames and HEADERS priority
// fields are validated only). Server push is not offered.

const (
	h2MaxStreams   = 250       // SETTINGS_MAX_CONCURRENT_STREAMS
	h2StreamWindow = 64 << 10  // our initial stream receive window: a request body buffered per stream
	h2ConnWindow   = 1 << 20   // our connection receive window
	h2MaxFrame     = 16384     // SETTINGS_MAX_FRAME_SIZE we accept (the default)
	h2SmallBody    = 64 << 10  // bodies of a known length up to this are collected whole before forwarding
	h2MaxBuffered  = 256 << 10 // pending output past which writers wait for the flusher
	h2KeepBuffer   = 64 << 10  // write buffers up to this size are reused

	// h2FloodBudget bounds the frames a connection may send in
	// h2FloodWindow that cost us a write or carry nothing (PING, SETTINGS,
	// PRIORITY, empty DATA and CONTINUATION, RST_STREAM on closed streams,
	// frames we answer with a stream error): CVE-2019-9512, -9514, -9515,
	// -9518 and CVE-2024-27316. Past it: GOAWAY ENHANCE_YOUR_CALM.
	h2FloodBudget = 1000
	h2FloodWindow = 10 * time.Second

	// h2GoAwayLinger is how long a connection closed with an error goes on
	// reading (and discarding) so that the peer gets the GOAWAY before the
	// kernel resets the connection.
	h2GoAwayLinger = time.Second
)

// h2Metrics count what the HTTP/2 server refuses.
type h2Metrics struct {
	connErrors *prometheus.CounterVec // code: the GOAWAY's error code
	floods     *prometheus.CounterVec // kind: what the flood was made of
}

func newH2Metrics(reg prometheus.Registerer) *h2Metrics {
	m := &h2Metrics{
		connErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_h2_connection_errors_total",
			Help: "HTTP/2 client connections closed with a GOAWAY carrying an error, by error code (PROTOCOL_ERROR, FLOW_CONTROL_ERROR, ENHANCE_YOUR_CALM, ...).",
		}, []string{"code"}),
		floods: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_h2_floods_total",
			Help: "HTTP/2 connections closed with ENHANCE_YOUR_CALM for a flood of frames that cost a write or carry nothing, by the frame that crossed the budget.",
		}, []string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.connErrors, m.floods)
	}
	return m
}

// h2Conn is one HTTP/2 client connection.
type h2Conn struct {
	p            *Proxy
	lim          *Limits // those in force when it started: it keeps them
	conn         net.Conn
	br           *bufio.Reader
	fr           *http2.Framer
	dec          *hpack.Decoder
	sc           *streamConn
	edge, client netip.AddrPort

	// The read loop's own.
	head        h2Head // the header block being decoded
	sawSettings bool
	recvConn    int64 // what the client may still send on the connection
	connCredit  int64 // consumed, not yet given back
	floodN      int
	floodStart  time.Time
	lastNow     time.Time // the read loop's coarse clock
	collecting  int       // streams whose small body is being collected
	bodyArmed   bool      // a read deadline for those bodies is set

	mu       sync.Mutex
	cond     sync.Cond // window changes, flushes, the end
	streams  map[uint32]*h2Stream
	maxID    uint32 // the highest client stream id seen
	wbuf     []byte // frames waiting to be written
	spare    []byte
	hbuf     []byte // a header block being encoded
	nameBuf  []byte // a header name being lower-cased
	numBuf   [24]byte
	flushing bool
	werr     error // the connection can no longer be written
	sendConn int64 // our connection send window
	peerWin  int64 // the client's SETTINGS_INITIAL_WINDOW_SIZE
	peerMax  int   // the client's SETTINGS_MAX_FRAME_SIZE
	goingAway,
	idleArmed bool // a read deadline for idleness is set
	// opening: a new stream's header block is being read or acted on;
	// it is within maxID but not yet in streams (opened ends it).
	opening           bool
	writes, responses uint64 // conn.Write calls and responses, for tests
}

// errH2ConnClosed is werr when the connection was closed by us.
var errH2ConnClosed = errors.New("http2: connection closed")

// serveH2 serves a TLS connection that negotiated h2.
func (p *Proxy) serveH2(c net.Conn) error {
	// fasthttp's server counted the connection as http/1.1+tls when it
	// was accepted (connState) and uncounts it when it closes: while it
	// speaks h2, it is counted as h2 only.
	p.activeH1TLS.Dec()
	defer p.activeH1TLS.Inc()
	h2 := p.m.active.of(connH2)
	h2.Inc()
	defer h2.Dec()
	hc := p.newH2Conn(c)
	if !p.h2conns.add(hc, p.closing) {
		c.Close() // shutting down
		return nil
	}
	defer p.h2conns.remove(hc)
	hc.serve()
	return nil
}

func (p *Proxy) newH2Conn(c net.Conn) *h2Conn {
	hc := &h2Conn{
		p: p, lim: p.limits(), conn: c, br: bufio.NewReaderSize(c, 16<<10),
		edge: netaddr.AddrPort(c.LocalAddr()), client: netaddr.AddrPort(c.RemoteAddr()),
		streams: map[uint32]*h2Stream{}, recvConn: h2ConnWindow,
		sendConn: 65535, peerWin: 65535, peerMax: 16384,
	}
	hc.cond.L = &hc.mu
	hc.sc = &streamConn{client: hc.client.Addr(), close: func() { hc.fail(errH2ConnClosed) }}
	hc.fr = http2.NewFramer(nil, hc.br)
	hc.fr.SetMaxReadFrameSize(h2MaxFrame)
	hc.fr.SetReuseFrames()
	hc.dec = hpack.NewDecoder(4096, hc.emit)
	hc.dec.SetMaxStringLength(2 * hc.lim.MaxHeaderBytes) // the block bound; the list is checked as it is decoded
	return hc
}

// shutdownH2 sends GOAWAY to every HTTP/2 connection: each closes when
// its streams are done, or when ctx is done.
func (p *Proxy) shutdownH2(ctx context.Context) error {
	for _, c := range p.h2conns.all() {
		c.shutdown()
	}
	return p.h2conns.wait(ctx, func(c *h2Conn) { c.fail(errH2ConnClosed) })
}

// serve runs the connection's read loop until the connection ends.
func (c *h2Conn) serve() {
	l := c.lim
	defer c.teardown()
	// Our SETTINGS and the connection window first, as the preface
	// allows: the client need not wait for them.
	c.mu.Lock()
	c.wbuf = appendSettings(c.wbuf,
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: h2MaxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(l.MaxHeaderBytes)},
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
	)
	c.wbuf = appendWindowUpdate(c.wbuf, 0, h2ConnWindow-65535)
	c.flushLocked(false)
	c.mu.Unlock()
	if c.p.ownsTCP != nil && !c.p.ownsTCP(c.edge) {
		// Its address left the cdn while it shook hands, before the
		// set had it for Reowned to find: GOAWAY, after our SETTINGS.
		c.shutdown()
	}

	c.conn.SetReadDeadline(time.Now().Add(l.ReadHeaderTimeout))
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(c.br, preface[:]); err != nil || string(preface[:]) != http2.ClientPreface {
		c.p.log.Debug("cdn h2: bad preface", "client", c.client, "error", err)
		return
	}
	c.lastNow = time.Now()
	for {
		if !c.frameBuffered() {
			c.mu.Lock()
			c.flushLocked(false)
			switch {
			case len(c.streams) == 0 && !c.idleArmed:
				// The first SETTINGS must come within ReadHeaderTimeout;
				// later, an idle connection is closed after IdleTimeout.
				d := l.IdleTimeout
				if !c.sawSettings {
					d = l.ReadHeaderTimeout
				}
				c.idleArmed, c.bodyArmed = true, false
				c.conn.SetReadDeadline(time.Now().Add(d))
			case c.collecting > 0:
				// Bodies collected on the read loop have the body
				// timeout (those streamed have it in their pipe).
				c.bodyArmed = true
				c.conn.SetReadDeadline(c.lastNow.Add(l.BodyTimeout))
			case c.bodyArmed && !c.idleArmed:
				c.bodyArmed = false
				c.conn.SetReadDeadline(time.Time{})
			}
			c.mu.Unlock()
			// Wait for the next frame's header without taking it: a
			// timeout here leaves the framer in step.
			if _, err := c.br.Peek(9); err != nil {
				var ne interface{ Timeout() bool }
				if c.collecting > 0 && errors.As(err, &ne) && ne.Timeout() {
					c.lastNow = time.Now()
					c.sweepBodies()
					continue
				}
			}
		}
		f, err := c.fr.ReadFrame()
		c.lastNow = time.Now()
		if err != nil {
			if !c.readError(err) {
				return
			}
			continue
		}
		if err := c.process(f); err != nil {
			if !c.readError(err) {
				return
			}
		}
	}
}

// frameBuffered reports whether a whole frame is already buffered: the
// read loop then goes on before writing what it has to say.
func (c *h2Conn) frameBuffered() bool {
	n := c.br.Buffered()
	if n < 9 {
		return false
	}
	h, _ := c.br.Peek(9)
	return n >= 9+int(h[0])<<16|int(h[1])<<8|int(h[2])
}

// readError handles an error of a frame or its processing and reports
// whether the read loop goes on.
func (c *h2Conn) readError(err error) bool {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		c.streamError(se.StreamID, se.Code)
		if c.floodErr("stream_error") != nil {
			c.goAwayError(http2.ErrCodeEnhanceYourCalm)
			return false
		}
		return true
	case errors.Is(err, http2.ErrFrameTooLarge):
		c.goAwayError(http2.ErrCodeFrameSize)
	case errors.As(err, &ce):
		c.goAwayError(http2.ErrCode(ce))
	case errors.Is(err, errH2Calm):
		c.goAwayError(http2.ErrCodeEnhanceYourCalm)
	default:
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			c.mu.Lock()
			idle := len(c.streams) == 0
			c.mu.Unlock()
			if idle {
				// Idle (or silent since the preface): GOAWAY(NO_ERROR).
				c.mu.Lock()
				c.wbuf = appendGoAway(c.wbuf, c.maxID, http2.ErrCodeNo)
				c.flushLocked(false)
				c.mu.Unlock()
			}
		}
	}
	return false
}

var errH2Calm = errors.New("http2: flood")

// floodErr counts a frame that cost a write or carried nothing; past the
// budget it returns errH2Calm, which closes the connection with
// ENHANCE_YOUR_CALM.
func (c *h2Conn) floodErr(kind string) error {
	if c.lastNow.Sub(c.floodStart) >= h2FloodWindow {
		c.floodStart, c.floodN = c.lastNow, 0
	}
	c.floodN++
	if c.floodN <= h2FloodBudget {
		return nil
	}
	c.p.h2m.floods.WithLabelValues(kind).Inc()
	c.p.log.Debug("cdn h2: flood", "client", c.client, "kind", kind)
	return errH2Calm
}

// goAwayError ends the connection with a GOAWAY carrying code: it is
// written, then the connection reads and discards for a moment, so that
// the client reads the GOAWAY rather than a reset, and closes.
func (c *h2Conn) goAwayError(code http2.ErrCode) {
	c.p.h2m.connErrors.WithLabelValues(code.String()).Inc()
	c.p.log.Debug("cdn h2: connection error", "client", c.client, "code", code)
	c.mu.Lock()
	c.goingAway = true
	c.wbuf = appendGoAway(c.wbuf, c.maxID, code)
	c.flushLocked(false)
	c.mu.Unlock()
	c.conn.SetReadDeadline(time.Now().Add(h2GoAwayLinger))
	io.Copy(io.Discard, c.br)
}

// teardown ends every stream of a connection that ended and closes it.
func (c *h2Conn) teardown() {
	c.sc.closed.Store(true) // what follows is no client's reset
	c.fail(errH2ConnClosed)
	c.mu.Lock()
	streams := make([]*h2Stream, 0, len(c.streams))
	for _, s := range c.streams {
		streams = append(streams, s)
	}
	c.mu.Unlock()
	for _, s := range streams {
		s.abort(errClientGone)
	}
	c.head.release()
}

// fail marks the connection broken and closes it: writers stop, waiters
// wake.
func (c *h2Conn) fail(err error) {
	c.mu.Lock()
	if c.werr == nil {
		c.werr = err
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.conn.Close()
}

// shutdown starts a graceful end: GOAWAY with the last stream id; the
// streams in flight finish, then the connection closes.
func (c *h2Conn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.werr != nil || c.goingAway {
		return
	}
	c.goingAway = true
	c.wbuf = appendGoAway(c.wbuf, c.maxID, http2.ErrCodeNo)
	c.flushLocked(false)
	if len(c.streams) == 0 && !c.opening { // else opened closes it
		c.closeLocked()
	}
}

// closeLocked closes a connection that is going away and has nothing more
// to say; under c.mu.
func (c *h2Conn) closeLocked() {
	if c.werr == nil {
		c.werr = errH2ConnClosed
	}
	c.cond.Broadcast()
	// Once written out: a flusher in progress closes it when done.
	if !c.flushing {
		c.conn.Close()
	}
}

// flushLocked writes the pending frames, under c.mu (released while
// writing). One writer at a time: while one writes, others append, and it
// writes their frames next, in one write. yield lets other goroutines that
// are about to append run first (a worker's response), so one write
// carries the frames of every stream ready at the time.
func (c *h2Conn) flushLocked(yield bool) {
	if c.flushing || len(c.wbuf) == 0 {
		return
	}
	c.flushing = true
	if yield {
		c.mu.Unlock()
		runtime.Gosched()
		c.mu.Lock()
	}
	for len(c.wbuf) > 0 && (c.werr == nil || c.werr == errH2ConnClosed && c.goingAway) {
		buf := c.wbuf
		c.wbuf = c.spare[:0]
		c.mu.Unlock()
		c.conn.SetWriteDeadline(time.Now().Add(c.lim.SendTimeout))
		_, err := c.conn.Write(buf)
		c.mu.Lock()
		c.writes++
		if cap(buf) <= h2KeepBuffer {
			c.spare = buf[:0]
		} else {
			c.spare = nil // a big batch's buffer is not kept for the connection's life
		}
		if err != nil {
			if c.werr == nil || c.werr == errH2ConnClosed {
				c.werr = err
			}
			c.wbuf = c.wbuf[:0]
			c.flushing = false
			c.cond.Broadcast()
			c.mu.Unlock()
			c.conn.Close()
			c.mu.Lock()
			return
		}
	}
	c.flushing = false
	c.cond.Broadcast()
	if c.werr != nil {
		c.wbuf = c.wbuf[:0]
		c.conn.Close()
	}
}

// process handles one frame on the read loop.
func (c *h2Conn) process(f http2.Frame) error {
	if !c.sawSettings {
		if _, ok := f.(*http2.SettingsFrame); !ok {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		c.sawSettings = true
	}
	if c.awayAbove(f.Header().StreamID) {
		// Streams after our GOAWAY's last id are ignored; the
		// connection window is still given back.
		if d, ok := f.(*http2.DataFrame); ok {
			return c.takeConn(int64(d.Length), true)
		}
		if h, ok := f.(*http2.HeadersFrame); ok {
			c.head.release()
			c.head.id, c.head.ignore = h.StreamID, true
			return c.headerFragment(h.HeaderBlockFragment(), h.HeadersEnded())
		}
		if _, ok := f.(*http2.ContinuationFrame); !ok {
			return nil
		}
	}
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.processData(f)
	case *http2.HeadersFrame:
		return c.processHeaders(f)
	case *http2.ContinuationFrame:
		return c.processContinuation(f)
	case *http2.RSTStreamFrame:
		return c.processReset(f)
	case *http2.SettingsFrame:
		return c.processSettings(f)
	case *http2.PingFrame:
		if f.IsAck() {
			return c.floodErr("ping") // we send none
		}
		c.mu.Lock()
		c.wbuf = appendPing(c.wbuf, f.Data)
		c.mu.Unlock()
		return c.floodErr("ping")
	case *http2.WindowUpdateFrame:
		return c.processWindowUpdate(f)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol}
		}
		return c.floodErr("priority")
	case *http2.GoAwayFrame:
		c.shutdown()
		return nil
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	default:
		return c.floodErr("unknown")
	}
}

// awayAbove reports whether id is past the last stream of our GOAWAY.
func (c *h2Conn) awayAbove(id uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.goingAway && id > c.maxID
}

// stateOf returns the open stream id, or whether it is idle (never used):
// a stream that is neither is closed.
func (c *h2Conn) stateOf(id uint32) (s *h2Stream, idle bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s = c.streams[id]; s != nil {
		return s, false
	}
	return nil, id > c.maxID
}

func (c *h2Conn) processSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return c.floodErr("settings") // we sent one, acknowledged once
	}
	if f.NumSettings() > 100 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			// Applied to every open stream (RFC 9113 6.9.2).
			delta := int64(s.Val) - c.peerWin
			for _, st := range c.streams {
				if st.sendWin+delta > 1<<31-1 {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
				st.sendWin += delta
			}
			c.peerWin = int64(s.Val)
		case http2.SettingMaxFrameSize:
			c.peerMax = int(s.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.cond.Broadcast()
	c.wbuf = appendFrameHeader(c.wbuf, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
	return c.floodErr("settings")
}

func (c *h2Conn) processWindowUpdate(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		if c.sendConn+inc > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.sendConn += inc
		c.cond.Broadcast()
		return nil
	}
	s := c.streams[f.StreamID]
	if s == nil {
		if f.StreamID > c.maxID {
			return http2.ConnectionError(http2.ErrCodeProtocol) // idle
		}
		return c.floodErr("window_update")
	}
	if s.sendWin+inc > 1<<31-1 {
		return http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeFlowControl}
	}
	s.sendWin += inc
	c.cond.Broadcast()
	return nil
}

func (c *h2Conn) processReset(f *http2.RSTStreamFrame) error {
	s, idle := c.stateOf(f.StreamID)
	if idle {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if s == nil {
		return c.floodErr("rst_stream")
	}
	s.clientReset()
	return nil
}

// takeConn takes n bytes of DATA off the connection window; discard gives
// them back at once (the data is not kept).
func (c *h2Conn) takeConn(n int64, discard bool) error {
	if n > c.recvConn {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvConn -= n
	if discard {
		c.giveConn(n)
	}
	return nil
}

// giveConn gives the client n bytes of connection window back, in
// batches; on the read loop.
func (c *h2Conn) giveConn(n int64) {
	c.connCredit += n
	if c.connCredit >= h2ConnWindow/4 {
		c.mu.Lock()
		c.wbuf = appendWindowUpdate(c.wbuf, 0, uint32(c.connCredit))
		c.mu.Unlock()
		c.recvConn += c.connCredit
		c.connCredit = 0
	}
}

func (c *h2Conn) processData(f *http2.DataFrame) error {
	id := f.StreamID
	n := int64(f.Length) // padding included
	c.mu.Lock()
	s := c.streams[id]
	idle := s == nil && id > c.maxID
	open := s != nil && !s.remoteDone
	resetSent := s != nil && s.resetSent
	overflow := open && n > s.recvWin
	if open && !overflow {
		s.recvWin -= n
	}
	c.mu.Unlock()
	if idle {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	// The connection window is given back at once: what a stream may
	// hold is bounded by its own window.
	if err := c.takeConn(n, true); err != nil {
		return err
	}
	switch {
	case !open && resetSent:
		return nil
	case !open:
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeStreamClosed}
	case overflow:
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeFlowControl}
	}
	if n == 0 && !f.StreamEnded() {
		if err := c.floodErr("empty_data"); err != nil {
			return err
		}
	}
	return s.data(f.Data(), n, f.StreamEnded())
}

// streamError resets a stream for a protocol error of its own.
func (c *h2Conn) streamError(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	s := c.streams[id]
	c.mu.Unlock()
	if s != nil {
		s.resetBy(code)
		return
	}
	c.mu.Lock()
	c.wbuf = appendRSTStream(c.wbuf, id, code)
	c.mu.Unlock()
}

// The frames we write, appended to a buffer.

func appendFrameHeader(b []byte, length int, typ http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(typ), byte(flags),
		byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

func appendSettings(b []byte, settings ...http2.Setting) []byte {
	b = appendFrameHeader(b, 6*len(settings), http2.FrameSettings, 0, 0)
	for _, s := range settings {
		b = append(b, byte(s.ID>>8), byte(s.ID), byte(s.Val>>24), byte(s.Val>>16), byte(s.Val>>8), byte(s.Val))
	}
	return b
}

func appendWindowUpdate(b []byte, id, inc uint32) []byte {
	b = appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, id)
	return append(b, byte(inc>>24)&0x7f, byte(inc>>16), byte(inc>>8), byte(inc))
}

func appendGoAway(b []byte, last uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 8, http2.FrameGoAway, 0, 0)
	return append(b, byte(last>>24)&0x7f, byte(last>>16), byte(last>>8), byte(last),
		byte(code>>24), byte(code>>16), byte(code>>8), byte(code))
}

func appendRSTStream(b []byte, id uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 4, http2.FrameRSTStream, 0, id)
	return append(b, byte(code>>24), byte(code>>16), byte(code>>8), byte(code))
}

func appendPing(b []byte, data [8]byte) []byte {
	b = appendFrameHeader(b, 8, http2.FramePing, http2.FlagPingAck, 0)
	return append(b, data[:]...)
}
