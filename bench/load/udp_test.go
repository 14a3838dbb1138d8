package load

import (
	"context"
	"math"
	"net"
	"testing"
	"time"
)

// udpEcho echoes datagrams on 127.0.0.1, dropping those for which drop
// says so.
func udpEcho(t *testing.T, drop func(n int) bool) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		b := make([]byte, 65536)
		for n := 0; ; n++ {
			m, from, err := c.ReadFromUDP(b)
			if err != nil {
				return
			}
			if drop != nil && drop(n) {
				continue
			}
			c.WriteToUDP(b[:m], from)
		}
	}()
	return c.LocalAddr().String()
}

func TestUDPRequestResponse(t *testing.T) {
	addr := udpEcho(t, nil)
	r, err := UDP(context.Background(), UDPOptions{Addr: addr, Inflight: 4, Duration: 200 * time.Millisecond, LocalAddr: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rr: sent %d received %d, %.0f/s, %s", r.Sent, r.Received, r.Rate, r.Latency.Summary())
	if r.Lost != 0 || r.Received < 100 || r.Latency.Count() != int64(r.Received) {
		t.Fatalf("%+v", r)
	}

	// every 10th datagram dropped: each counts lost after the timeout
	lossy := udpEcho(t, func(n int) bool { return n%10 == 9 })
	r, err = UDP(context.Background(), UDPOptions{Addr: lossy, Inflight: 2, Duration: 300 * time.Millisecond, Timeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rr lossy: sent %d received %d lost %d", r.Sent, r.Received, r.Lost)
	if r.Lost == 0 || r.Received == 0 {
		t.Fatalf("%+v", r)
	}
}

func TestUDPRateAndLoss(t *testing.T) {
	addr := udpEcho(t, nil)
	r, err := UDP(context.Background(), UDPOptions{Addr: addr, Rate: 5000, Duration: 300 * time.Millisecond, Sockets: 2, Size: 100})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rate: sent %d received %d loss %.2f%%, %s", r.Sent, r.Received, r.Loss*100, r.Latency.Summary())
	if r.Sent != 1500 || r.Loss > 0.01 {
		t.Fatalf("%+v", r)
	}

	// a quarter dropped
	lossy := udpEcho(t, func(n int) bool { return n%4 == 0 })
	r, err = UDP(context.Background(), UDPOptions{Addr: lossy, Rate: 4000, Duration: 250 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rate lossy: sent %d received %d loss %.2f%%", r.Sent, r.Received, r.Loss*100)
	if r.Sent != 1000 || math.Abs(r.Loss-0.25) > 0.02 {
		t.Fatalf("%+v", r)
	}

	if _, err := UDP(context.Background(), UDPOptions{Addr: addr, Size: 8}); err == nil {
		t.Fatal("size 8 accepted")
	}
}
