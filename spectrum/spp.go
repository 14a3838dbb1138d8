package spectrum

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// Simple Proxy Protocol (Cloudflare Spectrum, UDP): a 38-byte header before
// the payload of every datagram, both ways.
//
//	offset  size  field
//	0       2     magic 0x56EC
//	2       16    client address (IPv4 as IPv4-mapped IPv6)
//	18      16    proxy address (the edge address the client sent to)
//	34      2     client port
//	36      2     proxy port
//	38      ...   payload
//
// All fields in network byte order. The origin answers with a header too;
// the proxy strips it, and drops a reply without one.
const (
	sppMagic     = 0x56EC
	sppHeaderLen = 38
)

var errNoSPP = errors.New("datagram has no Simple Proxy Protocol header")

// appendSPP appends the SPP header for a datagram from client to proxy.
func appendSPP(b []byte, client, proxy netip.AddrPort) []byte {
	b = binary.BigEndian.AppendUint16(b, sppMagic)
	c := client.Addr().As16() // IPv4 becomes IPv4-mapped
	p := proxy.Addr().As16()
	b = append(b, c[:]...)
	b = append(b, p[:]...)
	b = binary.BigEndian.AppendUint16(b, client.Port())
	return binary.BigEndian.AppendUint16(b, proxy.Port())
}

// parseSPP splits a datagram into its SPP header's addresses and payload.
func parseSPP(d []byte) (client, proxy netip.AddrPort, payload []byte, err error) {
	if len(d) < sppHeaderLen || binary.BigEndian.Uint16(d) != sppMagic {
		return netip.AddrPort{}, netip.AddrPort{}, nil, errNoSPP
	}
	c := netip.AddrFrom16([16]byte(d[2:18])).Unmap()
	p := netip.AddrFrom16([16]byte(d[18:34])).Unmap()
	client = netip.AddrPortFrom(c, binary.BigEndian.Uint16(d[34:]))
	proxy = netip.AddrPortFrom(p, binary.BigEndian.Uint16(d[36:]))
	return client, proxy, d[sppHeaderLen:], nil
}
