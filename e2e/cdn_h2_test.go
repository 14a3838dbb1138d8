package e2e

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// h2conn opens an HTTP/2 connection to the cdn for hand-made frames.
func h2conn(t *testing.T) (*tls.Conn, *http2.Framer) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", "192.0.2.10:443",
		&tls.Config{ServerName: "a.example", InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN chose %q", p)
	}
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c, fr
}

// goAway reads frames until a GOAWAY or the end of the connection and
// returns the GOAWAY's code, or an error when the connection ended without one.
func goAway(c net.Conn, fr *http2.Framer) (http2.ErrCode, error) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return 0, err
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			return ga.ErrCode, nil
		}
	}
}

func headerBlock(fields ...string) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return buf.Bytes()
}

// TestCDNH2Floods: a rapid-reset flood (HEADERS then RST_STREAM, over and
// over, for a path the origin answers after 3 s) gets the connection closed
// (by the proxy's reset budget, or with ENHANCE_YOUR_CALM by x/net's once
// 1000 streams wait behind the 250 running ones), and the origin never
// sees more than 250 of the 5000 requests; a
// CONTINUATION flood is cut once the header list passes max_header_bytes.
// The proxy keeps serving.
func TestCDNH2Floods(t *testing.T) {
	f := startCDN(t)

	c, fr := h2conn(t)
	block := headerBlock(":method", "GET", ":scheme", "https", ":authority", "a.example", ":path", "/hang")
	errc := make(chan error, 1)
	go func() { // writes may block once the server stops reading
		for i := range 5000 {
			id := uint32(2*i + 1)
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}); err != nil {
				errc <- err
				return
			}
			if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	// x/net's own limit answers GOAWAY ENHANCE_YOUR_CALM; the proxy's reset
	// budget (limits.connection_reset_budget) closes the connection first.
	code, err := goAway(c, fr)
	if err == nil && code != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("rapid reset: GOAWAY %v, want ENHANCE_YOUR_CALM or the connection closed", code)
	} else if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("rapid reset: %v, want the connection closed", err)
	}
	c.Close()
	<-errc
	t.Logf("rapid reset: the origin got %d requests, at most %d at once", f.originA.requests.Load(), f.originA.maxInflight.Load())
	if n := f.originA.requests.Load(); n > 250 {
		t.Errorf("rapid reset: %d requests reached the origin, want at most 250", n)
	}

	c, fr = h2conn(t)
	big := strings.Repeat("x", 4000)
	first := headerBlock(":method", "GET", ":scheme", "https", ":authority", "a.example", ":path", "/")
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true}); err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int64
	go func() {
		for i := range 2000 { // 8 MB of header, if nothing stopped it
			if fr.WriteContinuation(1, false, headerBlock(fmt.Sprintf("x-flood-%d", i), big)) != nil {
				return
			}
			sent.Add(1)
		}
	}()
	code, err = goAway(c, fr)
	if err == nil && code != http2.ErrCodeProtocol {
		t.Errorf("CONTINUATION flood: GOAWAY %v, want PROTOCOL_ERROR or the connection closed", code)
	} else if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("CONTINUATION flood: %v, want the connection closed", err)
	}
	t.Logf("CONTINUATION flood: cut after %d frames were written (some sit in socket buffers)", sent.Load())

	if got := decodeSeen(t, curl(t, "--http2", "-k", "--resolve", "a.example:443:192.0.2.10", "https://a.example/after")); got.Path != "/after" {
		t.Errorf("after the floods: %+v", got)
	}
}

// TestCDNGracefulShutdown: on SIGTERM, requests in flight over HTTP/1.1,
// HTTP/2 and HTTP/3 finish, new connections are refused, the process exits 0.
func TestCDNGracefulShutdown(t *testing.T) {
	f := startCDN(t)
	curlBin := testutil.NeedTool(t, "curl", "curl")
	type result struct {
		name, body string
		err        error
	}
	results := make(chan result, 3)
	want := "chunk 0\nchunk 1\nchunk 2\n"
	for _, proto := range []string{"--http1.1", "--http2"} {
		f.ns.Go(func() {
			out, err := exec.Command(curlBin, "-sS", "--max-time", "5", proto, "-k", "--resolve", "a.example:443:192.0.2.10", "https://a.example/slow-body").CombinedOutput()
			results <- result{proto, string(out), err}
		})
	}
	f.ns.Go(func() {
		_, body, _, err := h3Do(f.pool, netip.MustParseAddrPort("192.0.2.10:443"), "https://a.example/slow-body")
		results <- result{"http3", body, err}
	})
	deadline := time.Now().Add(3 * time.Second)
	for f.originA.inflight.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 requests reached the origin", f.originA.inflight.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	f.in.cmd.Process.Signal(syscall.SIGTERM)
	for range 3 {
		r := <-results
		if r.err != nil || r.body != want {
			t.Errorf("%s in flight at SIGTERM: %q (%v)", r.name, r.body, r.err)
		}
	}
	if c, err := net.DialTimeout("tcp", "192.0.2.10:80", time.Second); err == nil {
		c.Close()
		t.Errorf("a new connection was accepted after SIGTERM")
	}
	errc := make(chan error, 1)
	go func() { errc <- f.in.cmd.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("exit: %v\n%s", err, f.in.stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after SIGTERM\n%s", f.in.stderr)
	}
	t.Logf("drained in %v", time.Since(start).Round(time.Millisecond))
}
