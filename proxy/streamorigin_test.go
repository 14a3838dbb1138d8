package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp/fasthttputil"
)

// rawOrigin is an HTTP/1.1 origin that answers each path with bytes of its
// own (rawAnswers): framings and heads fasthttp's server would not make.
type rawOrigin struct {
	conns atomic.Int64 // connections accepted
	mu    sync.Mutex
	ids   []string // the X-Request-Id of each request
}

// rawAnswers are the origin's answers by path; "" after the head closes
// the connection once the answer is written.
var rawAnswers = map[string]string{
	"/interim": "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	"/hop": "HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n" +
		"X-Request-Id: spoofed\r\nX_Request_Id: spoofed\r\nProxy-Connection: x\r\nX-Kept: yes\r\nServer: originsrv\r\n" +
		"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 3\r\n\r\nhop",
	"/chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
		"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n",
	"/big":   "HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + strings.Repeat("b", 200000),
	"/head":  "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/x-head\r\n\r\n",
	"/304":   "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
	"/204":   "HTTP/1.1 204 No Content\r\nX-Empty: 1\r\n\r\n",
	"/close": "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + strings.Repeat("c", 100000),
	"/both":  "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"/short": "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
}

func (o *rawOrigin) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		o.conns.Add(1)
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				method, target, _ := strings.Cut(line, " ")
				target, _, _ = strings.Cut(target, " ")
				cl := 0
				for {
					h, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if h == "\r\n" {
						break
					}
					k, v, _ := strings.Cut(strings.TrimSpace(h), ": ")
					switch strings.ToLower(k) {
					case "x-request-id":
						o.mu.Lock()
						o.ids = append(o.ids, v)
						o.mu.Unlock()
					case "content-length":
						fmt.Sscan(v, &cl)
					}
				}
				io.CopyN(io.Discard, br, int64(cl))
				ans, ok := rawAnswers[target]
				if !ok {
					ans = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s %s", len(method)+1+len(target), method, target)
				}
				if method == "HEAD" && target != "/head" {
					ans = ans[:strings.Index(ans, "\r\n\r\n")+4]
				}
				if _, err := io.WriteString(c, ans); err != nil {
					return
				}
				switch target {
				case "/close", "/short", "/both":
					return
				case "/stale":
					// Announced keep-alive, then closed while idle: the
					// proxy's next request on it must go on a fresh one.
					time.Sleep(20 * time.Millisecond)
					return
				}
			}
		}()
	}
}

// streamCase is one exchange through the proxy and what the client must
// get.
type streamCase struct {
	method, path string
	status       int
	body         string
	check        func(h http.Header) string // "" when the headers are right
}

var streamCases = []streamCase{
	{"GET", "/interim", 200, "ok", nil},
	{"GET", "/hop", 200, "hop", func(h http.Header) string {
		for _, k := range []string{"X-Secret", "Keep-Alive", "Proxy-Connection", "X_request_id", "Connection"} {
			if h.Get(k) != "" {
				return k + " was forwarded"
			}
		}
		if h.Get("X-Kept") != "yes" || h.Get("Server") != "originsrv" || len(h.Values("Set-Cookie")) != 2 {
			return "origin headers lost"
		}
		if id := h.Get("X-Request-Id"); len(id) != reqIDLen || len(h.Values("X-Request-Id")) != 1 {
			return "X-Request-Id " + strings.Join(h.Values("X-Request-Id"), ",")
		}
		if h.Get("Content-Length") != "3" || h.Get("Date") == "" {
			return "no Content-Length 3 or no Date"
		}
		return ""
	}},
	{"GET", "/chunked", 200, "hello world", func(h http.Header) string {
		if h.Get("Trailer") != "" || h.Get("X-Sum") != "" {
			return "trailer forwarded"
		}
		return ""
	}},
	{"GET", "/big", 200, strings.Repeat("b", 200000), nil},
	{"HEAD", "/head", 200, "", func(h http.Header) string {
		if h.Get("Content-Length") != "1234" || h.Get("Content-Type") != "text/x-head" {
			return "HEAD's Content-Length " + h.Get("Content-Length")
		}
		return ""
	}},
	{"GET", "/304", 304, "", func(h http.Header) string {
		if h.Get("Etag") != `"x"` {
			return "no ETag"
		}
		return ""
	}},
	{"GET", "/204", 204, "", nil},
	{"POST", "/post", 200, "POST /post", nil},
	{"GET", "/stale", 200, "GET /stale", nil},
	{"GET", "/after-stale", 200, "GET /after-stale", nil},
	{"GET", "/close", 200, strings.Repeat("c", 100000), nil},
	{"GET", "/both", 502, "", nil},
	{"GET", "/short", 502, "", nil},
	{"GET", "/last", 200, "GET /last", nil},
}

// runStreamCases runs the cases in order with do, and checks that the
// origin connection was reused where it may be: one for every exchange up
// to /stale, which the origin closed (the next exchange found it stale and
// went on a fresh one), then one more after each closing answer.
func runStreamCases(t *testing.T, o *rawOrigin, do func(method, path string) (int, http.Header, string, error)) {
	for _, c := range streamCases {
		status, h, body, err := do(c.method, c.path)
		if err != nil {
			t.Errorf("%s %s: %v", c.method, c.path, err)
			continue
		}
		if status != c.status || c.status < 500 && body != c.body {
			t.Errorf("%s %s: %d %.40q, want %d %.40q", c.method, c.path, status, body, c.status, c.body)
			continue
		}
		if c.check != nil {
			if why := c.check(h); why != "" {
				t.Errorf("%s %s: %s (%v)", c.method, c.path, why, h)
			}
		}
	}
	// /stale closed one, /close, /both and /short one each.
	if n := o.conns.Load(); n != 5 {
		t.Errorf("%d origin connections, want 5 (one reused until each close)", n)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	seen := map[string]bool{}
	for _, id := range o.ids {
		if seen[id] {
			t.Errorf("request id %s sent twice", id)
		}
		seen[id] = true
	}
}

func doHTTP(rt http.RoundTripper, base string) func(method, path string) (int, http.Header, string, error) {
	return func(method, path string) (int, http.Header, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader("some body")
		}
		req, _ := http.NewRequestWithContext(ctx, method, base+path, body)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			return 0, nil, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil && resp.StatusCode < 500 {
			return 0, nil, "", err
		}
		return resp.StatusCode, resp.Header, string(b), nil
	}
}

// TestH2OriginExchange: HTTP/2 requests to an HTTP/1.1 origin through the
// engine's exchange: interim responses skipped, hop-by-hop and
// Connection-named headers dropped, the origin's X-Request-Id replaced,
// chunked, large, HEAD, 304, 204 and close-delimited bodies, a stale pooled
// connection retried on a fresh one, bad framings answered 502, and the
// origin connection reused throughout.
func TestH2OriginExchange(t *testing.T) {
	f := newH2Fixture(t, Limits{}, echoOrigin)
	o := &rawOrigin{}
	ln := fasthttputil.NewInmemoryListener()
	defer ln.Close()
	go o.serve(ln)
	dialIdle(f, ln)
	runStreamCases(t, o, doHTTP(f.client().Transport, "http://a.example"))
	waitStreams(t, f.p)
}

// TestHTTP3OriginExchange: the same over HTTP/3.
func TestHTTP3OriginExchange(t *testing.T) {
	o := &rawOrigin{}
	f := startH3(t, "", func(opts *Options) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go o.serve(ln)
		opts.Config.Sites[0].Origins = []Origin{{URL: mustURL("http://" + ln.Addr().String())}}
	})
	c := f.dial(t, netip.MustParseAddrPort("198.51.100.7:443"), "a.example")
	runStreamCases(t, o, doHTTP(c.cc, "https://a.example"))
}

// TestH2OriginExchangeClientGone: a client that resets its stream while
// the origin has not answered cuts that origin connection at once.
func TestH2OriginExchangeClientGone(t *testing.T) {
	f := newH2Fixture(t, Limits{}, echoOrigin)
	ln := fasthttputil.NewInmemoryListener()
	defer ln.Close()
	cut := make(chan time.Duration, 1)
	go hangOrigin(ln, cut)
	dialIdle(f, ln)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://a.example/hang", nil)
	go func() { time.Sleep(200 * time.Millisecond); cancel() }()
	if _, err := f.client().Do(req); err == nil {
		t.Fatal("a cancelled request got a response")
	}
	d, ok := <-cut
	if !ok {
		t.Fatal("the origin connection was not closed when the client reset its stream")
	}
	if d > 2*time.Second {
		t.Errorf("the origin connection closed %v after the reset", d)
	}
	if n := testutil.ToFloat64(f.p.pools.exchanges.inFlight); n != 1 {
		t.Errorf("in_progress abandoned %v, want 1", n)
	}
	waitStreams(t, f.p)
}

// dialIdle makes the fixture's origin pool dial ln, each connection in
// the pools' idleConn (the exchange binds to it).
func dialIdle(f *h2Fixture, ln *fasthttputil.InmemoryListener) {
	op, _ := f.p.pools.get(mustURL("http://origin.test"), OriginTLS{})
	op.hc.Dial = func(string) (net.Conn, error) {
		c, err := ln.Dial()
		if err != nil {
			return nil, err
		}
		return &idleConn{Conn: c, t: &f.p.pools.t, xs: &f.p.pools.exchanges, headNext: true}, nil
	}
}

// hangOrigin accepts one connection, reads a request head and never
// answers; cut gets how long after the head the proxy closed it.
func hangOrigin(ln net.Listener, cut chan<- time.Duration) {
	c, err := ln.Accept()
	if err != nil {
		close(cut)
		return
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil || line == "\r\n" {
			break
		}
	}
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == io.EOF {
		cut <- time.Since(start)
	}
	close(cut)
}

// TestHTTP3OriginExchangeClientGone: an HTTP/3 client that cancels its
// request while the origin has not answered has that origin connection
// cut within the watch's period (exchanges.watch), counted in progress.
func TestHTTP3OriginExchangeClientGone(t *testing.T) {
	cut := make(chan time.Duration, 1)
	f := startH3(t, "", func(opts *Options) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go hangOrigin(ln, cut)
		opts.Config.Sites[0].Origins = []Origin{{URL: mustURL("http://" + ln.Addr().String())}}
	})
	c := f.dial(t, netip.MustParseAddrPort("198.51.100.7:443"), "a.example")
	if _, err := c.get("/hang", 300*time.Millisecond); err == nil {
		t.Fatal("a cancelled request got a response")
	}
	d, ok := <-cut
	if !ok {
		t.Fatal("the origin connection was not closed when the client cancelled its request")
	}
	if d > time.Second {
		t.Errorf("the origin connection closed %v after the request", d)
	}
	if !waitFor(time.Second, func() bool { return testutil.ToFloat64(f.p.pools.exchanges.inFlight) == 1 }) {
		t.Errorf("in_progress abandoned %v, want 1", testutil.ToFloat64(f.p.pools.exchanges.inFlight))
	}
	if !waitFor(time.Second, func() bool {
		f.p.pools.exchanges.wmu.Lock()
		defer f.p.pools.exchanges.wmu.Unlock()
		return f.p.pools.exchanges.watching == nil && !f.p.pools.exchanges.sweeping
	}) {
		t.Error("the watch still runs with nothing in flight")
	}
}
