package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/selfsigned"
	"github.com/edgeproxy/edgeproxy/internal/srccheck"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// seen is what a test origin tells about the request it got.
type seen struct {
	Origin  string            `json:"origin"`
	Host    string            `json:"host"`
	Path    string            `json:"path"`
	Proto   string            `json:"proto"`
	Headers map[string]string `json:"headers"`
}

// originStats counts what a test origin served.
type originStats struct {
	requests, inflight, maxInflight atomic.Int64
	maxBody                         atomic.Int64 // the largest request body read
}

// testOrigin serves HTTP on addr and answers with what it saw; /slow-body
// streams three chunks 100 ms apart, /hang answers after 3 s.
func testOrigin(t *testing.T, name, addr string) *originStats {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	st := &originStats{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st.requests.Add(1)
		n := st.inflight.Add(1)
		defer st.inflight.Add(-1)
		for m := st.maxInflight.Load(); n > m && !st.maxInflight.CompareAndSwap(m, n); m = st.maxInflight.Load() {
		}
		if r.URL.Path == "/hang" {
			time.Sleep(3 * time.Second)
		}
		if r.URL.Path == "/slow-body" {
			w.Header().Set("Content-Type", "text/plain")
			for i := range 3 {
				fmt.Fprintf(w, "chunk %d\n", i)
				w.(http.Flusher).Flush()
				time.Sleep(100 * time.Millisecond)
			}
			return
		}
		if r.Method == "POST" {
			n, _ := io.Copy(io.Discard, r.Body)
			for m := st.maxBody.Load(); n > m && !st.maxBody.CompareAndSwap(m, n); m = st.maxBody.Load() {
			}
		}
		h := map[string]string{}
		for k := range r.Header {
			h[k] = strings.Join(r.Header.Values(k), ", ")
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "must not reach the client")
		json.NewEncoder(w).Encode(seen{Origin: name, Host: r.Host, Path: r.URL.Path, Proto: r.Proto, Headers: h})
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return st
}

type cdnFixture struct {
	ns                    *netns.NS
	in                    *instance
	certA, certB, certDef string
	pool                  *x509.CertPool
	accessLog             string
	originA               *originStats
}

// startCDN runs the binary with a cdn of two sites, three certificates and
// a spectrum UDP app on port 443 of another address.
func startCDN(t *testing.T) *cdnFixture {
	t.Helper()
	f := &cdnFixture{ns: netns.New(t)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("edgeproxy's log:\n%s", f.in.stderr)
			if resp, err := f.ns.HTTPClient().Get(f.in.admin + "/metrics"); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				for _, l := range strings.Split(string(b), "\n") {
					if strings.Contains(l, "cdn") && !strings.HasPrefix(l, "#") {
						t.Log(l)
					}
				}
			}
		}
	})
	dir := t.TempDir()
	var err error
	var keyA, keyB, keyDef string
	if f.certA, keyA, err = selfsigned.Write(dir, "a", "a.example"); err != nil {
		t.Fatal(err)
	}
	if f.certB, keyB, err = selfsigned.Write(dir, "b", "*.b.example"); err != nil {
		t.Fatal(err)
	}
	if f.certDef, keyDef, err = selfsigned.Write(dir, "default", "default.example"); err != nil {
		t.Fatal(err)
	}
	if f.pool, err = selfsigned.Pool(f.certA, f.certB, f.certDef); err != nil {
		t.Fatal(err)
	}
	f.originA = testOrigin(t, "origin-a", "127.0.0.1:18080")
	testOrigin(t, "origin-b", "127.0.0.1:18081")
	echo.StartUDP(t, "spectrum-udp-origin", "127.0.0.1:18443")
	f.accessLog = filepath.Join(dir, "access.log")
	f.in = startInstance(t, f.ns, fmt.Sprintf(`store: {path: ""}
prefixes:
  - {cidr: 192.0.2.0/24, service: cdn}
  - {cidr: "2001:db8:6::/48", service: cdn}
  - {cidr: 198.51.100.0/24, service: spectrum}
cdn:
  http_ports: [80]
  https_ports: [443]
  http3: true
  http3_port: 443
  access_log: %q
  timeouts: {read_header: 1s, body: 1s, upstream: 1s}
  limits: {max_header_bytes: 8192, max_body_bytes: 1000}
  certificates:
    - {cert_file: %q, key_file: %q}
    - {cert_file: %q, key_file: %q}
    - {cert_file: %q, key_file: %q, default: true}
  sites:
    - hosts: [a.example]
      origins: ["http://127.0.0.1:18080"]
      routes:
        - {path: /api/, origins: ["http://127.0.0.1:18081"]}
        - {path: /down/, origins: ["http://127.0.0.1:1"]}
    - hosts: ["*.b.example"]
      edge_ips: [192.0.2.200/32, "2001:db8:6::200"]
      origins: ["http://127.0.0.1:18081"]
    - hosts: ["*"] # h2spec's, whose :authority is the address
      edge_ips: [192.0.2.99/32]
      origins: ["http://127.0.0.1:18080"]
spectrum:
  apps:
    - {name: game, protocol: udp, edge: 198.51.100.0/24, ports: "443", origins: ["127.0.0.1:18443"]}
`, f.accessLog, f.certA, keyA, f.certB, keyB, f.certDef, keyDef))
	return f
}

// curl runs curl inside the namespace and returns its output.
func curl(t *testing.T, args ...string) string {
	t.Helper()
	curlBin := testutil.NeedTool(t, "curl", "curl")
	out, err := exec.Command(curlBin, append([]string{"-sS", "--max-time", "5"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func decodeSeen(t *testing.T, body string) seen {
	t.Helper()
	var s seen
	i := strings.Index(body, "{")
	if i < 0 {
		t.Fatalf("origin's answer missing: %q", body)
		return seen{}
	}
	if err := json.Unmarshal([]byte(body[i:]), &s); err != nil {
		t.Fatalf("origin's answer %q: %v", body, err)
	}
	return s
}

// TestCDNCurl: curl over HTTP/1.1, HTTPS with HTTP/1.1 and HTTP/2, IPv4 and
// IPv6, reaches the right origin through steered addresses, with the
// forwarding headers set and hop-by-hop headers gone.
func TestCDNCurl(t *testing.T) {
	f := startCDN(t)
	for _, tc := range []struct {
		name, edge, scheme, proto string
	}{
		{"http v4", "192.0.2.10", "http", "--http1.1"},
		{"https h1 v4", "192.0.2.10", "https", "--http1.1"},
		{"https h2 v4", "192.0.2.10", "https", "--http2"},
		{"http v6", "[2001:db8:6::10]", "http", "--http1.1"},
		{"https h2 v6", "[2001:db8:6::10]", "https", "--http2"},
	} {
		port := "80"
		if tc.scheme == "https" {
			port = "443"
		}
		out := curl(t, tc.proto, "--cacert", f.certA, "--resolve", "a.example:"+port+":"+tc.edge,
			"-D", "-", "-H", "X-Forwarded-For: 203.0.113.99", tc.scheme+"://a.example/hello?x=1")
		if !strings.Contains(out, "{") {
			t.Fatalf("%s: %s\n%s", tc.name, out, f.in.stderr)
		}
		s := decodeSeen(t, out)
		wantProto := "http"
		if tc.scheme == "https" {
			wantProto = "https"
		}
		edge := strings.Trim(tc.edge, "[]")
		switch {
		case s.Origin != "origin-a" || s.Path != "/hello" || s.Host != "a.example":
			t.Errorf("%s: origin saw %+v", tc.name, s)
		case s.Headers["X-Forwarded-Proto"] != wantProto:
			t.Errorf("%s: X-Forwarded-Proto %q", tc.name, s.Headers["X-Forwarded-Proto"])
		case !strings.HasPrefix(s.Headers["X-Forwarded-For"], "203.0.113.99, "):
			t.Errorf("%s: X-Forwarded-For %q, want the client appended", tc.name, s.Headers["X-Forwarded-For"])
		case !strings.Contains(s.Headers["Forwarded"], "proto="+wantProto) || !strings.Contains(s.Headers["Forwarded"], edge):
			t.Errorf("%s: Forwarded %q", tc.name, s.Headers["Forwarded"])
		case s.Headers["Cdn-Loop"] != "edgeproxy" || len(s.Headers["X-Request-Id"]) != 16:
			t.Errorf("%s: CDN-Loop %q, X-Request-Id %q", tc.name, s.Headers["Cdn-Loop"], s.Headers["X-Request-Id"])
		case !strings.HasPrefix(s.Headers["X-Edge-Addr"], tc.edge+":"+port) && !strings.HasPrefix(s.Headers["X-Edge-Addr"], edge):
			t.Errorf("%s: X-Edge-Addr %q", tc.name, s.Headers["X-Edge-Addr"])
		}
		if tc.proto == "--http2" && !strings.HasPrefix(out, "HTTP/2 200") {
			t.Errorf("%s: not HTTP/2: %q", tc.name, out[:20])
		}
		if strings.Contains(strings.ToLower(out), "x-hop") {
			t.Errorf("%s: a hop-by-hop header reached the client", tc.name)
		}
		if tc.scheme == "https" && !strings.Contains(strings.ToLower(out), `alt-svc: h3=":443"`) {
			t.Errorf("%s: no Alt-Svc announcing HTTP/3", tc.name)
		}
	}
}

// TestCDNRouting: Host and path routing, edge_ips, 421 for unknown hosts and
// for sites outside their addresses, never another customer's site.
func TestCDNRouting(t *testing.T) {
	startCDN(t)
	status := func(host, edge, path string) (string, string) {
		out := curl(t, "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: "+host, "http://"+edge+path)
		body := curl(t, "--path-as-is", "-H", "Host: "+host, "http://"+edge+path)
		return out, body
	}
	for _, tc := range []struct{ host, edge, path, code, origin string }{
		{"a.example", "192.0.2.10", "/", "200", "origin-a"},
		{"A.Example.", "192.0.2.10", "/", "200", "origin-a"},
		{"a.example", "192.0.2.10", "/api/v1", "200", "origin-b"},
		{"a.example", "192.0.2.10", "/pub/../api/v1", "400", ""},     // a route is a boundary: dot segments are refused
		{"a.example", "192.0.2.10", "/pub/%2e%2e/api/v1", "400", ""}, // also encoded
		{"www.b.example", "192.0.2.200", "/", "200", "origin-b"},
		{"deep.www.b.example", "192.0.2.200", "/", "200", "origin-b"},
		{"www.b.example", "[2001:db8:6::200]", "/", "200", "origin-b"},
		{"www.b.example", "192.0.2.10", "/", "421", ""}, // outside its edge_ips
		{"b.example", "192.0.2.200", "/", "421", ""},    // the wildcard does not cover the name itself
		{"unknown.example", "192.0.2.10", "/", "421", ""},
	} {
		code, body := status(tc.host, tc.edge, tc.path)
		if code != tc.code {
			t.Errorf("Host %s on %s%s: %s, want %s", tc.host, tc.edge, tc.path, code, tc.code)
			continue
		}
		if tc.origin != "" && decodeSeen(t, body).Origin != tc.origin {
			t.Errorf("Host %s on %s%s: answered by %s", tc.host, tc.edge, tc.path, body)
		}
		if tc.code == "421" && (!strings.Contains(body, "421 Misdirected Request") || !strings.Contains(body, "request id: ")) {
			t.Errorf("421 page %q", body)
		}
	}
}

// TestCDNSNI: the certificate follows the SNI name among the sites that
// exist on the dialled address; elsewhere the default certificate.
func TestCDNSNI(t *testing.T) {
	startCDN(t)
	leaf := func(edge, sni string) string {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", edge, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err != nil {
			return "error: " + err.Error()
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].DNSNames[0]
	}
	for _, tc := range []struct{ edge, sni, want string }{
		{"192.0.2.10:443", "a.example", "a.example"},
		{"[2001:db8:6::10]:443", "a.example", "a.example"},
		{"192.0.2.200:443", "x.b.example", "*.b.example"},
		{"192.0.2.10:443", "x.b.example", "default.example"}, // the site does not exist here
		{"192.0.2.10:443", "nobody.example", "default.example"},
		{"192.0.2.10:443", "", "default.example"},
	} {
		if got := leaf(tc.edge, tc.sni); got != tc.want {
			t.Errorf("SNI %q on %s: certificate for %q, want %q", tc.sni, tc.edge, got, tc.want)
		}
	}
}

// h3Get fetches a URL over HTTP/3 with quic-go's client, every reply checked
// to come from dst.
func h3Get(t *testing.T, pool *x509.CertPool, dst netip.AddrPort, url string) (*http.Response, string, *srccheck.Conn) {
	t.Helper()
	resp, body, cc, err := h3Do(pool, dst, url)
	if err != nil {
		t.Fatalf("HTTP/3 %s via %s: %v", url, dst, err)
	}
	return resp, body, cc
}

func init() {
	// checkedConn is not a *net.UDPConn, so quic-go cannot size its
	// buffers, and says so on every dial.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
}

// h3Do is h3Get for any goroutine of the namespace.
func h3Do(pool *x509.CertPool, dst netip.AddrPort, url string) (*http.Response, string, *srccheck.Conn, error) {
	// The client's source must lie outside the steered prefixes: an
	// unconnected UDP socket loses its replies to the dispatcher, which
	// steers every port of a bound prefix (connected sockets win, but
	// quic-go's are not connected).
	network, src := "udp4", "127.0.0.1:0"
	if dst.Addr().Is6() {
		network, src = "udp6", "[::1]:0"
	}
	pc, err := net.ListenPacket(network, src)
	if err != nil {
		return nil, "", nil, err
	}
	cc := srccheck.New(pc, dst)
	defer pc.Close()
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		Dial: func(ctx context.Context, _ string, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error) {
			return quic.DialEarly(ctx, cc, net.UDPAddrFromAddrPort(dst), tlsConf, conf)
		},
	}
	defer tr.Close()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, "", cc, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), cc, err
}

// TestCDNHTTP3: quic-go's HTTP/3 client reaches the origin through steered
// addresses, IPv4 and IPv6, and every datagram it receives comes from the
// address and port it dialled; a spectrum UDP app on port 443 of another
// address keeps working beside it.
func TestCDNHTTP3(t *testing.T) {
	f := startCDN(t)
	for _, dst := range []string{"192.0.2.10:443", "[2001:db8:6::10]:443"} {
		ap := netip.MustParseAddrPort(dst)
		resp, body, cc := h3Get(t, f.pool, ap, "https://a.example/h3")
		s := decodeSeen(t, body)
		if resp.ProtoMajor != 3 || s.Origin != "origin-a" || s.Headers["X-Forwarded-Proto"] != "https" {
			t.Errorf("%s: %s %+v", dst, resp.Proto, s)
		}
		if resp.Header.Get("Alt-Svc") != "" {
			t.Errorf("%s: an HTTP/3 response announces Alt-Svc", dst)
		}
		if n, bad := cc.Stats(); n == 0 || len(bad) > 0 {
			t.Errorf("%s: %d datagrams, from wrong sources: %v", dst, n, bad)
		}
	}
	// The spectrum app on udp/443 of another address.
	if got := askName(t, "udp", "198.51.100.5:443"); got != "spectrum-udp-origin" {
		t.Errorf("spectrum udp/443 beside HTTP/3: %q", got)
	}
}

// TestCDNLimits: slow and malformed requests are refused; errors carry a
// request id that the access log has too.
func TestCDNLimits(t *testing.T) {
	f := startCDN(t)
	raw := func(req string, wait time.Duration) string {
		c, err := net.Dial("tcp", "192.0.2.10:80")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, req)
		if wait > 0 {
			time.Sleep(wait)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return "no response: " + err.Error()
		}
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	for _, tc := range []struct{ name, req, want string }{
		{"CL with TE", "POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"},
		{"duplicate CL", "POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd", "400"},
		{"bad TE", "POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: gzip, chunked, x\r\n\r\n0\r\n\r\n", "400"},
		{"header too big", "GET / HTTP/1.1\r\nHost: a.example\r\nX-Big: " + strings.Repeat("x", 9000) + "\r\n\r\n", "431"},
		{"body too big", "POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5000\r\n\r\n" + strings.Repeat("x", 5000), "413"},
		{"chunked body too big", "POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n" + strings.Repeat("x", 2000) + "\r\n0\r\n\r\n", "413"},
		{"garbage", "HELLO\r\n\r\n", "400"},
		{"loop", "GET / HTTP/1.1\r\nHost: a.example\r\nCDN-Loop: other, edgeproxy\r\n\r\n", "508"},
		{"origin down", "GET /down/x HTTP/1.1\r\nHost: a.example\r\n\r\n", "502"},
		{"origin silent", "GET /hang HTTP/1.1\r\nHost: a.example\r\n\r\n", "504"},
	} {
		got := raw(tc.req, 0)
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: %q, want %s", tc.name, got, tc.want)
		}
		if tc.want == "502" || tc.want == "504" {
			m := regexp.MustCompile(`request id: ([0-9a-f]{16})`).FindStringSubmatch(got)
			if m == nil {
				t.Fatalf("%s page without a request id: %q", tc.want, got)
			}
			time.Sleep(300 * time.Millisecond) // the access log is buffered
			logged, _ := os.ReadFile(f.accessLog)
			if !strings.Contains(string(logged), `"request_id":"`+m[1]+`"`) || !strings.Contains(string(logged), `"status":`+tc.want) {
				t.Errorf("request id %s is not in the access log:\n%s", m[1], logged)
			}
		}
	}

	// Slowloris: a head that never ends is cut after read_header (1s).
	c, err := net.Dial("tcp", "192.0.2.10:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.example\r\n")
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(c)
	if d := time.Since(start); err != nil || d > 3*time.Second {
		t.Errorf("a slow head held the connection %v (%v)", d, err)
	}
	// A body that stops coming is cut after the body timeout (1s).
	c2, err := net.Dial("tcp", "192.0.2.10:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	io.WriteString(c2, "POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 100\r\n\r\nabc")
	start = time.Now()
	c2.SetReadDeadline(time.Now().Add(8 * time.Second))
	io.ReadAll(c2)
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("a stalled body held the connection %v", d)
	}
	// A streamed response arrives in chunks, not buffered whole: the origin
	// waits 100 ms after each of its three chunks, so the first byte must
	// come well before the last.
	out := curl(t, "-H", "Host: a.example", "http://192.0.2.10/slow-body")
	if out != "chunk 0\nchunk 1\nchunk 2\n" {
		t.Errorf("streamed body %q", out)
	}
	var first, total float64
	times := curl(t, "-o", "/dev/null", "-w", "%{time_starttransfer} %{time_total}", "-H", "Host: a.example", "http://192.0.2.10/slow-body")
	if _, err := fmt.Sscan(times, &first, &total); err != nil || total-first < 0.15 {
		t.Errorf("first byte at %.3fs, last at %.3fs: the response was buffered (%v)", first, total, err)
	}
}

// h2specKnown are the h2spec cases the HTTP/2 server is allowed to fail:
// none. (x/net/http2, which served HTTP/2 before, failed four by design.)
var h2specKnown = map[string]bool{}

// TestH2Spec runs h2spec against the TLS listener: every failure must be
// one of h2specKnown.
func TestH2Spec(t *testing.T) {
	h2spec := testutil.NeedTool(t, "h2spec", "go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible")
	startCDN(t)
	// The catch-all site on 192.0.2.99 forwards h2spec's requests to an
	// origin that reads their bodies, as real traffic does: a handler that
	// answered at once would end streams before h2spec's malformed frames
	// reach them.
	args := []string{"-t", "-k", "-h", "192.0.2.99", "-p", "443", "-o", "5"}
	if s := os.Getenv("H2SPEC"); s != "" { // a section alone, verbose
		args = append(args, "-v", s)
	}
	out, _ := exec.Command(h2spec, args...).CombinedOutput()
	m := regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("h2spec output:\n%s", out)
	}
	t.Logf("h2spec: %s", m[0])
	failed := h2specFailures(string(out))
	if fmt.Sprint(len(failed)) != m[4] {
		t.Fatalf("parsed %d failures of %s:\n%s", len(failed), m[4], out)
	}
	t.Logf("h2spec failures: %v", failed)
	for _, f := range failed {
		if !h2specKnown[f] {
			t.Errorf("h2spec %s fails:\n%s", f, out[strings.Index(string(out), "Failures:"):])
		}
	}
}

// h2specFailures lists the failed cases of h2spec's report as
// "section/case", as in "6.5.3/1".
func h2specFailures(out string) []string {
	i := strings.Index(out, "Failures:")
	if i < 0 {
		return nil
	}
	section := regexp.MustCompile(`^\s+(\d+(?:\.\d+)*)\. `)
	item := regexp.MustCompile(`^\s+× (\d+):`)
	var cur string
	var failed []string
	for _, l := range strings.Split(out[i:], "\n") {
		if m := section.FindStringSubmatch(l); m != nil {
			cur = m[1]
		} else if m := item.FindStringSubmatch(l); m != nil {
			failed = append(failed, cur+"/"+m[1])
		}
	}
	return failed
}
