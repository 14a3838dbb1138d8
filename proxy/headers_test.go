package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestServerAndAltSvcEveryProtocol: on HTTP/1.1 (cleartext and TLS, the
// engine and the fasthttp path), HTTP/2 and HTTP/3, a response carries
// the origin's Server when it sent one, else edgeproxy's, and the proxy's
// own error page edgeproxy's; Alt-Svc advertises HTTP/3 over TLS on TCP
// only, never in cleartext nor over HTTP/3.
func TestServerAndAltSvcEveryProtocol(t *testing.T) {
	f := startH3(t, "", func(opts *Options) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			if strings.HasPrefix(r.URL.Path, "/named") {
				w.Header().Set("Server", "originsrv")
			}
			fmt.Fprintf(w, "ok %s", r.URL.Path)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		opts.Config.Sites[0].Origins = []Origin{{URL: mustURL("http://" + ln.Addr().String())}}
	})
	port := uint16(f.p.tcp.Addr().(*net.TCPAddr).Port)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	setPorts := func(cleartext bool) {
		cfg := f.p.Config()
		cfg.HTTPPorts, cfg.HTTPSPorts = nil, []uint16{443}
		if cleartext {
			cfg.HTTPPorts = []uint16{port}
		} else {
			cfg.HTTPSPorts = []uint16{443, port}
		}
		if err := f.p.SetConfig(cfg); err != nil {
			t.Fatal(err)
		}
	}
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return f.ns.DialContext(ctx, network, addr)
	}
	tlsConf := func(proto string) *tls.Config {
		return &tls.Config{RootCAs: f.pool, ServerName: "a.example", NextProtos: []string{proto}}
	}
	h1 := &http.Transport{DialContext: dial}
	h1TLS := &http.Transport{DialContext: dial, TLSClientConfig: tlsConf("http/1.1")}
	h2 := &http.Transport{DialContext: dial, TLSClientConfig: tlsConf("h2"), Protocols: new(http.Protocols)}
	h2.Protocols.SetHTTP2(true)
	h3 := f.dial(t, netip.MustParseAddrPort("198.51.100.7:443"), "a.example").cc
	for _, tr := range []*http.Transport{h1, h1TLS, h2} {
		t.Cleanup(tr.CloseIdleConnections)
	}
	const ours = `h3=":443"; ma=86400`
	engines := []struct {
		name, scheme, proto string
		rt                  http.RoundTripper
		altSvc              string
	}{
		{"HTTP/1.1 cleartext", "http", "HTTP/1.1", h1, ""},
		{"HTTP/1.1 over TLS", "https", "HTTP/1.1", h1TLS, ours},
		{"HTTP/2", "https", "HTTP/2.0", h2, ours},
		{"HTTP/3", "https", "HTTP/3.0", h3, ""},
	}
	cases := []struct {
		method, path, loop string
		status             int
		server             string
	}{
		{"GET", "/plain", "", 200, "edgeproxy"},
		{"GET", "/named", "", 200, "originsrv"},
		{"POST", "/plain", "", 200, "edgeproxy"}, // HTTP/1.1: the fasthttp path
		{"POST", "/named", "", 200, "originsrv"},
		{"GET", "/named", "edgeproxy", 508, "edgeproxy"}, // the proxy's page
		{"POST", "/named", "edgeproxy", 508, "edgeproxy"},
	}
	for _, e := range engines {
		setPorts(e.scheme == "http")
		for _, c := range cases {
			what := fmt.Sprintf("%s %s %s (loop %q)", e.name, c.method, c.path, c.loop)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var body io.Reader
			if c.method == "POST" {
				body = strings.NewReader("a body")
			}
			req, _ := http.NewRequestWithContext(ctx, c.method, e.scheme+"://a.example"+c.path, body)
			if c.loop != "" {
				req.Header.Set("CDN-Loop", c.loop)
			}
			resp, err := e.rt.RoundTrip(req)
			if err != nil {
				cancel()
				t.Fatalf("%s: %v", what, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			cancel()
			if resp.StatusCode != c.status || resp.Proto != e.proto {
				t.Errorf("%s: %s %d, want %s %d", what, resp.Proto, resp.StatusCode, e.proto, c.status)
			}
			if got := resp.Header.Values("Server"); len(got) != 1 || got[0] != c.server {
				t.Errorf("%s: Server %q, want %q", what, got, c.server)
			}
			if got := resp.Header.Get("Alt-Svc"); got != e.altSvc {
				t.Errorf("%s: Alt-Svc %q, want %q", what, got, e.altSvc)
			}
		}
	}
}
