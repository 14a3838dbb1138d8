package spectrum

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// tcpEchoProxy starts an echo origin and a proxy in front of it in ns, and
// returns the proxy and the address to dial.
func tcpEchoProxy(t *testing.T, ns *netns.NS) (*Proxy, string) {
	t.Helper()
	origin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { origin.Close() })
	go func() {
		for {
			c, err := origin.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	oport := uint16(origin.Addr().(*net.TCPAddr).Port)
	p, err := New(Options{Dial: ns.Dial, Apps: []App{
		{Name: "t", Protocol: TCP, Edge: netip.MustParsePrefix("127.0.0.0/8"), Ports: Ports{First: 0, Last: 65535}, Origins: []Origin{{Host: "127.0.0.1", Port: oport}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	t.Cleanup(func() { p.Shutdown(t.Context()) })
	return p, fmt.Sprintf("127.0.0.1:%d", p.TCPListener().Addr().(*net.TCPAddr).Port)
}

// TestSpectrumSmallMessagesCopied: back-to-back small messages are copied
// through the buffer, never spliced (no pipe is ever taken), and each comes
// back whole; a bulk transfer on the same proxy is spliced, byte for byte.
func TestSpectrumSmallMessagesCopied(t *testing.T) {
	ns := netns.New(t)
	p, addr := tcpEchoProxy(t, ns)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	const rounds, size = 300, 64
	msg, back := make([]byte, size), make([]byte, size)
	for i := range rounds {
		for j := range msg {
			msg[j] = byte(i + j)
		}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, back); err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if !bytes.Equal(msg, back) {
			t.Fatalf("round %d: %x back, sent %x", i, back, msg)
		}
	}
	if got, want := testutil.ToFloat64(p.m.copiedBuffer), float64(2*rounds*size); got != want {
		t.Errorf("bytes copied through the buffer: %v, want %v", got, want)
	}
	if got := testutil.ToFloat64(p.m.copiedSplice); got != 0 {
		t.Errorf("%v bytes of small messages spliced", got)
	}
	if n := p.Pipes(); n != 0 {
		t.Errorf("%d pipes opened for small messages", n)
	}

	// Bulk: 8 MiB one way and back, while the client reads.
	b, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.SetDeadline(time.Now().Add(20 * time.Second))
	data := make([]byte, 8<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for j := range data {
		data[j] = byte(r.Uint32())
	}
	go func() { b.Write(data); b.(*net.TCPConn).CloseWrite() }()
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("%d bytes back of %d, not what was sent", len(got), len(data))
	}
	spliced := testutil.ToFloat64(p.m.copiedSplice)
	if spliced < float64(len(data)) {
		t.Errorf("bulk: %v bytes spliced of %d each way, want most of them", spliced, len(data))
	}
	if p.Pipes() == 0 {
		t.Error("bulk transfer took no pipe")
	}
}

// TestSpectrumDataThenEOF: a message and the end of the stream sent at
// once (they may reach the proxy as one wake-up) both get through: the
// origin sees the end after the message, and its echo and end come back.
func TestSpectrumDataThenEOF(t *testing.T) {
	ns := netns.New(t)
	_, addr := tcpEchoProxy(t, ns)
	for i := range 50 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		msg := fmt.Sprintf("message %d", i)
		c.Write([]byte(msg))
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != msg {
			t.Fatalf("connection %d: %q, %v; want %q and the end", i, got, err, msg)
		}
	}
}
