package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

func testRouter(t *testing.T, sites []Site) *router {
	t.Helper()
	pools := &originPools{pools: map[string]*origin{}}
	r, err := newRouter(sites, pools.get, func(string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "test_retries_total"})
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func origins(us ...string) []Origin {
	var out []Origin
	for _, u := range us {
		out = append(out, Origin{URL: mustURL(u)})
	}
	return out
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// TestRouterLookup: exact names before wildcards before the catch-all, the
// longest wildcard first, edge_ips making a site absent elsewhere, and Host
// spelled any way a client may spell it.
func TestRouterLookup(t *testing.T) {
	o := origins("http://127.0.0.1:1")
	r := testRouter(t, []Site{
		{Hosts: []string{"a.example"}, Origins: o},
		{Hosts: []string{"*.b.example"}, Origins: o},
		{Hosts: []string{"*.x.b.example"}, Origins: o},
		{Hosts: []string{"static.example"}, EdgeIPs: []netip.Prefix{netip.MustParsePrefix("192.0.2.200/32")}, Origins: o},
		{Hosts: []string{"static.example"}, EdgeIPs: []netip.Prefix{netip.MustParsePrefix("2001:db8::/64")}, Origins: origins("http://127.0.0.1:2")},
		{Hosts: []string{"*"}, EdgeIPs: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, Origins: o},
	})
	v4, v6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	for _, tc := range []struct {
		host string
		edge netip.Addr
		want string // the site's name, "" for none
	}{
		{"a.example", v4, "a.example"},
		{"A.EXAMPLE", v4, "a.example"},
		{"a.example.", v4, "a.example"},
		{"a.example:8080", v4, "a.example"},
		{"a.example", v6, "a.example"},
		{"b.example", v4, ""}, // a wildcard does not cover its own name
		{"w.b.example", v4, "*.b.example"},
		{"deep.w.b.example", v4, "*.b.example"},
		{"w.x.b.example", v4, "*.x.b.example"}, // the longest wildcard wins
		{"static.example", netip.MustParseAddr("192.0.2.200"), "static.example"},
		{"static.example", v4, ""}, // outside its edge_ips
		{"static.example", v6, "static.example"},
		{"unknown.example", v4, ""},
		{"unknown.example", netip.MustParseAddr("198.51.100.9"), "*"},
		{"a.example", netip.MustParseAddr("198.51.100.9"), "a.example"},
		{"[2001:db8::1]:443", v6, ""},
		{"", v4, ""},
	} {
		s := r.lookup(tc.host, tc.edge)
		got := ""
		if s != nil {
			got = s.name
		}
		if got != tc.want {
			t.Errorf("Host %q on %s: site %q, want %q", tc.host, tc.edge, got, tc.want)
		}
	}
	// The two static.example sites are two customers' sites: each address
	// reaches its own origin.
	if n := r.lookup("static.example", v6).route("/").origins[0].o.name; n != "http://127.0.0.1:2" {
		t.Errorf("static.example on %s reaches %s", v6, n)
	}
}

// TestRoutes: the longest path prefix wins, on the cleaned path.
func TestRoutes(t *testing.T) {
	r := testRouter(t, []Site{{
		Hosts:   []string{"a.example"},
		Origins: origins("http://127.0.0.1:1"),
		Routes: []Route{
			{Path: "/api/", Origins: origins("http://127.0.0.1:2")},
			{Path: "/api/v2/", Origins: origins("http://127.0.0.1:3")},
		},
	}})
	s := r.lookup("a.example", netip.MustParseAddr("192.0.2.1"))
	for path, want := range map[string]string{
		"/":                "http://127.0.0.1:1",
		"/api":             "http://127.0.0.1:1",
		"/api/":            "http://127.0.0.1:2",
		"/api/v1/x":        "http://127.0.0.1:2",
		"/api/v2/x":        "http://127.0.0.1:3",
		"/pub/../api/x":    "http://127.0.0.1:2",
		"//api//v2/x":      "http://127.0.0.1:3",
		"/api/v2/../../x":  "http://127.0.0.1:1",
		"/api/./v2/":       "http://127.0.0.1:3",
		"":                 "http://127.0.0.1:1",
		"/../../api/v2/ok": "http://127.0.0.1:3",
	} {
		if got := s.route(cleanPath(path)).origins[0].o.name; got != want {
			t.Errorf("path %q (clean %q): %s, want %s", path, cleanPath(path), got, want)
		}
	}
}

// TestForwardingPolicy: the origin learns the client, the edge and the
// scheme (appended to what earlier proxies said), hop-by-hop headers are
// dropped, and what a client tried to set itself is replaced. Every client
// protocol goes through this rewrite (HTTP/2 and HTTP/3 copy their requests
// into fasthttp headers first; TestCDNCurl checks it end to end).
func TestForwardingPolicy(t *testing.T) {
	const id = "0123456789abcdef"
	for _, tc := range []struct {
		name   string
		client string
		tls    bool
		in     [][2]string
		want   map[string]string
	}{
		{"plain", "203.0.113.7:5000", false, nil, map[string]string{
			"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "a.example",
			"Forwarded": "for=203.0.113.7;by=192.0.2.10;proto=http;host=a.example",
			"CDN-Loop":  "edgeproxy", "X-Edge-Addr": "192.0.2.10:443", "X-Request-Id": id,
		}},
		{"v6 over tls", "[2001:db8::7]:5000", true, nil, map[string]string{
			"X-Forwarded-For": "2001:db8::7", "X-Forwarded-Proto": "https",
			"Forwarded": `for="[2001:db8::7]";by=192.0.2.10;proto=https;host=a.example`,
		}},
		{"chain", "203.0.113.7:5000", true, [][2]string{
			{"X-Forwarded-For", "198.51.100.1"}, {"X-Forwarded-For", "198.51.100.2, 198.51.100.3"},
			{"Forwarded", "for=198.51.100.1;proto=https"}, {"CDN-Loop", "other-cdn"},
		}, map[string]string{
			"X-Forwarded-For": "198.51.100.1, 198.51.100.2, 198.51.100.3, 203.0.113.7",
			"Forwarded":       "for=198.51.100.1;proto=https, for=203.0.113.7;by=192.0.2.10;proto=https;host=a.example",
			"CDN-Loop":        "other-cdn, edgeproxy",
		}},
		{"spoofing and hop-by-hop", "203.0.113.7:5000", false, [][2]string{
			{"X-Request-Id", "forged"}, {"X-Edge-Addr", "1.2.3.4:80"}, {"X-Forwarded-Proto", "https"},
			{"X-Forwarded-Host", "evil.example"}, {"Connection", "keep-alive, X-Secret"}, {"X-Secret", "s"},
			{"Keep-Alive", "timeout=5"}, {"TE", "trailers"}, {"Upgrade", "h2c"}, {"Proxy-Authorization", "Basic x"},
			{"Accept", "*/*"},
		}, map[string]string{
			"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "a.example",
			"X-Edge-Addr": "192.0.2.10:443", "X-Request-Id": id, "Accept": "*/*",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h fasthttp.RequestHeader
			h.DisableNormalizing()
			h.SetMethod("GET")
			h.SetRequestURI("/")
			h.SetHost("a.example")
			for _, kv := range tc.in {
				h.Add(kv[0], kv[1])
			}
			var sc h1Scan
			scanRequest(&h, &sc)
			rewriteRequest(&h, &sc, netip.MustParseAddrPort(tc.client), netip.MustParseAddrPort("192.0.2.10:443"),
				[]byte("a.example"), tc.tls, "edgeproxy", id)
			for name, v := range tc.want {
				var got []string
				for k, val := range h.All() {
					if strings.EqualFold(string(k), name) {
						got = append(got, string(val))
					}
				}
				if len(got) != 1 || got[0] != v {
					t.Errorf("%s: %q, want %q once", name, got, v)
				}
			}
			for _, gone := range []string{"Connection", "X-Secret", "Keep-Alive", "TE", "Upgrade", "Proxy-Authorization"} {
				if v := h.Peek(gone); v != nil {
					t.Errorf("%s: forwarded as %q", gone, v)
				}
			}
		})
	}
}

// TestLoopDetection: our id is found among CDN-Loop entries, with
// parameters and any case, and only as a whole entry.
func TestLoopDetection(t *testing.T) {
	for _, tc := range []struct {
		values []string
		want   bool
	}{
		{nil, false},
		{[]string{"edgeproxy"}, true},
		{[]string{"other, EdgeProxy; v=1"}, true},
		{[]string{"other", " edgeproxy "}, true},
		{[]string{"edgeproxy2, my-edgeproxy"}, false},
		{[]string{"other;note=edgeproxy"}, false},
	} {
		var bs [][]byte
		for _, v := range tc.values {
			bs = append(bs, []byte(v))
		}
		if got := loopIn(bs, "edgeproxy"); got != tc.want {
			t.Errorf("loopIn(%q) = %v", tc.values, got)
		}
	}
}

func TestFramingAmbiguous(t *testing.T) {
	for raw, want := range map[string]bool{
		"Host: a\r\nContent-Length: 4\r\n":                                 false,
		"Host: a\r\nTransfer-Encoding: chunked\r\n":                        false,
		"Host: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n":   true,
		"Host: a\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n":   true,
		"Host: a\r\nContent-Length : 4\r\nTransfer-Encoding: chunked\r\n":  true,
		"Host: a\r\nX-Content-Length: 4\r\nTransfer-Encoding: chunked\r\n": false,
	} {
		if got := framingAmbiguous([]byte(raw)); got != want {
			t.Errorf("%q: %v, want %v", raw, got, want)
		}
	}
}

func TestUpstreamStatus(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{fasthttp.ErrTimeout, 504},
		{fmt.Errorf("read: %w", os.ErrDeadlineExceeded), 504},
		{fasthttp.ErrNoFreeConns, 503},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, 502},
		{errors.New("unexpected EOF"), 502},
	} {
		if got := upstreamStatus(tc.err); got != tc.want {
			t.Errorf("%v: %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestRequestIDs(t *testing.T) {
	ids := newRequestIDs()
	seen := map[string]bool{}
	for range 100000 {
		id := ids.next()
		if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("id %q", id)
		}
		if seen[id] {
			t.Fatalf("id %q repeated", id)
		}
		seen[id] = true
	}
}
