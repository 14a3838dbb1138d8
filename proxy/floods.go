package proxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/edgeproxy/edgeproxy/internal/netaddr"
)

// The defences against floods of requests that cost the client nothing:
// HTTP/2 rapid reset (HEADERS then RST_STREAM, over and over, across
// reconnecting connections), HTTP/3 streams cancelled as they open, and
// QUIC Initials from spoofable sources.
//
//   - A request whose client has gone (its stream reset or cancelled) is
//     not sent: the context is checked before an origin is picked, before
//     a pooled connection is taken and as its head is written. One in
//     progress is abandoned: its origin connection, and only that one, is
//     cut (exchange below), so the pool is not churned for the others.
//   - HTTP/2 and HTTP/3 requests in flight are bounded for the whole
//     process (limits.max_streams), not only per connection: x/net's
//     per-connection limit does not hold against many connections.
//   - Resets are budgeted per connection and per client address
//     (resetGuard): a connection over its budget is closed, a client over
//     its budget has its connections refused for limits.reset_ban.

// floodMetrics count what the defences refuse.
type floodMetrics struct {
	streamsRefused prometheus.Counter
	abandoned      *prometheus.CounterVec // stage: before_send, in_progress
	resetCutoffs   *prometheus.CounterVec // scope: connection, client
	bannedRefused  *prometheus.CounterVec // protocol: tcp, quic
	quicRefused    *prometheus.CounterVec // reason: connections, handshakes
	quicRetries    prometheus.Counter
	quicWithheld   prometheus.Counter
	panicked       *prometheus.CounterVec // site
}

func newFloodMetrics(reg prometheus.Registerer) *floodMetrics {
	m := &floodMetrics{
		streamsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_streams_refused_total",
			Help: "HTTP/2 and HTTP/3 requests answered 503 because limits.max_streams were in flight.",
		}),
		abandoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_requests_abandoned_total",
			Help: "Requests whose client reset or cancelled them: before_send were never sent to an origin, in_progress had their origin exchange cut.",
		}, []string{"stage"}),
		resetCutoffs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_reset_cutoffs_total",
			Help: "Clients cut off for resetting too many streams: connection (the connection was closed), client (the source address was banned for limits.reset_ban).",
		}, []string{"scope"}),
		bannedRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_banned_connections_refused_total",
			Help: "Connections and QUIC handshakes refused because their source address is banned for resetting streams, by protocol.",
		}, []string{"protocol"}),
		quicRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_quic_refused_total",
			Help: "QUIC connection attempts refused: connections (limits.max_connections open, shared with TCP), handshakes (limits.max_quic_handshakes in flight).",
		}, []string{"reason"}),
		quicRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_quic_retries_total",
			Help: "QUIC Initials answered with a Retry (source address validation) because limits.quic_retry_threshold handshakes were in flight.",
		}),
		quicWithheld: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_quic_amplification_withheld_total",
			Help: "QUIC datagrams not sent because they would have taken an unvalidated client address past three times the bytes it sent (RFC 9000 8.1).",
		}),
		panicked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_panic_requests_total",
			Help: "Requests sent in panic mode: every origin of the route was ejected, so the one whose ejection ends first was tried anyway.",
		}, []string{"site"}),
	}
	if reg != nil {
		reg.MustRegister(m.streamsRefused, m.abandoned, m.resetCutoffs, m.bannedRefused, m.quicRefused, m.quicRetries, m.quicWithheld, m.panicked)
	}
	return m
}

// errClientGone marks a request whose client reset or cancelled it: not
// the origin's fault, and not answered.
var errClientGone = errors.New("the client reset or cancelled the request")

// streamConn is the state of one HTTP/2 or HTTP/3 connection that the
// reset budget needs; requests find it in their context.
type streamConn struct {
	client netip.Addr
	closed atomic.Bool // the connection ended: its requests' contexts end too
	resets window
	close  func() // cuts the connection
	once   sync.Once
	// inflight counts the connection's requests in their handler
	// (HTTP/3: a connection told to go closes once none is left).
	inflight atomic.Int64
}

// window counts events in fixed windows.
type window struct {
	mu    sync.Mutex
	start int64 // Unix nanoseconds
	n     int
}

// add counts one event at now and returns the count in its window.
func (w *window) add(now time.Time, length time.Duration) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if t := now.UnixNano(); t-w.start >= int64(length) {
		w.start, w.n = t, 0
	}
	w.n++
	return w.n
}

// resetWindow is the length of the reset budgets' windows.
const resetWindow = 10 * time.Second

// resetGuard keeps the per-client reset budgets and bans in a table of
// bounded size. IPv6 clients are counted by /64, which is what one
// subscriber usually gets.
type resetGuard struct {
	perConn, perClient atomic.Int64 // resets per resetWindow
	ban                atomic.Int64 // how long a client over budget is refused, in nanoseconds
	max                int          // entries in the table

	mu      sync.Mutex
	clients map[netip.Addr]*clientResets
	swept   time.Time
}

type clientResets struct {
	w           window
	bannedUntil int64 // Unix nanoseconds, under resetGuard.mu
}

func newResetGuard(perConn, perClient int, ban time.Duration, max int) *resetGuard {
	g := &resetGuard{max: max, clients: map[netip.Addr]*clientResets{}}
	g.setBudgets(perConn, perClient, ban)
	return g
}

// setBudgets changes the budgets (a reload): the counts made so far stay,
// and bans already given keep their end.
func (g *resetGuard) setBudgets(perConn, perClient int, ban time.Duration) {
	g.perConn.Store(int64(perConn))
	g.perClient.Store(int64(perClient))
	g.ban.Store(int64(ban))
}

func clientKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// banned reports whether connections from a are refused now.
func (g *resetGuard) banned(a netip.Addr, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	c := g.clients[clientKey(a)]
	return c != nil && now.UnixNano() < c.bannedUntil
}

// reset counts a reset stream of sc and says what to do: cutConn closes
// the connection, banned refuses its client from now on.
func (g *resetGuard) reset(sc *streamConn, now time.Time) (cutConn, banned bool) {
	cutConn = int64(sc.resets.add(now, resetWindow)) > g.perConn.Load()
	g.mu.Lock()
	defer g.mu.Unlock()
	k := clientKey(sc.client)
	c := g.clients[k]
	if c == nil {
		if len(g.clients) >= g.max {
			g.sweep(now)
		}
		if len(g.clients) >= g.max {
			// Full of clients that reset within the window: the
			// per-connection budget still holds for this one.
			return cutConn, false
		}
		c = &clientResets{}
		g.clients[k] = c
	}
	if now.UnixNano() < c.bannedUntil {
		return true, false
	}
	if int64(c.w.add(now, resetWindow)) > g.perClient.Load() {
		c.bannedUntil = now.Add(time.Duration(g.ban.Load())).UnixNano()
		return true, true
	}
	return cutConn, false
}

// sweep drops entries whose window and ban are over; under g.mu.
func (g *resetGuard) sweep(now time.Time) {
	if now.Sub(g.swept) < time.Second {
		return
	}
	g.swept = now
	t := now.UnixNano()
	for k, c := range g.clients {
		c.w.mu.Lock()
		stale := t-c.w.start >= int64(resetWindow)
		c.w.mu.Unlock()
		if stale && t >= c.bannedUntil {
			delete(g.clients, k)
		}
	}
}

// streamReset is called when a request of an HTTP/2 or HTTP/3
// connection ended with its client gone while the connection lives: the
// stream was reset or cancelled.
func (p *Proxy) streamReset(sc *streamConn) {
	cut, ban := p.resets.reset(sc, time.Now())
	if ban {
		p.fm.resetCutoffs.WithLabelValues("client").Inc()
		p.log.Warn("cdn client banned for resetting streams", "client", sc.client, "for_s", time.Duration(p.resets.ban.Load()).Seconds())
	}
	if cut {
		sc.once.Do(func() {
			if !ban {
				p.fm.resetCutoffs.WithLabelValues("connection").Inc()
			}
			sc.close()
		})
	}
}

// exchange is a request in flight to an HTTP/1.1 origin, for a client
// that may go away. The fasthttp client has no context, so the origin
// connection that carries the request is found by the request id it
// writes (X-Request-Id, the last header the forwarding policy adds): the
// connection binds itself to the exchange as it writes the head. When the
// client goes, the exchange cuts that connection's reads and writes with a
// deadline in the past: fasthttp then closes it. A connection already
// back in the pool (the response was read in full) is left alone: the next
// exchange that writes on it takes it over and clears the deadline.
type exchange struct {
	ctx  context.Context
	stop func() bool

	mu      sync.Mutex
	conn    *idleConn // carrying the request, nil before the head is written
	done    bool
	cutDone bool // cut once (exchange.cut)

	// In the watch list (exchanges.watch), under its lock.
	wprev, wnext *exchange
	watched      bool
}

// exchanges maps request ids to their exchanges.
type exchanges struct {
	m                    sync.Map
	n                    atomic.Int64       // entries in m: none, no head to look through
	beforeSend, inFlight prometheus.Counter // abandoned requests, by stage

	// The watched exchanges (HTTP/3's): their contexts are looked at every
	// watchEvery by one goroutine, running while there are some, rather
	// than each registering a callback (context.AfterFunc allocates a
	// callback context, its parent's Done channel and children map: about
	// half a kilobyte for every request).
	wmu      sync.Mutex
	watching *exchange
	sweeping bool
}

// watchEvery is how often the watched exchanges' contexts are looked at:
// a client gone is cut within it.
const watchEvery = 10 * time.Millisecond

// watch adds x, bound by exchange.bind as it writes, to the watch list:
// when its context ends before unwatch, its connection is cut.
func (xs *exchanges) watch(x *exchange) {
	xs.wmu.Lock()
	x.wprev, x.wnext, x.watched = nil, xs.watching, true
	if xs.watching != nil {
		xs.watching.wprev = x
	}
	xs.watching = x
	if !xs.sweeping {
		xs.sweeping = true
		go xs.sweep()
	}
	xs.wmu.Unlock()
}

// unwatch takes x off the list; once it returns the sweeper holds no
// reference to x.
func (xs *exchanges) unwatch(x *exchange) {
	xs.wmu.Lock()
	if x.watched {
		if x.wprev != nil {
			x.wprev.wnext = x.wnext
		} else {
			xs.watching = x.wnext
		}
		if x.wnext != nil {
			x.wnext.wprev = x.wprev
		}
		x.wprev, x.wnext, x.watched = nil, nil, false
	}
	xs.wmu.Unlock()
}

// sweep cuts the watched exchanges whose client went, every watchEvery,
// until none is watched.
func (xs *exchanges) sweep() {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for range t.C {
		xs.wmu.Lock()
		if xs.watching == nil {
			xs.sweeping = false
			xs.wmu.Unlock()
			return
		}
		for x := xs.watching; x != nil; x = x.wnext {
			if x.ctx.Err() != nil {
				x.cut(xs)
			}
		}
		xs.wmu.Unlock()
	}
}

// start registers the exchange of request id under ctx; its abort runs
// when ctx ends before finish.
func (xs *exchanges) start(ctx context.Context, id string) *exchange {
	x := &exchange{ctx: ctx}
	xs.n.Add(1)
	xs.m.Store(id, x)
	x.stop = context.AfterFunc(ctx, func() {
		x.mu.Lock()
		defer x.mu.Unlock()
		if x.done || x.conn == nil {
			return
		}
		if x.conn.abort(x) {
			xs.inFlight.Inc()
		}
	})
	return x
}

// finish ends the exchange: its connection belongs to the pool again.
func (xs *exchanges) finish(id string, x *exchange) {
	x.stop()
	x.mu.Lock()
	x.done = true
	x.conn = nil
	x.mu.Unlock()
	xs.m.Delete(id)
	xs.n.Add(-1)
}

var reqIDMarker = []byte("\r\nX-Request-Id: ")

const reqIDLen = 16

// bindHead looks for the request id in a write of a request head and binds
// the connection to its exchange. It reports whether the head is over (the
// id found or the end of the head written) and errClientGone when the
// exchange's client has already gone: nothing is sent.
func (c *idleConn) bindHead(p []byte) (bool, error) {
	if c.xs.n.Load() == 0 && len(c.carry) == 0 {
		return true, nil // HTTP/1.1 clients only: nothing to bind
	}
	buf := p
	if len(c.carry) > 0 {
		buf = append(c.carry, p...)
	}
	i := bytes.Index(buf, reqIDMarker)
	if i < 0 || len(buf) < i+len(reqIDMarker)+reqIDLen {
		if bytes.Contains(buf, []byte("\r\n\r\n")) {
			c.carry = c.carry[:0]
			return true, nil
		}
		keep := min(len(buf), len(reqIDMarker)+reqIDLen)
		if i >= 0 {
			keep = len(buf) - i
		}
		c.carry = append(c.carry[:0], buf[len(buf)-keep:]...)
		return false, nil
	}
	c.carry = c.carry[:0]
	id := buf[i+len(reqIDMarker) : i+len(reqIDMarker)+reqIDLen]
	v, ok := c.xs.m.Load(string(id))
	if !ok {
		return true, nil
	}
	x := v.(*exchange)
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done {
		return true, nil
	}
	if x.ctx.Err() != nil {
		c.xs.beforeSend.Inc()
		return true, errClientGone
	}
	c.mu.Lock()
	c.owner.Store(x)
	c.mu.Unlock()
	x.conn = c
	return true, nil
}

// claim starts a new request on the connection: an exchange that had it
// before loses it (its client may still go, after fasthttp put the
// connection back in the pool), and a cut that came after the response
// was read in full is undone: fasthttp reuses only connections whose
// response was read in full.
func (c *idleConn) claim() {
	if c.owner.Load() == nil && !c.aborted.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.owner.Store(nil)
	if c.aborted.Load() {
		c.aborted.Store(false)
		c.Conn.SetDeadline(time.Time{})
	}
}

// abort cuts the connection's reads and writes if it still carries x.
func (c *idleConn) abort(x *exchange) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.owner.Load() != x {
		return false
	}
	c.aborted.Store(true)
	c.Conn.SetDeadline(time.Unix(1, 0))
	return true
}

// errAborted is what reads and writes of an aborted connection return.
var errAborted = &net.OpError{Op: "read", Net: "tcp", Err: errClientGone}

// admitStream counts an HTTP/3 request in flight in the whole process,
// within limits.max_streams: past it, false, counted as refused (the
// caller answers 503 with Retry-After), and nothing left counted.
func (p *Proxy) admitStream() bool {
	if p.streams.Add(1) > int64(p.limits().MaxStreams) {
		p.streams.Add(-1)
		p.fm.streamsRefused.Inc()
		return false
	}
	return true
}

// quicVerifySource asks for a Retry (the client must echo a token, which
// proves it receives at its address) once limits.quic_retry_threshold
// handshakes are in flight: a flood of Initials from spoofed sources then
// costs the proxy a Retry packet each, smaller than the Initial, and no
// state.
func (p *Proxy) quicVerifySource(net.Addr) bool {
	if p.quicHS.Load() < int64(p.limits().QUICRetryThreshold) {
		return false
	}
	p.fm.quicRetries.Inc()
	return true
}

type quicHSKey struct{}

// quicConnContext admits a QUIC connection attempt: within
// limits.max_connections (shared with TCP), limits.max_quic_handshakes
// in flight, and not from a banned client. Refused ones get
// CONNECTION_REFUSED and cost no state.
func (p *Proxy) quicConnContext(ctx context.Context, ci *quic.ClientInfo) (context.Context, error) {
	switch {
	case p.conns.Load() >= int64(p.limits().MaxConnections):
		p.m.refusedConns.Inc()
		p.fm.quicRefused.WithLabelValues("connections").Inc()
		return nil, errors.New("limits.max_connections reached")
	case p.quicHS.Load() >= int64(p.limits().MaxQUICHandshakes):
		p.fm.quicRefused.WithLabelValues("handshakes").Inc()
		return nil, errors.New("limits.max_quic_handshakes reached")
	case p.resets.banned(netaddr.AddrPort(ci.RemoteAddr).Addr(), time.Now()):
		p.fm.bannedRefused.WithLabelValues("quic").Inc()
		return nil, errors.New("client banned for resetting streams")
	}
	p.conns.Add(1)
	p.quicHS.Add(1)
	hs := new(atomic.Bool)
	hs.Store(true)
	context.AfterFunc(ctx, func() {
		p.conns.Add(-1)
		if hs.CompareAndSwap(true, false) {
			p.quicHS.Add(-1)
		}
	})
	return context.WithValue(ctx, quicHSKey{}, hs), nil
}

// quicHandshakeDone ends the count of a connection's handshake in flight.
func (p *Proxy) quicHandshakeDone(ctx context.Context) {
	if hs, ok := ctx.Value(quicHSKey{}).(*atomic.Bool); ok && hs.CompareAndSwap(true, false) {
		p.quicHS.Add(-1)
	}
}
