package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"

	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/selfsigned"
)

// procStatus reads a /proc/PID/status field in kB, as MB.
func procStatus(t *testing.T, pid int, field string) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// metricValue returns a sample of the instance's /metrics, summed over
// every series whose name and labels start with prefix and that contain
// every one of labels.
func (in *instance) metricValue(hc *http.Client, prefix string, labels ...string) float64 {
	resp, err := hc.Get(in.admin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		ok := true
		for _, lb := range labels {
			ok = ok && strings.Contains(l, lb)
		}
		if !ok {
			continue
		}
		if i := strings.LastIndexByte(l, ' '); i > 0 {
			v, _ := strconv.ParseFloat(l[i+1:], 64)
			sum += v
		}
	}
	return sum
}

// floodCDN runs the binary with one https site on 192.0.2.10:443 (and
// HTTP/3) whose origin counts the requests it gets.
func floodCDN(t *testing.T, extra string) (*netns.NS, *instance, *originStats, *x509.CertPool) {
	t.Helper()
	ns := netns.New(t)
	dir := t.TempDir()
	cert, key, err := selfsigned.Write(dir, "a", "a.example")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := selfsigned.Pool(cert)
	if err != nil {
		t.Fatal(err)
	}
	origin := testOrigin(t, "origin-a", "127.0.0.1:18080")
	in := startInstance(t, ns, fmt.Sprintf(`store: {path: ""}
prefixes: [{cidr: 192.0.2.0/24, service: cdn}]
cdn:
  https_ports: [443]
  http3: true
  http3_port: 443
  access_log: "off"
%s
  certificates: [{cert_file: %q, key_file: %q}]
  sites:
    - hosts: [a.example]
      origins: ["http://127.0.0.1:18080"]
`, extra, cert, key))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("edgeproxy's log:\n%s", in.stderr)
		}
	})
	return ns, in, origin, pool
}

// sampler records the proxy's peak RSS and goroutines while it runs.
type sampler struct {
	peakRSS, peakG atomic.Int64 // kB, count
	stop           chan struct{}
	done           chan struct{}
}

func sample(t *testing.T, in *instance, hc *http.Client) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	pid := in.cmd.Process.Pid
	go func() {
		defer close(s.done)
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			if rss := int64(procStatus(t, pid, "VmRSS") * 1024); rss > s.peakRSS.Load() {
				s.peakRSS.Store(rss)
			}
			if g := int64(in.metricValue(hc, "go_goroutines")); g > s.peakG.Load() {
				s.peakG.Store(g)
			}
			select {
			case <-s.stop:
				return
			case <-tk.C:
			}
		}
	}()
	return s
}

func (s *sampler) finish() (rssMB float64, goroutines int64) {
	close(s.stop)
	<-s.done
	return float64(s.peakRSS.Load()) / 1024, s.peakG.Load()
}

// h2ClientFrom is an HTTP/2 client of the cdn from a source address.
func h2ClientFrom(ns *netns.NS, pool *x509.CertPool, src string) *http.Client {
	d := echo.FreebindDialer(netip.MustParseAddr(src), 0)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "a.example"},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var c net.Conn
			err := ns.Do(func() (err error) {
				c, err = d.DialContext(ctx, network, "192.0.2.10:443")
				return err
			})
			return c, err
		},
		Protocols: new(http.Protocols),
	}
	tr.Protocols.SetHTTP2(true)
	return &http.Client{Timeout: 5 * time.Second, Transport: tr}
}

// TestHostileRapidResetReconnecting: 8 clients from 203.0.113.1 open HTTP/2
// connections and send HEADERS then RST_STREAM over and over, reconnecting
// whenever the proxy closes the connection. Reset streams do not become
// origin requests (at most 1 in 100), the proxy's memory and goroutines
// stay bounded and return, and a client on another address (203.0.113.2) is
// answered within a second throughout. Bounded: 2 s; EDGEPROXY_ATTACK=1:
// 20 s.
func TestHostileRapidResetReconnecting(t *testing.T) {
	ns, in, origin, pool := floodCDN(t, "")
	hc := ns.HTTPClient()
	dur := 2 * time.Second
	if attack() {
		dur = 20 * time.Second
	}
	legit := h2ClientFrom(ns, pool, "203.0.113.2")
	// Requests that complete are no resets: 300 on one connection, well
	// past the budget of 200, are all served.
	for i := range 300 {
		resp, err := legit.Get("https://a.example/warm")
		if err != nil {
			t.Fatalf("request %d before the flood: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := in.metricValue(hc, "edgeproxy_cdn_reset_cutoffs_total"); n != 0 {
		t.Fatalf("%v reset cut-offs after 300 completed requests", n)
	}
	pid := in.cmd.Process.Pid
	rssBefore := procStatus(t, pid, "VmRSS")
	originBefore := origin.requests.Load()
	s := sample(t, in, hc)

	var resets, conns, refused atomic.Int64
	block := headerBlock(":method", "GET", ":scheme", "https", ":authority", "a.example", ":path", "/")
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		ns.Go(func() {
			defer wg.Done()
			d := echo.FreebindDialer(netip.MustParseAddr("203.0.113.1"), 0)
			for time.Now().Before(deadline) {
				c, err := tls.DialWithDialer(d, "tcp", "192.0.2.10:443",
					&tls.Config{ServerName: "a.example", InsecureSkipVerify: true, NextProtos: []string{"h2"}})
				if err != nil {
					refused.Add(1)
					time.Sleep(5 * time.Millisecond) // be kind to the test machine's two cores
					continue
				}
				conns.Add(1)
				go io.Copy(io.Discard, c)
				c.SetWriteDeadline(deadline)
				bw := bufio.NewWriterSize(c, 64<<10)
				fr := http2.NewFramer(bw, c)
				io.WriteString(bw, http2.ClientPreface)
				fr.WriteSettings()
				for id := uint32(1); time.Now().Before(deadline) && id < 1<<30; id += 2 {
					if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}) != nil ||
						fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
						break
					}
					if id%64 == 63 && bw.Flush() != nil {
						break
					}
					resets.Add(1)
				}
				c.Close()
			}
		})
	}

	// The legitimate client, during the flood.
	var worst time.Duration
	var legitN, legitBad int
	for time.Now().Before(deadline) {
		start := time.Now()
		resp, err := legit.Get("https://a.example/legit")
		d := time.Since(start)
		worst = max(worst, d)
		legitN++
		if err != nil {
			legitBad++
			t.Errorf("legitimate request during the flood: %v after %v", err, d)
		} else {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				legitBad++
				t.Errorf("legitimate request during the flood: %d", resp.StatusCode)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	peakRSS, peakG := s.finish()
	originReqs := origin.requests.Load() - originBefore - int64(legitN)

	// Memory comes back on its own (the scavenger), within 30 s.
	var after float64
	back := time.Now().Add(30 * time.Second)
	for {
		after = procStatus(t, pid, "VmRSS")
		if after <= rssBefore+64 || time.Now().After(back) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	ratio := float64(originReqs) / float64(max(resets.Load(), 1))
	t.Logf("attack: rapid reset, 8 reconnecting clients for %v: %d HEADERS+RST sent on %d connections (%d connection attempts refused); %d origin requests started (%.5f per reset stream)",
		dur, resets.Load(), conns.Load(), refused.Load(), originReqs, ratio)
	t.Logf("attack: RSS %.1f MB before, peak %.1f MB (VmHWM %.1f MB), %.1f MB after; peak goroutines %d",
		rssBefore, peakRSS, procStatus(t, pid, "VmHWM"), after, peakG)
	t.Logf("attack: legitimate requests from 203.0.113.2: %d, %d failed, slowest %v", legitN, legitBad, worst.Round(time.Millisecond))
	// The streams that reached the proxy's handler (x/net drops most reset
	// streams before): every request counted, less the legitimate ones.
	handled := in.metricValue(hc, `edgeproxy_cdn_requests_total{`, `protocol="HTTP/2"`) - float64(legitN) - 1
	perHandled := float64(originReqs) / max(handled, 1)
	t.Logf("attack: %.0f reset streams reached the proxy's handler: %.5f origin requests per such stream", handled, perHandled)
	t.Logf("attack: metrics: reset cut-offs %v (connection) %v (client), banned connections refused %v, requests abandoned %v before send / %v in progress, streams refused %v",
		in.metricValue(hc, `edgeproxy_cdn_reset_cutoffs_total{scope="connection"}`), in.metricValue(hc, `edgeproxy_cdn_reset_cutoffs_total{scope="client"}`),
		in.metricValue(hc, "edgeproxy_cdn_banned_connections_refused_total"),
		in.metricValue(hc, `edgeproxy_cdn_requests_abandoned_total{stage="before_send"}`), in.metricValue(hc, `edgeproxy_cdn_requests_abandoned_total{stage="in_progress"}`),
		in.metricValue(hc, "edgeproxy_cdn_streams_refused_total"))

	if resets.Load() < 1000 {
		t.Fatalf("the flood sent only %d resets", resets.Load())
	}
	if ratio > 0.01 {
		t.Errorf("%.4f origin requests per reset stream sent, want at most 0.01", ratio)
	}
	if perHandled > 0.01 {
		t.Errorf("%.4f origin requests per reset stream handled, want at most 0.01", perHandled)
	}
	if peakRSS > 256 {
		t.Errorf("peak RSS %.1f MB, want under 256 MB", peakRSS)
	}
	if after > rssBefore+64 {
		t.Errorf("RSS %.1f MB 30 s after the flood, want within 64 MB of %.1f MB", after, rssBefore)
	}
	if worst > time.Second {
		t.Errorf("the slowest legitimate request took %v, want within 1 s", worst)
	}
	if in.metricValue(hc, `edgeproxy_cdn_reset_cutoffs_total`) < 1 {
		t.Error("no reset cut-off counted")
	}
}

// oneInitial is a client socket that lets only the client's first datagram
// (its Initial) out and hands the client nothing back: a spoofed source, or
// a client that gives up. What the server sends back is counted.
type oneInitial struct {
	pc       net.PacketConn
	first    atomic.Int64 // bytes of the datagram let out
	got      atomic.Int64 // bytes that came back
	datagram atomic.Int64
	closed   chan struct{}
}

func newOneInitial(src string) (*oneInitial, error) {
	pc, err := net.ListenPacket("udp4", src)
	if err != nil {
		return nil, err
	}
	o := &oneInitial{pc: pc, closed: make(chan struct{})}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if os.Getenv("DBG") != "" {
				fmt.Printf("DBG %v %d %x\n", time.Now().Format("05.000"), n, buf[:min(n, 12)])
			}
			o.got.Add(int64(n))
			o.datagram.Add(1)
		}
	}()
	return o, nil
}

func (o *oneInitial) WriteTo(b []byte, addr net.Addr) (int, error) {
	if o.first.CompareAndSwap(0, int64(len(b))) {
		return o.pc.WriteTo(b, addr)
	}
	return len(b), nil
}

func (o *oneInitial) ReadFrom([]byte) (int, net.Addr, error) {
	<-o.closed
	return 0, nil, net.ErrClosed
}

func (o *oneInitial) Close() error {
	select {
	case <-o.closed:
	default:
		close(o.closed)
	}
	return o.pc.Close()
}
func (o *oneInitial) LocalAddr() net.Addr                { return o.pc.LocalAddr() }
func (o *oneInitial) SetDeadline(t time.Time) error      { return nil }
func (o *oneInitial) SetReadDeadline(t time.Time) error  { return nil }
func (o *oneInitial) SetWriteDeadline(t time.Time) error { return nil }

// sendInitial starts a QUIC handshake to 192.0.2.10:443 from src that
// stops after the first datagram, and returns the socket that counts the
// answer; close it when done.
func sendInitial(src string, size uint16, wait time.Duration) (*oneInitial, error) {
	o, err := newOneInitial(src)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	go func() {
		defer cancel()
		tr := &quic.Transport{Conn: o}
		defer tr.Close()
		tr.Dial(ctx, net.UDPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.10:443")),
			&tls.Config{ServerName: "a.example", InsecureSkipVerify: true, NextProtos: []string{"h3"},
				// One datagram: a post-quantum key share would need two.
				CurvePreferences: []tls.CurveID{tls.X25519}}, &quic.Config{InitialPacketSize: size})
	}()
	go func() { <-o.closed; cancel() }()
	return o, nil
}

// TestHostileQUICAmplification: single Initials of every size a client may
// choose, nothing more from the client: the server's first flight and its
// retransmissions. quic-go checks RFC 9000's 3× limit (§8.1) before each
// datagram rather than sizing the datagram to what is left, so the last
// datagram may overshoot by less than its own size; that is the bound
// asserted here (docs/security.md has the ratios measured). Floods pass
// the Retry threshold and get
// Retries, far below 3× (TestHostileQUICInitialFlood).
func TestHostileQUICAmplification(t *testing.T) {
	floodCDN(t, "")
	var os []*oneInitial
	for _, size := range []uint16{1200, 1252, 1280, 1350, 1452} {
		o, err := sendInitial("127.0.0.1:0", size, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		os = append(os, o)
	}
	time.Sleep(3500 * time.Millisecond) // the first flight, its retransmissions, the handshake timeout
	for _, o := range os {
		o.Close()
		ratio := float64(o.got.Load()) / float64(o.first.Load())
		t.Logf("attack: one Initial of %d bytes brought back %d bytes in %d datagrams: %.2f×", o.first.Load(), o.got.Load(), o.datagram.Load(), ratio)
		if o.first.Load() == 0 || o.got.Load() == 0 {
			t.Fatal("no handshake happened")
		}
		if o.got.Load() > 3*o.first.Load() {
			t.Errorf("%d bytes back for an Initial of %d: more than 3× (RFC 9000 8.1)", o.got.Load(), o.first.Load())
		}
	}
}

// h3From fetches url over HTTP/3 from a UDP socket on src.
func h3From(pool *x509.CertPool, src, url string) (int, error) {
	pc, err := net.ListenPacket("udp4", src+":0")
	if err != nil {
		return 0, err
	}
	defer pc.Close()
	dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.10:443"))
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "a.example"},
		Dial: func(ctx context.Context, _ string, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error) {
			return quic.DialEarly(ctx, pc, dst, tlsConf, conf)
		},
	}
	defer tr.Close()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestHostileQUICInitialFlood: Initials from new source ports of
// 127.0.0.1, as fast as a full-size flood (1000/s for 15 s under
// EDGEPROXY_ATTACK=1; 250/s for 2 s by default), whose senders never
// answer. Once limits.quic_retry_threshold handshakes are in flight the
// proxy answers with Retries (about 150 bytes), so it reflects less than it
// receives and keeps no state for them; its memory stays under 200 MB and a client on
// 127.0.0.2 is still served over HTTP/3.
func TestHostileQUICInitialFlood(t *testing.T) {
	ns, in, _, pool := floodCDN(t, "")
	hc := ns.HTTPClient()
	rate, dur := 250, 2*time.Second
	if attack() {
		rate, dur = 1000, 15*time.Second
	}
	if code, err := h3From(pool, "127.0.0.2", "https://a.example/warm"); err != nil || code != 200 {
		t.Fatalf("HTTP/3 before the flood: %d %v", code, err)
	}
	pid := in.cmd.Process.Pid
	rssBefore := procStatus(t, pid, "VmRSS")
	s := sample(t, in, hc)

	var mu sync.Mutex
	var sent []*oneInitial
	stop := time.Now().Add(dur)
	done := make(chan struct{})
	ns.Go(func() {
		defer close(done)
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for time.Now().Before(stop) {
			for range rate / 100 {
				o, err := sendInitial("127.0.0.1:0", 1200, time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				sent = append(sent, o)
				mu.Unlock()
				time.AfterFunc(1500*time.Millisecond, func() { o.Close() })
			}
			<-tk.C
		}
	})
	var legitN, legitBad int
	var worst time.Duration
	for time.Now().Before(stop) {
		start := time.Now()
		code, err := h3From(pool, "127.0.0.2", "https://a.example/legit")
		worst = max(worst, time.Since(start))
		legitN++
		if err != nil || code != 200 {
			legitBad++
			t.Errorf("HTTP/3 during the flood: %d %v", code, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	<-done
	time.Sleep(1600 * time.Millisecond) // the last senders' sockets close
	peakRSS, peakG := s.finish()
	var out, back int64
	full := 0 // Initials that got a handshake (a first flight) rather than a Retry
	mu.Lock()
	for _, o := range sent {
		out += o.first.Load()
		back += o.got.Load()
		if o.got.Load() > 1000 {
			full++
		}
	}
	n := len(sent)
	mu.Unlock()
	ratio := float64(back) / float64(max(out, 1))
	t.Logf("attack: %d Initials in %v (%d/s) from new ports: %.1f MB sent, %.2f MB reflected (%.3f×)", n, dur, rate, float64(out)/1e6, float64(back)/1e6, ratio)
	t.Logf("attack: %d of them got a handshake, the rest a Retry", full)
	t.Logf("attack: RSS %.1f MB before, peak %.1f MB (VmHWM %.1f MB); peak goroutines %d", rssBefore, peakRSS, procStatus(t, pid, "VmHWM"), peakG)
	t.Logf("attack: HTTP/3 from 127.0.0.2 during the flood: %d requests, %d failed, slowest %v", legitN, legitBad, worst.Round(time.Millisecond))
	t.Logf("attack: metrics: Retries %v, refused %v (handshakes) %v (connections)",
		in.metricValue(hc, "edgeproxy_cdn_quic_retries_total"), in.metricValue(hc, `edgeproxy_cdn_quic_refused_total{reason="handshakes"}`),
		in.metricValue(hc, `edgeproxy_cdn_quic_refused_total{reason="connections"}`))
	// The default threshold is 64 handshakes in flight, each for at most
	// the 2 s handshake timeout (the senders never answer).
	const threshold, hsTimeout = 64, 2 * time.Second
	if n < 3*threshold {
		t.Fatalf("only %d Initials sent: the flood never passed the Retry threshold", n)
	}
	if limit := threshold*(1+int(dur/hsTimeout)) + threshold/4; full > limit {
		t.Errorf("%d of %d Initials got a handshake, want at most %d (the threshold for each handshake timeout)", full, n, limit)
	}
	if peakRSS > 200 {
		t.Errorf("peak RSS %.1f MB, want under 200 MB", peakRSS)
	}
	if attack() && ratio > 1 {
		t.Errorf("reflected %.2f× what the flood sent, want less than it received (Retries)", ratio)
	}
	if in.metricValue(hc, "edgeproxy_cdn_quic_retries_total") < 1 {
		t.Error("no Retry counted")
	}
}

// TestHostileQUICConnectionCap: QUIC connections count toward
// limits.max_connections with TCP ones: with the limit taken by HTTP/3
// connections, another QUIC handshake gets CONNECTION_REFUSED and a TCP
// connection is closed at accept, each counted; once they close, both are
// served again.
func TestHostileQUICConnectionCap(t *testing.T) {
	ns, in, _, pool := floodCDN(t, "  limits: {max_connections: 2}")
	hc := ns.HTTPClient()
	dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.10:443"))
	var held []*quic.Conn
	for i := range 2 {
		pc, err := net.ListenPacket("udp4", "127.0.0.2:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		c, err := quic.Dial(ctx, pc, dst, &tls.Config{RootCAs: pool, ServerName: "a.example", NextProtos: []string{"h3"}}, &quic.Config{})
		cancel()
		if err != nil {
			t.Fatalf("QUIC connection %d within the limit: %v", i, err)
		}
		held = append(held, c)
	}
	if _, err := h3From(pool, "127.0.0.3", "https://a.example/over"); err == nil {
		t.Error("a third QUIC connection was served with max_connections: 2")
	}
	if c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", "192.0.2.10:443",
		&tls.Config{RootCAs: pool, ServerName: "a.example"}); err == nil {
		c.Close()
		t.Error("a TCP connection was served with max_connections taken by QUIC")
	}
	if n := in.metricValue(hc, `edgeproxy_cdn_quic_refused_total{reason="connections"}`); n < 1 {
		t.Errorf("QUIC refusals counted: %v", n)
	}
	for _, c := range held {
		c.CloseWithError(0, "")
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		code, err := h3From(pool, "127.0.0.3", "https://a.example/after")
		if err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("HTTP/3 after the connections closed: %d %v", code, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("attack: max_connections 2 held by QUIC: refused %v QUIC and %v connections in all",
		in.metricValue(hc, `edgeproxy_cdn_quic_refused_total{reason="connections"}`), in.metricValue(hc, "edgeproxy_cdn_connections_refused_total"))
}

// TestHostileHTTP3CancelledStreams: an HTTP/3 client cancels each request
// while the origin works on it, over and over on one connection. Each
// cancel abandons its origin exchange (the proxy does not wait for the
// origin's 3 s), and past limits.connection_reset_budget (200) the proxy
// closes the connection.
func TestHostileHTTP3CancelledStreams(t *testing.T) {
	ns, in, origin, pool := floodCDN(t, "")
	hc := ns.HTTPClient()
	pc, err := net.ListenPacket("udp4", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	qc, err := quic.Dial(ctx, pc, net.UDPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.10:443")),
		&tls.Config{RootCAs: pool, ServerName: "a.example", NextProtos: []string{"h3"}}, &quic.Config{MaxIncomingStreams: 1000})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	cc := (&http3.Transport{}).NewClientConn(qc)
	// Requests that complete are no cancels: 300, past the budget.
	for i := range 300 {
		req, _ := http.NewRequest("GET", "https://a.example/ok", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatalf("request %d before the cancels: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := in.metricValue(hc, "edgeproxy_cdn_reset_cutoffs_total"); n != 0 || qc.Context().Err() != nil {
		t.Fatalf("after 300 completed requests: %v reset cut-offs, connection %v", n, qc.Context().Err())
	}
	start := time.Now()
	cancelled := 0
	for i := 0; i < 400 && qc.Context().Err() == nil; i++ {
		before := origin.requests.Load()
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://a.example/hang", nil)
		done := make(chan struct{})
		go func() { defer close(done); cc.RoundTrip(req) }()
		wait := time.Now().Add(time.Second)
		for origin.requests.Load() == before && time.Now().Before(wait) && qc.Context().Err() == nil {
			time.Sleep(time.Millisecond)
		}
		cancel()
		<-done
		cancelled++
	}
	took := time.Since(start)
	closed := qc.Context().Err() != nil
	abandoned := in.metricValue(hc, `edgeproxy_cdn_requests_abandoned_total{stage="in_progress"}`)
	t.Logf("attack: %d HTTP/3 requests cancelled while the origin worked on them, in %v; connection closed by the proxy: %v; %v exchanges abandoned in progress, %v cut-offs",
		cancelled, took.Round(time.Millisecond), closed, abandoned, in.metricValue(hc, "edgeproxy_cdn_reset_cutoffs_total"))
	if !closed {
		t.Errorf("the connection is still open after %d cancelled streams", cancelled)
	}
	if cancelled > 260 {
		t.Errorf("%d cancelled streams before the connection was closed, want about 200", cancelled)
	}
	if abandoned < float64(cancelled)/2 {
		t.Errorf("%v of %d cancelled requests had their origin exchange abandoned", abandoned, cancelled)
	}
	// The proxy did not wait on the origin: its requests in flight are gone.
	deadline := time.Now().Add(time.Second)
	for in.metricValue(hc, "edgeproxy_cdn_origin_active_requests") > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := in.metricValue(hc, "edgeproxy_cdn_origin_active_requests"); n > 0 {
		t.Errorf("%v origin requests still in flight after the cancels", n)
	}
}
