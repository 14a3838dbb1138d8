package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// attack reports whether the full-size attacks run (make attack).
func attack() bool { return os.Getenv("EDGEPROXY_ATTACK") == "1" }

// sinkEnv makes the test binary a sink origin (see TestMain): it listens on
// the address it names, echoes what each connection sends with a plain
// buffer (no splice, so an idle connection costs it one descriptor), and
// exits when its stdin closes.
const sinkEnv = "EDGEPROXY_TEST_SINK"

func runSink(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	go func() { io.Copy(io.Discard, os.Stdin); os.Exit(0) }()
	for {
		c, err := ln.Accept()
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 4096)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// startSink runs a sink origin as a process of its own (so that its
// descriptors are not the test's), in the test's namespace.
func startSink(t *testing.T, addr string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), sinkEnv+"="+addr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("sink origin: %q %v", line, err)
	}
}

// limited is an edgeproxy run with an open-file limit of its own.
type limited struct {
	*instance
	hc *http.Client
}

// startLimited runs `edgeproxy run` under prlimit --nofile=N:N (0: the
// test's own limit), as startInstance does, with no store.
func startLimited(t *testing.T, ns *netns.NS, nofile int, body string) *limited {
	t.Helper()
	var wrap []string
	if nofile > 0 {
		wrap = []string{testutil.NeedTool(t, "prlimit", "util-linux"), fmt.Sprintf("--nofile=%d:%d", nofile, nofile)}
	}
	return &limited{instance: startWrapped(t, ns, "store: {path: \"\"}\n"+body, wrap...), hc: ns.HTTPClient()}
}

// metric returns a sample of /metrics (0 when absent).
func (in *limited) metric(t *testing.T, name string) float64 {
	t.Helper()
	v := in.metricValue(in.hc, name+" ")
	if v < 0 {
		t.Fatalf("metrics of %s: unreachable", in.admin)
	}
	return v
}

// openFiles counts the descriptors process pid holds.
func openFiles(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestHostileSpectrumFDExhaustion: idle spectrum connections, more than
// the descriptors allow, against the binary under its own open-file limit
// (2500 here; the machine's 20000 and 9,800 connections with
// EDGEPROXY_ATTACK=1). Each connection the proxy takes costs it two
// descriptors (no splice pipes while idle), the ones over the budget are
// refused and counted as limit, one by one, the process never reaches its
// limit, the cdn and the admin API keep serving, and no origin is marked
// down.
func TestHostileSpectrumFDExhaustion(t *testing.T) {
	ns := netns.New(t)
	nofile, clients := 2500, 1000
	if attack() {
		nofile, clients = 20000, 9800
	}
	startSink(t, "127.0.0.1:7020")
	web, err := net.Listen("tcp", "127.0.0.1:7021")
	if err != nil {
		t.Fatal(err)
	}
	webSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "cdn origin") })}
	go webSrv.Serve(web)
	defer webSrv.Close()
	in := startLimited(t, ns, nofile, `prefixes:
  - {cidr: 192.0.2.0/24, service: spectrum}
  - {cidr: 198.51.100.0/24, service: cdn}
cdn:
  http_ports: [80]
  https_ports: []
  http3: false
  access_log: "off"
  sites: [{hosts: ["site.test"], origins: ["http://127.0.0.1:7021"]}]
spectrum:
  apps: [{name: idle, protocol: tcp, edge: 192.0.2.0/24, ports: "7", origins: ["127.0.0.1:7020"]}]
`)
	pid := in.cmd.Process.Pid
	const (
		accepted = `edgeproxy_spectrum_connections_total{app="idle",protocol="tcp"}`
		refused  = `edgeproxy_spectrum_refused_total{app="idle",protocol="tcp",reason="limit"}`
		failures = `edgeproxy_spectrum_origin_failures_total{app="idle"}`
	)
	base := openFiles(t, pid)

	// The clients, dialled from this thread (in the namespace); the test
	// process holds only their ends.
	start := time.Now()
	conns := make([]net.Conn, 0, clients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	resetAtDial := 0 // refused before the dial returned
	for range clients {
		c, err := net.DialTimeout("tcp", "192.0.2.1:7", 5*time.Second)
		if errors.Is(err, syscall.ECONNRESET) {
			resetAtDial++
			continue
		}
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	// Every connection is taken or refused by the proxy.
	deadline := time.Now().Add(30 * time.Second)
	var ok, ref float64
	for {
		ok, ref = in.metric(t, accepted), in.metric(t, refused)
		if int(ok+ref) == clients {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections: %v taken, %v refused as limit; the rest hang (open files %d of %d)\n%s",
				clients, ok, ref, openFiles(t, pid), nofile, tail(in.stderr.String(), 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("attack: %d idle spectrum connections in %v: %v taken, %v refused as limit", clients, time.Since(start).Round(time.Millisecond), ok, ref)
	if ref == 0 {
		t.Fatalf("no connection refused: the limit did not bite (open files %d of %d)", openFiles(t, pid), nofile)
	}

	// The clients see the same: the refused ones get a reset or an end,
	// the others wait.
	var open, closed atomic.Int64
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(time.Second))
			_, err := c.Read(make([]byte, 1))
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				open.Add(1)
			} else {
				closed.Add(1)
			}
		}()
	}
	wg.Wait()
	closed.Add(int64(resetAtDial))
	if open.Load() != int64(ok) || closed.Load() != int64(ref) {
		t.Fatalf("clients: %d open, %d refused; the proxy counted %v taken, %v refused", open.Load(), closed.Load(), ok, ref)
	}
	used := openFiles(t, pid)
	perConn := float64(used-base) / ok
	t.Logf("attack: open files %d of %d (%d at the start): %.2f descriptors per idle connection", used, nofile, base, perConn)
	if perConn > 2.1 {
		t.Errorf("an idle connection costs %.2f descriptors, want 2 (client and origin, no pipes)", perConn)
	}
	if used > nofile-128 {
		t.Errorf("open files %d of %d: the budget let the process near its limit", used, nofile)
	}

	// More connections are refused, each counted.
	for range 5 {
		c, err := net.DialTimeout("tcp", "192.0.2.1:7", 5*time.Second)
		if errors.Is(err, syscall.ECONNRESET) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("a connection over the limit was taken")
		}
	}
	if got := in.metric(t, refused); got != ref+5 {
		t.Errorf("refused as limit: %v after 5 more, want %v", got, ref+5)
	}

	// The cdn takes new connections and serves; the admin API answers.
	cdn := &http.Client{Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}, Timeout: 5 * time.Second}
	for i := range 5 {
		req, _ := http.NewRequest("GET", "http://198.51.100.1/", nil)
		req.Host = "site.test"
		resp, err := cdn.Do(req)
		if err != nil {
			t.Fatalf("cdn request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "cdn origin" {
			t.Fatalf("cdn request %d: %d %q", i, resp.StatusCode, b)
		}
	}
	var origins []struct {
		Origin, State string
		Failures      int
	}
	api := &admin.Client{Base: in.admin, HTTP: in.hc}
	if err := api.Do("GET", "/v1/origins", nil, &origins); err != nil || len(origins) != 1 {
		t.Fatalf("admin API /v1/origins: %v %+v", err, origins)
	}
	if o := origins[0]; o.State != "up" || o.Failures != 0 {
		t.Errorf("cdn origin %s: %s, %d failures", o.Origin, o.State, o.Failures)
	}
	if got := in.metric(t, failures); got != 0 {
		t.Errorf("spectrum marked its origin down %v times", got)
	}

	// Data still moves on the connections taken (through pipes lent for
	// the transfer and given back).
	moved := 0
	for _, c := range conns {
		if moved == 50 {
			break
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			continue // a refused one
		}
		got := make([]byte, 4)
		if _, err := io.ReadFull(c, got); err != nil {
			continue
		}
		if string(got) != "ping" {
			t.Fatalf("echo: %q", got)
		}
		moved++
	}
	if moved < 50 {
		t.Fatalf("only %d connections carried data", moved)
	}
	after := openFiles(t, pid)
	t.Logf("attack: open files %d after data moved on 50 connections (pipes kept for reuse: at most 64)", after)
	if after > used+2*64 {
		t.Errorf("open files %d after data moved, %d before: pipes are not given back", after, used)
	}

	// Closing the clients gives every descriptor back.
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	deadline = time.Now().Add(15 * time.Second)
	for openFiles(t, pid) > base+2*64+16 {
		if time.Now().After(deadline) {
			t.Fatalf("open files %d after every client left, %d at the start", openFiles(t, pid), base)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestHostileUDPFlowFlood: a flood of new flows to one UDP app (from many
// source ports) takes at most its share of the flows, another app still
// gets one, and the refusals are counted one by one but logged at most ten
// lines a second.
func TestHostileUDPFlowFlood(t *testing.T) {
	ns := netns.New(t)
	echo.Start(t, "flood-origin", "127.0.0.1:7030")
	echo.Start(t, "quiet-origin", "127.0.0.1:7031")
	in := startLimited(t, ns, 0, `prefixes: [{cidr: 192.0.2.0/24, service: spectrum}]
spectrum:
  max_udp_flows: 40
  apps:
    - {name: flood, protocol: udp, edge: 192.0.2.0/24, ports: "53", origins: ["127.0.0.1:7030"]}
    - {name: quiet, protocol: udp, edge: 192.0.2.0/24, ports: "54", origins: ["127.0.0.1:7031"]}
`)
	sources, dur := 300, time.Second
	if attack() {
		sources, dur = 2000, 6*time.Second
	}
	socks := make([]net.Conn, 0, sources)
	for range sources {
		c, err := net.Dial("udp", "192.0.2.1:53")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		socks = append(socks, c)
	}
	var sent atomic.Int64
	stop := time.Now().Add(dur)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; time.Now().Before(stop); i = (i + 4) % len(socks) {
				if _, err := socks[i].Write([]byte("hi\n")); err == nil {
					sent.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	// The flood's datagrams still queued on the socket are read first (the
	// race detector slows that down): ask again for a few seconds. Without
	// a share the flood would hold every flow until they expire, and the
	// other app would be refused all that time.
	for deadline := time.Now().Add(5 * time.Second); ; {
		got := askName(t, "udp", "192.0.2.1:54")
		if got == "quiet-origin" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other app's client: %q after the flood, want its origin", got)
		}
	}
	flows := in.metric(t, `edgeproxy_spectrum_active{app="flood",protocol="udp"}`)
	shared := in.metric(t, `edgeproxy_spectrum_refused_total{app="flood",protocol="udp",reason="share"}`)
	limit := in.metric(t, `edgeproxy_spectrum_refused_total{app="flood",protocol="udp",reason="limit"}`)
	suppressed := in.metric(t, `edgeproxy_spectrum_refusal_logs_suppressed_total`)
	in.stop()
	lines := strings.Count(in.stderr.String(), `"msg":"spectrum refused"`)
	t.Logf("attack: %d datagrams from %d sources in %v: the flood app holds %v flows, %v refused (share), %v (limit); %d refusal log lines, %v left out",
		sent.Load(), sources, dur, flows, shared, limit, lines, suppressed)
	if flows != 20 {
		t.Errorf("the flood app holds %v flows, want its share, 20 of 40", flows)
	}
	if shared == 0 {
		t.Error("no refusal counted as share")
	}
	if max := 10 * (int(dur/time.Second) + 2); lines > max {
		t.Errorf("%d refusal log lines in %v, want at most %d", lines, dur, max)
	}
	if int(shared+limit) != lines+int(suppressed) {
		t.Errorf("refusals %v, log lines %d plus %v left out: every refusal is counted once", shared+limit, lines, suppressed)
	}
}
