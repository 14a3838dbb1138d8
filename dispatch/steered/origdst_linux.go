package steered

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// ListenPacket returns a UDP socket on addr (such as "[::]:0") that
// dispatch.Register accepts and that reports every datagram's original
// destination (ReportOrigDst), which OrigDst reads.
func ListenPacket(network, addr string) (*net.UDPConn, error) {
	lc := ListenConfig(ReportOrigDst)
	pc, err := lc.ListenPacket(context.Background(), network, addr)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// ReportOrigDst is a net.ListenConfig control function that makes a UDP
// socket report the original destination of every datagram
// (IP_RECVORIGDSTADDR, and IPV6_RECVORIGDSTADDR but on udp4): a steered
// socket receives datagrams sent to addresses other than its own.
func ReportOrigDst(network, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_RECVORIGDSTADDR, 1)
		if network != "udp4" {
			serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_RECVORIGDSTADDR, 1))
		}
	}); err != nil {
		return err
	}
	return serr
}

// OrigDst returns the original destination in a datagram's control
// messages (IP_ORIGDSTADDR or IPV6_ORIGDSTADDR), an IPv4 address unmapped.
func OrigDst(oob []byte) (netip.AddrPort, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.AddrPort{}, err
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.SOL_IP && m.Header.Type == unix.IP_ORIGDSTADDR && len(m.Data) >= 8:
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.Data[4:8])), port(m.Data)), nil
		case m.Header.Level == unix.SOL_IPV6 && m.Header.Type == unix.IPV6_ORIGDSTADDR && len(m.Data) >= 24:
			return netip.AddrPortFrom(netip.AddrFrom16([16]byte(m.Data[8:24])).Unmap(), port(m.Data)), nil
		}
	}
	return netip.AddrPort{}, errors.New("no original destination in the control messages")
}

// port reads the port of a struct sockaddr_in or sockaddr_in6, in network
// byte order after the family.
func port(sa []byte) uint16 { return uint16(sa[2])<<8 | uint16(sa[3]) }
