package proxy

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
)

// RFC 9000 8.1: before a client's address is validated, a server sends it
// at most three times the bytes it received from it. quic-go checks its
// count before each datagram rather than sizing the datagram to what is
// left, so its first flight and the probes that repeat it reach 3× plus one
// datagram (docs/security.md has the measurements). A spoofed source
// makes that a reflection. ampConn is the QUIC socket as quic-go sees it,
// and holds every address that sent an Initial to the limit itself, to the
// byte, until its handshake completes: a datagram that would pass it is not
// sent (to quic-go it is lost, and its own count stops it sending more).

const (
	amplificationFactor = 3
	// ampMaxPeers bounds the addresses followed (about 100 bytes each).
	// Past it a new address is held only by quic-go's own limit.
	ampMaxPeers = 1 << 16
)

// ampConn wraps the QUIC sockets (quicSock: the listener and the
// connected sockets). quic-go reads them in batches through ReadBatch and
// writes through WriteMsgUDP (with packet info, so that replies leave from
// the dialled address); both are counted here.
type ampConn struct {
	*quicSock
	ttl atomic.Int64 // how long an address is followed, in nanoseconds: the handshake timeout, and some
	// withheld counts datagrams not sent; nil: not counted.
	withheld prometheus.Counter

	mu    sync.Mutex // guards peers
	peers map[netip.AddrPort]*ampPeer
}

// ampPeer is what an unvalidated address sent and was sent.
type ampPeer struct {
	recv, sent int
	until      time.Time
}

func newAmpConn(c *quicSock, ttl time.Duration, withheld prometheus.Counter) *ampConn {
	a := &ampConn{quicSock: c, withheld: withheld,
		peers: map[netip.AddrPort]*ampPeer{}}
	a.setTTL(ttl)
	return a
}

// setTTL changes how long addresses that start a handshake from now on
// are followed.
func (c *ampConn) setTTL(ttl time.Duration) { c.ttl.Store(int64(ttl)) }

// ReadBatch reads datagrams as quic-go asks and counts what each followed
// address sent. A long-header Initial from an address not followed yet
// starts following it.
func (c *ampConn) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	n, err := c.quicSock.ReadBatch(ms, flags)
	for i := range n {
		m := &ms[i]
		if m.N == 0 || len(m.Buffers) == 0 || m.Buffers[0][0]&0x80 == 0 {
			continue // a short header: sent after the handshake, nothing to count
		}
		ua, ok := m.Addr.(*net.UDPAddr)
		if !ok {
			continue
		}
		c.received(ua.AddrPort(), m.N, isInitial(m.Buffers[0]))
	}
	return n, err
}

// isInitial reports whether a datagram starts with a QUIC Initial packet,
// version 1 (type 0) or version 2 (type 1, RFC 9369).
func isInitial(b []byte) bool {
	if len(b) < 5 || b[0]&0xc0 != 0xc0 {
		return false
	}
	typ := b[0] >> 4 & 3
	switch v := uint32(b[1])<<24 | uint32(b[2])<<16 | uint32(b[3])<<8 | uint32(b[4]); v {
	case 1:
		return typ == 0
	case 0x6b3343cf:
		return typ == 1
	}
	return false
}

func (c *ampConn) received(ap netip.AddrPort, n int, initial bool) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.peers[ap]
	switch {
	case p != nil && now.After(p.until):
		delete(c.peers, ap)
		p = nil
		fallthrough
	case p == nil:
		if !initial {
			return
		}
		if len(c.peers) >= ampMaxPeers {
			c.sweepLocked(now)
			if len(c.peers) >= ampMaxPeers {
				return
			}
		}
		p = &ampPeer{until: now.Add(time.Duration(c.ttl.Load()))}
		c.peers[ap] = p
	}
	p.recv += n
}

// WriteMsgUDP sends b unless it would take a followed address past three
// times what it sent; then b is dropped as the network might drop it.
func (c *ampConn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (int, int, error) {
	if addr != nil && !c.allow(addr.AddrPort(), len(b)) {
		if c.withheld != nil {
			c.withheld.Inc()
		}
		return len(b), len(oob), nil
	}
	return c.quicSock.WriteMsgUDP(b, oob, addr)
}

func (c *ampConn) allow(ap netip.AddrPort, n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.peers[ap]
	if p == nil {
		return true
	}
	if time.Now().After(p.until) {
		delete(c.peers, ap)
		return true
	}
	if p.sent+n > amplificationFactor*p.recv {
		return false
	}
	p.sent += n
	return true
}

// validated stops following an address whose handshake completed: the
// client proved it receives there.
func (c *ampConn) validated(a net.Addr) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return
	}
	c.mu.Lock()
	delete(c.peers, ua.AddrPort())
	c.mu.Unlock()
}

func (c *ampConn) sweepLocked(now time.Time) {
	for ap, p := range c.peers {
		if now.After(p.until) {
			delete(c.peers, ap)
		}
	}
}

// following returns how many addresses are followed (for tests).
func (c *ampConn) following() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.peers)
}
