package spectrum

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// acceptedPair returns the proxy's end of a loopback TCP connection, the
// client's end closed with the test.
func acceptedPair(t *testing.T) *net.TCPConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return s.(*net.TCPConn)
}

// TestHostileSpectrumDialEMFILE: an origin dial that fails with EMFILE or
// ENFILE (the proxy's shortage) refuses the connection or flow as limit and
// marks no origin down; a refused dial (the origin's fault) still does.
func TestHostileSpectrumDialEMFILE(t *testing.T) {
	ns := netns.New(t)
	p, err := New(Options{Dial: ns.Dial, Apps: []App{
		{Name: "t", Protocol: TCP, Edge: netip.MustParsePrefix("127.0.0.0/8"), Ports: Ports{First: 0, Last: 65535}, Origins: []Origin{{Host: "127.0.0.1", Port: 1}}},
		{Name: "u", Protocol: UDP, Edge: netip.MustParsePrefix("192.0.2.0/24"), Ports: Ports{First: 0, Last: 65535}, Origins: []Origin{{Host: "127.0.0.1", Port: 1}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(t.Context())
	tcpApp, udpApp := p.apps.Load().apps[0], p.apps.Load().apps[1]
	var dialErr error
	p.dial = func(string, string, time.Duration) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: dialErr}
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE} {
		dialErr = e
		p.handleTCP(acceptedPair(t))
		if f := p.newFlow(flowKey{netip.MustParseAddrPort("127.0.0.1:5000"), netip.MustParseAddrPort("192.0.2.1:53")}); f != nil {
			t.Fatal("a flow without an origin socket")
		}
	}
	if got := testutil.ToFloat64(p.RefusedCounter("t", "tcp", "limit")); got != 2 {
		t.Errorf("tcp refused as limit: %v, want 2", got)
	}
	if got := testutil.ToFloat64(p.RefusedCounter("u", "udp", "limit")); got != 2 {
		t.Errorf("udp refused as limit: %v, want 2", got)
	}
	if got := testutil.ToFloat64(p.RefusedCounter("t", "tcp", "origin_down")); got != 0 {
		t.Errorf("tcp refused as origin_down: %v", got)
	}
	for _, a := range []*app{tcpApp, udpApp} {
		if got := testutil.ToFloat64(a.metrics.originDown); got != 0 || len(a.downTo) != 0 {
			t.Errorf("%s: origin marked down %v times on the proxy's own shortage", a.Name, got)
		}
	}
	if got := testutil.ToFloat64(p.m.fdShortage); got != 4 {
		t.Errorf("fd_exhausted %v, want 4", got)
	}
	if p.fds.Used() != 0 {
		t.Errorf("%d descriptors still held in the budget", p.fds.Used())
	}
	// The origin's own failure still counts against it.
	dialErr = syscall.ECONNREFUSED
	p.handleTCP(acceptedPair(t))
	if got := testutil.ToFloat64(tcpApp.metrics.originDown); got != 1 {
		t.Errorf("a refused dial marked the origin down %v times, want 1", got)
	}
}

// TestHostileSpectrumBudgetRefuses: with the budget spent (by another
// service), connections and flows are refused as limit, before any dial.
func TestHostileSpectrumBudgetRefuses(t *testing.T) {
	ns := netns.New(t)
	b, err := fdlimit.New(fdlimit.Options{Limit: fdlimit.OpenNow() + 200, Accept: -1, Admin: -1, Dial: -1, CDN: 50, Other: 20})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{FDs: b, Dial: ns.Dial, Apps: []App{
		{Name: "t", Protocol: TCP, Edge: netip.MustParsePrefix("127.0.0.0/8"), Ports: Ports{First: 0, Last: 65535}, Origins: []Origin{{Host: "127.0.0.1", Port: 1}}},
		{Name: "u", Protocol: UDP, Edge: netip.MustParsePrefix("192.0.2.0/24"), Ports: Ports{First: 0, Last: 65535}, Origins: []Origin{{Host: "127.0.0.1", Port: 1}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Shutdown(t.Context())
	dials := 0
	p.dial = func(string, string, time.Duration) (net.Conn, error) { dials++; return nil, syscall.ECONNREFUSED }
	for b.Acquire(fdlimit.CDN, 1) {
	}
	p.handleTCP(acceptedPair(t))
	p.newFlow(flowKey{netip.MustParseAddrPort("127.0.0.1:5000"), netip.MustParseAddrPort("192.0.2.1:53")})
	if dials != 0 {
		t.Errorf("%d dials with the budget spent", dials)
	}
	if testutil.ToFloat64(p.RefusedCounter("t", "tcp", "limit")) != 1 || testutil.ToFloat64(p.RefusedCounter("u", "udp", "limit")) != 1 {
		t.Error("not refused as limit")
	}
}

// TestSpectrumPipesBounded: connections moving data at once share a
// bounded pool of splice pipes (the others copy through a buffer), every
// byte arrives in order, and when they end the descriptors are back in the
// budget but for the pipes kept for reuse.
func TestSpectrumPipesBounded(t *testing.T) {
	ns := netns.New(t)
	origin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer origin.Close()
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
	p, err := New(Options{MaxPipes: 2, Dial: ns.Dial, Apps: []App{
		{Name: "t", Protocol: TCP, Edge: netip.MustParsePrefix("127.0.0.0/8"), Ports: Ports{First: 0, Last: 65535}, Origins: []Origin{{Host: "127.0.0.1", Port: oport}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	defer p.Shutdown(t.Context())
	addr := fmt.Sprintf("127.0.0.1:%d", p.TCPListener().Addr().(*net.TCPAddr).Port)
	const conns, size = 6, 1 << 20
	errs := make(chan error, conns)
	var maxPipes atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := int64(p.Pipes()); n > maxPipes.Load() {
				maxPipes.Store(n)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	clients := make([]net.Conn, conns)
	for i := range clients {
		if clients[i], err = net.Dial("tcp", addr); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range clients {
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			data := make([]byte, size)
			r := rand.New(rand.NewPCG(uint64(i), 1))
			for j := range data {
				data[j] = byte(r.Uint32())
			}
			go func() { c.Write(data); c.(*net.TCPConn).CloseWrite() }()
			got, err := io.ReadAll(c)
			if err == nil && !bytes.Equal(got, data) {
				err = fmt.Errorf("connection %d: %d bytes back, not what was sent", i, len(got))
			}
			errs <- err
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if m := maxPipes.Load(); m > 2 || m == 0 {
		t.Errorf("pipes open at most %d, want 1 or 2 (MaxPipes)", m)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p.fds.Used() != 2*p.Pipes() {
		if time.Now().After(deadline) {
			t.Fatalf("budget: %d descriptors held after every connection ended, %d pipes kept", p.fds.Used(), p.Pipes())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
