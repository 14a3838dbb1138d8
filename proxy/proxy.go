// Package proxy is edgeproxy's CDN ingress proxy, the NGINX replacement: it
// terminates every connection the dispatcher steers to the cdn service, over
// HTTP/1.1, HTTP/2 and HTTP/3, and forwards requests to the sites' origins.
//
// It owns one dual-stack TCP socket and one UDP socket, registered under
// cdn/tcp and cdn/udp, and a connected UDP socket for each HTTP/3
// connection past its handshake (quicsock.go). On the TCP socket the port
// the client dialled decides cleartext or TLS. HTTP/1.1 runs on an engine of
// the proxy's own for bodiless GET and HEAD (h1conn.go), which hands every
// other request to fasthttp (h1.go); net/http was measured and left behind
// (docs/cdn.md has the figures). HTTP/2 runs on a server of the proxy's own
// (h2server.go), built for proxying; HTTP/3 on one of its own over quic-go's
// connections and streams (h3.go). Every engine hands its requests to one
// pipeline (pipeline.go): routing, the forwarding policy, the origin pools,
// error pages, metrics and the access log are the same for all.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/dispatch/steered"
	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
	"github.com/edgeproxy/edgeproxy/internal/netaddr"
	"github.com/edgeproxy/edgeproxy/proxy/cdnconf"
)

// Config is what the proxy serves (cdnconf.Config); SetConfig swaps it at
// run time.
type Config = cdnconf.Config

// Limits bound what a client may do (cdnconf.Limits). Zero values take
// the defaults.
type Limits = cdnconf.Limits

// resetClients bounds the per-client reset table: 65536 entries of about
// 100 bytes.
const resetClients = 1 << 16

// Options configure a Proxy.
type Options struct {
	Config Config
	Limits Limits
	// OwnsHTTP3 reports whether a UDP destination is bound to the cdn. The
	// QUIC socket is a wildcard on http3_port, so the kernel's normal lookup
	// also brings it datagrams for addresses the cdn does not own; their
	// handshakes are refused. Nil: every destination.
	OwnsHTTP3 func(netip.AddrPort) bool
	// OwnsTCP reports whether a TCP destination is bound to the cdn: after
	// a change of the bindings (Reowned), connections on addresses that left
	// it are told to go. Nil: every destination, always.
	OwnsTCP func(netip.AddrPort) bool
	// FDs is the process's descriptor budget, shared with the other
	// services: a client connection takes one descriptor in class
	// fdlimit.CDN, an origin dial one in class fdlimit.Dial. Nil: a budget
	// of the proxy's own (fdlimit.Default).
	FDs *fdlimit.Budget
	// Registerer receives the metrics; nil: not registered.
	Registerer prometheus.Registerer
	// Logger receives the proxy's own logs; nil discards.
	Logger *slog.Logger
	// AccessLog receives one line per request; nil: none. Its counters
	// are registered with the proxy's metrics (zeros when nil).
	AccessLog *AccessLog
	// QUICResetKeyFile holds the stateless-reset key every process of the
	// node shares (32 bytes, mode 0600), made at the first start if
	// missing: a datagram for a QUIC connection this process does not know
	// (another process's, or one from before a restart) gets a stateless
	// reset instead of silence. Empty: a random key for this process
	// (which resets only its own connections).
	QUICResetKeyFile string
	// Dial connects to origins with d (its Timeout the upstream connect
	// timeout), and Socket makes each HTTP/3 connection's socket, as
	// socket(2). Nil: d.DialContext and unix.Socket, in the namespace of
	// the thread that asks (every thread's, in production). A test serving
	// in a network namespace of its own passes ones that make them there.
	Dial   func(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error)
	Socket func(domain, typ, proto int) (int, error)
}

// state is the part of the proxy that SetConfig swaps.
type state struct {
	cfg    Config
	router *router
	certs  *certStore
	ports  map[uint16]bool // port -> TLS
	altSvc string          // Alt-Svc for TCP responses, "" without HTTP/3
}

// Proxy is the CDN ingress proxy.
type Proxy struct {
	fds     *fdlimit.Budget
	lim     atomic.Pointer[Limits] // SetLimits swaps it (limits.go)
	owns    func(netip.AddrPort) bool
	log     *slog.Logger
	access  accessLogs
	m       *metrics
	fm      *floodMetrics
	resets  *resetGuard
	streams atomic.Int64 // HTTP/2 and HTTP/3 requests in flight
	ids     *requestIDs
	pools   *originPools
	tunnels tunnels // upgraded connections
	state   atomic.Pointer[state]

	tcp       *net.TCPListener
	tcpFile   *os.File        // tcp's socket again, for the poller (acceptFile)
	tcpRaw    syscall.RawConn // tcpFile's: raw accept4 calls (acceptor)
	tcpClosed atomic.Bool     // closeTCP was called
	udp       *net.UDPConn    // nil without HTTP/3

	srv      atomic.Pointer[servers] // the current generation of servers (limits.go)
	srvMu    sync.Mutex              // guards srvs, started, stopped, and SetLimits
	srvs     map[*servers]struct{}   // the generations serving connections
	started  bool                    // Start ran
	stopped  bool                    // Shutdown has the generations
	h1conns  connSet[*h1Conn]        // the HTTP/1.1 engine's connections
	idle     *idleSet                // those of them parked while idle (h1idle.go); nil: none park
	handoffs connSet[*handoffConn]   // those it handed to fasthttp
	h2conns  connSet[*h2Conn]
	ownsTCP  func(netip.AddrPort) bool
	reown    chan struct{} // Reowned's kick: the bindings changed
	h2m      *h2Metrics
	h3conns  connSet[*h3Conn] // HTTP/3 connections, each served by the proxy's HTTP/3 server (h3.go)
	h3ln     *quic.Listener
	quic     *quic.Transport
	qs       *quicSock // the listener and the connections' connected sockets
	amp      *ampConn  // qs as quic.Transport sees it
	resetKey *quic.StatelessResetKey
	qsm      quicSockMetrics
	tlsConf  *tls.Config // one for every TLS connection: session tickets work across them

	conns atomic.Int64 // client connections, TCP and QUIC
	// acceptors counts the goroutines waiting in Accept (acceptLoop).
	acceptors atomic.Int64
	// The engine's edgeproxy_cdn_connections_active gauges, looked up
	// once rather than at every connection.
	activeH1, activeH1TLS *connGauge
	quicHS                atomic.Int64 // QUIC handshakes in flight
	closing               chan struct{}
	once                  sync.Once
	wg                    sync.WaitGroup
}

// New creates the proxy's sockets in the network namespace of the calling
// thread; its later sockets are Options.Dial's and Options.Socket's. Start
// serves them.
func New(opts Options) (*Proxy, error) {
	opts.Limits.SetDefaults()
	if opts.FDs == nil {
		opts.FDs = fdlimit.Default()
	}
	p := &Proxy{
		fds: opts.FDs, owns: opts.OwnsHTTP3, ownsTCP: opts.OwnsTCP, reown: make(chan struct{}, 1),
		log: opts.Logger,
		m:   newMetrics(opts.Registerer), fm: newFloodMetrics(opts.Registerer), h2m: newH2Metrics(opts.Registerer), ids: newRequestIDs(),
		closing: make(chan struct{}),
	}
	p.lim.Store(&opts.Limits)
	p.activeH1, p.activeH1TLS = p.m.active.of(connH1), p.m.active.of(connH1TLS)
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	opts.AccessLog.setErrorLog(p.log)
	p.access.cur.Store(opts.AccessLog)
	p.access.register(opts.Registerer)
	l := p.limits()
	p.resets = newResetGuard(l.ConnResetBudget, l.ClientResetBudget, l.ResetBan, resetClients)
	p.pools = &originPools{dialWith: opts.Dial, fds: opts.FDs, log: p.log, pools: map[string]*origin{}}
	p.pools.setTimeouts(l)
	p.pools.exchanges.beforeSend = p.fm.abandoned.WithLabelValues("before_send")
	p.pools.exchanges.inFlight = p.fm.abandoned.WithLabelValues("in_progress")
	p.qsm = newQUICSockMetrics(opts.Registerer)
	if opts.Registerer != nil {
		p.registerGauges(opts.Registerer)
	}
	if err := p.SetConfig(opts.Config); err != nil {
		return nil, err
	}

	if err := p.listenTCP(); err != nil {
		return nil, err
	}
	if opts.Config.HTTP3 {
		if err := p.listenHTTP3(opts); err != nil {
			p.closeTCP()
			return nil, err
		}
	}
	var err error
	if p.idle, err = newIdleSet(); err != nil {
		p.closeTCP()
		if p.qs != nil {
			p.qs.Close()
		}
		return nil, fmt.Errorf("cdn: idle set: %w", err)
	}
	p.setupServers()
	return p, nil
}

// registerGauges registers the origins' collector and the gauges of
// connections held on unowned addresses and parked idle.
func (p *Proxy) registerGauges(reg prometheus.Registerer) {
	reg.MustRegister(newOriginCollector(p.pools), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgeproxy_cdn_connections_unowned",
		Help: "Client connections held on addresses the cdn no longer owns: told to go after a move, until they have (HTTP/1.1, HTTP/2 and HTTP/3).",
	}, func() float64 { return float64(p.unowned()) }), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edgeproxy_cdn_connections_parked",
		Help: "HTTP/1.1 keep-alive connections idle in the idle set, without a goroutine or a read buffer (also in edgeproxy_cdn_connections_active).",
	}, func() float64 { return float64(p.idle.parked.Load()) }))
}

// listenTCP opens the cdn's one TCP socket and the descriptor its raw
// accepts use.
func (p *Proxy) listenTCP() error {
	lc := steered.ListenConfig(listenerOptions)
	// No TCP keep-alive probes on client connections (as nginx's default):
	// they would cost four socket options at every accept, and the
	// proxy's own timeouts (head, idle, send, tunnel idle) bound every
	// state a connection can be left in by a client that vanished.
	lc.KeepAlive = -1
	ln, err := lc.Listen(context.Background(), "tcp", "[::]:0")
	if err != nil {
		return fmt.Errorf("cdn: tcp socket: %w", err)
	}
	p.tcp = ln.(*net.TCPListener)
	if p.tcpFile, p.tcpRaw, err = acceptFile(p.tcp); err != nil {
		p.tcp.Close()
		return fmt.Errorf("cdn: tcp socket: %w", err)
	}
	return nil
}

// listenHTTP3 loads the stateless-reset key and opens the QUIC socket and
// the connected sockets' set under it.
func (p *Proxy) listenHTTP3(opts Options) error {
	key, made, err := loadResetKey(opts.QUICResetKeyFile)
	if err != nil {
		return err
	}
	switch {
	case opts.QUICResetKeyFile == "":
		p.log.Info("cdn: no cdn.quic_reset_key_file (and no store.path): a random QUIC stateless-reset key for this process, so datagrams of another process's connections get resets their clients ignore")
	case made:
		p.log.Info("cdn: made the QUIC stateless-reset key", "file", opts.QUICResetKeyFile)
	}
	p.resetKey = key
	if p.udp, err = listenQUIC(opts.Config.HTTP3Port); err != nil {
		return err
	}
	if p.qs, err = newQUICSock(opts.Socket, p.udp, p.limits().MaxQUICSocketsPerAddress, p.qsm.open, p.qsm.failures); err != nil {
		p.udp.Close()
		return err
	}
	return nil
}

// listenQUIC opens the QUIC socket: the dual-stack wildcard on the HTTP/3
// port (quic-go turns packet info on only for an unspecified local address,
// and answers from the destination address it read), SO_REUSEADDR (so
// spectrum's per-flow sockets and host services may bind specific addresses
// on that port) and IPV6_FREEBIND (replies from an IPv6 address that is
// only routed locally fail silently without it).
func listenQUIC(port uint16) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var errs []error
		err := c.Control(func(fd uintptr) {
			errs = append(errs,
				unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1),
				unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1))
		})
		return errors.Join(append(errs, err)...)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", fmt.Sprintf("[::]:%d", port))
	if err != nil {
		return nil, fmt.Errorf("cdn: udp socket on [::]:%d: %w", port, err)
	}
	return pc.(*net.UDPConn), nil
}

// SetConfig replaces sites, certificates and ports. Connections keep
// serving; new requests see the new configuration.
func (p *Proxy) SetConfig(cfg Config) error {
	if cfg.LoopID == "" {
		cfg.LoopID = "edgeproxy"
	}
	if err := CheckSites(cfg.Sites, func(i int) string { return fmt.Sprintf("sites[%d]", i) }); err != nil {
		return fmt.Errorf("cdn: %w", err)
	}
	r, err := newRouter(cfg.Sites, p.pools.get, func(site string) prometheus.Counter { return p.m.retries.WithLabelValues(site) })
	if err != nil {
		return fmt.Errorf("cdn: %w", err)
	}
	checks := map[*origin]HealthCheck{}
	for i, s := range cfg.Sites {
		if s.HealthCheck == nil {
			continue
		}
		hc := *s.HealthCheck
		hc.SetDefaults()
		for _, rt := range r.sites[i].routes {
			for _, w := range rt.origins {
				checks[w.o] = hc // one per origin: CheckSites
			}
		}
	}
	certs, err := newCertStore(cfg.Certificates)
	if err != nil {
		return fmt.Errorf("cdn: certificates: %w", err)
	}
	st := &state{cfg: cfg, router: r, certs: certs, ports: map[uint16]bool{}}
	for _, port := range cfg.HTTPPorts {
		st.ports[port] = false
	}
	for _, port := range cfg.HTTPSPorts {
		st.ports[port] = true
	}
	if cfg.HTTP3 && slices.Contains(cfg.HTTPSPorts, cfg.HTTP3Port) {
		st.altSvc = fmt.Sprintf(`h3=":%d"; ma=86400`, cfg.HTTP3Port)
	}
	p.state.Store(st)
	p.pools.reconcileCheckers(checks)
	p.m.setCertificates(cfg.Certificates)
	p.m.active.serve(cfg)
	return nil
}

// Config returns the configuration SetConfig was given last.
func (p *Proxy) Config() Config { return p.state.Load().cfg }

// TCPListener returns the socket to register under cdn/tcp.
func (p *Proxy) TCPListener() *net.TCPListener { return p.tcp }

// UDPConn returns the socket to register under cdn/udp, or nil.
func (p *Proxy) UDPConn() *net.UDPConn { return p.udp }

// tlsConfig is the TLS configuration of every TLS connection, TCP and QUIC.
func (p *Proxy) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: p.getCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			p.m.handshake(cs.Version)
			return nil
		},
	}
}

func (p *Proxy) setupServers() {
	p.tlsConf = p.tlsConfig()
	p.srvMu.Lock()
	p.newServersLocked(p.limits())
	p.srvMu.Unlock()
}

// Start serves the sockets until Shutdown.
func (p *Proxy) Start() error {
	p.wg.Add(2)
	go func() { defer p.wg.Done(); p.reowning() }()
	p.srvMu.Lock()
	p.started = true
	p.serveServers(p.srv.Load())
	if p.udp != nil {
		// Followed for as long as a handshake may take, and some
		// (SetLimits changes it).
		p.amp = newAmpConn(p.qs, 3*p.limits().QUICHandshakeTimeout, p.fm.quicWithheld)
	}
	p.srvMu.Unlock()
	go func() { defer p.wg.Done(); p.acceptLoop() }()
	if p.udp != nil {
		p.quic = &quic.Transport{
			Conn:                p.amp,
			VerifySourceAddress: p.quicVerifySource,
			ConnContext:         p.quicConnContext,
			StatelessResetKey:   p.resetKey,
		}
		tlsConf := http3.ConfigureTLSConfig(p.tlsConfig())
		tlsConf.GetConfigForClient = p.quicConfigForClient(tlsConf)
		// Listen, not ListenEarly: a connection is accepted (and its
		// handshake stops counting as in flight) once the client has
		// finished the handshake, which proves its address.
		// Each connection takes the timeouts in force when it starts.
		qc := p.quicConfig()
		qc.GetConfigForClient = func(*quic.ClientInfo) (*quic.Config, error) { return p.quicConfig(), nil }
		ln, err := p.quic.Listen(tlsConf, qc)
		if err != nil {
			return fmt.Errorf("cdn: http3: %w", err)
		}
		p.h3ln = ln
		p.wg.Add(1)
		go func() { defer p.wg.Done(); p.acceptH3(ln) }()
	}
	return nil
}

// quicConfig is a QUIC connection's configuration, from the limits in
// force.
func (p *Proxy) quicConfig() *quic.Config {
	l := p.limits()
	return &quic.Config{
		HandshakeIdleTimeout:  l.QUICHandshakeTimeout,
		MaxIdleTimeout:        l.IdleTimeout,
		MaxIncomingStreams:    250,
		MaxIncomingUniStreams: 16,
		Allow0RTT:             false,
	}
}

// quicConfigForClient refuses handshakes to destinations the cdn does not
// own: the QUIC socket's wildcard also takes unsteered datagrams.
func (p *Proxy) quicConfigForClient(base *tls.Config) func(*tls.ClientHelloInfo) (*tls.Config, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if p.owns != nil && hello.Conn != nil && !p.owns(netaddr.AddrPort(hello.Conn.LocalAddr())) {
			p.m.refusedH3.Inc()
			return nil, errors.New("destination not bound to the cdn")
		}
		return nil, nil // base applies
	}
}

// maxIdleAcceptors bounds the goroutines waiting to accept: one that
// finds as many waiting when its connection ends, ends. It is above the
// connections a burst of new ones keeps in flight at once, so that a new
// connection seldom needs a new goroutine (and its stack grown again); an
// idle one costs a few KB (its stack shrinks at garbage collections).
const maxIdleAcceptors = 128

// deferAcceptSeconds is TCP_DEFER_ACCEPT on the cdn's socket: the kernel
// hands a connection over once its first bytes arrived (an HTTP or TLS
// client speaks first), so the first read finds them rather than waiting
// in the poller; a connection that sends nothing costs the process
// nothing until then. One that stays silent is handed over at the SYN-ACK
// retransmission after this (1 s), and its head timeout runs from then.
const deferAcceptSeconds = 1

// listenerOptions sets the cdn's socket's options: TCP_DEFER_ACCEPT, and
// TCP_NODELAY, which the connections it accepts inherit (sockConn sets no
// option of its own).
func listenerOptions(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, deferAcceptSeconds); serr != nil {
			serr = fmt.Errorf("TCP_DEFER_ACCEPT: %w", serr)
			return
		}
		if serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1); serr != nil {
			serr = fmt.Errorf("TCP_NODELAY: %w", serr)
		}
	})
	if err == nil {
		err = serr
	}
	return err
}

// acceptLoop accepts connections and serves each on the goroutine that
// accepted it: before it serves one, a goroutine that finds no other
// waiting to accept starts one, and when its connection ends (or parks,
// h1idle.go) it accepts again, unless enough others wait. A new
// connection so takes no hand-off to another goroutine, and, under a
// steady load of short connections, no new goroutine whose stack grows
// again on the request path. Connections on ports that are not the cdn's
// are closed.
func (p *Proxy) acceptLoop() {
	a := &acceptor{p: p}
	a.fn = a.try
	for {
		p.acceptors.Add(1)
		c, err := a.accept()
		waiting := p.acceptors.Add(-1)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return // Shutdown stops the servers
			}
			p.log.Warn("cdn accept", "error", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if waiting == 0 {
			go p.acceptLoop()
		}
		p.serveAccepted(c)
		if p.acceptors.Load() >= maxIdleAcceptors {
			return
		}
	}
}

// acceptFile is a second descriptor of the cdn's socket, as a file of
// the poller, and its raw connection: raw accept4 calls wait in the poller
// through it (a net listener's raw connection cannot wait). The socket is
// one: the dispatcher registers the listener's descriptor, and closing the
// socket closes both (closeTCP).
func acceptFile(ln *net.TCPListener) (*os.File, syscall.RawConn, error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, nil, err
	}
	if derr != nil {
		return nil, nil, fmt.Errorf("dup: %w", derr)
	}
	f := os.NewFile(uintptr(nfd), "cdn")
	frc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, frc, nil
}

// closeTCP closes the cdn's socket: both its descriptors. The goroutines
// waiting to accept return.
func (p *Proxy) closeTCP() {
	p.tcpClosed.Store(true)
	p.tcp.Close()
	p.tcpFile.Close()
}

// acceptor is an accepting goroutine's state: raw accept4 calls on the
// cdn's socket under the poller (sockConn), one function value for them
// all.
type acceptor struct {
	p   *Proxy
	fn  func(fd uintptr) bool
	c   *sockConn
	err error
}

func (a *acceptor) try(fd uintptr) bool {
	var ok bool
	a.c, ok, a.err = acceptSock(fd)
	return ok
}

func (a *acceptor) accept() (*sockConn, error) {
	a.c, a.err = nil, nil
	if err := a.p.tcpRaw.Read(a.fn); err != nil {
		if a.p.tcpClosed.Load() {
			return nil, net.ErrClosed // the file's error for it is not comparable
		}
		return nil, err
	}
	c, err := a.c, a.err
	a.c = nil
	return c, err
}

// serveAccepted serves a connection just accepted, by the port the client
// dialled, on the calling goroutine.
func (p *Proxy) serveAccepted(c *sockConn) {
	if p.resets.banned(c.client.Addr(), time.Now()) {
		p.fm.bannedRefused.WithLabelValues("tcp").Inc()
		c.SetLinger(0)
		c.Close()
		return
	}
	if p.conns.Load() >= int64(p.limits().MaxConnections) || !p.fds.Acquire(fdlimit.CDN, 1) {
		p.m.refusedConns.Inc()
		c.SetLinger(0)
		c.Close()
		return
	}
	// c gives its descriptor back to the budget when it closes; its
	// deadlines are lazy (lazyConn).
	c.fds = p.fds
	tc := newLazyConn(c, c)
	isTLS, ok := p.state.Load().ports[c.edge.Port()]
	switch {
	case !ok:
		c.SetLinger(0)
		tc.Close()
	case isTLS:
		p.serveH1Conn(tls.Server(tc, p.tlsConf), true)
	default:
		p.serveH1Conn(tc, false)
	}
}

// connState follows the connections the HTTP/1.1 engine handed to
// fasthttp: the engine counted them and set the deadline of the request
// it handed over with.
func (p *Proxy) connState(c net.Conn, s fasthttp.ConnState) {
	h, ok := c.(interface{ handedOff() *handoffConn })
	if !ok {
		return
	}
	hoc := h.handedOff()
	switch s {
	case fasthttp.StateActive:
		hoc.idle.Store(false)
		// A later request's first byte is in: its head within the head
		// timeout from it.
		if !hoc.fresh.Swap(false) {
			c.SetReadDeadline(time.Unix(0, dueIn(p.limits().ReadHeaderTimeout)))
		}
	case fasthttp.StateIdle:
		hoc.idle.Store(true)
		if hoc.gone.Load() {
			c.Close() // its address left the cdn (Reowned), or shutting down
			return
		}
		c.SetReadDeadline(time.Unix(0, dueIn(p.limits().IdleTimeout)))
	}
}

// OpenConnections returns the client connections open now, TCP (HTTP/1.1
// and HTTP/2, cleartext and TLS) and QUIC: what a drain waits for.
func (p *Proxy) OpenConnections() int64 { return p.conns.Load() }

// Shutdown stops taking connections, lets the open ones finish their
// requests (HTTP/2 and HTTP/3 get GOAWAY) until ctx is done, then closes
// them.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.once.Do(func() { close(p.closing) })
	p.closeTCP()
	var mu sync.Mutex // guards errs
	var errs []error
	var wg sync.WaitGroup
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f()
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}()
	}
	if p.h3ln != nil {
		p.h3ln.Close() // no new HTTP/3 connections; those open get GOAWAY
		run(func() error { return p.shutdownH3(ctx) })
	}
	run(func() error { return p.shutdownH1(ctx) })
	for _, s := range p.allServers() {
		run(func() error { return s.h1.ShutdownWithContext(ctx) })
		run(func() error { return s.h1TLS.ShutdownWithContext(ctx) })
	}
	run(func() error { return p.shutdownH2(ctx) })
	run(func() error {
		done := make(chan struct{})
		go func() { p.tunnels.wg.Wait(); close(done) }()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			p.tunnels.closeAll()
			return ctx.Err()
		}
	})
	wg.Wait()
	p.idle.close()
	p.pools.stopCheckers()
	if p.quic != nil {
		p.quic.Close() // stops reading; the socket is ours to close
	}
	if p.qs != nil {
		p.qs.Close() // the connected sockets and the listener
	}
	return errors.Join(errs...)
}

// debugLogger turns the servers' own complaints about clients (bad
// prefaces, protocol errors, resets) into debug records: one per broken
// client would flood the log at info.
type debugLogger struct{ log *slog.Logger }

func (d debugLogger) Printf(format string, args ...any) {
	if d.log.Enabled(context.Background(), slog.LevelDebug) {
		d.log.Debug(fmt.Sprintf(format, args...))
	}
}
