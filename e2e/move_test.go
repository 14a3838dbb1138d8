package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestMoveEndsCDNConnections: after a /25 leaves the cdn, the cdn's
// connections on it go: an idle keep-alive HTTP/1.1 connection closes at
// once (on the engine and on the general path it hands over to), one with a request in flight closes once its response is whole,
// an HTTP/2 connection gets GOAWAY; a connection on an address that did
// not move keeps serving; the gauge of connections held on addresses the
// cdn no longer owns comes back to 0; and once the /25 is back, it is
// served again.
func TestMoveEndsCDNConnections(t *testing.T) {
	f := startCDN(t)
	os.Setenv("EDGEPROXY_ADMIN", f.in.admin)
	defer os.Unsetenv("EDGEPROXY_ADMIN")

	dial := func(addr string) (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := f.ns.DialContext(context.Background(), "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	get := func(c net.Conn, br *bufio.Reader, path string) (int, string) {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a.example\r\n\r\n", path)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("GET %s: body: %v", path, err)
		}
		return resp.StatusCode, string(b)
	}
	// closedSoon reports whether the server closes c within d, with nothing
	// more to read.
	closedSoon := func(c net.Conn, br *bufio.Reader, d time.Duration) error {
		c.SetReadDeadline(time.Now().Add(d))
		if n, err := br.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			return fmt.Errorf("read %d bytes, %v; want the connection closed", n, err)
		}
		return nil
	}

	stay, stayR := dial("192.0.2.10:80")
	if st, _ := get(stay, stayR, "/"); st != 200 {
		t.Fatalf("before the move, on the address that stays: %d", st)
	}
	idle, idleR := dial("192.0.2.150:80")
	if st, _ := get(idle, idleR, "/"); st != 200 {
		t.Fatalf("before the move: %d", st)
	}
	// A request with a body: the HTTP/1.1 engine hands the connection to
	// the general path, which serves it from then on.
	handed, handedR := dial("192.0.2.153:80")
	handed.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(handed, "POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\n\r\nabc")
	if resp, err := http.ReadResponse(handedR, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a POST before the move: %v %v", resp, err)
	} else {
		io.Copy(io.Discard, resp.Body)
	}
	busy, busyR := dial("192.0.2.151:80")
	busy.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(busy, "GET /slow-body HTTP/1.1\r\nHost: a.example\r\n\r\n")
	h2c := openH2(t, f, "192.0.2.152:443")
	h2c.get(t, 1, "/slow-body")

	time.Sleep(50 * time.Millisecond) // the slow body has begun
	out, errOut, code := f.in.cli("bindings", "add", "--json", "192.0.2.128/25", "spectrum")
	var b struct {
		ID string `json:"id"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &b) != nil {
		t.Fatalf("moving 192.0.2.128/25 to spectrum: %d %s %s", code, out, errOut)
	}

	resp, err := http.ReadResponse(busyR, nil)
	if err != nil {
		t.Fatalf("the request in flight at the move: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || !strings.Contains(string(body), "chunk 2") {
		t.Fatalf("the request in flight at the move: %d %q %v, want its whole response", resp.StatusCode, body, err)
	}
	if err := closedSoon(busy, busyR, 2*time.Second); err != nil {
		t.Errorf("the connection whose request was in flight at the move: %v", err)
	}
	if err := closedSoon(idle, idleR, 2*time.Second); err != nil {
		t.Errorf("the idle keep-alive connection on the moved /25: %v", err)
	}
	if err := closedSoon(handed, handedR, 2*time.Second); err != nil {
		t.Errorf("the idle keep-alive connection on the moved /25 that the engine handed over: %v", err)
	}
	// GOAWAY while its stream is in flight, and the stream completes.
	if code, ended := h2c.goAway(t, 1, 2*time.Second); code != http2.ErrCodeNo || ended {
		t.Errorf("the HTTP/2 connection on the moved /25: GOAWAY %v (stream ended before it: %v), want NO_ERROR while its stream is in flight", code, ended)
	} else if !h2c.ends(t, 1, 2*time.Second) {
		t.Errorf("the HTTP/2 stream in flight at the move did not complete")
	}
	if st, _ := get(stay, stayR, "/"); st != 200 {
		t.Errorf("after the move, the connection on the address that stays: %d", st)
	}
	deadline := time.Now().Add(3 * time.Second)
	for metricValue(t, f, "edgeproxy_cdn_connections_unowned") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("edgeproxy_cdn_connections_unowned = %v after the connections went, want 0", metricValue(t, f, "edgeproxy_cdn_connections_unowned"))
		}
		time.Sleep(50 * time.Millisecond)
	}

	if _, errOut, code := f.in.cli("bindings", "delete", b.ID); code != 0 {
		t.Fatalf("moving it back: %d %s", code, errOut)
	}
	again, againR := dial("192.0.2.150:80")
	if st, _ := get(again, againR, "/"); st != 200 {
		t.Errorf("after the /25 came back: %d", st)
	}
	if st, _ := get(stay, stayR, "/"); st != 200 {
		t.Errorf("after the /25 came back, the connection that stayed: %d", st)
	}
}

// h2Raw is a bare HTTP/2 client connection: the preface and SETTINGS
// sent, its frames read by hand.
type h2Raw struct {
	c  net.Conn
	fr *http2.Framer
}

func openH2(t *testing.T, f *cdnFixture, addr string) *h2Raw {
	t.Helper()
	raw, err := f.ns.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, &tls.Config{ServerName: "a.example", RootCAs: f.pool, NextProtos: []string{"h2"}})
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.Handshake(); err != nil || c.ConnectionState().NegotiatedProtocol != "h2" {
		t.Fatalf("h2 to %s: %v %q", addr, err, c.ConnectionState().NegotiatedProtocol)
	}
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return &h2Raw{c: c, fr: fr}
}

// get opens stream id with a GET of path.
func (h *h2Raw) get(t *testing.T, id uint32, path string) {
	t.Helper()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "a.example"}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}

// goAway reads frames until a GOAWAY, within d, and reports whether
// stream id ended before it.
func (h *h2Raw) goAway(t *testing.T, id uint32, d time.Duration) (code http2.ErrCode, ended bool) {
	t.Helper()
	h.c.SetReadDeadline(time.Now().Add(d))
	for {
		fr, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("waiting for GOAWAY: %v", err)
		}
		switch fr := fr.(type) {
		case *http2.GoAwayFrame:
			return fr.ErrCode, ended
		case *http2.DataFrame:
			ended = ended || fr.StreamID == id && fr.StreamEnded()
		case *http2.HeadersFrame:
			ended = ended || fr.StreamID == id && fr.StreamEnded()
		}
	}
}

// ends reads frames until stream id ends, within d.
func (h *h2Raw) ends(t *testing.T, id uint32, d time.Duration) bool {
	t.Helper()
	h.c.SetReadDeadline(time.Now().Add(d))
	for {
		fr, err := h.fr.ReadFrame()
		if err != nil {
			return false
		}
		switch fr := fr.(type) {
		case *http2.DataFrame:
			if fr.StreamID == id && fr.StreamEnded() {
				return true
			}
		case *http2.HeadersFrame:
			if fr.StreamID == id && fr.StreamEnded() {
				return true
			}
		case *http2.RSTStreamFrame:
			if fr.StreamID == id {
				return false
			}
		}
	}
}

// TestMoveUnderLoad: a /25 moves away from the cdn and back 50 times while
// keep-alive clients load an address that does not move and one on the
// /25. On the first no request fails; on the /25 every response that
// starts arrives whole, no request hangs, and a connection the cdn no
// longer owns ends within one request of the move.
func TestMoveUnderLoad(t *testing.T) {
	f := startCDN(t)
	os.Setenv("EDGEPROXY_ADMIN", f.in.admin)
	defer os.Unsetenv("EDGEPROXY_ADMIN")

	type tally struct{ ok, failed, refused, hung, truncated int }
	load := func(addr string, stop <-chan struct{}, out chan<- tally) {
		var tl tally
		defer func() { out <- tl }()
		var c net.Conn
		var br *bufio.Reader
		for {
			select {
			case <-stop:
				if c != nil {
					c.Close()
				}
				return
			default:
			}
			if c == nil {
				var err error
				if c, err = f.ns.DialContext(context.Background(), "tcp", addr); err != nil {
					tl.refused++ // the /25 is away: nothing takes the SYN
					time.Sleep(5 * time.Millisecond)
					continue
				}
				br = bufio.NewReader(c)
			}
			c.SetDeadline(time.Now().Add(3 * time.Second))
			_, err := fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
			var resp *http.Response
			if err == nil {
				resp, err = http.ReadResponse(br, nil)
			}
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					tl.hung++
				} else {
					tl.failed++ // the connection ended between requests
				}
				c.Close()
				c = nil
				continue
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode != 200 {
				tl.truncated++
			} else {
				tl.ok++
			}
			if resp.Close {
				c.Close()
				c = nil
			}
		}
	}
	stop := make(chan struct{})
	stayed, moved := make(chan tally, 1), make(chan tally, 1)
	go load("192.0.2.10:80", stop, stayed)
	go load("192.0.2.150:80", stop, moved)
	for i := range 50 {
		out, errOut, code := f.in.cli("bindings", "add", "--json", "192.0.2.128/25", "spectrum")
		var b struct {
			ID string `json:"id"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &b) != nil {
			t.Fatalf("move %d: %d %s %s", i, code, out, errOut)
		}
		time.Sleep(20 * time.Millisecond)
		if _, errOut, code := f.in.cli("bindings", "delete", b.ID); code != 0 {
			t.Fatalf("move %d back: %d %s", i, code, errOut)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	st, mv := <-stayed, <-moved
	t.Logf("the address that stayed: %d requests, %d failed; the /25: %d whole, %d ended between requests, %d refused connections, %d hung, %d truncated",
		st.ok, st.failed+st.hung+st.truncated+st.refused, mv.ok, mv.failed, mv.refused, mv.hung, mv.truncated)
	if st.failed+st.hung+st.truncated+st.refused > 0 || st.ok < 100 {
		t.Errorf("the address that did not move: %+v, want every request served", st)
	}
	if mv.hung > 0 || mv.truncated > 0 {
		t.Errorf("the /25: %+v, want no request hung or cut short", mv)
	}
	if mv.failed == 0 {
		t.Errorf("the /25: %+v: no connection ended at its 50 moves", mv)
	}
}

// TestMoveDrainSpectrum: spectrum keeps its TCP connections and UDP flows
// on addresses that left it (counted by
// edgeproxy_spectrum_connections_unowned), until a move that asks for a
// drain deadline: once it passes they are closed. A drain that is not a
// duration above zero is refused, naming the field, and changes nothing.
func TestMoveDrainSpectrum(t *testing.T) {
	ns := netns.New(t)
	echo.Start(t, "origin", "127.0.0.1:7007")
	testOrigin(t, "origin-a", "127.0.0.1:18080")
	in := startInstance(t, ns, `store: {path: ""}
prefixes: [{cidr: 192.0.2.0/24, service: spectrum}]
cdn:
  http_ports: [80]
  sites: [{hosts: ["*"], origins: ["http://127.0.0.1:18080"]}]
spectrum:
  apps:
    - {name: tcp, protocol: tcp, edge: 192.0.2.0/24, ports: "7", origins: ["127.0.0.1:7007"], proxy_protocol: "off"}
    - {name: udp, protocol: udp, edge: 192.0.2.0/24, ports: "7", origins: ["127.0.0.1:7007"]}
`)
	os.Setenv("EDGEPROXY_ADMIN", in.admin)
	defer os.Unsetenv("EDGEPROXY_ADMIN")
	f := &cdnFixture{ns: ns, in: in}
	unowned := func(proto string) float64 {
		return metricValue(t, f, `edgeproxy_spectrum_connections_unowned{protocol="`+proto+`"}`)
	}

	tcp, err := net.DialTimeout("tcp", "192.0.2.150:7", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	tr := bufio.NewReader(tcp)
	tcpEcho := func() error {
		tcp.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(tcp, "ping\n"); err != nil {
			return err
		}
		line, err := tr.ReadString('\n')
		if err == nil && line != "ping\n" {
			err = fmt.Errorf("echoed %q", line)
		}
		return err
	}
	tcp.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := tr.ReadString('\n'); err != nil { // the origin's greeting
		t.Fatal(err)
	}
	udp, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 150), Port: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	udpEcho := func() error {
		udp.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := udp.Write([]byte("hello\n")); err != nil {
			return err
		}
		_, err := udp.Read(make([]byte, 512))
		return err
	}
	if err := tcpEcho(); err != nil {
		t.Fatalf("tcp before any move: %v", err)
	}
	if err := udpEcho(); err != nil {
		t.Fatalf("udp before any move: %v", err)
	}

	out, errOut, code := in.cli("bindings", "add", "--json", "192.0.2.128/25", "spectrum")
	var b struct {
		ID string `json:"id"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &b) != nil {
		t.Fatalf("add: %d %s %s", code, out, errOut)
	}
	// Without a drain: kept, and counted.
	if _, errOut, code := in.cli("bindings", "move", b.ID, "cdn"); code != 0 {
		t.Fatalf("move to the cdn: %d %s", code, errOut)
	}
	time.Sleep(300 * time.Millisecond)
	if err := tcpEcho(); err != nil {
		t.Errorf("tcp after a move without a drain: %v, want it kept", err)
	}
	if err := udpEcho(); err != nil {
		t.Errorf("udp after a move without a drain: %v, want the flow kept", err)
	}
	if tc, uc := unowned("tcp"), unowned("udp"); tc != 1 || uc != 1 {
		t.Errorf("unowned after the move: tcp %v udp %v, want 1 and 1", tc, uc)
	}
	if _, errOut, code := in.cli("bindings", "move", b.ID, "spectrum"); code != 0 {
		t.Fatalf("move back: %d %s", code, errOut)
	}
	if tc, uc := unowned("tcp"), unowned("udp"); tc != 0 || uc != 0 {
		t.Errorf("unowned once back: tcp %v udp %v, want 0", tc, uc)
	}

	// A bad drain changes nothing.
	for _, d := range []string{"0s", "-1s", "soon", "25h"} {
		if _, errOut, code := in.cli("bindings", "move", "--drain", d, b.ID, "cdn"); code != 1 || !strings.Contains(errOut, "drain") {
			t.Errorf("move --drain %s: %d %q, want refused naming drain", d, code, errOut)
		}
	}
	if out, _, _ := in.cli("lookup", "192.0.2.150:7/tcp"); !strings.Contains(out, ": spectrum") {
		t.Errorf("after the refused moves: %q, want spectrum still", out)
	}

	// With a drain: closed once it passes.
	start := time.Now()
	if _, errOut, code := in.cli("bindings", "move", "--drain", "300ms", b.ID, "cdn"); code != 0 {
		t.Fatalf("move --drain 300ms: %d %s", code, errOut)
	}
	if err := tcpEcho(); err != nil {
		t.Errorf("tcp right after the move, before its drain deadline: %v", err)
	}
	tcp.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := tr.ReadString('\n'); !errors.Is(err, io.EOF) {
		t.Errorf("tcp after the drain deadline: %v, want it closed", err)
	} else if took := time.Since(start); took < 300*time.Millisecond || took > 2*time.Second {
		t.Errorf("tcp closed %v after the move, want just after its 300ms drain", took)
	}
	deadline := time.Now().Add(2 * time.Second)
	for unowned("tcp")+unowned("udp") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("unowned after the drain: tcp %v udp %v, want 0", unowned("tcp"), unowned("udp"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(in.stderr.String(), "drain deadline passed") {
		t.Errorf("no log line for the drain")
	}

	// A drain on DELETE too.
	if _, errOut, code := in.cli("bindings", "delete", "--drain", "1s", b.ID); code != 0 {
		t.Errorf("delete --drain 1s: %d %s", code, errOut)
	}
}
