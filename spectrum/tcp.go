package spectrum

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
	"github.com/edgeproxy/edgeproxy/internal/netaddr"
)

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.tcp.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or the like: do not spin.
			p.log.Warn("spectrum accept", "error", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handleTCP(c)
		}()
	}
}

// reset closes c with a TCP reset: the client sees a refusal, not a clean
// end.
func reset(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}

func (p *Proxy) handleTCP(c *net.TCPConn) {
	edge, client := netaddr.AddrPort(c.LocalAddr()), netaddr.AddrPort(c.RemoteAddr())
	a := p.apps.Load().match(TCP, edge.Addr(), edge.Port())
	if a == nil {
		p.m.refused.WithLabelValues("", string(TCP), "no_app").Inc()
		p.logRefusal("protocol", "tcp", "client", client, "edge", edge, "reason", "no_app")
		reset(c)
		return
	}
	refuse := func(reason string) {
		a.metrics.refuse(reason)
		p.logRefusal("app", a.Name, "protocol", "tcp", "client", client, "edge", edge, "reason", reason)
		reset(c)
	}
	if !a.Firewall.Allows(client.Addr()) {
		refuse("firewall")
		return
	}
	if p.conns.Add(1) > int64(p.maxConns) {
		p.conns.Add(-1)
		refuse("limit")
		return
	}
	defer p.conns.Add(-1)
	if why := a.acquire(0); why != "" {
		refuse(why)
		return
	}
	defer a.release()
	// The client's descriptor and the origin's, from the process's budget
	// (the accept reserve covered the client's until now).
	if !p.fds.Acquire(fdlimit.Spectrum, 2) {
		refuse("limit")
		return
	}
	defer p.fds.Release(fdlimit.Spectrum, 2)

	origin, originAddr, err := p.dialOrigin(a, edge.Port())
	if origin == nil {
		if fdlimit.Exhausted(err) {
			refuse("limit") // ours, not the origin's
		} else {
			refuse("origin_down")
		}
		return
	}
	if err := writeProxyHeader(a.Proxy, origin, client, edge); err != nil {
		origin.Close()
		reset(c)
		a.metrics.originDown.Inc()
		return
	}
	a.metrics.connections.Inc()

	pair := &tcpPair{client: c, origin: origin, app: a, start: time.Now()}
	p.track(pair, true)
	defer p.track(pair, false)

	p.relay(pair)
	reason := pair.closedBy()
	p.log.Info("spectrum connection", "app", a.Name, "protocol", "tcp", "client", client, "edge", edge,
		"origin", originAddr, "bytes_to_origin", pair.toOrigin.Load(), "bytes_to_client", pair.toClient.Load(),
		"duration_s", time.Since(pair.start).Round(time.Millisecond).Seconds(), "end", reason)
}

// writeProxyHeader writes the PROXY protocol header that mode asks for
// (v1 or v2; none for the others) to the origin.
func writeProxyHeader(mode ProxyProtocol, origin net.Conn, client, edge netip.AddrPort) error {
	var version byte
	switch mode {
	case ProxyV1:
		version = 1
	case ProxyV2:
		version = 2
	default:
		return nil
	}
	h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(client), net.TCPAddrFromAddrPort(edge))
	_, err := h.WriteTo(origin)
	return err
}

// relay copies the pair's bytes both ways, each direction closing its
// write side when its reader ends, so that a half-close reaches the other
// end (copyConn splices, holding a pipe only while data moves); then it
// closes both and accounts for them.
func (p *Proxy) relay(pair *tcpPair) {
	c, origin := pair.client, pair.origin
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, _ := p.copyConn(origin, c)
		pair.toOrigin.Store(n)
		origin.CloseWrite()
	}()
	n, _ := p.copyConn(c, origin)
	pair.toClient.Store(n)
	c.CloseWrite()
	wg.Wait()
	c.Close()
	origin.Close()
	pair.account()
}

// dialOrigin connects to the app's origins in round-robin order, skipping
// those that failed lately, and fails over on connect errors. A dial that
// fails for want of descriptors (EMFILE, ENFILE) is the proxy's shortage:
// it marks no origin down and stops, returning that error.
func (p *Proxy) dialOrigin(a *app, port uint16) (*net.TCPConn, string, error) {
	var last error
	for _, i := range a.originOrder() {
		addr := a.originAddr(i, port)
		c, err := p.dial("tcp", addr, a.ConnectTimeout)
		if fdlimit.Exhausted(err) {
			p.m.fdShortage.Inc()
			return nil, "", err
		}
		if err != nil {
			a.markDown(i)
			p.log.Warn("spectrum origin failed", "app", a.Name, "origin", addr, "error", err)
			last = err
			continue
		}
		a.markUp(i)
		return c.(*net.TCPConn), addr, nil
	}
	return nil, "", last
}

// tcpPair is a proxied TCP connection: the client's and the origin's.
type tcpPair struct {
	client, origin *net.TCPConn
	app            *app
	start          time.Time

	toOrigin, toClient atomic.Int64 // bytes, final once the copies end
	mu                 sync.Mutex   // guards the fields below
	counted            [2]int64     // bytes already in the metrics
	end                string       // why the proxy ended it, if it did
}

func (p *Proxy) track(pair *tcpPair, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.pairs[pair] = struct{}{}
	} else {
		delete(p.pairs, pair)
	}
}

// closeBoth ends the connection: idle, or at the end of a shutdown.
func (pair *tcpPair) closeBoth(why string) {
	pair.mu.Lock()
	if pair.end == "" {
		pair.end = why
	}
	pair.mu.Unlock()
	pair.client.Close()
	pair.origin.Close()
}

func (pair *tcpPair) closedBy() string {
	pair.mu.Lock()
	defer pair.mu.Unlock()
	if pair.end == "" {
		return "closed"
	}
	return pair.end
}

// sweep ends the connection when neither side moved data for the app's idle
// timeout, and brings the byte counters up to date. Both come from TCP_INFO:
// nothing wraps the connections, and bulk is spliced in the kernel.
func (pair *tcpPair) sweep(now time.Time) {
	ci, cerr := tcpInfo(pair.client)
	oi, oerr := tcpInfo(pair.origin)
	if cerr != nil || oerr != nil {
		return // closing
	}
	idle := now.Sub(pair.start)
	for _, ms := range []uint32{ci.Last_data_recv, ci.Last_data_sent, oi.Last_data_recv, oi.Last_data_sent} {
		idle = min(idle, time.Duration(ms)*time.Millisecond)
	}
	if idle >= pair.app.IdleTimeout {
		pair.closeBoth("idle")
		return
	}
	pair.mu.Lock()
	pair.addBytes(int64(oi.Bytes_acked), int64(ci.Bytes_acked))
	pair.mu.Unlock()
}

// account adds the final byte counts.
func (pair *tcpPair) account() {
	pair.mu.Lock()
	defer pair.mu.Unlock()
	pair.addBytes(pair.toOrigin.Load(), pair.toClient.Load())
}

// addBytes raises the metrics to these totals. The caller holds pair.mu.
func (pair *tcpPair) addBytes(toOrigin, toClient int64) {
	m := pair.app.metrics
	if d := toOrigin - pair.counted[0]; d > 0 {
		m.bytesToOrigin.Add(float64(d))
		pair.counted[0] = toOrigin
	}
	if d := toClient - pair.counted[1]; d > 0 {
		m.bytesToClient.Add(float64(d))
		pair.counted[1] = toClient
	}
}

func tcpInfo(c *net.TCPConn) (*unix.TCPInfo, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var info *unix.TCPInfo
	var ierr error
	if err := raw.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return nil, err
	}
	return info, ierr
}
