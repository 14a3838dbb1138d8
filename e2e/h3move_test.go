package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/edgeproxy/edgeproxy/internal/srccheck"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// TestHTTP3MoveThroughBinary: an HTTP/3 connection on an address that a
// binding moves away from the cdn (the CLI, as an operator would) keeps its
// connected socket: its request in flight completes, it gets GOAWAY (a new
// request on it is refused), it closes with H3_NO_ERROR, every datagram it
// got came from the address and port it dialled, and the gauges go back
// to 0. A new HTTP/3 connection to the moved address is not served.
func TestHTTP3MoveThroughBinary(t *testing.T) {
	f := startCDN(t)
	dst := netip.MustParseAddrPort("192.0.2.154:443")
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cc := srccheck.New(pc, dst)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	qc, err := quic.Dial(ctx, cc, net.UDPAddrFromAddrPort(dst),
		&tls.Config{RootCAs: f.pool, ServerName: "a.example", NextProtos: []string{http3.NextProtoH3}},
		&quic.Config{MaxIdleTimeout: 10 * time.Second})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	conn := (&http3.Transport{}).NewClientConn(qc)
	get := func(path string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://a.example"+path, nil)
		resp, err := conn.RoundTrip(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, b), err
	}
	if got, err := get("/before"); err != nil || !strings.HasPrefix(got, "200 ") {
		t.Fatalf("before the move: %q %v", got, err)
	}
	if got := metricValue(t, f, "edgeproxy_cdn_quic_sockets_connected"); got != 1 {
		t.Errorf("connected QUIC sockets: %v, want 1", got)
	}
	slow := make(chan string, 1)
	go func() {
		got, err := get("/slow-body")
		slow <- fmt.Sprint(got, " ", err)
	}()
	time.Sleep(50 * time.Millisecond) // the slow body has begun
	out, errOut, code := f.in.cli("bindings", "add", "--json", "192.0.2.128/25", "spectrum")
	var b struct {
		ID string `json:"id"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &b) != nil {
		t.Fatalf("moving 192.0.2.128/25 to spectrum: %d %s %s", code, out, errOut)
	}
	if got := <-slow; !strings.HasPrefix(got, "200 ") || !strings.Contains(got, "chunk 2") {
		t.Errorf("the request in flight at the move: %s, want its whole response", got)
	}
	if got, err := get("/after"); err == nil {
		t.Errorf("a request after the move and its GOAWAY was served: %q", got)
	}
	select {
	case <-qc.Context().Done():
		var ae *quic.ApplicationError
		if err := context.Cause(qc.Context()); !errors.As(err, &ae) || ae.ErrorCode != quic.ApplicationErrorCode(http3.ErrCodeNoError) {
			t.Errorf("the moved connection ended with %v, want H3_NO_ERROR", err)
		}
	case <-time.After(3 * time.Second):
		t.Error("the moved connection is still open 3 s after its last request")
	}
	if n, bad := cc.Stats(); n == 0 || len(bad) > 0 {
		t.Errorf("%d datagrams, from wrong sources: %v", n, bad)
	}
	if err := testutil.WaitFor(2*time.Second, func() error {
		connected, unowned := metricValue(t, f, "edgeproxy_cdn_quic_sockets_connected"), metricValue(t, f, "edgeproxy_cdn_connections_unowned")
		if connected != 0 || unowned != 0 {
			return fmt.Errorf("connected sockets %v, unowned %v", connected, unowned)
		}
		return nil
	}); err != nil {
		t.Fatalf("after the moved connection closed: %v", err)
	}
	hctx, hcancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer hcancel()
	if c, err := quic.DialAddr(hctx, dst.String(), &tls.Config{RootCAs: f.pool, ServerName: "a.example", NextProtos: []string{http3.NextProtoH3}}, nil); err == nil {
		c.CloseWithError(0, "")
		t.Error("a new HTTP/3 connection to the moved address completed its handshake")
	}
	if _, body, _, err := h3Do(f.pool, netip.MustParseAddrPort("192.0.2.10:443"), "https://a.example/stays"); err != nil || !strings.Contains(body, "origin-a") {
		t.Errorf("HTTP/3 on an address that stays: %q %v", body, err)
	}
}
