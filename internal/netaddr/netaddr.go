// Package netaddr converts the net package's addresses for the services.
package netaddr

import (
	"net"
	"net/netip"
)

// AddrPort returns a TCP or UDP address as an AddrPort with IPv4 unmapped
// (a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d); the zero
// AddrPort for any other kind.
func AddrPort(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
