package proxy

import (
	"context"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/qpack"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
	"github.com/edgeproxy/edgeproxy/internal/netaddr"
)

// h3Conn is one HTTP/3 connection, served by the proxy itself (RFC
// 9114): its control stream with SETTINGS and, when it is told to go,
// GOAWAY; its request streams each on a goroutine (h3stream.go). A move
// tells only the connections on the moved addresses to go.
type h3Conn struct {
	p      *Proxy
	c      *quic.Conn
	edge   netip.AddrPort // the address the client dialled
	client netip.AddrPort
	sc     *streamConn
	lim    *Limits // in force when the connection started
	dec    *h3Decoder
	ctrl   *quic.SendStream
	once   sync.Once

	mu        sync.Mutex
	goingAway bool
	nextID    quic.StreamID  // the first stream id not accepted yet, for GOAWAY
	active    int            // request streams being served
	idle      *time.Timer    // closes the connection idle for the idle timeout
	wg        sync.WaitGroup // request streams being served

	peerCtrl, peerEnc, peerDec atomic.Bool // the client's unidirectional streams seen
}

// h3Quiet is how often a connection told to go checks whether a request
// is still in flight; it closes after two checks in a row found none.
const h3Quiet = 50 * time.Millisecond

// acceptH3 serves every connection the listener accepts (a handshake
// completed) until it is closed.
func (p *Proxy) acceptH3(ln *quic.Listener) {
	for {
		c, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		go p.serveH3Conn(c)
	}
}

// serveH3Conn gives the connection its connected socket (so it keeps its
// datagrams after a move or an upgrade) and serves its requests.
func (p *Proxy) serveH3Conn(c *quic.Conn) {
	ctx := c.Context()
	p.quicHandshakeDone(ctx)
	p.amp.validated(c.RemoteAddr())
	hc := &h3Conn{p: p, c: c, edge: netaddr.AddrPort(c.LocalAddr()), client: netaddr.AddrPort(c.RemoteAddr()),
		lim: p.limits(), dec: qpack.NewDecoder()}
	release, err := p.qs.attach(hc.client, hc.edge,
		func() bool { return p.fds.Acquire(fdlimit.CDN, 1) },
		func() { p.fds.Release(fdlimit.CDN, 1) })
	if err != nil {
		p.log.Debug("cdn: http3 connection stays on the listener", "client", c.RemoteAddr(), "error", err)
	} else {
		context.AfterFunc(ctx, release)
	}
	hc.sc = &streamConn{client: hc.client.Addr(), close: func() {
		c.CloseWithError(quic.ApplicationErrorCode(h3ExcessiveLoad), "too many streams reset")
	}}
	context.AfterFunc(ctx, func() { hc.sc.closed.Store(true) })
	defer c.CloseWithError(quic.ApplicationErrorCode(h3NoError), "")
	if err := hc.openControl(); err != nil {
		return
	}
	if !p.h3conns.add(hc, p.closing) {
		return
	}
	defer p.h3conns.remove(hc)
	h3 := p.m.active.of(connH3)
	h3.Inc()
	defer h3.Dec()
	hc.idle = time.AfterFunc(hc.lim.IdleTimeout, func() {
		c.CloseWithError(quic.ApplicationErrorCode(h3NoError), "idle timeout")
	})
	defer hc.idle.Stop()
	go hc.acceptUni()
	for {
		str, err := c.AcceptStream(context.Background())
		if err != nil {
			break // the connection ended
		}
		str.ReleaseStreamCredit()
		hc.mu.Lock()
		if hc.goingAway && str.StreamID() >= hc.nextID {
			hc.mu.Unlock()
			str.CancelRead(quic.StreamErrorCode(h3RequestRejected))
			str.CancelWrite(quic.StreamErrorCode(h3RequestRejected))
			continue
		}
		hc.nextID = max(hc.nextID, str.StreamID()+4)
		if hc.active++; hc.active == 1 {
			hc.idle.Stop()
		}
		hc.mu.Unlock()
		hc.sc.inflight.Add(1)
		hc.wg.Add(1)
		s := h3Streams.Get().(*h3Stream)
		s.c, s.str, s.cl = hc, str, -1
		h3Idle.start(s)
	}
	hc.wg.Wait()
}

// streamDone ends a request stream's service.
func (hc *h3Conn) streamDone() {
	hc.sc.inflight.Add(-1)
	hc.mu.Lock()
	if hc.active--; hc.active == 0 && !hc.goingAway {
		hc.idle.Reset(hc.lim.IdleTimeout)
	}
	hc.mu.Unlock()
	hc.wg.Done()
}

// h3Idle are the HTTP/3 request streams' parked workers.
var h3Idle workers[h3Stream]

func init() {
	h3Idle.run = func(s *h3Stream) time.Time {
		hc := s.c
		s.serve()
		s.clear()
		h3Streams.Put(s)
		hc.streamDone()
		return time.Now()
	}
}

// openControl opens the proxy's control stream and sends SETTINGS: the
// largest field section it takes, and (by leaving them out) no dynamic
// QPACK table and no blocked streams.
func (hc *h3Conn) openControl() error {
	str, err := hc.c.OpenUniStream()
	if err != nil {
		return err
	}
	var set []byte
	set = quicvarint.Append(set, 0x6) // SETTINGS_MAX_FIELD_SECTION_SIZE
	set = quicvarint.Append(set, uint64(hc.lim.MaxHeaderBytes))
	b := quicvarint.Append(nil, 0x0) // the control stream's type
	b = quicvarint.Append(b, h3FrameSettings)
	b = quicvarint.Append(b, uint64(len(set)))
	b = append(b, set...)
	hc.ctrl = str
	_, err = str.Write(b)
	return err
}

// acceptUni takes the client's unidirectional streams: its control
// stream (one; SETTINGS first), QPACK's encoder and decoder streams (one
// each; read and dropped: the proxy allows no dynamic table); push
// streams are an error, other types are refused (RFC 9114 6.2).
func (hc *h3Conn) acceptUni() {
	for {
		str, err := hc.c.AcceptUniStream(context.Background())
		if err != nil {
			return
		}
		str.ReleaseStreamCredit()
		go hc.serveUni(str)
	}
}

func (hc *h3Conn) serveUni(str *quic.ReceiveStream) {
	closeWith := func(code uint64, why string) {
		hc.c.CloseWithError(quic.ApplicationErrorCode(code), why)
	}
	r := quicvarint.NewReader(str)
	typ, err := quicvarint.Read(r)
	if err != nil {
		return
	}
	switch typ {
	case 0x0:
		if hc.peerCtrl.Swap(true) {
			closeWith(h3StreamCreation, "a second control stream")
			return
		}
		hc.serveControl(r)
	case 0x2, 0x3:
		seen := &hc.peerEnc
		if typ == 0x3 {
			seen = &hc.peerDec
		}
		if seen.Swap(true) {
			closeWith(h3StreamCreation, "a second QPACK stream")
			return
		}
		// Nothing is expected on them: with no dynamic table the
		// encoder has no instruction to send and the decoder nothing to
		// acknowledge. Read and dropped.
		io.Copy(io.Discard, io.LimitReader(str, 1<<20))
	case 0x1:
		closeWith(h3StreamCreation, "a push stream from a client")
	default:
		str.CancelRead(quic.StreamErrorCode(h3StreamCreation))
	}
}

// serveControl reads the client's control stream: SETTINGS first and
// once, then GOAWAY, PRIORITY_UPDATE (ignored) and unknown frames;
// frames only request streams carry are an error.
func (hc *h3Conn) serveControl(r quicvarint.Reader) {
	closeWith := func(code uint64, why string) {
		hc.c.CloseWithError(quic.ApplicationErrorCode(code), why)
	}
	for first := true; ; first = false {
		typ, err := quicvarint.Read(r)
		if err != nil {
			closeWith(h3ClosedCritical, "the control stream ended")
			return
		}
		length, err := quicvarint.Read(r)
		if err != nil {
			closeWith(h3ClosedCritical, "the control stream ended")
			return
		}
		if first != (typ == h3FrameSettings) {
			if first {
				closeWith(h3MissingSettings, "the control stream does not start with SETTINGS")
			} else {
				closeWith(h3FrameUnexpected, "a second SETTINGS")
			}
			return
		}
		switch typ {
		case h3FrameData, h3FrameHeaders, h3FramePushPromise, 0x2, 0x6, 0x8, 0x9:
			closeWith(h3FrameUnexpected, "a frame the control stream cannot carry")
			return
		}
		if length > 1<<16 {
			closeWith(h3ExcessiveLoad, "a control frame too large")
			return
		}
		if _, err := io.CopyN(io.Discard, r, int64(length)); err != nil {
			closeWith(h3ClosedCritical, "the control stream ended")
			return
		}
	}
}

// leave tells the connection to go (its address left the cdn): GOAWAY,
// then closed once its requests are done, within the idle timeout.
func (p *Proxy) leaveH3(hc *h3Conn) func() {
	return func() {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), p.limits().IdleTimeout)
			defer cancel()
			hc.goAway(ctx)
		}()
	}
}

// kill closes the connection at once.
func (hc *h3Conn) kill() {
	hc.c.CloseWithError(quic.ApplicationErrorCode(h3NoError), "")
}

// goAway sends GOAWAY, lets the requests in flight finish, and closes the
// connection once none has been in flight for two checks in a row (a
// client keeps a connection open after GOAWAY), or when ctx is done. Once
// per connection.
func (hc *h3Conn) goAway(ctx context.Context) {
	hc.once.Do(func() {
		hc.mu.Lock()
		hc.goingAway = true
		id := hc.nextID
		hc.mu.Unlock()
		if hc.ctrl != nil {
			b := quicvarint.Append(nil, h3FrameGoAway)
			b = quicvarint.Append(b, uint64(quicvarint.Len(uint64(id))))
			b = quicvarint.Append(b, uint64(id))
			// Writing may wait for the client's flow control credit; it
			// returns once the connection is closed.
			go hc.ctrl.Write(b)
		}
		t := time.NewTicker(h3Quiet)
		defer t.Stop()
		quiet := 0
		for quiet < 2 {
			select {
			case <-ctx.Done():
				quiet = 2
			case <-hc.c.Context().Done():
				return
			case <-t.C:
				if hc.sc.inflight.Load() > 0 {
					quiet = 0
					continue
				}
				quiet++
			}
		}
		hc.c.CloseWithError(quic.ApplicationErrorCode(h3NoError), "")
	})
}

// shutdownH3 tells every HTTP/3 connection to go and waits for them until
// ctx is done, then closes those left.
func (p *Proxy) shutdownH3(ctx context.Context) error {
	for _, hc := range p.h3conns.all() {
		go hc.goAway(ctx)
	}
	return p.h3conns.wait(ctx, (*h3Conn).kill)
}
