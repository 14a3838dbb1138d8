package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	rtmetrics "runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestDeferAccept: a connection that sends nothing is not handed to the
// process (TCP_DEFER_ACCEPT) while one that sends its request is served;
// the silent one is handed over about a second later, and its head
// timeout runs from then.
func TestDeferAccept(t *testing.T) {
	ns := netns.New(t)
	p, addr := startAccepting(t, ns, Limits{ReadHeaderTimeout: 500 * time.Millisecond})
	start := time.Now()
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	time.Sleep(300 * time.Millisecond)
	if n := p.OpenConnections(); n != 0 {
		t.Fatalf("%d connections open with only a silent one dialled, want 0", n)
	}
	if status, err := requestClose(addr); err != nil || status != 200 {
		t.Fatalf("a request beside a silent connection: %d %v", status, err)
	}
	if time.Since(start) < 700*time.Millisecond {
		waitIdle(t, "the served connection to end", func() bool { return p.OpenConnections() == 0 })
	}
	waitIdle(t, "the silent connection to be handed over", func() bool { return p.OpenConnections() == 1 })
	handed := time.Since(start)
	if handed < 800*time.Millisecond {
		t.Errorf("the silent connection was handed over after %v, want about a second", handed)
	}
	// Its head timeout from the hand-over: closed with nothing sent.
	silent.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, err := io.ReadAll(silent)
	if err != nil || len(b) != 0 {
		t.Errorf("silent connection: %q, %v; want closed with nothing sent", b, err)
	}
	if took := time.Since(start); took > handed+500*time.Millisecond+time.Second {
		t.Errorf("silent connection closed after %v, handed over after %v: want its head timeout after that", took, handed)
	}
}

// requestClose makes one request (Connection: close) on a new connection
// to addr, reads the whole response and closes the connection: its status.
func requestClose(addr string) (int, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	fmt.Fprint(c, "GET /len/3 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// TestAcceptorsReused: bursts of new connections in flight at once are
// served by the goroutines that served the last burst, waiting to accept,
// not by a new goroutine each.
func TestAcceptorsReused(t *testing.T) {
	ns := netns.New(t)
	// An origin that makes a goroutine per connection only (net/http's
	// makes one per request too), whose connections the first burst pools,
	// and that answers each request after 50 ms, so that a burst's
	// connections are all in flight at once.
	oln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer oln.Close()
	go func() {
		for {
			oc, err := oln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer oc.Close()
				br := bufio.NewReader(oc)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					time.Sleep(50 * time.Millisecond) // every request of a burst in flight at once
					io.WriteString(oc, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
				}
			}()
		}
	}()
	p := newTestProxy(t, ns, oln.Addr().String(), Limits{})
	addr := startTestAccept(t, p)
	const burst, bursts = 32, 5
	run := func() {
		t.Helper()
		var cs []net.Conn
		for range burst {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
			fmt.Fprint(c, "GET /len/3 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n")
		}
		var wg sync.WaitGroup
		for _, c := range cs {
			wg.Go(func() {
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil || resp.StatusCode != 200 {
					t.Errorf("burst request: %v %v", resp, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
			})
		}
		wg.Wait()
	}
	run() // the goroutines, and the origin's pooled connections
	time.Sleep(100 * time.Millisecond)
	created := func() uint64 {
		s := []rtmetrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
		rtmetrics.Read(s)
		return s[0].Value.Uint64()
	}
	connects := func() (n uint64) {
		for _, o := range p.Origins() {
			n += o.Connects
		}
		return n
	}
	before, dialed := created(), connects()
	for range bursts {
		run()
	}
	// The test's own goroutines: one reader per connection. A burst that
	// starts before the last one's origin connections are back in the
	// pool (a loaded machine) dials new ones: the origin's goroutine for
	// each, and the dial's, are not the acceptors'.
	extra := 2 * (connects() - dialed)
	if n := created() - before - burst*bursts - extra; n > burst {
		t.Errorf("%d goroutines created for %d bursts of %d new connections (%d new origin connections aside), want at most %d", n, bursts, burst, extra/2, burst)
	}
}
