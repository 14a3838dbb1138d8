package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// h1Origin serves, on 127.0.0.1 of the test's namespace: /len/N a body of
// N bytes with its Content-Length, /chunked/N the same without one
// (chunked), /slow a chunked body whose second half waits for release,
// /head with no body (204).
type h1Origin struct {
	addr    string
	release chan struct{}
}

func startH1Origin(t *testing.T) *h1Origin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &h1Origin{addr: ln.Addr().String(), release: make(chan struct{})}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
		switch parts[0] {
		case "len", "chunked":
			n, _ := strconv.Atoi(parts[1])
			if parts[0] == "len" {
				w.Header().Set("Content-Length", strconv.Itoa(n))
			} else {
				w.(http.Flusher).Flush() // headers out: chunked
			}
			w.Write(bytes.Repeat([]byte{'x'}, n))
		case "slow":
			w.Write([]byte("first half;"))
			w.(http.Flusher).Flush()
			select {
			case <-o.release:
			case <-time.After(5 * time.Second):
			}
			w.Write([]byte("second half"))
		case "nobody":
			w.WriteHeader(http.StatusNoContent)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return o
}

// newTestProxy makes a proxy in ns in front of origin.
func newTestProxy(t *testing.T, ns *netns.NS, origin string, l Limits) *Proxy {
	t.Helper()
	p, err := New(Options{Config: Config{Sites: []Site{{Hosts: []string{"a.example"}, Origins: origins("http://" + origin)}}}, Limits: l, Dial: ns.Dial})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.tcp.Close() })
	return p
}

// TestOriginBodyWholeOrStreamed: a body with a known length up to
// smallBody is read whole with its head; one byte more, or an unknown
// length, streams; either way the bytes are the origin's and the
// connection goes back to the pool.
func TestOriginBodyWholeOrStreamed(t *testing.T) {
	ns := netns.New(t)
	og := startH1Origin(t)
	p := newTestProxy(t, ns, og.addr, Limits{})
	s := p.state.Load().router.lookup("a.example", netip.Addr{})
	rt := s.route("/")
	o := rt.origins[0].o
	for _, c := range []struct {
		path     string
		n        int
		streamed bool
	}{
		{"/len/12", 12, false},
		{"/len/0", 0, false},
		{fmt.Sprintf("/len/%d", smallBody), smallBody, false},
		{fmt.Sprintf("/len/%d", smallBody+1), smallBody + 1, true},
		{"/chunked/12", 12, true},
		{"/nobody", 0, false},
		{"/len/12", 12, false},
	} {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI(c.path)
		req.Header.SetHost("a.example")
		if err := p.forward(s, rt, req, resp, &record{start: time.Now(), id: p.ids.next()}, nil); err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		if got := resp.IsBodyStream(); got != c.streamed {
			t.Errorf("%s: streamed %v, want %v", c.path, got, c.streamed)
		}
		var body []byte
		if bs := resp.BodyStream(); bs != nil {
			var err error
			if body, err = io.ReadAll(bs); err != nil {
				t.Errorf("%s: reading the stream: %v", c.path, err)
			}
		} else {
			body = resp.Body()
		}
		if len(body) != c.n || bytes.Count(body, []byte{'x'}) != c.n {
			t.Errorf("%s: %d bytes, want %d", c.path, len(body), c.n)
		}
		resp.CloseBodyStream()
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	if n := o.connects.Load(); n != 1 {
		t.Errorf("%d origin connections for requests in a row, want 1 (each went back to the pool)", n)
	}

	// A stream closed before its end takes its connection with it.
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.SetRequestURI(fmt.Sprintf("/len/%d", 4*smallBody))
	req.Header.SetHost("a.example")
	if err := p.forward(s, rt, req, resp, &record{start: time.Now(), id: p.ids.next()}, nil); err != nil {
		t.Fatal(err)
	}
	resp.BodyStream().Read(make([]byte, 10))
	resp.CloseBodyStream()
	req.SetRequestURI("/len/5")
	if err := p.forward(s, rt, req, resp, &record{start: time.Now(), id: p.ids.next()}, nil); err != nil {
		t.Fatal(err)
	}
	if string(resp.Body()) != "xxxxx" {
		t.Errorf("after an abandoned stream: body %q", resp.Body())
	}
	if n := o.connects.Load(); n != 2 {
		t.Errorf("%d origin connections, want 2: an abandoned stream's connection is not reused", n)
	}
}

// countConn counts the writes to a client connection.
type countConn struct {
	*lazyConn
	writes atomic.Int64
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.lazyConn.Write(p)
}

// countListener hands p's HTTP/1.1 engine its connections as in
// production, lazy, counted, and passes each on to the test.
type countListener struct {
	net.Listener
	conns chan *countConn
}

func (l *countListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	cc := &countConn{lazyConn: newLazyConn(tc, tc)}
	l.conns <- cc
	return cc, nil
}

// serveH1Test serves p's HTTP/1.1 engine on 127.0.0.1 of the test's
// namespace.
func serveH1Test(t *testing.T, p *Proxy) *countListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &countListener{Listener: ln, conns: make(chan *countConn, 1)}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serveH1Conn(c, false)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return l
}

// dial returns a new client connection and the server's side of it.
func (l *countListener) dial(t *testing.T) (net.Conn, *countConn) {
	t.Helper()
	cl, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl, <-l.conns
}

// TestH1SmallResponseOneWrite: a response whose origin body is small goes
// out in one write, head and body; a large or chunked one still streams:
// its first bytes reach the client before the origin sent its last.
func TestH1SmallResponseOneWrite(t *testing.T) {
	ns := netns.New(t)
	og := startH1Origin(t)
	p := newTestProxy(t, ns, og.addr, Limits{})
	cl, cc := serveH1Test(t, p).dial(t)
	br := bufio.NewReader(cl)
	get := func(path string) *http.Response {
		t.Helper()
		fmt.Fprintf(cl, "GET %s HTTP/1.1\r\nHost: a.example\r\n\r\n", path)
		cl.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return resp
	}
	for i, path := range []string{"/len/12", "/len/12", fmt.Sprintf("/len/%d", 2000), fmt.Sprintf("/len/%d", smallBody)} {
		before := cc.writes.Load()
		resp := get(path)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || len(body) == 0 {
			t.Fatalf("%s: %d, %d bytes", path, resp.StatusCode, len(body))
		}
		if n := cc.writes.Load() - before; n != 1 {
			t.Errorf("response %d (%s): %d writes, want 1", i, path, n)
		}
	}

	// Streams: the first half arrives while the origin holds the second.
	resp := get("/slow")
	first := make([]byte, len("first half;"))
	got := make(chan error, 1)
	go func() { _, err := io.ReadFull(resp.Body, first); got <- err }()
	select {
	case err := <-got:
		if err != nil || string(first) != "first half;" {
			t.Fatalf("first half: %q, %v", first, err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the first half of a chunked body did not reach the client before its second half was sent: not streamed")
	}
	close(og.release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second half" {
		t.Errorf("second half: %q, %v", rest, err)
	}
	resp = get(fmt.Sprintf("/len/%d", smallBody+1))
	if n, err := io.Copy(io.Discard, resp.Body); n != smallBody+1 || err != nil {
		t.Errorf("large body: %d bytes, %v", n, err)
	}
}

// TestH1StalledClientCut: with the deadlines lazy and computed from the
// coarse clock, a client that stalls in its request head is still
// answered 408 within the head timeout plus the clock's step (from the
// connection's start for the first request, from the head's first byte
// for later ones), and an idle keep-alive connection is closed within the
// idle timeout plus the step, not before.
func TestH1StalledClientCut(t *testing.T) {
	ns := netns.New(t)
	og := startH1Origin(t)
	const head, idle = 400 * time.Millisecond, 500 * time.Millisecond
	const slack = 250 * time.Millisecond // scheduling, under -race on a busy machine
	p := newTestProxy(t, ns, og.addr, Limits{ReadHeaderTimeout: head, IdleTimeout: idle})
	srv := serveH1Test(t, p)

	cl, _ := srv.dial(t)
	br := bufio.NewReader(cl)
	// Keep-alive requests move the deadlines later each time; none cuts.
	for range 5 {
		fmt.Fprint(cl, "GET /len/3 HTTP/1.1\r\nHost: a.example\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		time.Sleep(head / 2)
	}
	start := time.Now()
	fmt.Fprint(cl, "GET /len/3 HTTP/1.1\r\nHost: a.exa") // and nothing more
	cl.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("stalled head: %v after %v", err, took)
	}
	if resp.StatusCode != 408 {
		t.Errorf("stalled head: %d, want 408", resp.StatusCode)
	}
	if took < head || took > head+clockStep+slack {
		t.Errorf("stalled head cut after %v, want between %v and %v", took, head, head+clockStep+slack)
	}

	// The first request's head: from the connection's start.
	start = time.Now()
	cl, _ = srv.dial(t)
	br = bufio.NewReader(cl)
	time.Sleep(3 * head / 4) // from its first byte, the cut would come after 7/4 head
	fmt.Fprint(cl, "GET /len/3 HTTP/1.1\r\nHost: a.exa")
	cl.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err = http.ReadResponse(br, nil)
	took = time.Since(start)
	if err != nil || resp.StatusCode != 408 {
		t.Fatalf("stalled first head: %v, %v after %v; want 408", resp, err, took)
	}
	if took < head || took > head+clockStep+slack {
		t.Errorf("stalled first head cut %v after the connection opened, want between %v and %v", took, head, head+clockStep+slack)
	}

	cl, _ = srv.dial(t)
	br = bufio.NewReader(cl)
	fmt.Fprint(cl, "GET /len/3 HTTP/1.1\r\nHost: a.example\r\n\r\n")
	if resp, err = http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	start = time.Now()
	cl.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = br.ReadByte()
	took = time.Since(start)
	if !errors.Is(err, io.EOF) {
		t.Errorf("idle connection: %v, want EOF (closed)", err)
	}
	if took < idle || took > idle+clockStep+slack {
		t.Errorf("idle connection closed after %v, want between %v and %v", took, idle, idle+clockStep+slack)
	}
}

// tcpPair is a connected pair on 127.0.0.1, the first end lazy.
func tcpPair(t *testing.T) (*lazyConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	tc := a.(*net.TCPConn)
	return newLazyConn(tc, tc), b
}

// TestLazyConnDeadlines: a deadline moved later does not reach the socket
// and still holds (the read resumes past the socket's); one moved earlier
// holds; a cleared one lets the read wait; one in the past cuts a read in
// flight; reads and writes the socket is ready for arm no timer; a write
// blocked by a client that does not read is cut at its deadline, not the
// socket's.
func TestLazyConnDeadlines(t *testing.T) {
	netns.New(t)
	const slack = 200 * time.Millisecond
	within := func(t *testing.T, what string, took, lo, hi time.Duration) {
		t.Helper()
		if took < lo || took > hi+slack {
			t.Errorf("%s after %v, want between %v and %v", what, took, lo, hi)
		}
	}
	t.Run("later", func(t *testing.T) {
		c, _ := tcpPair(t)
		start := time.Now()
		c.SetReadDeadline(start.Add(30 * time.Millisecond))
		socket := c.rd.socket.Load()
		for i := range 100 { // a keep-alive connection's requests
			c.SetReadDeadline(start.Add(300*time.Millisecond + time.Duration(i)))
		}
		if c.rd.socket.Load() != socket {
			t.Error("a deadline moved later reached the socket")
		}
		_, err := c.Read(make([]byte, 1))
		if !isTimeout(err) {
			t.Fatalf("read: %v, want a timeout", err)
		}
		within(t, "read cut", time.Since(start), 300*time.Millisecond, 300*time.Millisecond)
	})
	t.Run("earlier", func(t *testing.T) {
		c, _ := tcpPair(t)
		start := time.Now()
		c.SetReadDeadline(start.Add(5 * time.Second))
		c.SetReadDeadline(start.Add(50 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		if !isTimeout(err) {
			t.Fatalf("read: %v, want a timeout", err)
		}
		within(t, "read cut", time.Since(start), 50*time.Millisecond, 50*time.Millisecond)
	})
	t.Run("cleared", func(t *testing.T) {
		c, peer := tcpPair(t)
		c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		c.SetReadDeadline(time.Time{})
		go func() { time.Sleep(150 * time.Millisecond); peer.Write([]byte("y")) }()
		b := make([]byte, 1)
		if n, err := c.Read(b); n != 1 || err != nil {
			t.Fatalf("read: %d, %v; want the byte sent after the cleared deadline", n, err)
		}
	})
	t.Run("past", func(t *testing.T) {
		c, _ := tcpPair(t)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		errc := make(chan error, 1)
		go func() { _, err := c.Read(make([]byte, 1)); errc <- err }()
		time.Sleep(50 * time.Millisecond)
		start := time.Now()
		c.SetDeadline(time.Unix(1, 0))
		select {
		case err := <-errc:
			if !isTimeout(err) {
				t.Errorf("read: %v, want a timeout", err)
			}
			within(t, "read cut", time.Since(start), 0, 0)
		case <-time.After(2 * time.Second):
			t.Fatal("a deadline in the past did not cut the read in flight")
		}
	})
	t.Run("ready", func(t *testing.T) {
		// A read and a write the socket is ready for arm no timer, even
		// under a deadline that has passed; a read that then waits is cut
		// at once.
		c, peer := tcpPair(t)
		peer.Write([]byte("ab"))
		time.Sleep(20 * time.Millisecond)
		c.SetDeadline(time.Now().Add(-time.Second))
		b := make([]byte, 1)
		if n, err := c.Read(b); n != 1 || err != nil {
			t.Fatalf("read of a ready socket: %d, %v", n, err)
		}
		if n, err := c.Write([]byte("x")); n != 1 || err != nil {
			t.Fatalf("write to a ready socket: %d, %v", n, err)
		}
		if s, w := c.rd.socket.Load(), c.wd.socket.Load(); s != 0 || w != 0 {
			t.Errorf("the socket got deadlines (%d, %d) for a read and a write that did not wait", s, w)
		}
		c.Read(b) // the second byte
		start := time.Now()
		if _, err := c.Read(b); !isTimeout(err) {
			t.Fatalf("read that waits under a past deadline: %v, want a timeout", err)
		}
		within(t, "read cut", time.Since(start), 0, 0)
		if c.rd.socket.Load() == 0 {
			t.Error("a read that waited gave the socket no deadline")
		}
	})
	t.Run("write", func(t *testing.T) {
		c, _ := tcpPair(t) // the peer never reads
		start := time.Now()
		c.SetWriteDeadline(start.Add(30 * time.Millisecond))
		c.SetWriteDeadline(start.Add(300 * time.Millisecond))
		n, err := c.Write(make([]byte, 64<<20))
		if !isTimeout(err) {
			t.Fatalf("write: %d, %v; want a timeout", n, err)
		}
		if n == 0 {
			t.Error("write: nothing written before the timeout")
		}
		within(t, "write cut", time.Since(start), 300*time.Millisecond, 300*time.Millisecond)
	})
}

// TestPushDeadlineCoarse: a gap deadline pushed from the coarse clock cuts
// a stalled read after its timeout, never before, and at most the clock's
// step after; the coarse clock is never more than about a step behind.
func TestPushDeadlineCoarse(t *testing.T) {
	netns.New(t)
	if d := time.Since(coarseNow()); d < -time.Millisecond || d > clockStep+50*time.Millisecond {
		t.Errorf("coarse clock %v behind", d)
	}
	c, _ := tcpPair(t)
	const gap = 200 * time.Millisecond
	start := time.Now()
	pushDeadline(gap, c.SetReadDeadline)
	_, err := c.Read(make([]byte, 1))
	took := time.Since(start)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v", err)
	}
	if took < gap || took > gap+clockStep+200*time.Millisecond {
		t.Errorf("stalled read cut after %v, want between %v and %v", took, gap, gap+clockStep)
	}
}

// TestRawIO: a lazyConn's raw reads and writes behave as net's: the bytes
// both ways, whole when a write is larger than the socket's buffer, io.EOF
// once the peer has closed, an *net.OpError once the connection is reset
// or closed here.
func TestRawIO(t *testing.T) {
	netns.New(t)
	c, peer := tcpPair(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB: many waits for the peer
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big)))); got <- b }()
	if n, err := c.Write(big); n != len(big) || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("the peer read %d bytes, not what was written", len(b))
	}
	peer.Write([]byte("pong"))
	b := make([]byte, 16)
	if n, err := io.ReadFull(c, b[:4]); n != 4 || err != nil || string(b[:4]) != "pong" {
		t.Fatalf("read: %q, %v", b[:n], err)
	}
	peer.Close()
	if n, err := c.Read(b); n != 0 || err != io.EOF {
		t.Errorf("read after the peer closed: %d, %v; want io.EOF", n, err)
	}
	var oe *net.OpError
	if _, err := c.Write([]byte("x")); err == nil {
		// The first write after the peer's close may still be taken.
		time.Sleep(50 * time.Millisecond)
		_, err = c.Write([]byte("x"))
		if !errors.As(err, &oe) {
			t.Errorf("write to a reset connection: %v, want a *net.OpError", err)
		}
	}
	c.Close()
	if _, err := c.Read(b); !errors.As(err, &oe) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("read of a closed connection: %v, want a *net.OpError for net.ErrClosed", err)
	}
}
