//go:build linux

package steered_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/dispatch/steered"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestSocketsFitTheDispatcher: the sockets made here pass the checks of
// Register, and a datagram's original destination is read back, an IPv4
// one unmapped.
func TestSocketsFitTheDispatcher(t *testing.T) {
	netns.New(t)
	ln, err := steered.Listen("tcp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := dispatch.CheckSocket("test/tcp", ln); err != nil {
		t.Errorf("TCP listener: %v", err)
	}
	pc, err := steered.ListenPacket("udp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := dispatch.CheckSocket("test/udp", pc); err != nil {
		t.Errorf("UDP socket: %v", err)
	}

	port := pc.LocalAddr().(*net.UDPAddr).AddrPort().Port()
	for _, addr := range []string{"127.0.0.1", "::1"} {
		dst := netip.AddrPortFrom(netip.MustParseAddr(addr), port)
		c, err := net.Dial("udp", dst.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf, oob := make([]byte, 16), make([]byte, 256)
		_, oobn, _, _, err := pc.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			t.Fatal(err)
		}
		got, err := steered.OrigDst(oob[:oobn])
		if err != nil || got != dst {
			t.Errorf("datagram to %s: original destination %v, %v", dst, got, err)
		}
	}
}
