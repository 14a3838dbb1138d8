package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The hostile-input tests of the forwarding headers, the request checks,
// the route paths and the request ids, through the binary on all three
// protocols. Bounded by default; EDGEPROXY_ATTACK=1
// runs the full-size version and logs its figures ("attack: ...").

func attackMode() bool { return os.Getenv("EDGEPROXY_ATTACK") == "1" }

// rawH1 sends one raw HTTP/1.1 request to the cleartext port and reads the
// answer.
func rawH1(t *testing.T, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", "192.0.2.10:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%q: no response: %v", req, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// h2Client speaks HTTP/2 to 192.0.2.10:443 from inside the namespace.
func h2Client(f *cdnFixture) *http.Client {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: f.pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return f.ns.DialContext(ctx, network, "192.0.2.10:443")
		},
		Protocols: new(http.Protocols),
	}
	tr.Protocols.SetHTTP2(true)
	return &http.Client{Timeout: 5 * time.Second, Transport: tr}
}

// h3Client speaks HTTP/3 to dst; call it on the test's goroutine (its
// socket is made in the namespace). close ends it.
func h3Client(t *testing.T, pool *x509.CertPool, dst netip.AddrPort) (c *http.Client, close func()) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		Dial: func(ctx context.Context, _ string, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error) {
			return quic.DialEarly(ctx, pc, net.UDPAddrFromAddrPort(dst), tlsConf, conf)
		},
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}, func() { tr.Close(); pc.Close() }
}

func do(t *testing.T, c *http.Client, method, url string, hdr [][2]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range hdr {
		req.Header[kv[0]] = append(req.Header[kv[0]], kv[1]) // as written, not canonicalized
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// randomCase spells a header name in random letter case, and '-' as '_'
// now and then.
func randomCase(r *rand.Rand, name string, underscores bool) string {
	b := []byte(name)
	for i, c := range b {
		switch {
		case c == '-' && underscores && r.IntN(2) == 0:
			b[i] = '_'
		case r.IntN(2) == 0:
			b[i] = byte(strings.ToUpper(string(c))[0])
		default:
			b[i] = byte(strings.ToLower(string(c))[0])
		}
	}
	return string(b)
}

// spoofs are a client's copies of the proxy's headers and of hop-by-hop
// ones, in the letter case and spelling of old main's leaks.
func spoofs(r *rand.Rand) [][2]string {
	if r == nil {
		return [][2]string{
			{"x-edge-addr", "198.51.100.66:80"}, {"X_Edge_Addr", "198.51.100.68:80"},
			{"x-forwarded-proto", "gopher"}, {"X_Forwarded_Proto", "gopher"},
			{"x-forwarded-host", "evil.example"}, {"x_forwarded_host", "evil.example"},
			{"x-request-id", "forged"}, {"X_Request_Id", "forged"},
			{"X_Forwarded_For", "198.51.100.99"}, {"Cdn_Loop", "other"},
			{"proxy-authorization", "Basic eDp5"}, {"Proxy_Authorization", "Basic eDp5"},
		}
	}
	var out [][2]string
	for _, n := range []string{"X-Edge-Addr", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-Id", "Proxy-Authorization"} {
		for range 1 + r.IntN(3) {
			out = append(out, [2]string{randomCase(r, n, true), "forged"})
		}
	}
	for _, n := range []string{"X-Forwarded-For", "CDN-Loop"} { // chained when spelled right; Forwarded has no look-alike
		out = append(out, [2]string{strings.ReplaceAll(randomCase(r, n, false), "-", "_"), "forged"})
	}
	return out
}

// leaks returns what of a client's spoofs an origin saw: a proxy header
// with another value than the proxy's, any underscore spelling of one, or
// a hop-by-hop header.
func leaks(s seen, want map[string]string) []string {
	var out []string
	for k, v := range s.Headers {
		fold := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
		switch fold {
		case "x-edge-addr", "x-forwarded-proto", "x-forwarded-host", "x-request-id", "x-forwarded-for", "forwarded", "cdn-loop":
			if strings.Contains(k, "_") {
				out = append(out, k+": "+v)
			} else if w, ok := want[k]; ok && v != w {
				out = append(out, k+": "+v)
			} else if strings.Contains(v, "forged") || strings.Contains(v, "198.51.100.") || strings.Contains(v, "other") {
				out = append(out, k+": "+v)
			}
		case "proxy-authorization", "keep-alive", "te", "x-secret", "proxy-connection":
			out = append(out, k+": "+v)
		}
	}
	return out
}

// TestHostileSpoofedHeaders: a client's copies of the forwarding headers,
// in any letter case or with underscores, never reach the origin, over
// HTTP/1.1, HTTP/2 and HTTP/3: the origin sees exactly the proxy's
// values (before this check the lowercase copies came first, and the
// underscore spellings went through on every protocol).
func TestHostileSpoofedHeaders(t *testing.T) {
	f := startCDN(t)
	rounds := 1
	if attackMode() {
		rounds = 300
	}
	rng := rand.New(rand.NewPCG(1, 2))
	h2 := h2Client(f)
	h3, closeH3 := h3Client(t, f.pool, netip.MustParseAddrPort("192.0.2.10:443"))
	defer closeH3()
	sent, leaked := 0, 0
	for round := range rounds {
		var r *rand.Rand
		if round > 0 {
			r = rng
		}
		sp := spoofs(r)
		for _, proto := range []string{"HTTP/1.1", "HTTP/2", "HTTP/3"} {
			var resp *http.Response
			var body string
			want := map[string]string{"X-Forwarded-Proto": "https", "X-Forwarded-Host": "a.example", "X-Edge-Addr": "192.0.2.10:443"}
			switch proto {
			case "HTTP/1.1":
				var b strings.Builder
				b.WriteString("GET /spoof HTTP/1.1\r\nHost: a.example\r\nConnection: x-secret, keep-alive\r\nx-SECRET: s\r\nkeep-alive: 5\r\nte: trailers\r\n")
				for _, kv := range sp {
					fmt.Fprintf(&b, "%s: %s\r\n", kv[0], kv[1])
				}
				b.WriteString("\r\n")
				resp, body = rawH1(t, b.String())
				want["X-Forwarded-Proto"], want["X-Edge-Addr"] = "http", "192.0.2.10:80"
			case "HTTP/2":
				resp, body = do(t, h2, "GET", "https://a.example/spoof", sp)
			case "HTTP/3":
				resp, body = do(t, h3, "GET", "https://a.example/spoof", sp)
			}
			sent++
			if resp.StatusCode != 200 {
				t.Fatalf("%s: %d %s", proto, resp.StatusCode, body)
			}
			s := decodeSeen(t, body)
			want["X-Request-Id"] = resp.Header.Get("X-Request-Id")
			for k, v := range want {
				if s.Headers[k] != v {
					t.Errorf("%s: the origin's %s is %q, want the proxy's %q", proto, k, s.Headers[k], v)
				}
			}
			if l := leaks(s, want); len(l) > 0 {
				leaked++
				t.Errorf("%s: reached the origin: %q", proto, l)
			}
		}
	}
	t.Logf("attack: %d requests over HTTP/1.1, HTTP/2 and HTTP/3 with spoofed forwarding headers in random case and spelling: %d leaked any to the origin", sent, leaked)
	if got := metricValue(t, f, "edgeproxy_cdn_spoofed_headers_total"); got < float64(sent) {
		t.Errorf("edgeproxy_cdn_spoofed_headers_total %v after %d spoofing requests", got, sent)
	}
}

// metricValue reads one sample of the instance's /metrics (0 when absent).
func metricValue(t *testing.T, f *cdnFixture, series string) float64 {
	t.Helper()
	hc := f.ns.HTTPClient()
	defer hc.CloseIdleConnections() // a poll must not hold the admin API's connections
	resp, err := hc.Get(f.in.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n
		}
	}
	return 0
}

var pageID = regexp.MustCompile(`request id: ([0-9a-f]{16})`)

// edgePage checks that an answer is the edge's own error page with its
// request id in the header, and returns the id.
func edgePage(t *testing.T, what string, resp *http.Response, body string, status int) string {
	t.Helper()
	m := pageID.FindStringSubmatch(body)
	switch {
	case resp.StatusCode != status:
		t.Errorf("%s: %d %q, want %d from the edge", what, resp.StatusCode, body, status)
	case m == nil || resp.Header.Get("X-Request-Id") != m[1]:
		t.Errorf("%s: %d not the edge's page (X-Request-Id %q): %q", what, status, resp.Header.Get("X-Request-Id"), body)
	default:
		return m[1]
	}
	return ""
}

// TestHostileHTTP1Heads: HTTP/1.1 heads that fasthttp's parser lets
// through and no origin may get are answered at the edge: before these checks
// the origin got them (CONNECT forwarded, userinfo turned into an
// Authorization header, Connection: Content-Length a 502).
func TestHostileHTTP1Heads(t *testing.T) {
	f := startCDN(t)
	before := f.originA.requests.Load()
	for _, tc := range []struct {
		name, req, reason string
		status            int
	}{
		{"name not a token", "GET / HTTP/1.1\r\nHost: a.example\r\nX A: b\r\n\r\n", "header_name", 400},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a.example\r\n\r\n", "version", 400},
		{"userinfo", "GET / HTTP/1.1\r\nHost: user:pass@a.example\r\n\r\n", "userinfo", 400},
		{"CONNECT", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", "connect", 405},
		{"Connection: Content-Length", "POST / HTTP/1.1\r\nHost: a.example\r\nConnection: Content-Length\r\nContent-Length: 4\r\n\r\nabcd", "connection_names", 400},
	} {
		resp, body := rawH1(t, tc.req)
		edgePage(t, tc.name, resp, body, tc.status)
		if got := metricValue(t, f, `edgeproxy_cdn_requests_refused_total{reason="`+tc.reason+`"}`); got < 1 {
			t.Errorf("%s: edgeproxy_cdn_requests_refused_total{reason=%q} = %v", tc.name, tc.reason, got)
		}
	}
	if n := f.originA.requests.Load() - before; n != 0 {
		t.Errorf("the origin got %d of the refused requests", n)
	}
}

// h2Exchange sends one request as raw HTTP/2 frames, pseudo-headers as
// given, and returns the status and body of the answer.
func h2Exchange(t *testing.T, c net.Conn, fr *http2.Framer, stream uint32, fields ...string) (int, string) {
	t.Helper()
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: headerBlock(fields...), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	status := 0
	var body bytes.Buffer
	dec := hpack.NewDecoder(4096, func(hf hpack.HeaderField) {
		if hf.Name == ":status" {
			status, _ = strconv.Atoi(hf.Value)
		}
	})
	for {
		fm, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("stream %d: %v", stream, err)
		}
		switch fm := fm.(type) {
		case *http2.HeadersFrame:
			if fm.StreamID == stream {
				dec.Write(fm.HeaderBlockFragment())
				if fm.StreamEnded() {
					return status, body.String()
				}
			}
		case *http2.DataFrame:
			if fm.StreamID == stream {
				body.Write(fm.Data())
				if fm.StreamEnded() {
					return status, body.String()
				}
			}
		case *http2.RSTStreamFrame:
			if fm.StreamID == stream {
				return -int(fm.ErrCode), ""
			}
		case *http2.GoAwayFrame:
			t.Fatalf("stream %d: GOAWAY %v", stream, fm.ErrCode)
		case *http2.SettingsFrame:
			if !fm.IsAck() {
				fr.WriteSettingsAck()
			}
		}
	}
}

// TestHostileH2PseudoHeaders: pseudo-headers written into the origin's
// request line or Host are checked first: before this check
// `:method = "GET /api/admin HTTP/1.1"` reached the origin as
// `GET /api/admin HTTP/1.1 /x HTTP/1.1`.
func TestHostileH2PseudoHeaders(t *testing.T) {
	f := startCDN(t)
	c, fr := h2conn(t)
	before := f.originA.requests.Load()
	stream := uint32(1)
	// x/net/http2 resets a stream whose :authority is not a host itself
	// (PROTOCOL_ERROR, status -1 here); the rest reach the handler, which
	// must answer them.
	for _, tc := range []struct {
		name   string
		fields []string
		status int
	}{
		{"method with a request line", []string{":method", "GET /api/admin HTTP/1.1", ":scheme", "https", ":authority", "a.example", ":path", "/x"}, 400},
		{"method with a space", []string{":method", "GET /", ":scheme", "https", ":authority", "a.example", ":path", "/x"}, 400},
		{"authority with userinfo", []string{":method", "GET", ":scheme", "https", ":authority", "user:pass@a.example", ":path", "/x"}, -1},
		{"authority with a path", []string{":method", "GET", ":scheme", "https", ":authority", "a.example/x", ":path", "/x"}, -1},
		{"path not origin-form", []string{":method", "GET", ":scheme", "https", ":authority", "a.example", ":path", "/x/..%2fapi/t"}, 400},
		{"CONNECT", []string{":method", "CONNECT", ":authority", "a.example:443"}, 405},
	} {
		status, body := h2Exchange(t, c, fr, stream, tc.fields...)
		stream += 2
		if status != tc.status || status > 0 && !pageID.MatchString(body) {
			t.Errorf("%s: %d %q, want the edge's %d", tc.name, status, body, tc.status)
		}
	}
	// The connection still serves.
	if status, body := h2Exchange(t, c, fr, stream, ":method", "GET", ":scheme", "https", ":authority", "a.example", ":path", "/ok"); status != 200 || !strings.Contains(body, "origin-a") {
		t.Errorf("a good request after them: %d %q", status, body)
	}
	if n := f.originA.requests.Load() - before; n != 1 {
		t.Errorf("the origin got %d requests, want only the good one", n)
	}
}

// TestHostileRoutePaths: a path that the route and the origin would read
// apart (an encoded slash or backslash, a dot segment raw or encoded) is
// refused on all three protocols: before this check `/x/..%2fapi/t`
// took the /api/ route and reached its origin as `/x/..%2fapi/t`.
func TestHostileRoutePaths(t *testing.T) {
	f := startCDN(t)
	h2 := h2Client(f)
	h3, closeH3 := h3Client(t, f.pool, netip.MustParseAddrPort("192.0.2.10:443"))
	defer closeH3()
	paths := []string{"/x/..%2fapi/t", "/x/..%2Fapi/t", "/x/..%5capi/t", "/x/../api/t", "/x/%2e%2e/api/t", "/x/.%2E/api/t", "/x/..;/api/t", "/api/./t"}
	for _, p := range paths {
		resp, body := rawH1(t, "GET "+p+" HTTP/1.1\r\nHost: a.example\r\n\r\n")
		edgePage(t, "HTTP/1.1 "+p, resp, body, 400)
		resp, body = do(t, h2, "GET", "https://a.example"+p, nil)
		edgePage(t, "HTTP/2 "+p, resp, body, 400)
		resp, body = do(t, h3, "GET", "https://a.example"+p, nil)
		edgePage(t, "HTTP/3 "+p, resp, body, 400)
	}
	// A header value an HTTP/1.1 head would change (outer whitespace is
	// stripped there) is refused over HTTP/2 and HTTP/3, as a control byte
	// would be.
	for name, c := range map[string]*http.Client{"HTTP/2": h2, "HTTP/3": h3} {
		resp, body := do(t, c, "GET", "https://a.example/x", [][2]string{{"X-Padded", " value"}})
		edgePage(t, name+" outer whitespace", resp, body, 400)
	}
	// The routes still hold for ordinary paths.
	for _, c := range []*http.Client{h2, h3} {
		if _, body := do(t, c, "GET", "https://a.example/api/t?q=../x%2f", nil); decodeSeen(t, body).Origin != "origin-b" {
			t.Errorf("/api/t: %q", body)
		}
		if _, body := do(t, c, "GET", "https://a.example/x/t", nil); decodeSeen(t, body).Origin != "origin-a" {
			t.Errorf("/x/t: %q", body)
		}
	}
	if got := metricValue(t, f, `edgeproxy_cdn_requests_refused_total{reason="path"}`); got != float64(3*len(paths)) {
		t.Errorf(`edgeproxy_cdn_requests_refused_total{reason="path"} = %v, want %d`, got, 3*len(paths))
	}
}

// TestHostileRefusedHeadsAreSeen: requests fasthttp's parser refuses (a
// head over max_header_bytes, a malformed head, one that stops coming)
// get the edge's error page with a request id, an access log line with
// that id, and a sample in edgeproxy_cdn_requests_total (before, they had
// none of the three).
func TestHostileRefusedHeadsAreSeen(t *testing.T) {
	f := startCDN(t)
	n := 1
	if attackMode() {
		n = 200
	}
	var ids []string
	for i := range n {
		for _, tc := range []struct {
			name, req string
			status    int
		}{
			{"head too big", "GET / HTTP/1.1\r\nHost: a.example\r\nX-Big: " + strings.Repeat("x", 9000) + "\r\n\r\n", 431},
			{"space before the colon", "GET / HTTP/1.1\r\nHost: a.example\r\nX-A : b\r\n\r\n", 400},
			{"bad method", "G(E)T / HTTP/1.1\r\nHost: a.example\r\n\r\n", 400},
		} {
			resp, body := rawH1(t, tc.req)
			if id := edgePage(t, fmt.Sprintf("%s #%d", tc.name, i), resp, body, tc.status); id != "" {
				ids = append(ids, id)
			}
		}
	}
	// A head that stops coming: 408 at read_header (1 s), with its id.
	c, err := net.Dial("tcp", "192.0.2.10:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.exa")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
		t.Errorf("a stalled head got no answer: %v", err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		if id := edgePage(t, "stalled head", resp, string(b), 408); id != "" {
			ids = append(ids, id)
		}
	}
	time.Sleep(300 * time.Millisecond) // the access log is buffered
	logged, _ := os.ReadFile(f.accessLog)
	missing := 0
	for _, id := range ids {
		if !strings.Contains(string(logged), `"request_id":"`+id+`"`) {
			missing++
		}
	}
	if missing > 0 || len(ids) == 0 {
		t.Errorf("%d of %d refused requests have no access log line", missing, len(ids))
	}
	if !strings.Contains(string(logged), `"refused":"head_too_large"`) {
		t.Errorf("the access log does not say why:\n%.2000s", logged)
	}
	for series, want := range map[string]float64{
		`edgeproxy_cdn_requests_total{code="431",protocol="HTTP/1.1",site="-"}`: float64(n),
		`edgeproxy_cdn_requests_total{code="400",protocol="HTTP/1.1",site="-"}`: float64(2 * n),
		`edgeproxy_cdn_requests_total{code="408",protocol="HTTP/1.1",site="-"}`: 1,
		`edgeproxy_cdn_requests_refused_total{reason="head_too_large"}`:         float64(n),
		`edgeproxy_cdn_requests_refused_total{reason="malformed"}`:              float64(2 * n),
		`edgeproxy_cdn_requests_refused_total{reason="timeout"}`:                1,
	} {
		if got := metricValue(t, f, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	t.Logf("attack: %d refused heads: %d with a request id, %d missing from the access log", 3*n+1, len(ids), missing)
}
