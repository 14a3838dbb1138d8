package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/selfsigned"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// TestReloadLimits: SIGHUP changes cdn.limits and cdn.timeouts without a
// restart and without dropping a connection. After the reload a new
// HTTP/1.1 connection on the engine is closed when idle past the new
// idle timeout; a head over the new max_header_bytes gets 431 on the
// fasthttp path and over HTTP/2, a body over the new max_body_bytes 413
// on the fasthttp path and over HTTP/3, and a QUIC connection ends when
// idle past the new idle timeout; all of them passed before. A lowered
// max_connections refuses new connections and leaves those open.
func TestReloadLimits(t *testing.T) {
	ns := netns.New(t)
	testOrigin(t, "origin-l", "127.0.0.1:18311")
	dir := t.TempDir()
	cert, key, err := selfsigned.Write(dir, "a", "a.example")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := selfsigned.Pool(cert)
	if err != nil {
		t.Fatal(err)
	}
	file := func(limits string) string {
		return fmt.Sprintf(`store: {path: ""}
prefixes:
  - {cidr: 192.0.2.0/24, service: cdn}
cdn:
  http_ports: [80]
  https_ports: [443]
  http3: true
  http3_port: 443
  access_log: "off"
%s
  certificates: [{cert_file: %q, key_file: %q}]
  sites: [{hosts: [a.example], origins: ["http://127.0.0.1:18311"]}]
`, limits, cert, key)
	}
	in := startInstance(t, ns, file("  limits: {max_header_bytes: 32768, max_body_bytes: 100000}"))
	reloads := func() string {
		resp, err := ns.HTTPClient().Get(in.admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, `edgeproxy_config_reloads_total{result="ok"}`) {
				return strings.Fields(l)[1]
			}
		}
		return "0"
	}
	reload := func(body string) {
		t.Helper()
		before := reloads()
		if err := os.WriteFile(in.config, []byte("dispatch: {pin_dir: \"\"}\nadmin: {listen: 127.0.0.1:9180}\n"+body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := in.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		if err := testutil.WaitFor(5*time.Second, func() error {
			if reloads() == before {
				return errors.New("no reload yet")
			}
			return nil
		}); err != nil {
			t.Fatalf("the reload was not applied:\n%s", in.stderr)
		}
	}

	// HTTP/1.1 on a connection of its own: the status, and the connection
	// for more.
	type h1c struct {
		c  net.Conn
		br *bufio.Reader
	}
	dial := func() (*h1c, error) {
		c, err := net.Dial("tcp", "192.0.2.10:80")
		if err != nil {
			return nil, err
		}
		return &h1c{c, bufio.NewReader(c)}, nil
	}
	ask := func(c *h1c, method, hdr, body string) (int, error) {
		c.c.SetDeadline(time.Now().Add(3 * time.Second))
		req := method + " / HTTP/1.1\r\nHost: a.example\r\n" + hdr
		if body != "" {
			req += fmt.Sprintf("Content-Length: %d\r\n", len(body))
		}
		if _, err := io.WriteString(c.c, req+"\r\n"+body); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	once := func(method, hdr, body string) int {
		t.Helper()
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.c.Close()
		code, err := ask(c, method, hdr, body)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		return code
	}
	bigHead := "X-Big: " + strings.Repeat("b", 16<<10) + "\r\n" // over 8 KiB, under 32 KiB; over the engine's buffer: the fasthttp path
	body := strings.Repeat("x", 5000)                           // over 1000, under 100000

	// HTTP/2 on a new connection, with hand-made frames: Go's client
	// would not send a head over the limit the server announced.
	h2 := func(big bool) int {
		t.Helper()
		c, fr := h2conn(t)
		defer c.Close()
		fields := []string{":method", "GET", ":scheme", "https", ":authority", "a.example", ":path", "/"}
		if big {
			for i := range 3 { // about 10 KiB: over 8 KiB, under 32 KiB, within one frame
				fields = append(fields, fmt.Sprintf("x-big-%d", i), strings.Repeat("b", 3400))
			}
		}
		code, _ := h2Exchange(t, c, fr, 1, fields...)
		return code
	}
	dst := netip.MustParseAddrPort("192.0.2.10:443")
	h3post := func(body string) (int, error) { return h3Post(pool, dst, body) }

	// Before: the old limits pass what the new ones refuse.
	if code := once("GET", bigHead, ""); code != 200 {
		t.Fatalf("before: a 16 KiB head got %d", code)
	}
	if code := once("POST", "", body); code != 200 {
		t.Fatalf("before: a 5000-byte body got %d", code)
	}
	if code := h2(true); code != 200 {
		t.Fatalf("before: HTTP/2 with a 10 KiB head: %d", code)
	}
	if code, err := h3post(body); code != 200 {
		t.Fatalf("before: HTTP/3 with a 5000-byte body: %d %v", code, err)
	}
	if quicIdleEnds(t, pool, dst, 2*time.Second) {
		t.Fatal("before: an idle QUIC connection ended within 2s (idle timeout 75s)")
	}
	// Idle for longer than the new idle timeout, on the old one: kept.
	engine, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer engine.c.Close()
	if code, err := ask(engine, "GET", "", ""); code != 200 {
		t.Fatalf("before: GET: %d %v", code, err)
	}
	time.Sleep(1500 * time.Millisecond)
	if code, err := ask(engine, "GET", "", ""); code != 200 {
		t.Fatalf("before: a connection idle 1.5s (idle timeout 75s) broke: %d %v", code, err)
	}
	// Four open connections, to outlive a max_connections of 3.
	var held []*h1c
	for range 4 {
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.c.Close()
		if code, err := ask(c, "GET", "", ""); code != 200 {
			t.Fatalf("before: GET: %d %v", code, err)
		}
		held = append(held, c)
	}

	reload(file("  limits: {max_header_bytes: 8192, max_body_bytes: 1000, max_connections: 3}\n  timeouts: {idle: 1s}"))

	// A lowered max_connections cuts none of the connections open, and
	// refuses new ones above it.
	for i, c := range append(held, engine) {
		if code, err := ask(c, "GET", "", ""); code != 200 {
			t.Errorf("after: connection %d, open before the reload, broke: %d %v", i, code, err)
		}
	}
	if c, err := dial(); err == nil {
		_, err = ask(c, "GET", "", "")
		c.c.Close()
		if err == nil {
			t.Error("after: a new connection beyond max_connections 3 was served")
		}
	}
	for _, c := range append(held, engine) {
		c.c.Close()
	}
	// The held ones closed: new connections are taken again.
	if err := testutil.WaitFor(3*time.Second, func() error {
		c, err := dial()
		if err == nil {
			_, err = ask(c, "GET", "", "")
			c.c.Close()
		}
		return err
	}); err != nil {
		t.Fatalf("after: no connection taken below max_connections: %v", err)
	}

	// The engine: a new connection idle past the new idle timeout is
	// closed.
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	if code, err := ask(c, "GET", "", ""); code != 200 {
		t.Fatalf("after: GET: %d %v", code, err)
	}
	time.Sleep(1500 * time.Millisecond)
	c.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("after: a connection idle 1.5s (idle timeout 1s) is not closed: %v", err)
	}
	c.c.Close()

	// The fasthttp path: the head limit and the body limit.
	if code := once("GET", bigHead, ""); code != 431 {
		t.Errorf("after: a 16 KiB head (max_header_bytes 8192) got %d, want 431", code)
	}
	if code := once("GET", "", ""); code != 200 {
		t.Errorf("after: a plain GET got %d", code)
	}
	if code := once("POST", "", body); code != 413 {
		t.Errorf("after: a 5000-byte body (max_body_bytes 1000) got %d, want 413", code)
	}
	// HTTP/2: the head limit on a new connection.
	if code := h2(true); code != 431 {
		t.Errorf("after: HTTP/2 with a 10 KiB head (max_header_bytes 8192): %d, want 431", code)
	}
	if code := h2(false); code != 200 {
		t.Errorf("after: HTTP/2 GET: %d", code)
	}
	// HTTP/3: the body limit, and the idle timeout of a new connection.
	if code, err := h3post(body); code != 413 {
		t.Errorf("after: HTTP/3 with a 5000-byte body: %d %v, want 413", code, err)
	}
	if code, err := h3post("small"); code != 200 {
		t.Errorf("after: HTTP/3 with a small body: %d %v", code, err)
	}
	// The server forgets it after 1s, silently; the client gives up at
	// quic-go's floor for the peer's idle timeout, 5s (75s before).
	if !quicIdleEnds(t, pool, dst, 7*time.Second) {
		t.Error("after: an idle QUIC connection outlived the idle timeout of 1s by 6s")
	}
}

// h3Post sends a POST with body over a new HTTP/3 connection.
func h3Post(pool *x509.CertPool, dst netip.AddrPort, body string) (int, error) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer pc.Close()
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		Dial: func(ctx context.Context, _ string, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error) {
			return quic.DialEarly(ctx, pc, net.UDPAddrFromAddrPort(dst), tlsConf, conf)
		},
	}
	defer tr.Close()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Post("https://a.example/", "text/plain", bytes.NewReader([]byte(body)))
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// quicIdleEnds opens a QUIC connection (ALPN h3) that sends nothing after
// its handshake, and reports whether it ended within d.
func quicIdleEnds(t *testing.T, pool *x509.CertPool, dst netip.AddrPort, d time.Duration) bool {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := quic.Dial(ctx, pc, net.UDPAddrFromAddrPort(dst),
		&tls.Config{RootCAs: pool, ServerName: "a.example", NextProtos: []string{http3.NextProtoH3}},
		&quic.Config{MaxIdleTimeout: time.Minute})
	if err != nil {
		t.Fatalf("quic dial: %v", err)
	}
	defer c.CloseWithError(0, "")
	select {
	case <-c.Context().Done():
		return true
	case <-time.After(d):
		return false
	}
}
