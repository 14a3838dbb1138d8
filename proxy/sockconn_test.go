package proxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// sockPair accepts a sockConn from a loopback listener, and returns it with
// its peer.
func sockPair(t *testing.T) (*sockConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := ln.(*net.TCPListener).SyscallConn()
	var c *sockConn
	for end := time.Now().Add(2 * time.Second); c == nil; {
		var ok bool
		var aerr error
		rc.Control(func(fd uintptr) { c, ok, aerr = acceptSock(fd) })
		if aerr != nil || ok && c == nil {
			t.Fatalf("acceptSock: %v", aerr)
		}
		if time.Now().After(end) {
			t.Fatal("nothing to accept")
		}
		if c == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	if want := netip.MustParseAddrPort(ln.Addr().String()); c.edge != want || c.LocalAddr().String() != want.String() {
		t.Errorf("local address %v (%v), want %v", c.edge, c.LocalAddr(), want)
	}
	if want := netip.MustParseAddrPort(peer.LocalAddr().String()); c.client != want || c.RemoteAddr().String() != want.String() {
		t.Errorf("remote address %v (%v), want %v", c.client, c.RemoteAddr(), want)
	}
	return c, peer
}

// TestSockConn: a raw-accepted connection reads and writes without the
// poller while the socket is ready, goes to the poller at its first wait
// (and then reads what arrives later), and takes deadlines there; through
// a lazyConn, as the proxy uses it, too.
func TestSockConn(t *testing.T) {
	netns.New(t)
	t.Run("ready", func(t *testing.T) {
		c, peer := sockPair(t)
		peer.Write([]byte("ping"))
		time.Sleep(20 * time.Millisecond)
		b := make([]byte, 16)
		if n, err := c.Read(b); err != nil || string(b[:n]) != "ping" {
			t.Fatalf("read: %q, %v", b[:n], err)
		}
		if n, err := c.Write([]byte("pong")); n != 4 || err != nil {
			t.Fatalf("write: %d, %v", n, err)
		}
		peer.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := io.ReadFull(peer, b[:4]); err != nil || string(b[:n]) != "pong" {
			t.Fatalf("peer read: %q, %v", b[:n], err)
		}
		if c.file.Load() != nil {
			t.Error("a connection that never waited went to the poller")
		}
		if err := c.SetReadDeadline(time.Time{}); err != nil || c.file.Load() != nil {
			t.Errorf("clearing a deadline it does not have: %v, poller %v", err, c.file.Load() != nil)
		}
	})
	t.Run("wait", func(t *testing.T) {
		c, peer := sockPair(t)
		go func() { time.Sleep(100 * time.Millisecond); peer.Write([]byte("late")) }()
		b := make([]byte, 16)
		if n, err := c.Read(b); err != nil || string(b[:n]) != "late" {
			t.Fatalf("read: %q, %v", b[:n], err)
		}
		if c.file.Load() == nil {
			t.Error("a read that waited did not go to the poller")
		}
		peer.Close()
		if n, err := c.Read(b); n != 0 || err != io.EOF {
			t.Errorf("read after the peer closed: %d, %v; want io.EOF", n, err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		c, _ := sockPair(t)
		start := time.Now()
		c.SetReadDeadline(start.Add(100 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		if !isTimeout(err) {
			t.Fatalf("read: %v, want a timeout", err)
		}
		if took := time.Since(start); took < 100*time.Millisecond || took > time.Second {
			t.Errorf("cut after %v", took)
		}
	})
	t.Run("lazy", func(t *testing.T) {
		c, peer := sockPair(t)
		l := newLazyConn(c, c)
		peer.Write([]byte("abc"))
		time.Sleep(20 * time.Millisecond)
		l.SetDeadline(time.Now().Add(time.Second))
		b := make([]byte, 3)
		if _, err := io.ReadFull(l, b); err != nil || string(b) != "abc" {
			t.Fatalf("read: %q, %v", b, err)
		}
		if c.file.Load() != nil {
			t.Error("a lazyConn's ready read took the socket to the poller")
		}
		start := time.Now()
		l.SetReadDeadline(start.Add(100 * time.Millisecond))
		if _, err := l.Read(b); !isTimeout(err) {
			t.Fatalf("read that waits: %v, want a timeout", err)
		}
		if took := time.Since(start); took < 100*time.Millisecond || took > time.Second {
			t.Errorf("cut after %v", took)
		}
		big := make([]byte, 32<<20) // more than the buffers: the write waits for the peer
		go io.Copy(io.Discard, peer)
		if n, err := l.Write(big); n != len(big) || err != nil {
			t.Fatalf("write: %d, %v", n, err)
		}
	})
	t.Run("closewrite", func(t *testing.T) {
		c, peer := sockPair(t)
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		peer.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := peer.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("peer read after CloseWrite: %d, %v; want io.EOF", n, err)
		}
	})
	t.Run("linger", func(t *testing.T) {
		c, peer := sockPair(t)
		if err := c.SetLinger(0); err != nil {
			t.Fatal(err)
		}
		c.Close()
		peer.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := peer.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("peer read after SetLinger(0) and Close: %v, want a reset", err)
		}
	})
}

// TestSockConnClose: Close wakes a read waiting in the poller; later reads,
// writes and deadlines get net.ErrClosed; a second Close is an error; the
// descriptor goes back to the budget once.
func TestSockConnClose(t *testing.T) {
	netns.New(t)
	b, err := fdlimit.New(fdlimit.Options{Limit: fdlimit.OpenNow() + 100, Accept: -1, Admin: -1, Dial: 10, CDN: 10, Other: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, waited := range []bool{false, true} {
		c, _ := sockPair(t)
		if !b.Acquire(fdlimit.CDN, 1) {
			t.Fatal("budget refused")
		}
		c.fds = b
		if waited {
			errc := make(chan error, 1)
			go func() { _, err := c.Read(make([]byte, 1)); errc <- err }()
			time.Sleep(50 * time.Millisecond)
			c.Close()
			select {
			case err := <-errc:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("waiting read at Close: %v, want net.ErrClosed", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Close did not wake the waiting read")
			}
		} else {
			c.Close()
		}
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("read after Close: %v", err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("write after Close: %v", err)
		}
		if err := c.SetDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
			t.Errorf("deadline after Close: %v", err)
		}
		if err := c.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close: %v", err)
		}
		if n := b.Used(); n != 0 {
			t.Errorf("waited %v: %d descriptors held after Close, want 0", waited, n)
		}
	}
}

// TestSockConnCloseRace: Close from another goroutine while reads and
// writes go on, on the raw path and in the poller, many times over (the
// race detector watches): every call after it fails, none hangs, and the
// descriptor goes back to the budget once.
func TestSockConnCloseRace(t *testing.T) {
	netns.New(t)
	b, err := fdlimit.New(fdlimit.Options{Limit: fdlimit.OpenNow() + 100, Accept: -1, Admin: -1, Dial: 10, CDN: 10, Other: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		c, peer := sockPair(t)
		b.Acquire(fdlimit.CDN, 1)
		c.fds = b
		go io.Copy(io.Discard, peer)
		go func() {
			for range 100 {
				if _, err := peer.Write([]byte("0123456789")); err != nil {
					return
				}
			}
		}()
		var wg sync.WaitGroup
		wg.Go(func() {
			buf := make([]byte, 7)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		})
		wg.Go(func() {
			for {
				if _, err := c.Write([]byte("abcdefgh")); err != nil {
					return
				}
			}
		})
		time.Sleep(time.Duration(i%5) * time.Millisecond)
		c.Close()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: a read or write did not end after Close", i)
		}
		peer.Close()
	}
	if n := b.Used(); n != 0 {
		t.Errorf("%d descriptors held after every Close, want 0", n)
	}
}
