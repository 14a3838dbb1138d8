package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// openConnected opens n connected sockets on 192.0.2.10:443 for clients
// that do not exist (127.0.0.2, ports from 10000): what n HTTP/3
// connections on that address hold.
func openConnected(b *testing.B, s *quicSock, n int) { openConnectedOn(b, s, n, "192.0.2.10:443") }

func openConnectedOn(b *testing.B, s *quicSock, n int, on string) {
	b.Helper()
	for i := range n {
		rel, err := s.attach(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), uint16(10000+i)),
			netip.MustParseAddrPort(on), func() bool { return true }, func() {})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(rel)
	}
}

// BenchmarkQUICListenerDatagram: one datagram from a client to the
// listener (no connected socket for its 4-tuple: a new flow, or a
// connection that stayed on the listener), sent and read, beside 0 and
// 5000 connected sockets on the same address and port. The kernel scans
// the sockets bound to that address and port for such a datagram.
func BenchmarkQUICListenerDatagram(b *testing.B) {
	for _, tc := range []struct {
		n  int
		on string
	}{{0, ""}, {1024, "192.0.2.10:443"}, {5000, "192.0.2.10:443"}, {5000, "192.0.2.11:443"}} {
		b.Run(fmt.Sprintf("connected=%d/on=%s", tc.n, tc.on), func(b *testing.B) {
			ns := netns.New(b)
			ln, err := listenQUIC(443)
			if err != nil {
				b.Fatal(err)
			}
			s, err := newQUICSock(ns.Socket, ln, 1<<20, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			openConnectedOn(b, s, tc.n, tc.on)
			cl, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 10), Port: 443})
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			buf := make([]byte, 64)
			runtime.GC()
			b.ResetTimer()
			for range b.N {
				cl.Write(buf[:1])
				if _, _, err := ln.ReadFrom(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkHTTP3Handshake: one QUIC handshake with the cdn and close (a
// new flow: its datagrams reach the listener), beside 0 and 5000 connected
// sockets on the dialled address.
func BenchmarkHTTP3Handshake(b *testing.B) {
	for _, n := range []int{0, 1024, 5000} {
		b.Run(fmt.Sprintf("connected=%d", n), func(b *testing.B) {
			f := startH3(b, "", func(o *Options) { o.Limits.MaxQUICSocketsPerAddress = n + 1 })
			openConnected(b, f.p.qs, n)
			// The handshakes measured open no socket of their own: in a
			// test each would switch a thread into the namespace, which
			// costs more than the socket.
			f.p.qs.noConnect = true
			pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			tr := &quic.Transport{Conn: pc}
			defer func() { tr.Close(); pc.Close() }()
			tc := &tls.Config{RootCAs: f.pool, ServerName: "a.example", NextProtos: []string{http3.NextProtoH3}}
			dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.10:443"))
			b.ResetTimer()
			for range b.N {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				c, err := tr.Dial(ctx, dst, tc, &quic.Config{})
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				c.CloseWithError(0, "")
			}
		})
	}
}

// BenchmarkHTTP3Request: one request on an open HTTP/3 connection, on its
// connected socket and (connected=false) on the listener, as before.
func BenchmarkHTTP3Request(b *testing.B) {
	for _, connected := range []bool{true, false} {
		b.Run(fmt.Sprintf("connected=%v", connected), func(b *testing.B) {
			f := startH3(b, "")
			f.p.qs.noConnect = !connected
			c := f.dial(b, netip.MustParseAddrPort("192.0.2.10:443"), "a.example")
			if _, err := c.get("/warm", time.Second); err != nil {
				b.Fatal(err)
			}
			if got := f.p.qs.connected(); got != map[bool]int{true: 1, false: 0}[connected] {
				b.Fatalf("%d connected sockets", got)
			}
			b.ResetTimer()
			for range b.N {
				if _, err := c.get("/", time.Second); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkQUICSockConnect: a connected socket made (quic-go's options
// replayed), added to the epoll set, taken out and closed, as attach and
// its release do: what each HTTP/3
// connection costs in set-up and tear-down. On the test's goroutine (in
// production every thread is in the namespace; tests switch a thread for
// each socket, which would dominate).
func BenchmarkQUICSockConnect(b *testing.B) {
	f := startH3(b, "")
	s := f.p.qs
	b.ResetTimer()
	for i := range b.N {
		path := sockPath{remote: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), uint16(1024+i%60000)), local: netip.MustParseAddr("192.0.2.10")}
		c, _, err := s.connect(path, 443)
		if err != nil {
			b.Fatal(err)
		}
		raw, _ := c.SyscallConn()
		var aerr error
		raw.Control(func(fd uintptr) { aerr = s.epollAdd(int(fd), 1<<40) })
		if aerr != nil {
			b.Fatal(aerr)
		}
		raw.Control(func(fd uintptr) {
			s.epRaw.Control(func(ep uintptr) { unix.EpollCtl(int(ep), unix.EPOLL_CTL_DEL, int(fd), nil) })
		})
		c.Close()
	}
	b.ReportMetric(float64(len(s.opts)), "replayed-options")
}

// BenchmarkQUICSockPingPong: a datagram from the client read through
// ReadBatch and answered through WriteMsgUDP with packet info (as quic-go
// reads and writes), on the client's connected socket and on the listener.
func BenchmarkQUICSockPingPong(b *testing.B) {
	for _, connected := range []bool{true, false} {
		b.Run(fmt.Sprintf("connected=%v", connected), func(b *testing.B) {
			ns := netns.New(b)
			ln, err := listenQUIC(443)
			if err != nil {
				b.Fatal(err)
			}
			s, err := newQUICSock(ns.Socket, ln, 1<<20, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			raw, _ := s.SyscallConn()
			raw.Control(func(fd uintptr) {
				unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
				unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
			})
			cl, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 10), Port: 443})
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			if connected {
				rel, err := s.attach(cl.LocalAddr().(*net.UDPAddr).AddrPort(), netip.MustParseAddrPort("192.0.2.10:443"), func() bool { return true }, func() {})
				if err != nil {
					b.Fatal(err)
				}
				defer rel()
			}
			ms := make([]ipv4.Message, 8)
			for i := range ms {
				ms[i].Buffers = [][]byte{make([]byte, 1500)}
				ms[i].OOB = make([]byte, 128)
			}
			oob := (&ipv4.ControlMessage{Src: net.IPv4(192, 0, 2, 10).To4()}).Marshal()
			to := cl.LocalAddr().(*net.UDPAddr)
			payload := make([]byte, 1200)
			buf := make([]byte, 1500)
			b.ResetTimer()
			for range b.N {
				cl.Write(payload)
				n, err := s.ReadBatch(ms, 0)
				if err != nil || n != 1 {
					b.Fatal(n, err)
				}
				if _, _, err := s.WriteMsgUDP(payload, oob, to); err != nil {
					b.Fatal(err)
				}
				if _, err := cl.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if got := s.connected(); got != map[bool]int{true: 1, false: 0}[connected] {
				b.Fatalf("%d connected sockets", got)
			}
		})
	}
}
