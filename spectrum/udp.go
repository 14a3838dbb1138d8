package spectrum

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/dispatch/steered"
	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
	"github.com/edgeproxy/edgeproxy/internal/netaddr"
)

// How many datagrams one recvmmsg takes: more on the shared socket, which
// sees the first datagram of every flow, fewer on each flow's sockets, whose
// buffers live as long as the flow.
const (
	sharedBatch = 16
	flowBatch   = 4
)

// flowKey is a client and the edge address and port it sent to.
type flowKey struct {
	client, edge netip.AddrPort
}

// flow is a proxied UDP flow: a socket bound to the edge address and port
// and connected to the client (replies leave from where the client sent to;
// the client's later datagrams arrive on it, as the kernel prefers connected
// sockets), and a socket connected to the origin.
type flow struct {
	p       *Proxy
	key     flowKey
	app     *app
	down    *net.UDPConn
	downRaw syscall.RawConn
	last    atomic.Int64 // unix nanoseconds of the last datagram either way

	mu        sync.Mutex // guards up, upRaw, origin and v2Sent
	up        *net.UDPConn
	upRaw     syscall.RawConn
	origin    int
	v2Sent    bool
	closeOnce sync.Once
	start     time.Time

	toOrigin, toClient, dgToOrigin, dgToClient atomic.Int64
}

// readBatcher reads datagrams in batches (recvmmsg).
type readBatcher interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

func newBatcher(c *net.UDPConn) readBatcher {
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() != nil {
		return ipv4.NewPacketConn(c)
	}
	return ipv6.NewPacketConn(c)
}

func newMessages(n, size int, oob bool) []ipv4.Message {
	ms := make([]ipv4.Message, n)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, size)}
		if oob {
			ms[i].OOB = make([]byte, 128)
		}
	}
	return ms
}

// truncated reports whether a datagram did not fit its buffer.
func truncated(m *ipv4.Message) bool { return m.Flags&unix.MSG_TRUNC != 0 }

// udpLoop reads the first datagrams of flows from the shared socket and
// makes the flows' sockets (Options.Dial).
func (p *Proxy) udpLoop() {
	defer p.wg.Done()
	b := newBatcher(p.udp)
	ms := newMessages(sharedBatch, p.maxDatagram, true)
	out := newSendBatch(1)
	for {
		n, err := b.ReadBatch(ms, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		for i := range ms[:n] {
			m := &ms[i]
			client := netaddr.AddrPort(m.Addr)
			edge, err := steered.OrigDst(m.OOB[:m.NN])
			if err != nil {
				continue
			}
			if truncated(m) {
				p.m.dropped.WithLabelValues("", "too_big").Inc()
				continue
			}
			p.datagram(out, client, edge, m.Buffers[0][:m.N])
		}
	}
}

// datagram handles a datagram that reached the shared socket: the first of
// a flow (later ones arrive on the flow's connected socket), or one that
// raced the flow's creation.
func (p *Proxy) datagram(out *sendBatch, client, edge netip.AddrPort, payload []byte) {
	key := flowKey{client, edge}
	p.mu.Lock()
	f := p.flows[key]
	p.mu.Unlock()
	if f == nil {
		if f = p.newFlow(key); f == nil {
			return
		}
	}
	f.forwardToOrigin(out, [][]byte{payload})
}

func (p *Proxy) newFlow(key flowKey) *flow {
	a := p.apps.Load().match(UDP, key.edge.Addr(), key.edge.Port())
	if a == nil {
		p.m.refused.WithLabelValues("", string(UDP), "no_app").Inc()
		return nil
	}
	refuse := func(reason string) *flow {
		a.metrics.refuse(reason)
		p.logRefusal("app", a.Name, "protocol", "udp", "client", key.client, "edge", key.edge, "reason", reason)
		return nil
	}
	if !a.Firewall.Allows(key.client.Addr()) {
		return refuse("firewall")
	}
	p.mu.Lock()
	full := len(p.flows) >= p.maxFlows
	p.mu.Unlock()
	if full {
		return refuse("limit")
	}
	if why := a.acquire(int(p.flowShare.Load())); why != "" {
		return refuse(why)
	}
	// The flow's two sockets, from the process's budget.
	if !p.fds.Acquire(fdlimit.Spectrum, 2) {
		a.release()
		return refuse("limit")
	}
	fail := func(reason string) *flow {
		p.fds.Release(fdlimit.Spectrum, 2)
		a.release()
		return refuse(reason)
	}
	down, err := p.edgeSocket(key)
	if err != nil {
		if fdlimit.Exhausted(err) {
			p.m.fdShortage.Inc()
			return fail("limit")
		}
		if ok, _ := p.refusals.allow(time.Now()); ok {
			p.log.Warn("spectrum flow socket", "app", a.Name, "edge", key.edge, "client", key.client, "error", err)
		}
		return fail("socket")
	}
	f := &flow{p: p, key: key, app: a, down: down, start: time.Now(), origin: -1}
	f.last.Store(time.Now().UnixNano())
	if f.downRaw, err = down.SyscallConn(); err != nil {
		down.Close()
		return fail("socket")
	}
	if err := f.connectOrigin(); err != nil {
		down.Close()
		if fdlimit.Exhausted(err) {
			return fail("limit")
		}
		return fail("origin_down")
	}
	p.mu.Lock()
	p.flows[key] = f
	p.mu.Unlock()
	a.metrics.connections.Inc()
	go f.downLoop()
	return f
}

// edgeSocket returns a socket bound to the edge address and port and
// connected to the client. FREEBIND lets it bind an address that is only
// routed locally; SO_REUSEADDR lets it share the port with other flows'
// sockets and with wildcard sockets on that port.
func (p *Proxy) edgeSocket(key flowKey) (*net.UDPConn, error) {
	network, freebind := "udp6", opt{unix.SOL_IPV6, unix.IPV6_FREEBIND, 1}
	if key.edge.Addr().Is4() {
		network, freebind = "udp4", opt{unix.SOL_IP, unix.IP_FREEBIND, 1}
	}
	d := net.Dialer{
		LocalAddr: net.UDPAddrFromAddrPort(key.edge),
		Control: func(_, _ string, c syscall.RawConn) error {
			return setsockopts(c, opt{unix.SOL_SOCKET, unix.SO_REUSEADDR, 1}, freebind)
		},
	}
	c, err := p.dialWith(context.Background(), &d, network, key.client.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

// connectOrigin (re)connects the flow to the next origin that has not failed
// lately. It fails when none can be dialled, or at once when the proxy is
// out of descriptors (which marks no origin down).
func (f *flow) connectOrigin() error {
	a := f.app
	var last error
	for _, i := range a.originOrder() {
		addr := a.originAddr(i, f.key.edge.Port())
		c, err := f.p.dial("udp", addr, 0)
		if fdlimit.Exhausted(err) {
			f.p.m.fdShortage.Inc()
			return err
		}
		if err != nil {
			a.markDown(i)
			last = err
			continue
		}
		up := c.(*net.UDPConn)
		raw, err := up.SyscallConn()
		if err != nil {
			up.Close()
			last = err
			continue
		}
		f.mu.Lock()
		old := f.up
		f.up, f.upRaw, f.origin, f.v2Sent = up, raw, i, false
		f.mu.Unlock()
		if old != nil {
			old.Close()
		}
		go f.upLoop(up, raw)
		return nil
	}
	if last == nil {
		last = errors.New("no origin")
	}
	return last
}

// forwardToOrigin forwards a batch of a client's datagrams (at most out's size)
// in one sendmmsg, with the PROXY v2 header on the first of the flow or the
// SPP header on every one.
func (f *flow) forwardToOrigin(out *sendBatch, payloads [][]byte) {
	if len(payloads) == 0 {
		return
	}
	f.last.Store(time.Now().UnixNano())
	f.mu.Lock()
	up, rc := f.up, f.upRaw
	for _, pl := range payloads {
		switch {
		case f.app.Proxy == ProxySimple:
			out.add(appendSPP(out.header(), f.key.client, f.key.edge), pl)
		case f.app.Proxy == ProxyV2 && !f.v2Sent:
			f.v2Sent = true
			h := proxyproto.HeaderProxyFromAddrs(2, net.UDPAddrFromAddrPort(f.key.client), net.UDPAddrFromAddrPort(f.key.edge))
			if d, err := h.FormatUDPDatagram(pl); err == nil {
				out.add(d, nil)
				continue
			}
			out.add(nil, pl)
		default:
			out.add(nil, pl)
		}
	}
	f.mu.Unlock()
	next, _ := out.send(rc)
	for _, err := range out.errs {
		f.originFailed(up, err)
	}
	if drops := len(out.failed) + len(payloads) - next; drops > 0 {
		f.app.metrics.writeDrops.Add(float64(drops))
	}
	if bytes, sent := out.sentBytes(payloads, next); sent > 0 {
		f.toOrigin.Add(int64(bytes))
		f.dgToOrigin.Add(int64(sent))
		f.app.metrics.bytesToOrigin.Add(float64(bytes))
		f.app.metrics.datagramsToOrigin.Add(float64(sent))
	}
}

// originFailed marks the flow's origin down on an ICMP error (seen as
// ECONNREFUSED on the connected socket) and moves the flow to the next one.
func (f *flow) originFailed(up *net.UDPConn, err error) {
	if !errors.Is(err, unix.ECONNREFUSED) && !errors.Is(err, unix.EHOSTUNREACH) && !errors.Is(err, unix.ENETUNREACH) {
		return
	}
	f.mu.Lock()
	current := f.up == up
	i := f.origin
	f.mu.Unlock()
	if !current {
		return
	}
	f.app.markDown(i)
	f.p.log.Warn("spectrum origin failed", "app", f.app.Name, "origin", f.app.originAddr(i, f.key.edge.Port()), "error", err)
	if len(f.app.Origins) > 1 {
		f.connectOrigin()
	}
}

// A flow's loops read and forward inside one wait on their socket: a
// recvmmsg that returns less than a batch emptied the socket's queue, so
// after forwarding they go straight back to the poller instead of trying a
// read that would fail with EAGAIN. The poller is edge-triggered and the
// readiness it records stays set while the loop stays in that one wait, so
// a datagram that arrived while forwarding is not missed.

// forwardLoop reads batches from rc and hands each to forward, until rc is
// closed. A read error (an ICMP error on the connected socket) goes to
// onError, and the loop goes on.
func (f *flow) forwardLoop(rc syscall.RawConn, in *recvBatch, forward func([][]byte), onError func(error)) {
	payloads := make([][]byte, 0, len(in.hs))
	for {
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, err := in.recv(int(fd))
				if err == unix.EAGAIN {
					return false
				}
				if err != nil {
					rerr = err
					return true
				}
				payloads = payloads[:0]
				for i := range n {
					d, trunc := in.datagram(i)
					if trunc {
						f.app.metrics.tooBig.Inc()
						continue
					}
					payloads = append(payloads, d)
				}
				forward(payloads)
				if n < len(in.hs) {
					return false // the queue was empty: wait for the next edge
				}
			}
		})
		if err != nil {
			return // closed
		}
		if onError != nil {
			onError(rerr)
		}
	}
}

// downLoop forwards the client's datagrams, which arrive on the flow's
// connected edge socket, to the origin, a batch at a time.
func (f *flow) downLoop() {
	out := newSendBatch(flowBatch)
	f.forwardLoop(f.downRaw, newRecvBatch(flowBatch, f.p.maxDatagram),
		func(payloads [][]byte) { f.forwardToOrigin(out, payloads) },
		nil) // an ICMP error from the client: keep the flow
}

// upLoop forwards the origin's datagrams to the client, from the edge
// address and port, stripping the SPP header where there must be one, a
// batch at a time.
func (f *flow) upLoop(up *net.UDPConn, rc syscall.RawConn) {
	out := newSendBatch(flowBatch)
	f.forwardLoop(rc, newRecvBatch(flowBatch, f.p.maxDatagram+sppHeaderLen),
		func(payloads [][]byte) { f.forwardToClient(out, payloads) },
		func(err error) { f.originFailed(up, err) })
}

// forwardToClient sends a batch of the origin's datagrams to the client in
// one sendmmsg.
func (f *flow) forwardToClient(out *sendBatch, payloads [][]byte) {
	kept := 0
	for _, d := range payloads {
		if f.app.Proxy == ProxySimple {
			_, _, payload, err := parseSPP(d)
			if err != nil {
				f.app.metrics.sppMissing.Inc()
				continue
			}
			d = payload
		}
		out.add(nil, d)
		payloads[kept] = d
		kept++
	}
	if kept == 0 {
		return
	}
	f.last.Store(time.Now().UnixNano())
	next, _ := out.send(f.downRaw)
	if drops := len(out.failed) + kept - next; drops > 0 {
		f.app.metrics.writeDrops.Add(float64(drops))
	}
	if bytes, sent := out.sentBytes(payloads[:kept], next); sent > 0 {
		f.toClient.Add(int64(bytes))
		f.dgToClient.Add(int64(sent))
		f.app.metrics.bytesToClient.Add(float64(bytes))
		f.app.metrics.datagramsToC.Add(float64(sent))
	}
}

// close ends the flow.
func (f *flow) close(why string) {
	f.closeOnce.Do(func() {
		f.p.mu.Lock()
		if f.p.flows[f.key] == f {
			delete(f.p.flows, f.key)
		}
		f.p.mu.Unlock()
		f.down.Close()
		f.mu.Lock()
		up := f.up
		f.mu.Unlock()
		up.Close()
		f.p.fds.Release(fdlimit.Spectrum, 2)
		f.app.release()
		f.p.log.Info("spectrum flow", "app", f.app.Name, "protocol", "udp", "client", f.key.client, "edge", f.key.edge,
			"datagrams_to_origin", f.dgToOrigin.Load(), "datagrams_to_client", f.dgToClient.Load(),
			"bytes_to_origin", f.toOrigin.Load(), "bytes_to_client", f.toClient.Load(),
			"duration_s", time.Since(f.start).Round(time.Millisecond).Seconds(), "end", why)
	})
}
