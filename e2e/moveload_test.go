package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// TestMoveUnderLoadMix: 192.0.2.128/25 moves away from the cdn to spectrum
// and back 50 times under the mix, on a cdn address that does not move
// (192.0.2.10, with the WebSocket and the spectrum connection and flow)
// and on one in the /25 (192.0.2.150). On the first nothing fails, ends
// or resets. On the /25: requests in flight complete (no response is cut
// short, none hangs), keep-alive connections end within one request of
// each move, HTTP/2 gets GOAWAY and reconnects with no stream lost, and
// the HTTP/3 connection serves every request until its GOAWAY and is
// never left hanging.
func TestMoveUnderLoadMix(t *testing.T) {
	f := startMixCDN(t, "")
	os.Setenv("EDGEPROXY_ADMIN", f.in.admin)
	defer os.Unsetenv("EDGEPROXY_ADMIN")

	stay := startLoadMix(t, f.ns, f.mixAll("192.0.2.10"))
	movedOpts := f.mixAll("192.0.2.150")
	movedOpts.WebSocket, movedOpts.SpectrumTCP, movedOpts.SpectrumUDP = "", "", ""
	moved := startLoadMix(t, f.ns, movedOpts)
	time.Sleep(300 * time.Millisecond)

	const moves = 50
	var apiTook time.Duration
	for i := range moves {
		start := time.Now()
		out, errOut, code := f.in.cli("bindings", "add", "--json", "192.0.2.128/25", "spectrum")
		apiTook += time.Since(start)
		var b struct {
			ID string `json:"id"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &b) != nil {
			t.Fatalf("move %d: %d %s %s", i, code, out, errOut)
		}
		moved.markAway()
		time.Sleep(20 * time.Millisecond)
		moved.markBack()
		if _, errOut, code := f.in.cli("bindings", "delete", b.ID); code != 0 {
			t.Fatalf("move %d back: %d %s", i, code, errOut)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	st, mv := stay.stop(), moved.stop()
	t.Logf("%d moves of 192.0.2.128/25 away and back (the CLI's add took %v on average)", moves, (apiTook / moves).Round(time.Millisecond))
	t.Logf("on 192.0.2.10, which stays:%v", st)
	t.Logf("on 192.0.2.150, in the /25:%v", mv)

	requireClean(t, "the address that stays", st, 20)

	for _, r := range mv {
		if r.Failed+r.Hung+r.BadSource > 0 {
			t.Errorf("the /25, %v: want no request failed, cut short or hung", r)
		}
		// HTTP/3 asks once an interval (50 ms) and must shake hands again
		// after each move's GOAWAY, half of the time while the /25 is away.
		if min := map[bool]int{true: 5, false: 20}[r.Name == "h3"]; r.OK < min {
			t.Errorf("the /25, %v: want at least %d requests served", r, min)
		}
	}
	// Each move ends the keep-alive connections open at it (two, unless
	// one is still finding the /25 refused), and the HTTP/2 one.
	if r, _ := mv.get("h1-keepalive"); r.Overstayed > 0 || r.Ended < moves {
		t.Errorf("the /25, %v: want every keep-alive connection ended within one request of each of the %d moves", r, moves)
	}
	if r, _ := mv.get("h2"); r.Overstayed > 0 || r.Reconnected < moves/2 {
		t.Errorf("the /25, %v: want the HTTP/2 connection told to go by GOAWAY at the %d moves, and a new one", r, moves)
	}
	// The HTTP/3 connection keeps its datagrams only on a connected UDP
	// socket of its own (a move steers the address's new datagrams
	// elsewhere), and goes only when told by GOAWAY.
	if r, _ := mv.get("h3"); r.Reconnected == 0 {
		t.Errorf("the /25, %v: want the HTTP/3 connection told to go by GOAWAY (or a close with H3_NO_ERROR) at the moves, and a new one", r)
	}
}

// TestMoveMidHandshake: a connection the cdn accepted before its address
// left, still shaking hands when the move's walk over the connections ran
// (so not yet among them), is told to go once it is served: HTTP/1.1
// answers its first request with Connection: close and closes, HTTP/2
// sends GOAWAY after its SETTINGS. Before, both went on serving on an
// address the cdn no longer owned until the next change.
func TestMoveMidHandshake(t *testing.T) {
	f := startMixCDN(t, "")
	os.Setenv("EDGEPROXY_ADMIN", f.in.admin)
	defer os.Unsetenv("EDGEPROXY_ADMIN")
	dial := func() net.Conn {
		t.Helper()
		c, err := f.ns.DialContext(context.Background(), "tcp", "192.0.2.150:443")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// Accepted, and no ClientHello yet.
	rawH1, rawH2 := dial(), dial()
	time.Sleep(50 * time.Millisecond)
	if _, errOut, code := f.in.cli("bindings", "add", "192.0.2.128/25", "spectrum"); code != 0 {
		t.Fatalf("moving 192.0.2.128/25 to spectrum: %d %s", code, errOut)
	}
	time.Sleep(100 * time.Millisecond) // the walk is done

	h1 := tls.Client(rawH1, &tls.Config{ServerName: "a.example", RootCAs: f.pool, NextProtos: []string{"http/1.1"}})
	h1.SetDeadline(time.Now().Add(3 * time.Second))
	br := bufio.NewReader(h1)
	for i := range 2 {
		if _, err := io.WriteString(h1, "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"); err != nil {
			if i == 1 {
				break // closed after the first: as wanted
			}
			t.Fatalf("HTTP/1.1 request %d: %v", i, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			if i == 1 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err)) {
				break // closed after the first: as wanted
			}
			t.Fatalf("HTTP/1.1 response %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if i == 0 && (resp.StatusCode != 200 || !resp.Close) {
			t.Errorf("the first request on a connection accepted before the move: %d, Connection: close %v; want 200 and the connection told to close", resp.StatusCode, resp.Close)
		}
		if i == 1 {
			t.Errorf("a second request answered on a connection whose address left the cdn: %d", resp.StatusCode)
		}
	}

	h2c := tls.Client(rawH2, &tls.Config{ServerName: "a.example", RootCAs: f.pool, NextProtos: []string{"h2"}})
	h2c.SetDeadline(time.Now().Add(3 * time.Second))
	if err := h2c.Handshake(); err != nil || h2c.ConnectionState().NegotiatedProtocol != "h2" {
		t.Fatalf("h2 handshake: %v %q", err, h2c.ConnectionState().NegotiatedProtocol)
	}
	io.WriteString(h2c, http2.ClientPreface)
	fr := http2.NewFramer(h2c, h2c)
	fr.WriteSettings()
	for {
		frame, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("the HTTP/2 connection accepted before the move ended without a GOAWAY: %v", err)
		}
		if ga, ok := frame.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeNo || ga.LastStreamID != 0 {
				t.Errorf("GOAWAY %v, last stream %d; want NO_ERROR, 0", ga.ErrCode, ga.LastStreamID)
			}
			break
		}
	}
}
