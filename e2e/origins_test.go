package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/selfsigned"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// liveOrigin is a test origin that can be killed and brought back on the
// same address; it counts the requests it served.
type liveOrigin struct {
	t       *testing.T
	name    string
	addr    string
	handler http.Handler
	tlsConf *tls.Config

	mu  sync.Mutex
	srv *http.Server
	n   atomic.Int64
}

func startLiveOrigin(t *testing.T, name, addr string, delay time.Duration, tlsConf *tls.Config) *liveOrigin {
	o := &liveOrigin{t: t, name: name, addr: addr, tlsConf: tlsConf}
	o.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			io.WriteString(w, "ok\n")
			return
		}
		o.n.Add(1)
		time.Sleep(delay)
		io.WriteString(w, o.name+"\n")
	})
	o.start()
	t.Cleanup(o.kill)
	return o
}

func (o *liveOrigin) start() {
	o.t.Helper()
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		o.t.Fatal(err)
	}
	if o.tlsConf != nil {
		ln = tls.NewListener(ln, o.tlsConf)
	}
	srv := &http.Server{Handler: o.handler, ErrorLog: log.New(io.Discard, "", 0)}
	o.mu.Lock()
	o.srv = srv
	o.mu.Unlock()
	go srv.Serve(ln)
}

// kill closes the listener and every connection at once.
func (o *liveOrigin) kill() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.srv != nil {
		o.srv.Close()
		o.srv = nil
	}
}

type originsFixture struct {
	ns  *netns.NS
	in  *instance
	hc  *http.Client
	dir string
}

// get fetches path from host through the cdn at 192.0.2.10:80.
func (f *originsFixture) get(host, path string) (int, string, error) {
	req, _ := http.NewRequest("GET", "http://192.0.2.10"+path, nil)
	req.Host = host
	resp, err := f.hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// originStates reads GET /v1/origins.
func (f *originsFixture) originStates(t *testing.T) map[string]map[string]any {
	t.Helper()
	var origins []map[string]any
	api := &admin.Client{Base: f.in.admin, HTTP: f.hc}
	if err := api.Do("GET", "/v1/origins", nil, &origins); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, o := range origins {
		out[o["origin"].(string)] = o
	}
	return out
}

func startOriginsCDN(t *testing.T, sites string) *originsFixture {
	t.Helper()
	f := &originsFixture{ns: netns.New(t), dir: t.TempDir()}
	// The clients run on many goroutines: they dial through the namespace.
	f.hc = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: f.ns.DialContext, MaxIdleConnsPerHost: 64}}
	t.Cleanup(f.hc.CloseIdleConnections)
	f.in = startInstance(t, f.ns, `store: {path: ""}
prefixes:
  - {cidr: 192.0.2.0/24, service: cdn}
cdn:
  http_ports: [80]
  https_ports: []
  http3: false
  access_log: "off"
  timeouts: {upstream: 2s}
  sites:
`+sites)
	return f
}

// TestOriginBalance: weighted round-robin spreads requests by weight,
// exactly; least_connections sends most requests to the faster origin.
func TestOriginBalance(t *testing.T) {
	f := startOriginsCDN(t, `
    - hosts: [rr.example]
      origins: ["http://127.0.0.1:18201", "http://127.0.0.1:18202", {url: "http://127.0.0.1:18203", weight: 2}]
    - hosts: [lc.example]
      balance: least_connections
      origins: ["http://127.0.0.1:18211", "http://127.0.0.1:18212"]
`)
	rr := []*liveOrigin{
		startLiveOrigin(t, "rr1", "127.0.0.1:18201", 0, nil),
		startLiveOrigin(t, "rr2", "127.0.0.1:18202", 0, nil),
		startLiveOrigin(t, "rr3", "127.0.0.1:18203", 0, nil),
	}
	for range 400 {
		if code, _, err := f.get("rr.example", "/"); err != nil || code != 200 {
			t.Fatalf("rr: %d %v", code, err)
		}
	}
	got := []int64{rr[0].n.Load(), rr[1].n.Load(), rr[2].n.Load()}
	t.Logf("round_robin 1:1:2 over 400 requests: %v", got)
	if got[0] != 100 || got[1] != 100 || got[2] != 200 {
		t.Errorf("round_robin with weights 1:1:2: %v, want [100 100 200]", got)
	}

	slow := startLiveOrigin(t, "slow", "127.0.0.1:18211", 40*time.Millisecond, nil)
	fast := startLiveOrigin(t, "fast", "127.0.0.1:18212", 0, nil)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 16 {
		wg.Go(func() {
			for range 25 {
				if code, _, err := f.get("lc.example", "/"); err != nil || code != 200 {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	s, q := slow.n.Load(), fast.n.Load()
	t.Logf("least_connections, 16 clients, one origin 40 ms slower: slow %d, fast %d", s, q)
	if failed.Load() > 0 || q < 3*s {
		t.Errorf("least_connections: slow %d, fast %d (%d failed); want the fast one to take at least 3× more", s, q, failed.Load())
	}
}

// TestOriginFailover: an origin killed under load is ejected (passively
// at once, by its health check within a few intervals); no idempotent
// request fails; when it comes back its health check brings it back into
// rotation.
func TestOriginFailover(t *testing.T) {
	f := startOriginsCDN(t, `
    - hosts: [ha.example]
      origins: ["http://127.0.0.1:18221", "http://127.0.0.1:18222", "http://127.0.0.1:18223"]
      health_check: {path: /health, interval: 200ms, timeout: 150ms, healthy: 2, unhealthy: 2}
      passive_health: {max_failures: 2, ejection: 1s}
`)
	startLiveOrigin(t, "ha1", "127.0.0.1:18221", time.Millisecond, nil)
	victim := startLiveOrigin(t, "ha2", "127.0.0.1:18222", time.Millisecond, nil)
	startLiveOrigin(t, "ha3", "127.0.0.1:18223", time.Millisecond, nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	var failures sync.Map
	for range 6 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, body, err := f.get("ha.example", "/")
				if err != nil || code != 200 {
					failed.Add(1)
					failures.Store(fmt.Sprintf("%d %q %v", code, body, err), true)
					continue
				}
				ok.Add(1)
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	victim.kill()
	killedAt := victim.n.Load()
	if err := testutil.WaitFor(3*time.Second, func() error {
		if st := f.originStates(t)["http://127.0.0.1:18222"]; st["state"] != "down" {
			return fmt.Errorf("%v", st)
		}
		return nil
	}); err != nil {
		t.Fatalf("the killed origin is not down: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	victim.start()
	if err := testutil.WaitFor(3*time.Second, func() error {
		if st := f.originStates(t)["http://127.0.0.1:18222"]; st["state"] != "up" {
			return fmt.Errorf("%v", st)
		}
		return nil
	}); err != nil {
		t.Fatalf("the healed origin is not up: %v", err)
	}
	healedAt := victim.n.Load()
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	st := f.originStates(t)["http://127.0.0.1:18222"]
	t.Logf("%d requests ok, %d failed; the victim served %d before its death, %d after healing; its state: %v",
		ok.Load(), failed.Load(), killedAt, victim.n.Load()-healedAt, st)
	if failed.Load() > 0 {
		failures.Range(func(k, _ any) bool { t.Errorf("failed request: %s", k); return true })
	}
	if victim.n.Load()-healedAt < 10 {
		t.Errorf("the healed origin took %d requests in 500 ms, want it back in rotation", victim.n.Load()-healedAt)
	}
}

// TestOriginNoRetryAfterBody: a POST whose body reached an origin that
// then dropped the connection is not sent again to another origin; a GET
// in the same situation is, and succeeds.
func TestOriginNoRetryAfterBody(t *testing.T) {
	f := startOriginsCDN(t, `
    - hosts: [post.example]
      origins: ["http://127.0.0.1:18231", "http://127.0.0.1:18232"]
      passive_health: {max_failures: 100}
`)
	var posts, gets atomic.Int64
	flaky := func(addr string) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == "POST" {
				io.Copy(io.Discard, r.Body)
				posts.Add(1)
			} else if gets.Add(1)%2 == 0 {
				io.WriteString(w, "second try\n") // every other GET answers
				return
			}
			c, _, _ := w.(http.Hijacker).Hijack() // drop it, no response
			c.Close()
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	flaky("127.0.0.1:18231")
	flaky("127.0.0.1:18232")
	for i := range 4 {
		req, _ := http.NewRequest("POST", "http://192.0.2.10/", strings.NewReader("payload"))
		req.Host = "post.example"
		resp, err := f.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 502 {
			t.Errorf("POST %d: %d, want 502", i, resp.StatusCode)
		}
	}
	if n := posts.Load(); n != 4 {
		t.Errorf("4 POSTs reached the origins %d times: a POST with a body was retried", n)
	}
	for i := range 4 {
		gets.Store(0) // the first attempt is dropped, the retry answers
		code, body, err := f.get("post.example", "/")
		if err != nil || code != 200 || body != "second try" {
			t.Errorf("GET %d: %d %q %v, want the retry's answer", i, code, body, err)
		}
	}
}

// TestOriginReuse: under steady load the shared pools reuse connections
// for more than 99% of requests.
func TestOriginReuse(t *testing.T) {
	f := startOriginsCDN(t, `
    - hosts: [reuse.example]
      origins: ["http://127.0.0.1:18241", "http://127.0.0.1:18242"]
`)
	startLiveOrigin(t, "r1", "127.0.0.1:18241", 0, nil)
	startLiveOrigin(t, "r2", "127.0.0.1:18242", 0, nil)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 8 {
		wg.Go(func() {
			for range 500 {
				if code, _, err := f.get("reuse.example", "/"); err != nil || code != 200 {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	var req, conn float64
	for name, o := range f.originStates(t) {
		t.Logf("%s: %v requests, %v connects, reuse %.4f", name, o["requests"], o["connects"], o["reuse_ratio"])
		req += o["requests"].(float64)
		conn += o["connects"].(float64)
	}
	ratio := 1 - conn/req
	t.Logf("reuse ratio over %v requests: %.4f", req, ratio)
	if failed.Load() > 0 || req != 4000 || ratio <= 0.99 {
		t.Errorf("%d failed, %v requests, reuse ratio %.4f; want > 0.99", failed.Load(), req, ratio)
	}
}

// TestOriginTLSAndWebSocket: https origins are verified (a self-signed
// origin fails unless the site names its CA or skips verification), and a
// WebSocket echo works through the proxy, cleartext and TLS.
func TestOriginTLSAndWebSocket(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, err := selfsigned.Write(dir, "origin", "origin.internal")
	if err != nil {
		t.Fatal(err)
	}
	edgeCert, edgeKey, err := selfsigned.Write(dir, "edge", "ws.example")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ns := netns.New(t)
	in := startInstance(t, ns, fmt.Sprintf(`store: {path: ""}
prefixes:
  - {cidr: 192.0.2.0/24, service: cdn}
cdn:
  http_ports: [80]
  https_ports: [443]
  http3: false
  access_log: "off"
  certificates: [{cert_file: %q, key_file: %q}]
  sites:
    - hosts: [verify.example]
      origins: ["https://127.0.0.1:18251"]
    - hosts: [ca.example]
      origins: ["https://127.0.0.1:18251"]
      origin_tls: {ca_file: %q, server_name: origin.internal}
    - hosts: [skip.example]
      origins: ["https://127.0.0.1:18251"]
      origin_tls: {insecure_skip_verify: true}
    - hosts: [ws.example]
      origins: ["http://127.0.0.1:18252"]
`, edgeCert, edgeKey, certFile))
	startLiveOrigin(t, "tls-origin", "127.0.0.1:18251", 0, &tls.Config{Certificates: []tls.Certificate{cert}})
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: ns.DialContext}}
	for host, want := range map[string]int{"verify.example": 502, "ca.example": 200, "skip.example": 200} {
		req, _ := http.NewRequest("GET", "http://192.0.2.10/", nil)
		req.Host = host
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", host, resp.StatusCode, want)
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:18252")
	if err != nil {
		t.Fatal(err)
	}
	var sawHost, sawXFF atomic.Value
	wsSrv := &http.Server{Handler: websocket.Server{Handler: func(c *websocket.Conn) {
		sawHost.Store(c.Request().Host)
		sawXFF.Store(c.Request().Header.Get("X-Forwarded-For"))
		io.Copy(c, c)
	}}}
	go wsSrv.Serve(ln)
	t.Cleanup(func() { wsSrv.Close() })

	for _, scheme := range []string{"ws", "wss"} {
		var c net.Conn
		if scheme == "ws" {
			c, err = net.Dial("tcp", "192.0.2.10:80")
		} else {
			c, err = tls.Dial("tcp", "192.0.2.10:443", &tls.Config{ServerName: "ws.example", InsecureSkipVerify: true})
		}
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := websocket.NewConfig(scheme+"://ws.example/echo", "http://ws.example/")
		ws, err := websocket.NewClient(cfg, c)
		if err != nil {
			c, _ := net.Dial("tcp", "192.0.2.10:80")
			io.WriteString(c, "GET /echo HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://ws.example/\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			b, _ := io.ReadAll(c)
			t.Fatalf("%s handshake through the proxy: %v\n%s\n%s", scheme, err, b, in.stderr)
		}
		for i := range 50 {
			msg := fmt.Sprintf("message %d over %s", i, scheme)
			if err := websocket.Message.Send(ws, msg); err != nil {
				t.Fatal(err)
			}
			var got string
			ws.SetReadDeadline(time.Now().Add(3 * time.Second))
			if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
				t.Fatalf("%s echo %d: %q %v", scheme, i, got, err)
			}
		}
		ws.Close()
	}
	if sawHost.Load() != "ws.example" || !strings.HasPrefix(sawXFF.Load().(string), "192.0.2.10") {
		t.Errorf("the origin saw Host %v, X-Forwarded-For %v", sawHost.Load(), sawXFF.Load())
	}
}

// TestOriginHTTP2: an https origin that offers h2 gets the requests over
// HTTP/2, all on one connection; one that offers only HTTP/1.1 keeps it.
func TestOriginHTTP2(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, err := selfsigned.Write(dir, "origin", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	f := startOriginsCDN(t, fmt.Sprintf(`
    - hosts: [h2.example]
      origins: ["https://127.0.0.1:18261"]
      origin_tls: {ca_file: %q}
    - hosts: [h1.example]
      origins: ["https://127.0.0.1:18262"]
      origin_tls: {ca_file: %q}
`, certFile, certFile))
	serve := func(addr string, protos []string) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				io.WriteString(w, r.Proto+" "+r.Method+" "+r.Host+" "+r.Header.Get("X-Forwarded-Proto")+"\n")
			}),
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: protos},
			ErrorLog:  log.New(io.Discard, "", 0),
		}
		go srv.ServeTLS(ln, "", "")
		t.Cleanup(func() { srv.Close() })
	}
	serve("127.0.0.1:18261", []string{"h2", "http/1.1"})
	serve("127.0.0.1:18262", []string{"http/1.1"})

	for host, want := range map[string]string{"h2.example": "HTTP/2.0 GET h2.example http", "h1.example": "HTTP/1.1 GET h1.example http"} {
		if code, body, err := f.get(host, "/"); err != nil || code != 200 || body != want {
			t.Errorf("%s: %d %q %v, want %q", host, code, body, err, want)
		}
	}
	req, _ := http.NewRequest("POST", "http://192.0.2.10/upload", strings.NewReader(strings.Repeat("x", 100000)))
	req.Host = "h2.example"
	if resp, err := f.hc.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST over h2: %v %v", resp, err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.TrimSpace(string(b)) != "HTTP/2.0 POST h2.example http" {
			t.Errorf("POST over h2: %q", b)
		}
	}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if code, _, err := f.get("h2.example", "/"); err != nil || code != 200 {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	st := f.originStates(t)
	var h2 map[string]any
	for name, o := range st {
		if strings.Contains(name, "18261") {
			h2 = o
		}
	}
	t.Logf("h2 origin after 802 requests: %v", h2)
	if failed.Load() > 0 || h2["connects"].(float64) > 2 {
		t.Errorf("%d failed; %v connections to the h2 origin, want one (two at most)", failed.Load(), h2["connects"])
	}
}
