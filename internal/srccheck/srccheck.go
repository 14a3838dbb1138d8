// Package srccheck is a test helper: a client's UDP socket that records
// the source of every datagram it reads. quic-go's client matches replies
// by connection id and takes them from any source, so tests of HTTP/3 wrap
// its socket in a Conn to catch a reply from the wrong address or port, as
// a real client's connected socket would refuse it.
package srccheck

import (
	"net"
	"net/netip"
	"slices"
	"sync"
)

// Conn is a packet connection that checks every datagram's source against
// Want, the address and port dialled.
type Conn struct {
	net.PacketConn
	want netip.AddrPort
	mu   sync.Mutex
	n    int
	bad  []string
}

// New wraps pc, which talks to want.
func New(pc net.PacketConn, want netip.AddrPort) *Conn {
	return &Conn{PacketConn: pc, want: want}
}

// ReadFrom reads a datagram and records its source.
func (c *Conn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, from, err := c.PacketConn.ReadFrom(p)
	if err == nil {
		ap := from.(*net.UDPAddr).AddrPort()
		c.mu.Lock()
		c.n++
		if netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) != c.want {
			c.bad = append(c.bad, ap.String())
		}
		c.mu.Unlock()
	}
	return n, from, err
}

// Stats returns how many datagrams came and the sources of those that
// did not come from the dialled address and port.
func (c *Conn) Stats() (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, slices.Clone(c.bad)
}
