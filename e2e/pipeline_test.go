package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// TestPipelineSameAnswers: every engine runs its requests through the one
// pipeline, so HTTP/1.1 (cleartext and TLS), HTTP/2 and HTTP/3 give the
// same answer to each of its refusals and failures: the same status, the
// edge's page with its request id and Server: edgeproxy, Alt-Svc over TLS
// on TCP but not on a 421 nor in cleartext nor over HTTP/3, and an access
// log line with the id, protocol and status.
func TestPipelineSameAnswers(t *testing.T) {
	f := startCDN(t)
	h1TLS := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: f.pool, NextProtos: []string{"http/1.1"}},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return f.ns.DialContext(ctx, network, "192.0.2.10:443")
		},
	}}
	h1 := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return f.ns.DialContext(ctx, network, "192.0.2.10:80")
		},
	}}
	h3, closeH3 := h3Client(t, f.pool, netip.MustParseAddrPort("192.0.2.10:443"))
	defer closeH3()
	engines := []struct {
		proto, scheme string
		c             *http.Client
	}{
		{"HTTP/1.1", "http", h1},
		{"HTTP/1.1", "https", h1TLS},
		{"HTTP/2", "https", h2Client(f)},
		{"HTTP/3", "https", h3},
	}
	cases := []struct {
		name   string
		status int
		req    func(scheme string) *http.Request
	}{
		{"loop", 508, func(scheme string) *http.Request {
			r, _ := http.NewRequest("GET", scheme+"://a.example/", nil)
			r.Header.Set("CDN-Loop", "other, edgeproxy")
			return r
		}},
		{"no site", 421, func(scheme string) *http.Request {
			r, _ := http.NewRequest("GET", scheme+"://a.example/", nil)
			r.Host = "nosuch.example"
			return r
		}},
		{"body over the limit", 413, func(scheme string) *http.Request {
			r, _ := http.NewRequest("POST", scheme+"://a.example/", bytes.NewReader(make([]byte, 2000)))
			return r
		}},
		{"origin down", 502, func(scheme string) *http.Request {
			r, _ := http.NewRequest("GET", scheme+"://a.example/down/x", nil)
			return r
		}},
	}
	type answer struct{ proto string }
	ids := map[string]answer{} // request id -> protocol
	statusOf := map[string]int{}
	for _, tc := range cases {
		for _, e := range engines {
			what := tc.name + " over " + e.proto + " (" + e.scheme + ")"
			resp, err := e.c.Do(tc.req(e.scheme))
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			var body bytes.Buffer
			body.ReadFrom(resp.Body)
			resp.Body.Close()
			id := edgePage(t, what, resp, body.String(), tc.status)
			if id == "" {
				continue
			}
			ids[id], statusOf[id] = answer{e.proto}, tc.status
			alt := resp.Header.Get("Alt-Svc")
			switch wantAlt := e.scheme == "https" && e.proto != "HTTP/3" && tc.status != 421; {
			case wantAlt && alt != `h3=":443"; ma=86400`:
				t.Errorf("%s: Alt-Svc %q", what, alt)
			case !wantAlt && alt != "":
				t.Errorf("%s: Alt-Svc %q, want none", what, alt)
			}
			if srv := resp.Header.Values("Server"); len(srv) != 1 || srv[0] != "edgeproxy" {
				t.Errorf("%s: Server %q, want edgeproxy", what, srv)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("%s: Content-Type %q", what, ct)
			}
		}
	}
	// Each answer has its access log line (batched: give it a flush).
	deadline := time.Now().Add(3 * time.Second)
	for {
		seen := map[string]bool{}
		if b, err := os.ReadFile(f.accessLog); err == nil {
			sc := bufio.NewScanner(bytes.NewReader(b))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var l struct {
					ID     string `json:"request_id"`
					Proto  string `json:"protocol"`
					Status int    `json:"status"`
				}
				if json.Unmarshal(sc.Bytes(), &l) != nil {
					continue
				}
				if a, ok := ids[l.ID]; ok {
					seen[l.ID] = true
					if l.Proto != a.proto || l.Status != statusOf[l.ID] {
						t.Errorf("access log line of %s: %s %d, want %s %d", l.ID, l.Proto, l.Status, a.proto, statusOf[l.ID])
					}
				}
			}
		}
		if len(seen) == len(ids) {
			break
		}
		if time.Now().After(deadline) {
			var missing []string
			for id, a := range ids {
				if !seen[id] {
					missing = append(missing, id+" ("+a.proto+")")
				}
			}
			t.Fatalf("no access log line for %s", strings.Join(missing, ", "))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if want := len(cases) * len(engines); len(ids) != want {
		t.Errorf("%d answers were the edge's page, want %d", len(ids), want)
	}
}

// TestCDNActiveConnectionsByProtocol: each open client connection is
// counted once, under the protocol it speaks: an HTTP/2 connection as h2
// only, not also as the TLS connection it was accepted as.
func TestCDNActiveConnectionsByProtocol(t *testing.T) {
	f := startCDN(t)
	h2 := h2Client(f)
	h1TLS := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: f.pool, NextProtos: []string{"http/1.1"}},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return f.ns.DialContext(ctx, network, "192.0.2.10:443")
		},
	}}
	for _, c := range []*http.Client{h2, h1TLS} {
		resp, body := do(t, c, "GET", "https://a.example/", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	}
	// Both connections stay open (keep-alive) while the gauges are read.
	for proto, want := range map[string]float64{"h2": 1, "http/1.1+tls": 1} {
		series := `edgeproxy_cdn_connections_active{protocol="` + proto + `"}`
		if got := metricValue(t, f, series); got != want {
			t.Errorf("%s = %v with one HTTP/2 and one HTTPS/1.1 connection open, want %v", series, got, want)
		}
	}
	h2.CloseIdleConnections()
	h1TLS.CloseIdleConnections()
}

// TestAccessLogProtocolVersion: an HTTP/1.0 request is logged and counted
// as HTTP/1.0, not as the HTTP/1.1 the engine also serves.
func TestAccessLogProtocolVersion(t *testing.T) {
	f := startCDN(t)
	ids := map[string]string{}
	for _, v := range []string{"HTTP/1.0", "HTTP/1.1"} {
		resp, body := rawH1(t, "GET / "+v+"\r\nHost: a.example\r\nConnection: close\r\n\r\n")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", v, resp.StatusCode, body)
		}
		ids[resp.Header.Get("X-Request-Id")] = v
	}
	deadline := time.Now().Add(3 * time.Second)
	for len(ids) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond) // the access log is batched
		b, _ := os.ReadFile(f.accessLog)
		for _, line := range bytes.Split(b, []byte("\n")) {
			var l struct {
				ID    string `json:"request_id"`
				Proto string `json:"protocol"`
			}
			if json.Unmarshal(line, &l) != nil {
				continue
			}
			if want, ok := ids[l.ID]; ok {
				if l.Proto != want {
					t.Errorf("a %s request is logged as %s", want, l.Proto)
				}
				delete(ids, l.ID)
			}
		}
	}
	if len(ids) > 0 {
		t.Errorf("no access log line for %v", ids)
	}
}
