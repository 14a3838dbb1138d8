package echo

import (
	"net/netip"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestUDPReplyFromOrigDst: the UDP echo answers from the address and port the
// client sent to, so a connected client receives it, over IPv4 and IPv6.
func TestUDPReplyFromOrigDst(t *testing.T) {
	netns.New(t)
	StartUDP(t, "named", "[::]:5353")
	for _, dst := range []string{"198.51.100.10:5353", "127.0.0.1:5353", "[2001:db8::1]:5353", "[::1]:5353"} {
		got, err := Ask("udp", netip.MustParseAddrPort(dst), 2*time.Second)
		if err != nil || got != "named" {
			t.Errorf("%s: got %q, %v; want named", dst, got, err)
		}
	}
	if got, _ := Ask("udp", netip.MustParseAddrPort("198.51.100.10:5354"), 2*time.Second); got != Refused {
		t.Errorf("closed port: got %q, want %s", got, Refused)
	}
}
