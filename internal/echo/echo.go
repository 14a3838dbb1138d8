// Package echo has named echo servers and their client, so that a test can
// tell which socket received a connection or datagram.
//
// A TCP server greets every connection with "NAME LOCALADDR\n" (the address
// the client dialled, as sk_lookup keeps it) and then echoes what it reads.
// A UDP server answers every datagram with "NAME ORIGDST\n" from exactly the
// address and port the client sent to, through a socket bound there, so that
// a connected client accepts it.
package echo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/dispatch/steered"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// ListenTCP returns a dual-stack, non-MPTCP TCP listener on addr (such as
// "[::]:0"), ready to be registered with the dispatcher.
func ListenTCP(addr string, reusePort bool) (*net.TCPListener, error) {
	if !reusePort {
		return steered.Listen("tcp", addr)
	}
	lc := steered.ListenConfig(func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	})
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// ServeTCP serves ln under name until ln is closed.
func ServeTCP(ln net.Listener, name string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go func() {
			defer c.Close()
			if _, err := fmt.Fprintf(c, "%s %s\n", name, c.LocalAddr()); err != nil {
				return
			}
			io.Copy(c, c)
		}()
	}
}

// ListenUDP returns a dual-stack UDP socket on addr (such as "[::]:0") with
// SO_REUSEADDR and the original destination of every datagram reported.
func ListenUDP(addr string) (*net.UDPConn, error) {
	lc := steered.ListenConfig(func(network, address string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		}); err != nil {
			return err
		}
		return errors.Join(serr, steered.ReportOrigDst(network, address, c))
	})
	pc, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// ServeUDP answers every datagram on pc under name, from the datagram's
// original destination, until pc is closed. It runs on a thread in pc's
// network namespace, where it creates its reply sockets.
func ServeUDP(pc *net.UDPConn, name string) {
	if err := netns.LockInto(pc); err != nil {
		if errors.Is(err, net.ErrClosed) {
			return // the test ended before the server began
		}
		panic(fmt.Sprintf("echo: %v", err))
	}
	buf := make([]byte, 2048)
	oob := make([]byte, 256)
	local := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	for {
		_, oobn, _, from, err := pc.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		dst, err := steered.OrigDst(oob[:oobn])
		if err != nil {
			continue
		}
		reply := fmt.Sprintf("%s %s\n", name, dst)
		if dst == local {
			// Sent to pc's own address: answer from pc. A socket
			// bound to the same address would, until it closed,
			// take datagrams meant for pc.
			pc.WriteToUDPAddrPort([]byte(reply), from)
			continue
		}
		ReplyFrom(dst, from, []byte(reply))
	}
}

// ReplyFrom sends b to dst from src, through a socket bound to src (with
// SO_REUSEADDR and FREEBIND, so that it may share the port with a wildcard
// socket and use an address that is only routed locally) and connected to
// dst, so that while it lives it takes no datagram from anyone else.
func ReplyFrom(src, dst netip.AddrPort, b []byte) error {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	family, network := unix.AF_INET6, "udp6"
	if src.Addr().Is4() {
		family, network = unix.AF_INET, "udp4"
	}
	d := net.Dialer{LocalAddr: net.UDPAddrFromAddrPort(src), Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if family == unix.AF_INET {
				serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1))
			} else {
				serr = errors.Join(serr, unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1))
			}
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial(network, dst.String())
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write(b)
	return err
}

// Outcomes that Ask reports besides a server's name.
const (
	Refused = "refuse"  // TCP reset or ICMP port unreachable
	Timeout = "timeout" // no answer at all
)

// Ask connects to addr over network ("tcp" or "udp") and returns the name of
// the server that answered, Refused, or Timeout; an error for anything else.
// For UDP it checks that the answer came from addr itself.
func Ask(network string, addr netip.AddrPort, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout(network, addr.String(), timeout)
	if err != nil {
		return classify(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if network == "udp" {
		if _, err := c.Write([]byte("hello\n")); err != nil {
			return classify(err)
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return classify(err)
	}
	name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
	return name, nil
}

func classify(err error) (string, error) {
	var ne net.Error
	switch {
	case errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.ECONNRESET):
		return Refused, nil
	case errors.As(err, &ne) && ne.Timeout():
		return Timeout, nil
	}
	return "", err
}

// FreebindDialer returns a dialer from src, which may be an address that is
// only routed locally (IPv6 needs IPV6_FREEBIND to bind one).
func FreebindDialer(src netip.Addr, port int) *net.Dialer {
	d := &net.Dialer{Timeout: 2 * time.Second, Control: func(network, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			if src.Is6() {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
			} else {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
			}
		}); err != nil {
			return err
		}
		return serr
	}}
	d.LocalAddr = &net.TCPAddr{IP: src.AsSlice(), Port: port}
	return d
}

// FreebindUDPDialer is FreebindDialer for UDP.
func FreebindUDPDialer(src netip.Addr, port int) *net.Dialer {
	d := FreebindDialer(src, port)
	d.LocalAddr = &net.UDPAddr{IP: src.AsSlice(), Port: port}
	return d
}

// Start serves name over TCP and UDP on addr until the test ends, and
// returns the two sockets (to register with a dispatcher, or to learn the
// port of "[::]:0").
func Start(tb testing.TB, name, addr string) (*net.TCPListener, *net.UDPConn) {
	tb.Helper()
	return StartTCP(tb, name, addr, false), StartUDP(tb, name, addr)
}

// StartTCP serves name over TCP on addr until the test ends, with
// SO_REUSEPORT if reusePort (to join a group on the same address).
func StartTCP(tb testing.TB, name, addr string, reusePort bool) *net.TCPListener {
	tb.Helper()
	ln, err := ListenTCP(addr, reusePort)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go ServeTCP(ln, name)
	return ln
}

// StartUDP serves name over UDP on addr until the test ends.
func StartUDP(tb testing.TB, name, addr string) *net.UDPConn {
	tb.Helper()
	pc, err := ListenUDP(addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { pc.Close() })
	go ServeUDP(pc, name)
	return pc
}

// Sockets starts an echo server on "[::]:0" under each service label
// ("cdn/tcp", "spectrum/udp", ...), named by the label's service and of its
// protocol, and returns them by label.
func Sockets(tb testing.TB, labels ...string) map[string]syscall.Conn {
	tb.Helper()
	socks := map[string]syscall.Conn{}
	for _, label := range labels {
		name, proto, _ := strings.Cut(label, "/")
		if proto == "tcp" {
			socks[label] = StartTCP(tb, name, "[::]:0", false)
		} else {
			socks[label] = StartUDP(tb, name, "[::]:0")
		}
	}
	return socks
}
