package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/internal/netaddr"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

func netaddrOf(a net.Addr) netip.AddrPort { return netaddr.AddrPort(a) }

// idleGet makes one keep-alive request on cl and reads its response.
func idleGet(t *testing.T, cl net.Conn, br *bufio.Reader) *http.Response {
	t.Helper()
	cl.SetDeadline(time.Now().Add(5 * time.Second))
	defer cl.SetDeadline(time.Time{})
	if _, err := fmt.Fprint(cl, "GET /len/3 HTTP/1.1\r\nHost: a.example\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "xxx" {
		t.Fatalf("body %q, %v", b, err)
	}
	return resp
}

// waitIdle polls cond for up to 3s.
func waitIdle(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(3 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// expectClosed reads from cl until the proxy closes it, within 2s.
func expectClosed(t *testing.T, cl net.Conn, br *bufio.Reader) {
	t.Helper()
	cl.SetReadDeadline(time.Now().Add(2 * time.Second))
	if b, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("read %q, %v; want the proxy's close", b, err)
	}
}

// TestH1IdleParks: keep-alive connections idle past parkAfter are parked,
// their goroutines gone and their buffers returned; bytes arriving on one
// bring it back to a goroutine, which answers them; it parks again after.
// Parked, they still count as open connections.
func TestH1IdleParks(t *testing.T) {
	ns := netns.New(t)
	og := startH1Origin(t)
	p := newTestProxy(t, ns, og.addr, Limits{IdleTimeout: 5 * time.Second})
	srv := serveH1Test(t, p)
	const n = 20
	cls := make([]net.Conn, n)
	brs := make([]*bufio.Reader, n)
	for i := range cls {
		cls[i], _ = srv.dial(t)
		brs[i] = bufio.NewReader(cls[i])
		idleGet(t, cls[i], brs[i])
	}
	busy := runtime.NumGoroutine()
	waitIdle(t, "the connections to park", func() bool { return p.idle.parked.Load() == n })
	// The goroutines end as their connections park (the set's own is one).
	waitIdle(t, "the goroutines to end", func() bool { return runtime.NumGoroutine() <= busy-n+2 })
	if got := p.OpenConnections(); got != n {
		t.Errorf("open connections while parked: %d, want %d", got, n)
	}
	if got := len(p.h1conns.all()); got != n {
		t.Errorf("engine's connections while parked: %d, want %d", got, n)
	}
	for i := range cls {
		resp := idleGet(t, cls[i], brs[i])
		if resp.Close {
			t.Errorf("connection %d: the answer after parking closes it", i)
		}
	}
	if got := p.idle.parked.Load(); got == n {
		t.Errorf("still %d parked after each was served", got)
	}
	waitIdle(t, "the connections to park again", func() bool { return p.idle.parked.Load() == n })
	// A client that closes a parked connection ends it.
	for _, cl := range cls {
		cl.Close()
	}
	waitIdle(t, "the connections to end", func() bool { return p.OpenConnections() == 0 && p.idle.parked.Load() == 0 })
	if got := len(p.h1conns.all()); got != 0 {
		t.Errorf("engine's connections after the clients closed: %d", got)
	}
}

// TestH1ParkedIdleTimeout: a parked connection is closed at its idle
// timeout (within the clock's step and some scheduling), not before, and
// ends.
func TestH1ParkedIdleTimeout(t *testing.T) {
	ns := netns.New(t)
	og := startH1Origin(t)
	const idle = 700 * time.Millisecond
	const slack = 300 * time.Millisecond
	p := newTestProxy(t, ns, og.addr, Limits{IdleTimeout: idle})
	srv := serveH1Test(t, p)
	cl, _ := srv.dial(t)
	br := bufio.NewReader(cl)
	idleGet(t, cl, br)
	start := time.Now()
	waitIdle(t, "the connection to park", func() bool { return p.idle.parked.Load() == 1 })
	expectClosed(t, cl, br)
	if took := time.Since(start); took < idle-clockStep || took > idle+slack {
		t.Errorf("closed after %v idle, want %v", took, idle)
	}
	waitIdle(t, "the connection to end", func() bool { return p.OpenConnections() == 0 && p.idle.parked.Load() == 0 })
}

// TestH1ParkedLeave: a parked connection on an address that left the cdn
// closes when it is told to go (Reowned), and one whose request arrived as
// it was told is answered, with Connection: close; at shutdown parked
// connections close at once.
func TestH1ParkedLeave(t *testing.T) {
	ns := netns.New(t)
	og := startH1Origin(t)
	p := newTestProxy(t, ns, og.addr, Limits{IdleTimeout: 5 * time.Second})
	var moved atomic.Bool
	p.ownsTCP = func(netip.AddrPort) bool { return !moved.Load() }
	srv := serveH1Test(t, p)
	dial := func() (net.Conn, *bufio.Reader) {
		cl, _ := srv.dial(t)
		br := bufio.NewReader(cl)
		idleGet(t, cl, br)
		return cl, br
	}
	a, abr := dial()
	b, bbr := dial()
	waitIdle(t, "the connections to park", func() bool { return p.idle.parked.Load() == 2 })
	// b's request is on its way as the move tells it to go: the set does
	// not see it come (its event disarmed), the move does.
	for _, hc := range p.h1conns.all() {
		if hc.client == netaddrOf(b.LocalAddr()) {
			p.idle.mu.Lock()
			if err := unix.EpollCtl(p.idle.epfd, unix.EPOLL_CTL_MOD, hc.parkFD, &unix.EpollEvent{}); err != nil {
				t.Fatal(err)
			}
			p.idle.mu.Unlock()
		}
	}
	fmt.Fprint(b, "GET /len/3 HTTP/1.1\r\nHost: a.example\r\n\r\n")
	time.Sleep(20 * time.Millisecond)
	moved.Store(true)
	p.leaveUnowned()
	expectClosed(t, a, abr)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bbr, nil)
	if err != nil {
		t.Fatalf("the request sent as it was told to go: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("the request sent as it was told to go: %d, close %v; want 200 and close", resp.StatusCode, resp.Close)
	}
	expectClosed(t, b, bbr)
	waitIdle(t, "the moved connections to end", func() bool { return p.OpenConnections() == 0 })

	// Shutdown: parked connections close at once, and the drain ends.
	moved.Store(false)
	c, cbr := dial()
	d, dbr := dial()
	waitIdle(t, "the connections to park", func() bool { return p.idle.parked.Load() == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := p.shutdownH1(ctx); err != nil {
		t.Fatalf("drain: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the drain of parked connections took %v", took)
	}
	expectClosed(t, c, cbr)
	expectClosed(t, d, dbr)
	if got := p.idle.parked.Load(); got != 0 {
		t.Errorf("%d parked after the drain", got)
	}
}

// TestH1ParkedKill: CloseUnowned closes a parked connection on an
// address that left the cdn now, and ends it.
func TestH1ParkedKill(t *testing.T) {
	ns := netns.New(t)
	og := startH1Origin(t)
	p := newTestProxy(t, ns, og.addr, Limits{IdleTimeout: 5 * time.Second})
	var moved atomic.Bool
	p.ownsTCP = func(netip.AddrPort) bool { return !moved.Load() }
	srv := serveH1Test(t, p)
	cl, _ := srv.dial(t)
	br := bufio.NewReader(cl)
	idleGet(t, cl, br)
	waitIdle(t, "the connection to park", func() bool { return p.idle.parked.Load() == 1 })
	moved.Store(true)
	if got := p.unowned(); got != 1 {
		t.Errorf("unowned: %d, want the parked one", got)
	}
	if got := p.CloseUnowned(); got != 1 {
		t.Errorf("CloseUnowned: %d, want 1", got)
	}
	expectClosed(t, cl, br)
	waitIdle(t, "the connection to end", func() bool { return p.OpenConnections() == 0 && p.idle.parked.Load() == 0 })
}

// TestAcceptOnServingGoroutine: connections are served on the goroutine
// that accepted them; one that holds its goroutine (a client that sends
// nothing) leaves another accepting, and short connections one after
// another take no new goroutine each.
func TestAcceptOnServingGoroutine(t *testing.T) {
	ns := netns.New(t)
	p, addr := startAccepting(t, ns, Limits{ReadHeaderTimeout: 5 * time.Second})
	// Silent clients, each holding the goroutine that accepted it.
	for range 8 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	waitIdle(t, "the silent connections to be accepted", func() bool { return p.OpenConnections() == 8 })
	one := func() {
		t.Helper()
		if status, err := requestClose(addr); err != nil || status != 200 {
			t.Fatalf("a connection after the silent ones: %d %v", status, err)
		}
	}
	for range 5 {
		one()
	}
	base := runtime.NumGoroutine()
	for range 100 {
		one()
	}
	if got := runtime.NumGoroutine(); got > base+maxIdleAcceptors {
		t.Errorf("goroutines after 100 short connections: %d, from %d", got, base)
	}
	if got := p.acceptors.Load(); got < 1 || got > maxIdleAcceptors {
		t.Errorf("%d goroutines waiting to accept, want 1 to %d", got, maxIdleAcceptors)
	}
}

// TestH1ParkChurn: requests that come as their connections park, or just
// after, are all answered, and every connection ends when its client
// closes it (the race detector watches the hand-overs).
func TestH1ParkChurn(t *testing.T) {
	ns := netns.New(t)
	og := startH1Origin(t)
	p := newTestProxy(t, ns, og.addr, Limits{IdleTimeout: 5 * time.Second})
	srv := serveH1Test(t, p)
	const clients, rounds = 8, 10
	errs := make(chan error, clients)
	for i := range clients {
		cl, _ := srv.dial(t)
		go func() {
			br := bufio.NewReader(cl)
			for r := range rounds {
				// Around parkAfter, either side of it.
				time.Sleep(parkAfter - 30*time.Millisecond + time.Duration((i*7+r*13)%60)*time.Millisecond)
				cl.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := fmt.Fprint(cl, "GET /len/3 HTTP/1.1\r\nHost: a.example\r\n\r\n"); err != nil {
					errs <- err
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					errs <- fmt.Errorf("client %d, round %d: %w", i, r, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
			}
			cl.Close()
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	waitIdle(t, "the connections to end", func() bool { return p.OpenConnections() == 0 && p.idle.parked.Load() == 0 })
}

// startAccepting starts a proxy with its own accept loop and descriptor
// budget, cleartext on its socket's port, in ns (the test's namespace).
func startAccepting(t *testing.T, ns *netns.NS, l Limits) (*Proxy, string) {
	t.Helper()
	og := startH1Origin(t)
	p := newTestProxy(t, ns, og.addr, l)
	return p, startTestAccept(t, p)
}

// startTestAccept serves p's HTTP/1.1 on the port of its socket, reached
// on 127.0.0.1 (no dispatcher), and returns that address.
func startTestAccept(t *testing.T, p *Proxy) string {
	t.Helper()
	port := uint16(p.tcp.Addr().(*net.TCPAddr).Port)
	cfg := p.Config()
	cfg.HTTPPorts = []uint16{port}
	if err := p.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// TestH1ParkedFDBudget: a parked connection keeps its descriptor in the
// budget, and gives it back when it ends.
func TestH1ParkedFDBudget(t *testing.T) {
	ns := netns.New(t)
	p, addr := startAccepting(t, ns, Limits{IdleTimeout: 5 * time.Second})
	const n = 5
	var cls []net.Conn
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		idleGet(t, c, bufio.NewReader(c))
		cls = append(cls, c)
	}
	waitIdle(t, "the connections to park", func() bool { return p.idle.parked.Load() == n })
	parked := p.fds.Used()
	for _, c := range cls {
		c.Close()
	}
	waitIdle(t, "the parked connections to end", func() bool { return p.OpenConnections() == 0 })
	waitIdle(t, "their descriptors back", func() bool { return parked-p.fds.Used() == n })
}
