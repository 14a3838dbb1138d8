package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// scriptOrigin answers each request with the response scripted for its
// path (the first path segment), and keeps the heads it was sent.
type scriptOrigin struct {
	addr    string
	mu      sync.Mutex
	heads   map[string]string // path -> the last request head
	scripts map[string]string
}

func startScriptOrigin(t *testing.T, scripts map[string]string) *scriptOrigin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &scriptOrigin{addr: ln.Addr().String(), heads: map[string]string{}, scripts: scripts}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go o.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return o
}

func (o *scriptOrigin) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		target := strings.Fields(head.String())[1]
		key := strings.SplitN(strings.TrimPrefix(target, "/"), "/", 2)[0]
		key, _, _ = strings.Cut(key, "?")
		o.mu.Lock()
		o.heads[key] = head.String()
		script, ok := o.scripts[key]
		o.mu.Unlock()
		if !ok {
			script = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
		}
		if strings.HasPrefix(head.String(), "HEAD ") {
			script = headOnly(script)
		}
		c.Write([]byte(script))
		if strings.Contains(script, "X-Close: yes") {
			return
		}
	}
}

// headOnly is a scripted response without its body: the answer to a HEAD.
func headOnly(script string) string {
	pos := 0
	for {
		sep := "\r\n\r\n"
		end := strings.Index(script[pos:], sep)
		if end < 0 {
			sep = "\n\n"
			end = strings.Index(script[pos:], sep)
		}
		end += pos + len(sep)
		if !strings.HasPrefix(script[pos+len("HTTP/1.1 "):], "1") {
			return script[:end]
		}
		pos = end
	}
}

func (o *scriptOrigin) head(key string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	h := o.heads[key]
	delete(o.heads, key)
	return h
}

// normHead is a head in a form two engines must agree on: the first
// line, then the fields sorted by lower-cased name (fields of one name
// keep their order), the request id's values and the Date replaced.
func normHead(head string) string {
	lines := strings.Split(strings.TrimRight(head, "\r\n"), "\r\n")
	fields := lines[1:]
	for i, f := range fields {
		k, v, _ := strings.Cut(f, ":")
		v = strings.TrimSpace(v)
		switch strings.ToLower(k) {
		case "x-request-id":
			v = "<id>"
		case "date":
			v = "<date>"
		case "x-edge-addr":
			v, _, _ = strings.Cut(v, ":") // the two listeners' ports differ
		}
		fields[i] = k + ": " + v
	}
	slices.SortStableFunc(fields, func(a, b string) int {
		ka, _, _ := strings.Cut(a, ":")
		kb, _, _ := strings.Cut(b, ":")
		return strings.Compare(strings.ToLower(ka), strings.ToLower(kb))
	})
	return lines[0] + "\n" + strings.Join(fields, "\n")
}

// exchangeRaw sends a request on c and reads its response: the head as
// sent and the body, decoded.
func exchangeRaw(t *testing.T, who string, c net.Conn, br *bufio.Reader, req string) (head, body string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	var h strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: reading the response to %q: %v (so far %q)", who, req, err, h.String())
		}
		h.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	method := strings.Fields(req)[0]
	resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(h.String()), br)), &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: body of %q: %v", who, req, err)
	}
	return h.String(), string(b)
}

// TestH1EnginesSameAnswers: the HTTP/1.1 engine and the fasthttp path it
// hands over to send the origin the same request and the client the same
// response, for requests with spoofed, hop-by-hop and Connection-named
// headers in any letter case, and for responses of every framing; and the
// engine served every one of them itself.
func TestH1EnginesSameAnswers(t *testing.T) {
	ns := netns.New(t)
	big := strings.Repeat("b", 3*smallBody)
	og := startScriptOrigin(t, map[string]string{
		"plain":    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		"noreason": "HTTP/1.1 200\r\nContent-Length: 2\r\nserver: Origin/1\r\n\r\nok",
		"hop": "HTTP/1.1 200 OK\r\nconnection: X-Secret, keep-alive\r\nX-Secret: s\r\nKEEP-ALIVE: timeout=5\r\n" +
			"Proxy-Authenticate: Basic\r\nx-request-id: spoofed\r\nAlt-Svc: h2=\":1\"\r\nX_Request_Id: spoof\r\n" +
			"Trailer: X-T\r\nUpgrade: h2c\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 3\r\n\r\nhop",
		"empty":   "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
		"notmod":  "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
		"chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
		"big":     fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(big), big),
		"interim": "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"closes":  "HTTP/1.1 200 OK\r\nX-Close: yes\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbye!",
		"eof":     "HTTP/1.1 200 OK\r\nX-Close: yes\r\n\r\nuntil the end",
		"http10":  "HTTP/1.0 200 OK\r\nX-Close: yes\r\nContent-Length: 3\r\n\r\nold",
		"lf":      "HTTP/1.1 200 OK\nContent-Length: 2\nX-Lf: 1\n\nlf",
	})
	p := newTestProxy(t, ns, og.addr, Limits{})
	engine := serveH1Test(t, p)
	general := serveFasthttpTest(t, p)

	heads := map[string][]string{
		"plain": {"Accept: */*", "User-Agent: t/1"},
		"spoof": {"x-forwarded-for: 10.0.0.1", "X-Forwarded-Proto: gopher", "FORWARDED: for=1.1.1.1", "cdn-loop: other",
			"X-Edge-Addr: 1.2.3.4:1", "X_Forwarded_For: 2.2.2.2", "x-request-id: mine", "X-Forwarded-Host: evil"},
		"hop": {"Connection: X-Drop, Keep-Alive", "X-Drop: 1", "x-drop: 2", "Keep-Alive: 300", "TE: trailers",
			"Proxy-Authorization: Basic x", "Proxy-Connection: keep-alive", "Trailer: x"},
		"cookie": {"Cookie: a=1; b=2", "X-Case: Value"},
		"close":  {"Connection: close"},
	}
	var reqs []string
	for _, path := range []string{"plain", "noreason", "hop", "empty", "notmod", "chunked", "big", "interim", "closes", "eof", "http10"} {
		for _, hk := range []string{"plain", "spoof", "hop", "cookie"} {
			for _, m := range []string{"GET", "HEAD"} {
				// A HEAD to an origin that closes after it without saying
				// so leaves a dead connection in the pool, which the
				// engine tries again on a new one and fasthttp does not
				// (TestH1StaleOriginConnection).
				if m == "HEAD" && (hk != "plain" || strings.Contains(og.scripts[path], "X-Close")) {
					continue
				}
				reqs = append(reqs, m+" /"+path+"/x?q=1 HTTP/1.1\r\nHost: A.Example\r\n"+strings.Join(heads[hk], "\r\n")+"\r\n\r\n")
			}
		}
	}
	reqs = append(reqs, "GET /plain/%41b HTTP/1.1\r\nHost: a.example:80\r\n"+strings.Join(heads["close"], "\r\n")+"\r\n\r\n")

	handoffs := func() float64 { return testutil.ToFloat64(p.m.handoffs) }
	before := handoffs()
	for _, req := range reqs {
		key := strings.SplitN(strings.Fields(req)[1][1:], "/", 2)[0]
		var got [2]struct{ origin, head, body string }
		for i, l := range []*countListener{engine, general} {
			cl, _ := l.dial(t)
			br := bufio.NewReader(cl)
			head, body := exchangeRaw(t, []string{"engine", "fasthttp"}[i], cl, br, req)
			got[i].head, got[i].body = normHead(head), body
			got[i].origin = normHead(og.head(key))
			cl.Close()
		}
		if got[0] != got[1] {
			t.Errorf("%q:\nengine:\n%s\n\n%s\n--- origin got:\n%s\n\nfasthttp:\n%s\n\n%s\n--- origin got:\n%s",
				req, got[0].head, trim(got[0].body), got[0].origin, got[1].head, trim(got[1].body), got[1].origin)
		}
	}
	if n := handoffs() - before; n != 0 {
		t.Errorf("the engine handed %v of its requests over", n)
	}
}

func trim(s string) string {
	if len(s) > 100 {
		return s[:100] + fmt.Sprintf("… (%d bytes)", len(s))
	}
	return s
}

// serveFasthttpTest serves p's fasthttp server as the general path, on
// 127.0.0.1 of the test's namespace.
func serveFasthttpTest(t *testing.T, p *Proxy) *countListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &countListener{Listener: ln, conns: make(chan *countConn, 1)}
	go p.srv.Load().h1.Serve(l)
	t.Cleanup(func() { ln.Close() })
	return l
}

// TestH1StaleOriginConnection: an origin that closes a kept-alive
// connection while it is idle, without saying so, costs the client
// nothing: the engine sends the GET again on a new connection.
func TestH1StaleOriginConnection(t *testing.T) {
	ns := netns.New(t)
	og := startScriptOrigin(t, map[string]string{
		"once": "HTTP/1.1 200 OK\r\nX-Close: yes\r\nContent-Length: 2\r\n\r\nok",
	})
	p := newTestProxy(t, ns, og.addr, Limits{})
	engine := serveH1Test(t, p)
	cl, _ := engine.dial(t)
	br := bufio.NewReader(cl)
	for i := range 5 {
		head, body := exchangeRaw(t, "engine", cl, br, "GET /once HTTP/1.1\r\nHost: a.example\r\n\r\n")
		if !strings.HasPrefix(head, "HTTP/1.1 200 ") || body != "ok" {
			t.Fatalf("request %d over connections the origin closed: %q %q", i, head, body)
		}
		time.Sleep(20 * time.Millisecond) // the origin's close arrives
	}
}

// TestH1EngineOriginHeads: what the engine makes of origin heads that
// fasthttp's client reads otherwise or not at all: bare LF line ends are
// taken; a head over 8 KiB, a bad or doubled Content-Length, both
// framings, a 101 nobody asked for, endless interim responses and a small
// body cut short are the origin's failure (502), never a response passed
// on half-made.
func TestH1EngineOriginHeads(t *testing.T) {
	ns := netns.New(t)
	cases := map[string]struct {
		script, status, body string
	}{
		"lf":      {"HTTP/1.1 200 OK\nContent-Length: 2\nX-Lf: 1\n\nlf", "200", "lf"},
		"huge":    {"HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("h", 9<<10) + "\r\nContent-Length: 2\r\n\r\nno", "502", ""},
		"badcl":   {"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nno", "502", ""},
		"twocl":   {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nno", "502", ""},
		"clte":    {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nno", "502", ""},
		"gzipte":  {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "502", ""},
		"switch":  {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "502", ""},
		"interim": {strings.Repeat("HTTP/1.1 102 Processing\r\n\r\n", maxInterim+1) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno", "502", ""},
		"short":   {"HTTP/1.1 200 OK\r\nX-Close: yes\r\nContent-Length: 10\r\n\r\nabc", "502", ""},
		"ctl":     {"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nno", "502", ""},
	}
	scripts := map[string]string{}
	for k, c := range cases {
		scripts[k] = c.script
	}
	og := startScriptOrigin(t, scripts)
	p := newTestProxy(t, ns, og.addr, Limits{})
	engine := serveH1Test(t, p)
	for k, c := range cases {
		cl, _ := engine.dial(t)
		head, body := exchangeRaw(t, "engine", cl, bufio.NewReader(cl), "GET /"+k+" HTTP/1.1\r\nHost: a.example\r\n\r\n")
		if !strings.HasPrefix(head, "HTTP/1.1 "+c.status+" ") {
			t.Errorf("%s: %q, want %s", k, head, c.status)
			continue
		}
		if c.status == "200" && body != c.body {
			t.Errorf("%s: body %q, want %q", k, body, c.body)
		}
		if c.status == "502" && !strings.Contains(body, "request id: ") {
			t.Errorf("%s: %q, not the edge's page", k, body)
		}
		cl.Close()
	}
}

// FuzzH1Head: a head the engine takes as its own, fasthttp reads the same
// way (method, target, Host, and every other field in order) and the
// checks pass; the engine never takes one that fasthttp refuses.
func FuzzH1Head(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
		"HEAD /a?b=c HTTP/1.1\r\nhost: A.example:8080\r\nX-A:  v \r\nConnection: close, x-a\r\n\r\n",
		"GET /%41 HTTP/1.1\r\nHost: a\r\nCookie: a=1;b=2\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: \t\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n x: folded\r\n\r\n",
		"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
		"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if end := headEnd(b, 0); end != len(b) {
			return
		}
		var h h1Head
		if !parseHead(b, &h) {
			return
		}
		var req fasthttp.Request
		req.Header.DisableNormalizing()
		if err := req.Header.Read(bufio.NewReader(bytes.NewReader(b))); err != nil {
			t.Fatalf("the engine takes %q, fasthttp refuses it: %v", b, err)
		}
		if r := checkH1(&req); r != nil {
			t.Fatalf("the engine takes %q, the checks refuse it: %s", b, r.msg)
		}
		if string(req.Header.Method()) != string(h.method) || string(req.Header.RequestURI()) != string(h.target) ||
			string(req.Header.Host()) != string(h.host) {
			t.Fatalf("%q: fasthttp reads %s %s host %q, the engine %s %s host %q", b,
				req.Header.Method(), req.Header.RequestURI(), req.Header.Host(), h.method, h.target, h.host)
		}
		// What the origin gets: fasthttp rewrites Connection, which the
		// policy drops, and joins cookies.
		skip := func(k []byte) bool {
			return sameName(k, hHostName, false) || sameName(k, hCookie, false) || dropRequest(k)
		}
		var theirs, ours []string
		for k, v := range req.Header.All() {
			if !skip(k) {
				theirs = append(theirs, string(k)+": "+string(v))
			}
		}
		for i := range h.n {
			if k := h.names[i]; !skip(k) {
				ours = append(ours, string(k)+": "+string(h.values[i]))
			}
		}
		slices.Sort(theirs)
		slices.Sort(ours)
		if !slices.Equal(theirs, ours) {
			t.Fatalf("%q: fasthttp reads %q, the engine %q", b, theirs, ours)
		}
	})
}

// FuzzH1Resp: whatever head an origin sends, what the engine writes for
// the client is one well-formed head: the origin cannot add a line, a
// hop-by-hop header or a request id of its own.
func FuzzH1Resp(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.0 404 Nope\nConnection: keep-alive, X-A\nX-A: 1\nX-Request-Id: x\n\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nKeep-Alive: 1\r\nX_Request_Id: y\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		end := respHeadEnd(b, 0)
		if end < 0 {
			return
		}
		var r h1Resp
		if parseResp(b[:end], &r) != nil || r.status < 200 || r.status > 999 {
			return
		}
		length := r.cl
		if r.chunked || length < 0 {
			length = -1
		}
		out := appendClientHead(nil, &r, length, "the-id", `h3=":443"`, false)
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("%q made %q: %v", b[:end], out, err)
		}
		if got := resp.Header.Values("X-Request-Id"); len(got) != 1 || got[0] != "the-id" {
			t.Fatalf("%q made X-Request-Id %q", b[:end], got)
		}
		for k := range resp.Header {
			if k != "Transfer-Encoding" && isOneOf([]byte(k), hopBytes) {
				t.Fatalf("%q made %q: %s passed", b[:end], out, k)
			}
		}
		if n := bytes.Count(out, []byte("\n")); n != bytes.Count(out, []byte("\r\n")) {
			t.Fatalf("%q made a bare LF: %q", b[:end], out)
		}
	})
}
