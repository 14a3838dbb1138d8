package proxy

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestAmplificationLimit(t *testing.T) {
	c := &ampConn{peers: map[netip.AddrPort]*ampPeer{}}
	c.setTTL(time.Minute)
	client := netip.MustParseAddrPort("[::ffff:192.0.2.7]:4433")
	initial := []byte{0xc3, 0, 0, 0, 1}               // long header, v1, type Initial
	handshake := []byte{0xe3, 0, 0, 0, 1}             // long header, v1, type Handshake
	initialV2 := []byte{0xd3, 0x6b, 0x33, 0x43, 0xcf} // v2 Initial is type 1
	if !isInitial(initial) || isInitial(handshake) || !isInitial(initialV2) || isInitial([]byte{0x43, 0, 0, 0, 1}) {
		t.Fatal("isInitial")
	}

	// An address is followed from its Initial on, and held to 3× what it sent.
	c.received(client, 1200, false)
	if c.following() != 0 {
		t.Fatal("an address followed before it sent an Initial")
	}
	c.received(client, 1200, true)
	for i, want := range []bool{true, true, false, false} {
		if got := c.allow(client, 1280); got != want {
			t.Fatalf("datagram %d of 1280 bytes after 1200 received: allowed %v, want %v", i+1, got, want)
		}
	}
	if !c.allow(client, 1040) { // 2560 + 1040 = 3600: exactly 3×
		t.Fatal("a datagram that reaches 3× exactly was withheld")
	}
	// What the client sends next raises its allowance.
	c.received(client, 100, false)
	if !c.allow(client, 300) || c.allow(client, 1) {
		t.Fatal("the allowance did not follow the bytes received")
	}
	// Validated (its handshake completed): no longer followed.
	c.validated(net.UDPAddrFromAddrPort(client))
	if c.following() != 0 || !c.allow(client, 1<<16) {
		t.Fatal("a validated address is still held")
	}
	// Other addresses are not held at all.
	if !c.allow(netip.MustParseAddrPort("192.0.2.8:1"), 1<<16) {
		t.Fatal("an address that sent nothing was held")
	}
	// An address whose handshake never completes is dropped after the ttl.
	c.setTTL(-time.Second)
	c.received(client, 1200, true)
	if !c.allow(client, 1<<16) || c.following() != 0 {
		t.Fatal("an expired address is still held")
	}
}
