package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"
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
	// Counted as the connection is cut: the origin may see the close
	// first.
	waitFor(2*time.Second, func() bool { return testutil.ToFloat64(f.p.pools.exchanges.inFlight) == 1 })
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

// captureConn keeps what is written to it.
type captureConn struct {
	net.Conn
	out bytes.Buffer
}

func (c *captureConn) Write(b []byte) (int, error) { return c.out.Write(b) }

// TestStreamRequestSameAsFasthttp: the origin request the engine's
// exchange writes for an HTTP/2 or HTTP/3 request (admitHead,
// writeRequest) has the same header lines and body as the one the
// fasthttp path wrote (toRequest, rewriteRequest, Request.Write), for
// heads with spoofed and look-alike policy headers, cookie crumbs, and
// bodies whole, sized and chunked.
func TestStreamRequestSameAsFasthttp(t *testing.T) {
	p, err := New(Options{Config: Config{HTTPSPorts: []uint16{443}, LoopID: "edge-a",
		Sites: []Site{{Hosts: []string{"*"}, Origins: []Origin{{URL: mustURL("http://origin.test")}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.tcp.Close()
	st := p.state.Load()
	fields := [][2]string{{"user-agent", "ua/1"}, {"accept", "*/*"}, {"x-forwarded-for", "203.0.113.9"},
		{"forwarded", "for=203.0.113.9"}, {"cdn-loop", "other"}, {"x-request-id", "spoofed"}, {"x_edge_addr", "spoof"},
		{"x-forwarded-proto", "gopher"}, {"cookie", "a=1"}, {"cookie", "b=2"}, {"x-custom-header", "v"},
		{"proxy-authorization", "secret"}}
	type bodyKind int
	const (
		none bodyKind = iota
		whole
		sized
		chunked
	)
	cases := []struct {
		method string
		body   bodyKind
		ctype  bool
	}{
		{"GET", none, false}, {"HEAD", none, false}, {"DELETE", none, false}, {"POST", whole, false},
		{"POST", whole, true}, {"PUT", sized, false}, {"POST", chunked, true}, {"POST", none, false},
	}
	payload := strings.Repeat("0123456789", 3000)
	for _, c := range cases {
		name := fmt.Sprintf("%s body=%d type=%v", c.method, c.body, c.ctype)
		build := func() (*reqHead, *fasthttp.Request, *record) {
			h := &reqHead{cl: -1}
			h.req = fasthttp.AcquireRequest()
			h.req.Header.DisableNormalizing()
			for _, f := range [][2]string{{":method", c.method}, {":scheme", "https"}, {":authority", "a.example"}, {":path", "/p?q=1"}} {
				h.field(f[0], f[1], false)
			}
			for _, f := range fields {
				h.field(f[0], f[1], false)
			}
			if c.ctype {
				h.field("content-type", "text/x-test", false)
			}
			if rf, bad := h.check(c.body == none); bad || rf != nil {
				t.Fatalf("%s: check: %v %v", name, rf, h.malformed)
			}
			req := h.req
			req.Header.SetMethod(h.method)
			switch c.body {
			case whole:
				req.SetBodyString(payload[:100])
			case sized:
				req.SetBodyStream(strings.NewReader(payload), len(payload))
			case chunked:
				req.SetBodyStream(strings.NewReader(payload), -1)
			}
			rec := &record{start: time.Now(), id: "0123456789abcdef", proto: "HTTP/2", method: h.method, host: h.authority,
				path: decodedPath(h.path), client: netip.MustParseAddrPort("198.51.100.1:5555"), edge: netip.MustParseAddrPort("192.0.2.1:443")}
			return h, req, rec
		}
		// The engine's.
		h, req, rec := build()
		_, rt, rf := p.admitHead(st, h, req, rec)
		if rf != nil || h.origin == nil {
			t.Fatalf("%s: not admitted to the engine's exchange (%v)", name, rf)
		}
		a := &streamAttempt{p: p, req: req, head: h.origin}
		cc := &captureConn{}
		if err := a.writeRequest(cc, false); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		a.release()
		h.reset()
		// fasthttp's.
		h2, req2, rec2 := build()
		h2.toRequest()
		rewriteRequest(&req2.Header, &h2.sc, rec2.client, rec2.edge, req2.Host(), true, st.cfg.LoopID, rec2.id)
		req2.URI().DisablePathNormalizing = true
		var fb bytes.Buffer
		bw := bufio.NewWriter(&fb)
		if err := req2.Write(bw); err != nil {
			t.Fatal(err)
		}
		bw.Flush()
		h2.reset()
		_ = rt
		split := func(b []byte) ([]string, string) {
			head, body, _ := bytes.Cut(b, []byte("\r\n\r\n"))
			lines := strings.Split(string(head), "\r\n")
			slices.Sort(lines[1:])
			return lines, string(body)
		}
		gl, gb := split(cc.out.Bytes())
		wl, wb := split(fb.Bytes())
		if !slices.Equal(gl, wl) {
			t.Errorf("%s: the engine's head\n%s\nfasthttp's\n%s", name, strings.Join(gl, "\n"), strings.Join(wl, "\n"))
		}
		if c.body == chunked { // the chunks' sizes are each writer's own
			dechunk := func(s string) string {
				b, err := io.ReadAll(httputil.NewChunkedReader(strings.NewReader(s)))
				if err != nil {
					t.Errorf("%s: chunked body: %v", name, err)
				}
				return string(b)
			}
			gb, wb = dechunk(gb), dechunk(wb)
			if gb != payload {
				t.Errorf("%s: the body sent is not the body read", name)
			}
		}
		if gb != wb {
			t.Errorf("%s: bodies differ: %d and %d bytes", name, len(gb), len(wb))
		}
	}
}

// readConn is a connection whose reads come from r.
type readConn struct {
	net.Conn
	r io.Reader
}

func (c *readConn) Read(b []byte) (int, error) { return c.r.Read(b) }
func (c *readConn) Close() error               { return nil }

// FuzzStreamOriginResp: whatever an origin answers, the exchange's reading
// of it (streamAttempt.read, originBody) does not panic; a response it
// takes has a final status, a whole body exactly its Content-Length, a
// streamed one no more than it, and fields that encode.
func FuzzStreamOriginResp(f *testing.F) {
	for _, a := range rawAnswers {
		f.Add([]byte(a), false)
	}
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n"), false)
	f.Add([]byte("HTTP/1.1 200 OK\nContent-Length: 3\n\nabc"), true)
	f.Add([]byte("HTTP/1.0 200 OK\r\n\r\nto the end"), false)
	f.Fuzz(func(t *testing.T, b []byte, head bool) {
		a := &streamAttempt{isHead: head}
		defer a.release()
		_, err := a.read(&readConn{r: bytes.NewReader(b)})
		if err != nil {
			return
		}
		r := a.r
		if r.status < 200 && r.status != 101 || r.status > 999 {
			t.Fatalf("status %d taken", r.status)
		}
		if a.strm == nil && a.body != nil && int64(len(a.body)) != r.cl {
			t.Fatalf("a whole body of %d bytes for Content-Length %d", len(a.body), r.cl)
		}
		if a.strm != nil {
			got, _ := io.ReadAll(io.LimitReader(a.strm, 1<<20))
			if r.cl >= 0 && int64(len(got)) > r.cl {
				t.Fatalf("a streamed body of %d bytes for Content-Length %d", len(got), r.cl)
			}
		}
		var name []byte
		var num [20]byte
		fs := appendOriginFields(nil, r, -1, "0123456789abcdef", "h3=\":443\"", &name, num[:], appendHpackField)
		if len(fs) == 0 {
			t.Fatal("no fields")
		}
	})
}
