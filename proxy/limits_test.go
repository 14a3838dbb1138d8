package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestSetLimitsGenerations: a change of max_header_bytes makes a new
// generation of servers for new connections; a connection the fasthttp
// path serves already keeps its own (and its read buffer), and the old
// generation goes when that connection ends. A limit below the engine's
// buffer holds on the engine too. The other values swap in place.
func TestSetLimitsGenerations(t *testing.T) {
	ns := netns.New(t)
	og := startH1Origin(t)
	p := newTestProxy(t, ns, og.addr, Limits{MaxHeaderBytes: 32 << 10})
	srv := serveH1Test(t, p)
	gens := func() int {
		p.srvMu.Lock()
		defer p.srvMu.Unlock()
		return len(p.srvs)
	}
	get := func(cl net.Conn, br *bufio.Reader, headBytes int) int {
		t.Helper()
		cl.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(cl, "GET /len/3 HTTP/1.1\r\nHost: a.example\r\nX-Big: %s\r\n\r\n", strings.Repeat("b", headBytes))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	once := func(headBytes int) int {
		t.Helper()
		cl, _ := srv.dial(t)
		defer cl.Close()
		return get(cl, bufio.NewReader(cl), headBytes)
	}

	// A connection on the fasthttp path (a head over the engine's buffer).
	a, _ := srv.dial(t)
	ba := bufio.NewReader(a)
	if code := get(a, ba, 10<<10); code != 200 {
		t.Fatalf("a 10 KiB head under a limit of 32 KiB: %d", code)
	}
	first := p.srv.Load()

	p.SetLimits(Limits{MaxHeaderBytes: 8 << 10, ConnResetBudget: 7, UpstreamTimeout: 3 * time.Second})
	if p.srv.Load() == first || gens() != 2 {
		t.Fatalf("after a new max_header_bytes: %d generations, the first current: %v", gens(), p.srv.Load() == first)
	}
	if got := p.resets.perConn.Load(); got != 7 {
		t.Errorf("connection reset budget %d, want 7", got)
	}
	if got := p.pools.t.Load().read; got != 3*time.Second {
		t.Errorf("upstream read timeout %v, want 3s", got)
	}
	if code := once(10 << 10); code != 431 {
		t.Errorf("a new connection's 10 KiB head under a limit of 8 KiB: %d, want 431", code)
	}
	if code := get(a, ba, 10<<10); code != 200 {
		t.Errorf("the connection served before the change lost its servers: %d", code)
	}

	// Below the engine's buffer: the engine hands the head to fasthttp,
	// which refuses it.
	p.SetLimits(Limits{MaxHeaderBytes: 1024})
	if code := once(2 << 10); code != 431 {
		t.Errorf("a 2 KiB head under a limit of 1 KiB: %d, want 431", code)
	}
	if code := once(100); code != 200 {
		t.Errorf("a small head under a limit of 1 KiB: %d", code)
	}
	// The second went with its connections: the current one and the one
	// a's connection holds are left.
	for deadline := time.Now().Add(3 * time.Second); gens() != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d generations, want 2", gens())
		}
	}
	same := p.srv.Load()
	p.SetLimits(Limits{MaxHeaderBytes: 1024})
	if p.srv.Load() != same {
		t.Error("the same limits made new servers")
	}

	a.Close()
	for deadline := time.Now().Add(3 * time.Second); gens() != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the first generation did not go with its last connection: %d generations", gens())
		}
	}
}
