// Package spectrum is edgeproxy's L4 proxy: TCP connections and UDP flows
// to the edge addresses bound to spectrum are forwarded to the origins of the
// application their original destination selects, optionally with PROXY
// protocol v1/v2 or Simple Proxy Protocol.
//
// It owns one dual-stack TCP listener and one dual-stack UDP socket, which
// the caller registers with the dispatcher under spectrum/tcp and
// spectrum/udp; sk_lookup steers every port an app declares to them, keeping
// the original destination. UDP replies leave through a per-flow socket
// bound to exactly the address and port the client sent to and connected to
// the client, so that they come from where the client expects, on any port.
//
// TCP forwarding copies small messages through a small pooled buffer and
// keeps the kernel's zero-copy path for bulk: the PROXY header is written
// first, then each direction reads into the buffer and splices (splice.go)
// once a read fills it, waiting for data without a buffer or a pipe and
// borrowing a pipe from a bounded pool only while bulk data moves, so that
// an idle connection costs its two sockets' descriptors and no more. UDP
// flows read and forward in batches (recvmmsg, sendmmsg: mmsg.go). Every connection, flow and pipe takes its descriptors from the
// process's budget (internal/fdlimit). Idle time and bytes are read from
// TCP_INFO, not by wrapping the connections.
package spectrum

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/dispatch/steered"
	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
)

// Options configure a Proxy.
type Options struct {
	Apps []App
	// FDs is the process's descriptor budget, shared with the other
	// services; every connection, flow and splice pipe takes its
	// descriptors from it, in class fdlimit.Spectrum. Nil: a budget of the
	// proxy's own over the open-file limit (fdlimit.Default).
	FDs *fdlimit.Budget
	// MaxConnections bounds concurrent TCP connections, each holding two
	// file descriptors. Zero: as many as the budget allows.
	MaxConnections int
	// MaxFlows bounds concurrent UDP flows, each holding two file
	// descriptors. Zero: as many as the budget allows.
	MaxFlows int
	// MaxFlowsPerApp bounds one app's UDP flows, so that a flood of one app
	// cannot take every other app's. Zero: half of MaxFlows when there are
	// two UDP apps or more, else MaxFlows.
	MaxFlowsPerApp int
	// MaxPipes bounds the splice pipes lent to TCP copies at once (two
	// descriptors each); a copy that finds none moves its data through a
	// buffer. Zero: 512.
	MaxPipes int
	// MaxDatagram is the largest UDP payload forwarded; larger ones are
	// dropped and counted. Every flow holds buffers of this size. Zero:
	// DefaultMaxDatagram.
	MaxDatagram int
	// Registerer receives the metrics; nil: not registered.
	Registerer prometheus.Registerer
	// Logger receives a line per connection and flow; nil discards.
	Logger *slog.Logger
	// Owns reports whether a destination (UDP when udp) is bound to
	// spectrum: connections and flows on one that is not are counted, and
	// closed by CloseUnowned. Nil: every destination.
	Owns func(udp bool, dst netip.AddrPort) bool
	// Dial makes the sockets the proxy opens after New, with d: origin
	// connections (d's Timeout the app's connect timeout) and each UDP
	// flow's socket on the edge address (d's LocalAddr and Control). Nil:
	// d.DialContext, in the namespace of the thread that asks (every
	// thread's, in production). A test serving in a network namespace of
	// its own passes one that dials there.
	Dial func(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error)
}

// DefaultMaxDatagram is the default largest UDP payload: above a 1500-byte
// MTU, with room for tunnels, and small enough that ten thousand flows'
// buffers take about 160 MB.
const DefaultMaxDatagram = 2048

// Proxy is the L4 proxy.
type Proxy struct {
	tcp  *net.TCPListener
	udp  *net.UDPConn
	apps atomic.Pointer[table]
	m    *metrics
	log  *slog.Logger

	fds                *fdlimit.Budget
	dialWith           func(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error) // every later socket (Options.Dial)
	dial               func(network, addr string, timeout time.Duration) (net.Conn, error)                 // origins; tests replace it
	pipes              *pipePool
	refusals           *logLimiter
	maxConns, maxFlows int
	maxFlowsPerApp     int
	flowShare          atomic.Int64 // an app's flows at most, from SetApps
	maxDatagram        int
	conns              atomic.Int64
	owns               ownsFunc

	mu    sync.Mutex // guards pairs and flows
	pairs map[*tcpPair]struct{}
	flows map[flowKey]*flow

	closing chan struct{}
	wg      sync.WaitGroup // the loops and the TCP connections
	once    sync.Once
}

// New creates the proxy's sockets in the network namespace of the calling
// thread, which must be the one the dispatcher steers in; its later sockets
// are Options.Dial's. Start serves them.
func New(opts Options) (*Proxy, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fds := opts.FDs
	if fds == nil {
		fds = fdlimit.Default()
	}
	m := newMetrics(opts.Registerer)
	p := &Proxy{
		m: m, log: log, fds: fds, dialWith: opts.Dial,
		refusals: newLogLimiter(refusalLogsPerSecond, m.logsSuppressed),
		maxConns: opts.MaxConnections, maxFlows: opts.MaxFlows, maxFlowsPerApp: opts.MaxFlowsPerApp,
		maxDatagram: opts.MaxDatagram, owns: opts.Owns,
		pairs: map[*tcpPair]struct{}{}, flows: map[flowKey]*flow{},
		closing: make(chan struct{}),
	}
	if p.dialWith == nil {
		p.dialWith = dialDirect
	}
	p.dial = func(network, addr string, timeout time.Duration) (net.Conn, error) {
		return p.dialWith(context.Background(), &net.Dialer{Timeout: timeout}, network, addr)
	}
	p.pipes = &pipePool{fds: fds, max: cmp.Or(max(opts.MaxPipes, 0), defaultMaxPipes)}
	if p.maxConns <= 0 {
		p.maxConns = fds.Ceiling(fdlimit.Spectrum) / 2
	}
	if p.maxFlows <= 0 {
		p.maxFlows = fds.Ceiling(fdlimit.Spectrum) / 2
	}
	if p.maxDatagram <= 0 {
		p.maxDatagram = DefaultMaxDatagram
	}
	err := p.SetApps(opts.Apps)
	if err != nil {
		return nil, err
	}
	if p.tcp, err = steered.Listen("tcp", "[::]:0"); err != nil {
		return nil, fmt.Errorf("spectrum: tcp socket: %w", err)
	}
	if p.udp, err = steered.ListenPacket("udp", "[::]:0"); err != nil {
		p.tcp.Close()
		return nil, fmt.Errorf("spectrum: udp socket: %w", err)
	}
	if opts.Registerer != nil && opts.Owns != nil {
		opts.Registerer.MustRegister(p.unownedGauges())
	}
	return p, nil
}

// dialDirect is Options.Dial's default.
func dialDirect(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error) {
	return d.DialContext(ctx, network, address)
}

// SetApps replaces the applications. Connections and flows already open
// keep the app they started with. The series of an app that went (removed,
// renamed, or of another protocol now) are deleted.
func (p *Proxy) SetApps(apps []App) error {
	t := &table{}
	for i, a := range apps {
		if len(a.Origins) == 0 {
			return fmt.Errorf("spectrum: apps[%d] %q has no origin", i, a.Name)
		}
		if a.Protocol != TCP && a.Protocol != UDP {
			return fmt.Errorf("spectrum: apps[%d] %q: protocol %q", i, a.Name, a.Protocol)
		}
		t.apps = append(t.apps, newApp(a, p.m))
	}
	t.src = slices.Clone(apps)
	share, udpApps := p.maxFlowsPerApp, 0
	for _, a := range apps {
		if a.Protocol == UDP {
			udpApps++
		}
	}
	if share <= 0 {
		share = p.maxFlows
		if udpApps >= 2 {
			share = max(p.maxFlows/2, 1)
		}
	}
	p.flowShare.Store(int64(share))
	if prev := p.apps.Swap(t); prev != nil {
		p.m.forget(prev.src, apps)
	}
	return nil
}

// Apps returns the applications SetApps was given last.
func (p *Proxy) Apps() []App { return slices.Clone(p.apps.Load().src) }

// TCPListener returns the TCP socket to register under spectrum/tcp.
func (p *Proxy) TCPListener() *net.TCPListener { return p.tcp }

// UDPConn returns the UDP socket to register under spectrum/udp.
func (p *Proxy) UDPConn() *net.UDPConn { return p.udp }

// Start serves the sockets until Shutdown.
func (p *Proxy) Start() {
	p.wg.Add(3)
	go p.acceptLoop()
	go p.udpLoop()
	go p.sweepLoop()
}

// Shutdown stops taking connections and flows, then waits for open TCP
// connections to finish until ctx is done, when it closes them. UDP flows
// end at once (they have no end of their own, and nothing else serves
// them).
func (p *Proxy) Shutdown(ctx context.Context) error { return p.shutdown(ctx, false) }

// Drain is Shutdown for a process that hands the node to another (a live
// upgrade): UDP flows are kept as TCP connections are, forwarding both
// ways until they idle out or ctx is done. A datagram of a flow that ended
// reaches the new process, which starts the flow again.
func (p *Proxy) Drain(ctx context.Context) error { return p.shutdown(ctx, true) }

func (p *Proxy) shutdown(ctx context.Context, keepFlows bool) error {
	p.once.Do(func() { close(p.closing) })
	p.tcp.Close()
	p.udp.Close()
	if !keepFlows {
		p.closeFlows()
	}
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		for keepFlows && p.Flows() > 0 && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
		close(done)
	}()
	select {
	case <-done:
		p.pipes.close()
		return nil
	case <-ctx.Done():
	}
	p.mu.Lock()
	n := len(p.pairs)
	for pair := range p.pairs {
		pair.closeBoth("shutdown")
	}
	p.mu.Unlock()
	p.closeFlows()
	<-done
	p.pipes.close()
	if n == 0 {
		return nil
	}
	return fmt.Errorf("spectrum: %d connections cut at the end of the drain", n)
}

// closeFlows ends every UDP flow.
func (p *Proxy) closeFlows() {
	p.mu.Lock()
	for _, f := range p.flows {
		go f.close("shutdown")
	}
	p.mu.Unlock()
}

// sweepLoop closes idle connections and flows and brings the byte counters
// of long connections up to date, once a second.
func (p *Proxy) sweepLoop() {
	defer p.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-p.closing:
			return
		case <-t.C:
		}
		p.mu.Lock()
		pairs := make([]*tcpPair, 0, len(p.pairs))
		for pair := range p.pairs {
			pairs = append(pairs, pair)
		}
		var idle []*flow
		now := time.Now()
		for _, f := range p.flows {
			if now.Sub(time.Unix(0, f.last.Load())) >= f.app.IdleTimeout {
				idle = append(idle, f)
			}
		}
		p.mu.Unlock()
		for _, pair := range pairs {
			pair.sweep(now)
		}
		for _, f := range idle {
			f.close("idle")
		}
	}
}

type opt struct{ level, name, value int }

// setsockopts sets options on a socket being created.
func setsockopts(c syscall.RawConn, opts ...opt) error {
	var errs []error
	if err := c.Control(func(fd uintptr) {
		for _, o := range opts {
			if err := unix.SetsockoptInt(int(fd), o.level, o.name, o.value); err != nil {
				errs = append(errs, fmt.Errorf("setsockopt(%d, %d): %w", o.level, o.name, err))
			}
		}
	}); err != nil {
		return err
	}
	return errors.Join(errs...)
}
