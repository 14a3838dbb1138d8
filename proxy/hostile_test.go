package proxy

import (
	"bufio"
	"bytes"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// The hostile-input tests of the forwarding policy and the checks every
// request passes before it becomes an HTTP/1.1 head, and the fuzz targets
// that keep them.

const (
	testID     = "0123456789abcdef"
	testHost   = "a.example"
	testClient = "203.0.113.7:5000"
	testEdge   = "192.0.2.10:443"
)

// parseH1 parses a raw HTTP/1.1 head as the cdn's fasthttp server does.
func parseH1(t testing.TB, raw string) (*fasthttp.Request, error) {
	req := &fasthttp.Request{}
	req.Header.DisableNormalizing()
	err := req.Header.Read(bufio.NewReader(strings.NewReader(raw)))
	return req, err
}

// originHead applies the forwarding policy to req and returns the head an
// origin reads, as fasthttp's client writes it.
func originHead(t testing.TB, req *fasthttp.Request, tls bool) []byte {
	t.Helper()
	var sc h1Scan
	scanRequest(&req.Header, &sc)
	rewriteRequest(&req.Header, &sc, netip.MustParseAddrPort(testClient), netip.MustParseAddrPort(testEdge),
		req.Host(), tls, "edgeproxy", testID)
	req.URI().SetScheme("http")
	req.URI().DisablePathNormalizing = true // as the origin pools' clients do
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := req.Write(w); err != nil {
		t.Fatalf("writing the origin's request: %v", err)
	}
	w.Flush()
	head, _, _ := bytes.Cut(b.Bytes(), []byte("\r\n\r\n"))
	return head
}

// fields splits a head into its request line and header fields, names as
// written.
func fields(head []byte) (string, [][2]string) {
	lines := strings.Split(string(head), "\r\n")
	var out [][2]string
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ":")
		out = append(out, [2]string{k, strings.TrimSpace(v)})
	}
	return lines[0], out
}

// named returns the values of every field whose name is n in any case,
// '_' standing for '-' (how CGI, WSGI and PHP read them).
func named(fs [][2]string, n string) []string {
	var vs []string
	for _, f := range fs {
		if strings.EqualFold(strings.ReplaceAll(f[0], "_", "-"), n) {
			vs = append(vs, f[1])
		}
	}
	return vs
}

var ourValues = map[string]string{
	"X-Forwarded-Proto": "http", "X-Forwarded-Host": testHost, "X-Edge-Addr": testEdge, "X-Request-Id": testID,
}

// ourSuffixes end the values the proxy extends.
var ourSuffixes = map[string]string{
	"X-Forwarded-For": "203.0.113.7",
	"Forwarded":       "for=203.0.113.7;by=192.0.2.10;proto=http;host=a.example",
	"CDN-Loop":        "edgeproxy",
}

var hopNames = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer", "Upgrade"}

// TestHostileForwardingHeaderCase: the proxy's forwarding headers, written
// by a client in another letter case or with underscores, never reach the
// origin; the origin sees exactly one of each, the proxy's, and no
// hop-by-hop header in any spelling, nor one named in Connection in any
// case. (Before this check the lowercase copies came first.)
func TestHostileForwardingHeaderCase(t *testing.T) {
	raw := "GET /x HTTP/1.1\r\nHost: a.example\r\n" +
		"x-edge-addr: 198.51.100.66:80\r\nX-EDGE-ADDR: 198.51.100.67:80\r\nX_Edge_Addr: 198.51.100.68:80\r\n" +
		"x-forwarded-proto: https\r\nX_Forwarded_Proto: https\r\n" +
		"x-forwarded-host: evil.example\r\nx_forwarded_host: evil.example\r\n" +
		"x-request-id: forged\r\nX_Request_ID: forged\r\n" +
		"forwarded: for=198.51.100.1\r\nX_Forwarded_For: 198.51.100.99\r\nx-forwarded-for: 198.51.100.2\r\n" +
		"cdn_loop: x\r\n" +
		"proxy-authorization: Basic eDp5\r\nProxy_Authorization: Basic eDp5\r\nkeep-alive: timeout=5\r\nte: trailers\r\n" +
		"proxy-connection: keep-alive\r\nupgrade_: x\r\n" +
		"connection: x-secret, KEEP-ALIVE\r\nX-SECRET: s\r\nx-secret: s2\r\n" +
		"Accept: */*\r\naccept-language: en\r\n\r\n"
	req, err := parseH1(t, raw)
	if err != nil {
		t.Fatal(err)
	}
	if r := checkH1(req); r != nil {
		t.Fatalf("refused: %+v", r)
	}
	head := originHead(t, req, false)
	_, fs := fields(head)
	for name, want := range ourValues {
		if got := named(fs, name); len(got) != 1 || got[0] != want {
			t.Errorf("%s: origin got %q, want only %q\n%s", name, got, want, head)
		}
	}
	for name, suffix := range ourSuffixes {
		if got := named(fs, name); len(got) != 1 || !strings.HasSuffix(got[0], suffix) {
			t.Errorf("%s: origin got %q, want one ending %q\n%s", name, got, suffix, head)
		}
	}
	if got := named(fs, "X-Forwarded-For"); len(got) == 1 && got[0] != "198.51.100.2, 203.0.113.7" {
		t.Errorf("X-Forwarded-For %q: the look-alike joined the chain", got[0])
	}
	for _, n := range append(hopNames, "X-Secret") {
		if got := named(fs, n); len(got) > 0 {
			t.Errorf("%s reached the origin: %q\n%s", n, got, head)
		}
	}
	if got := named(fs, "Accept-Language"); len(got) != 1 {
		t.Errorf("an end-to-end header was lost: %q", got)
	}
	// A Go origin reads the proxy's values.
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(append(head, "\r\n\r\n"...))))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range ourValues {
		if got := r.Header.Get(name); got != want {
			t.Errorf("a Go origin's Header.Get(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestHostileResponseHeaderCase: an origin's hop-by-hop headers, its
// Connection-named headers and its own X-Request-Id and Alt-Svc go in any
// letter case; the client sees the proxy's, once.
func TestHostileResponseHeaderCase(t *testing.T) {
	var h fasthttp.ResponseHeader
	h.DisableNormalizing()
	raw := "HTTP/1.1 200 OK\r\nconnection: x-internal, Keep-Alive\r\nX-INTERNAL: secret\r\nkeep-alive: timeout=5\r\n" +
		"x-request-id: forged\r\nX_Request_Id: forged\r\nalt-svc: h3=\":1\"\r\nproxy-authenticate: Basic\r\nupgrade: h2c\r\n" +
		"Content-Length: 0\r\nX-Kept: yes\r\n\r\n"
	if err := h.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatal(err)
	}
	rewriteResponse(&h, testID, `h3=":443"; ma=86400`)
	var resp fasthttp.Response
	h.CopyTo(&resp.Header)
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	resp.Write(w)
	w.Flush()
	head, _, _ := bytes.Cut(b.Bytes(), []byte("\r\n\r\n"))
	_, fs := fields(head)
	if got := named(fs, "X-Request-Id"); len(got) != 1 || got[0] != testID {
		t.Errorf("X-Request-Id %q", got)
	}
	if got := named(fs, "Alt-Svc"); len(got) != 1 || got[0] != `h3=":443"; ma=86400` {
		t.Errorf("Alt-Svc %q", got)
	}
	for _, n := range append(hopNames, "X-Internal") {
		if got := named(fs, n); len(got) > 0 {
			t.Errorf("%s reached the client: %q\n%s", n, got, head)
		}
	}
	if got := named(fs, "X-Kept"); len(got) != 1 {
		t.Errorf("X-Kept %q", got)
	}
}

// hostileH1 are HTTP/1.1 requests the edge must refuse,
// with their status and reason; each is what fasthttp's parser lets
// through. TestHostileHTTP1Refusals in cmd/edgeproxy sends them through
// the binary.
var hostileH1 = []struct {
	name, raw string
	status    int
	reason    string
}{
	{"name not a token", "GET / HTTP/1.1\r\nHost: a.example\r\nX A: b\r\n\r\n", 400, refuseHeaderName},
	{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a.example\r\n\r\n", 400, refuseVersion},
	{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a.example\r\n\r\n", 400, refuseVersion},
	{"userinfo in Host", "GET / HTTP/1.1\r\nHost: user:pass@a.example\r\n\r\n", 400, refuseUserinfo},
	{"userinfo in target", "GET http://user:pass@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n", 400, refuseUserinfo},
	{"Host not a host", "GET / HTTP/1.1\r\nHost: a.example/x\r\n\r\n", 400, refuseAuthority},
	{"CONNECT", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", 405, refuseConnect},
	{"Connection: Content-Length", "POST / HTTP/1.1\r\nHost: a.example\r\nConnection: Content-Length\r\nContent-Length: 4\r\n\r\nabcd", 400, refuseConnNames},
	{"Connection: transfer-encoding", "POST / HTTP/1.1\r\nHost: a.example\r\nConnection: close, transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, refuseConnNames},
	{"Connection: host", "GET / HTTP/1.1\r\nHost: a.example\r\nConnection: HOST\r\n\r\n", 400, refuseConnNames},
	{"encoded slash", "GET /x/..%2fapi/t HTTP/1.1\r\nHost: a.example\r\n\r\n", 400, refusePath},
	{"encoded slash upper", "GET /pub%2F..%2Fapi/t HTTP/1.1\r\nHost: a.example\r\n\r\n", 400, refusePath},
	{"encoded backslash", "GET /x/..%5capi/t HTTP/1.1\r\nHost: a.example\r\n\r\n", 400, refusePath},
	{"backslash", "GET /x/..\\api/t HTTP/1.1\r\nHost: a.example\r\n\r\n", 400, refusePath},
	{"dot dot", "GET /x/../api/t HTTP/1.1\r\nHost: a.example\r\n\r\n", 400, refusePath},
	{"dot", "GET /api/./t HTTP/1.1\r\nHost: a.example\r\n\r\n", 400, refusePath},
	{"encoded dots", "GET /x/%2e%2E/api/t HTTP/1.1\r\nHost: a.example\r\n\r\n", 400, refusePath},
	{"half-encoded dots", "GET /x/.%2e/api/t HTTP/1.1\r\nHost: a.example\r\n\r\n", 400, refusePath},
	{"dot dot semicolon", "GET /x/..;/api/t HTTP/1.1\r\nHost: a.example\r\n\r\n", 400, refusePath},
	{"trailing dot dot", "GET /api/.. HTTP/1.1\r\nHost: a.example\r\n\r\n", 400, refusePath},
	{"absolute-form dot dot", "GET http://a.example/x/../api/ HTTP/1.1\r\nHost: a.example\r\n\r\n", 400, refusePath},
}

// TestHostileH1Checks: every hostileH1 request parses (fasthttp lets it
// through) and checkH1 refuses it; ordinary requests pass.
func TestHostileH1Checks(t *testing.T) {
	for _, tc := range hostileH1 {
		req, err := parseH1(t, tc.raw)
		if err != nil {
			t.Errorf("%s: fasthttp refuses it already (%v): the test is wrong", tc.name, err)
			continue
		}
		r := checkH1(req)
		if r == nil || r.status != tc.status || r.reason != tc.reason {
			t.Errorf("%s: %+v, want %d %s", tc.name, r, tc.status, tc.reason)
		}
	}
	for _, raw := range []string{
		"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
		"GET /a/b.c/..d/...?x=../..%2f HTTP/1.1\r\nHost: a.example:8080\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"GET /%2e%2ex/.x/x. HTTP/1.0\r\nHost: [2001:db8::1]:443\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n",
		"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
		"POST /f%20g HTTP/1.1\r\nHost: 192.0.2.1\r\nContent-Length: 0\r\nX-Tab: a\tb\r\n\r\n",
	} {
		req, err := parseH1(t, raw)
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		if r := checkH1(req); r != nil {
			t.Errorf("%q refused: %+v", raw, r)
		}
	}
}

// stdRequest is what net/http hands the HTTP/2 and HTTP/3 handler.
func stdRequest(method, target, authority string, hdr ...string) *http.Request {
	r := &http.Request{Method: method, RequestURI: target, Host: authority, Header: http.Header{}, ProtoMajor: 2}
	r.URL, _ = url.ParseRequestURI(target)
	if r.URL == nil {
		r.URL = &url.URL{Path: target}
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header[hdr[i]] = append(r.Header[hdr[i]], hdr[i+1])
	}
	return r
}

// TestHostileStdConversion: what arrives over HTTP/3 is checked before it
// becomes an HTTP/1.1 head: before this check the method went into the
// request line as it came. Status 0: malformed, a stream error
// (H3_MESSAGE_ERROR), its reason still counted.
func TestHostileStdConversion(t *testing.T) {
	for _, tc := range []struct {
		name   string
		r      *http.Request
		status int
		reason string
	}{
		{"method with a request line", stdRequest("GET /api/admin HTTP/1.1", "/x", testHost), 400, refuseMethod},
		{"method with CRLF", stdRequest("GET\r\nX-Injected: 1\r\n", "/x", testHost), 400, refuseMethod},
		{"empty method", stdRequest("", "/x", testHost), 400, refuseMethod},
		{"CONNECT", stdRequest("CONNECT", "", testHost), 405, refuseConnect},
		{"path with a space", stdRequest("GET", "/x HTTP/1.1\r\nX: y", testHost), 400, refuseTarget},
		{"path with a space only", stdRequest("GET", "/a b", testHost), 400, refuseTarget},
		{"absolute path", stdRequest("GET", "http://evil.example/x", testHost), 400, refuseTarget},
		{"path not a path", stdRequest("GET", "x", testHost), 400, refuseTarget},
		{"path with a fragment", stdRequest("GET", "/x#y", testHost), 400, refuseTarget},
		{"encoded slash", stdRequest("GET", "/x/..%2fapi/t", testHost), 400, refusePath},
		{"dot segment", stdRequest("GET", "/x/../api/t", testHost), 400, refusePath},
		{"authority with userinfo", stdRequest("GET", "/", "user:pass@a.example"), 0, refuseUserinfo},
		{"authority with a path", stdRequest("GET", "/", "a.example/x"), 0, refuseAuthority},
		{"authority with a space", stdRequest("GET", "/", "a.example x"), 0, refuseAuthority},
		{"authority with CRLF", stdRequest("GET", "/", "a.example\r\nX: y"), 0, refuseAuthority},
		{"authority bad port", stdRequest("GET", "/", "a.example:44x"), 0, refuseAuthority},
		{"header name with a space", stdRequest("GET", "/", testHost, "X A", "b"), 400, refuseHeaderName},
		{"header name with a colon", stdRequest("GET", "/", testHost, "X:A", "b"), 400, refuseHeaderName},
		{"header value with CRLF", stdRequest("GET", "/", testHost, "X-A", "b\r\nX-Edge-Addr: 1"), 400, refuseHeaderVal},
		{"header value with NUL", stdRequest("GET", "/", testHost, "X-A", "b\x00"), 400, refuseHeaderVal},
		{"header value with outer space", stdRequest("GET", "/", testHost, "X-A", " b"), 400, refuseHeaderVal},
		{"Transfer-Encoding", stdRequest("POST", "/", testHost, "Transfer-Encoding", "chunked"), 0, refuseConnHeader},
		{"Connection", stdRequest("GET", "/", testHost, "Connection", "x-a"), 0, refuseConnHeader},
		{"TE gzip", stdRequest("GET", "/", testHost, "Te", "gzip"), 0, refuseConnHeader},
	} {
		status, reason, _ := h3Convert(tc.r)
		if status != tc.status || reason != tc.reason {
			t.Errorf("%s: %d %q, want %d %q", tc.name, status, reason, tc.status, tc.reason)
		}
	}
	// An ordinary request becomes the same HTTP/1.1 request.
	in := stdRequest("PATCH", "/a/b%20c?q=1&r=%2f..", "a.example:8443", "Te", "trailers", "X-A", "b\tc", "Accept", "*/*")
	status, reason, req := h3Convert(in)
	if status != 200 {
		t.Fatalf("refused: %d %q", status, reason)
	}
	checkRoundTrip(t, in, req)
	fasthttp.ReleaseRequest(req)
}

// h3Convert decodes r's fields, as an HTTP/3 client would send them
// (lower-case names), into the request for the origin: 200 and the
// request, the refusal's status and reason, or 0 and the reason of a
// malformed request.
func h3Convert(r *http.Request) (int, string, *fasthttp.Request) {
	h := new(h3Head)
	h.req = fasthttp.AcquireRequest()
	h.req.Header.DisableNormalizing()
	h.cl, h.maxSize = -1, 32<<10
	h.field(":method", r.Method)
	if r.Method != "CONNECT" {
		h.field(":scheme", "https")
		h.field(":path", r.RequestURI)
	}
	h.field(":authority", r.Host)
	for k, vs := range r.Header {
		for _, v := range vs {
			h.field(strings.ToLower(k), v)
		}
	}
	rf, malformed := h.check(true)
	switch {
	case malformed:
		return 0, h.reason, nil
	case rf != nil:
		return rf.status, rf.reason, nil
	}
	h.toRequest()
	return 200, "", h.req
}

// checkRoundTrip: the head written for req reads back, with net/http's
// parser, as the request r was.
func checkRoundTrip(t testing.TB, r *http.Request, req *fasthttp.Request) {
	t.Helper()
	req.URI().SetScheme("http")
	req.URI().DisablePathNormalizing = true // as the origin pools' clients do
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := req.Write(w); err != nil {
		t.Fatalf("write: %v", err)
	}
	w.Flush()
	got, err := http.ReadRequest(bufio.NewReader(&b))
	if err != nil {
		t.Fatalf("the head does not parse: %v\n%q", err, b.Bytes())
	}
	// fasthttp drops an empty query ("/x?" goes as "/x"): the same request.
	sameTarget := got.RequestURI == r.RequestURI || got.RequestURI+"?" == r.RequestURI
	if got.Method != r.Method || !sameTarget || got.Host != r.Host {
		t.Fatalf("read back %q %q %q, want %q %q %q\n%q", got.Method, got.RequestURI, got.Host, r.Method, r.RequestURI, r.Host, b.Bytes())
	}
	want := http.Header{}
	for k, vs := range r.Header {
		// TE: trailers is the client's hop's (HTTP/3 checks it and drops it).
		if k == "Host" || k == "Content-Length" || k == "Te" {
			continue
		}
		for _, v := range vs {
			want.Add(k, v)
		}
	}
	delete(got.Header, "Content-Length") // fasthttp's framing of an empty body
	if len(got.Header) != len(want) {
		t.Fatalf("headers %q, want %q\n%q", got.Header, want, b.Bytes())
	}
	for k, vs := range want {
		// the order of two spellings of one name is the map's
		g := slices.Sorted(slices.Values(got.Header[k]))
		if vs = slices.Sorted(slices.Values(vs)); strings.Join(g, "\n") != strings.Join(vs, "\n") {
			t.Fatalf("%s: %q, want %q\n%q", k, g, vs, b.Bytes())
		}
	}
}

// FuzzForwardingPolicy: any HTTP/1.1 head the edge accepts, with headers
// in any case, repeated, with underscores, reaches the origin with
// exactly one of each forwarding header, the proxy's value, no hop-by-hop
// header in any spelling, and every other header it had.
func FuzzForwardingPolicy(f *testing.F) {
	for _, s := range []string{
		"x-edge-addr: 1\r\nX-Edge-Addr: 2\r\nx_edge_addr: 3",
		"X-FORWARDED-FOR: 198.51.100.1\r\nx-forwarded-for: 198.51.100.2\r\nX_Forwarded_For: 9",
		"forwarded: for=x\r\nCDN-LOOP: a\r\ncdn_loop: b",
		"x-request-id: a\r\nX-Request-ID: b\r\nX_REQUEST_ID: c\r\nx-forwarded-host: e\r\nx-forwarded-proto: https",
		"connection: X-A, keep-alive\r\nx-a: 1\r\nX-A: 2\r\nkeep-alive: 3\r\nKEEP-ALIVE: 4",
		"te: trailers\r\nTE: x\r\nproxy-authorization: a\r\nProxy_Authorization: b\r\nupgrade: h2c\r\nConnection: upgrade",
		"Connection: close\r\nProxy-Connection: keep-alive\r\ntrailer: x\r\nX-Other: o\r\nx-other: p",
		"Cookie: a=b\r\nuser-agent: u\r\ncontent-type: text/plain\r\nConnection: cookie, User-Agent",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, hdrs string) {
		req, err := parseH1(t, "GET /x HTTP/1.1\r\nHost: a.example\r\n"+hdrs+"\r\n\r\n")
		if err != nil || checkH1(req) != nil {
			return // refused: nothing reaches an origin
		}
		// What the client sent, before the policy.
		var in [][2]string
		var conn []string
		for k, v := range req.Header.All() {
			in = append(in, [2]string{string(k), string(v)})
			if strings.EqualFold(string(k), "Connection") {
				for _, tok := range strings.Split(string(v), ",") {
					if tok = strings.TrimSpace(tok); tok != "" {
						conn = append(conn, tok)
					}
				}
			}
		}
		head := originHead(t, req, false)
		_, fs := fields(head)
		for name, want := range ourValues {
			if got := named(fs, name); len(got) != 1 || got[0] != want {
				t.Fatalf("%s: %q, want only %q\n%s", name, got, want, head)
			}
		}
		for name, suffix := range ourSuffixes {
			if got := named(fs, name); len(got) != 1 || !strings.HasSuffix(got[0], suffix) {
				t.Fatalf("%s: %q, want one ending %q\n%s", name, got, suffix, head)
			}
		}
		gone := append(append([]string{}, hopNames...), conn...)
		for _, n := range gone {
			if strings.EqualFold(n, "Host") || strings.EqualFold(n, "Content-Length") || strings.EqualFold(n, "Transfer-Encoding") {
				continue
			}
			if got := named(fs, n); len(got) > 0 && !(strings.EqualFold(n, "Connection") && len(got) == 1 && got[0] == "close") {
				t.Fatalf("%s reached the origin: %q\n%s", n, got, head)
			}
		}
		// Every other header arrives, once per field sent.
		count := map[string]int{}
		for _, f := range fs {
			count[strings.ToLower(f[0])+":"+f[1]]++
		}
		for _, kv := range in {
			k := strings.ToLower(kv[0])
			if isOneOf([]byte(k), ourBytes) || isOneOf([]byte(k), hopBytes) || lookalike([]byte(k)) || slicesContainsFold(conn, k) ||
				k == "host" || k == "transfer-encoding" || k == "content-length" {
				continue
			}
			v := strings.TrimSpace(kv[1]) // as fields reads it
			if count[k+":"+v] == 0 {
				t.Fatalf("%s: %q was lost\n%s", kv[0], kv[1], head)
			}
			count[k+":"+v]--
		}
	})
}

func slicesContainsFold(set []string, s string) bool {
	for _, x := range set {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// FuzzStdHead: a request arriving over HTTP/3 is refused, or the
// HTTP/1.1 head made of it reads back as the same method, target, host
// and headers: nothing in it can start a line or a field of its own.
func FuzzStdHead(f *testing.F) {
	f.Add("GET", "/x?y=1", "a.example", "X-A", "b", "Accept", "*/*")
	f.Add("GET /api/admin HTTP/1.1", "/x", "a.example", "X-A", "b", "", "")
	f.Add("POST", "/x HTTP/1.1\r\nX: y", "a.example:80", "X-A", "b\r\nc", "Te", "trailers")
	f.Add("PUT", "/a%2fb/../c", "user@a.example", "X A", " b", "Connection", "close")
	f.Add("DELETE", "/", "[2001:db8::1]:443", "X-A", "b\x00", "Transfer-Encoding", "chunked")
	f.Add("OPTIONS", "*", "a.example", "Host", "b.example", "Content-Length", "5")
	f.Fuzz(func(t *testing.T, method, target, authority, k1, v1, k2, v2 string) {
		r := stdRequest(method, target, authority)
		if k1 != "" {
			r.Header[k1] = append(r.Header[k1], v1)
		}
		if k2 != "" {
			r.Header[k2] = append(r.Header[k2], v2)
		}
		status, _, req := h3Convert(r)
		if status != 200 {
			return
		}
		defer fasthttp.ReleaseRequest(req)
		if target == "*" || target == "" {
			return // OPTIONS *: no path to compare; net/http never gives an empty one
		}
		// net/http canonicalizes names, as an origin's reader would.
		canon := http.Header{}
		for k, vs := range r.Header {
			for _, v := range vs {
				canon.Add(k, v)
			}
		}
		r.Header = canon
		checkRoundTrip(t, r, req)
	})
}
