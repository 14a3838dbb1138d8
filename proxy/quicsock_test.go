package proxy

import (
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
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/selfsigned"
	"github.com/edgeproxy/edgeproxy/internal/srccheck"
)

func init() {
	// The test clients' sockets are wrapped, so quic-go cannot size their
	// buffers, and says so on every dial.
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
}

// h3Fixture is a cdn with HTTP/3 on udp/443 in the test's namespace, one
// site (a.example, certificate for a.example and b.example) whose origin
// answers with the dialled edge address it was told and holds /slow for
// 300 ms (/echo: the request's length, framing and body). The cdn's listener is found by the kernel's normal lookup (no
// dispatcher): a socket bound to a specific address on 443 takes new flows
// from it, as the dispatcher's choice of another socket would.
type h3Fixture struct {
	ns    *netns.NS
	p     *Proxy
	pool  *x509.CertPool
	owned atomic.Bool // OwnsHTTP3's answer for 192.0.2.10 and 2001:db8::10
	sni   sync.Map    // dialled address (string) -> the ClientHello's LocalAddr seen
	reg   *prometheus.Registry
}

func startH3(t testing.TB, keyFile string, more ...func(*Options)) *h3Fixture {
	t.Helper()
	f := &h3Fixture{ns: netns.New(t), reg: prometheus.NewRegistry()}
	f.owned.Store(true)
	dir := t.TempDir()
	certFile, keyPEM, err := selfsigned.Write(dir, "a", "a.example", "b.example")
	if err != nil {
		t.Fatal(err)
	}
	if f.pool, err = selfsigned.Pool(certFile); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	oln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	osrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(300 * time.Millisecond)
		}
		if r.URL.Path == "/echo" { // h3stream_test.go
			b, err := io.ReadAll(r.Body)
			fmt.Fprintf(w, "echo %d %q %v %q", r.ContentLength, r.TransferEncoding, err, b)
			return
		}
		fmt.Fprintf(w, "ok %s", r.URL.Path)
	})}
	go osrv.Serve(oln)
	t.Cleanup(func() { osrv.Close() })
	moved := func(a netip.Addr) bool {
		return a == netip.MustParseAddr("192.0.2.10") || a == netip.MustParseAddr("2001:db8::10")
	}
	opts := Options{
		Config: Config{
			HTTPSPorts: []uint16{443}, HTTP3: true, HTTP3Port: 443,
			Certificates: []Certificate{{Certificate: cert, Default: true, Source: "a"}},
			Sites:        []Site{{Hosts: []string{"a.example", "b.example"}, Origins: []Origin{{URL: mustURL("http://" + oln.Addr().String())}}}},
		},
		OwnsHTTP3: func(ap netip.AddrPort) bool {
			f.sni.Store(ap.String(), true)
			return !moved(ap.Addr()) || f.owned.Load()
		},
		QUICResetKeyFile: keyFile,
		Registerer:       f.reg,
		Dial:             f.ns.Dial,
		Socket:           f.ns.Socket,
	}
	for _, m := range more {
		m(&opts)
	}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	f.p = p
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	return f
}

// h3Client is one HTTP/3 client connection to dst, from loopback.
type h3Client struct {
	pc  net.PacketConn
	sc  *srccheck.Conn
	tr  *http3.Transport
	cc  *http3.ClientConn
	qc  *quic.Conn
	dst netip.AddrPort
}

func (f *h3Fixture) dial(t testing.TB, dst netip.AddrPort, sni string) *h3Client {
	t.Helper()
	network, src := "udp4", "127.0.0.1:0"
	if dst.Addr().Is6() {
		network, src = "udp6", "[::1]:0"
	}
	pc, err := net.ListenPacket(network, src)
	if err != nil {
		t.Fatal(err)
	}
	c := &h3Client{pc: pc, sc: srccheck.New(pc, dst), dst: dst}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	qc, err := quic.Dial(ctx, c.sc, net.UDPAddrFromAddrPort(dst),
		&tls.Config{RootCAs: f.pool, ServerName: sni, NextProtos: []string{http3.NextProtoH3}},
		&quic.Config{MaxIdleTimeout: 5 * time.Second})
	if err != nil {
		pc.Close()
		t.Fatalf("QUIC handshake with %s: %v", dst, err)
	}
	c.qc = qc
	c.tr = &http3.Transport{}
	c.cc = c.tr.NewClientConn(qc)
	t.Cleanup(func() { qc.CloseWithError(0, ""); pc.Close() })
	return c
}

// get makes one request on the connection.
func (c *h3Client) get(path string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://a.example"+path, nil)
	resp, err := c.cc.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b), err
}

// waitFor polls cond for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestHTTP3ConnectedSocketSource: each connection gets a connected socket
// after its handshake; the dialled address reaches the TLS configuration
// callback; every datagram the client receives comes from the address and
// port it dialled, IPv4 and IPv6; closing the connection closes its socket.
func TestHTTP3ConnectedSocketSource(t *testing.T) {
	f := startH3(t, "")
	for _, dst := range []string{"192.0.2.10:443", "[2001:db8::10]:443", "198.51.100.7:443"} {
		ap := netip.MustParseAddrPort(dst)
		c := f.dial(t, ap, "a.example")
		for i := range 3 {
			if got, err := c.get(fmt.Sprintf("/r%d", i), 3*time.Second); err != nil || got != fmt.Sprintf("200 ok /r%d", i) {
				t.Fatalf("%s request %d: %q %v", dst, i, got, err)
			}
		}
		if n := f.p.qs.connected(); n != 1 {
			t.Errorf("%s: %d connected sockets, want 1", dst, n)
		}
		if _, ok := f.sni.Load(ap.String()); !ok {
			t.Errorf("%s: the TLS callback never saw the dialled address (saw %v)", dst, seenKeys(&f.sni))
		}
		if n, bad := c.sc.Stats(); n == 0 || len(bad) > 0 {
			t.Errorf("%s: %d datagrams, from wrong sources: %v", dst, n, bad)
		}
		c.qc.CloseWithError(0, "")
		if !waitFor(2*time.Second, func() bool { return f.p.qs.connected() == 0 }) {
			t.Errorf("%s: %d connected sockets after the connection closed", dst, f.p.qs.connected())
		}
	}
}

func seenKeys(m *sync.Map) []string {
	var out []string
	m.Range(func(k, _ any) bool { out = append(out, k.(string)); return true })
	return out
}

// udpCount is a UDP socket that counts what it receives (a socket that must
// not get an established connection's datagrams, or that stands for the
// service an address moved to).
type udpCount struct {
	pc *net.UDPConn
	n  atomic.Int64
}

func listenUDPCount(t *testing.T) *udpCount {
	t.Helper()
	pc, err := echo.ListenUDP("[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &udpCount{pc: pc}
	go func() {
		b := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(b); err != nil {
				return
			}
			c.n.Add(1)
		}
	}()
	t.Cleanup(func() { pc.Close() })
	return c
}

// TestHTTP3SurvivesUpgradeAndMove: with the dispatcher steering
// 192.0.2.0/24 udp/443 to cdn/udp, an established HTTP/3 connection keeps
// its datagrams after another socket is registered under cdn/udp (a live
// upgrade's new process) and after its address moved to another service;
// after the move it serves its request in flight, gets GOAWAY (a new request
// on it is refused as after GOAWAY) and is closed once its streams are done;
// the unowned gauge counts it meanwhile. A new connection to the moved
// address goes to the new owner's socket, not the cdn.
func TestHTTP3SurvivesUpgradeAndMove(t *testing.T) {
	f := startH3(t, "")
	d, err := dispatch.Open(dispatch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	other := listenUDPCount(t)
	if err := d.Register("cdn/udp", f.p.UDPConn()); err != nil {
		t.Fatal(err)
	}
	if err := d.Register("spectrum/udp", other.pc); err != nil {
		t.Fatal(err)
	}
	const cdn, spectrum dispatch.Owner = 1, 2
	table := func(moved bool) *dispatch.Table {
		tb := &dispatch.Table{
			Owners: map[dispatch.Owner]dispatch.Policy{
				cdn:      {Kind: dispatch.PolicyPorts, Ports: map[dispatch.ProtoPort]string{{Protocol: dispatch.UDP, Port: 443}: "cdn/udp"}},
				spectrum: {Kind: dispatch.PolicyPorts, Ports: map[dispatch.ProtoPort]string{{Protocol: dispatch.UDP, Port: 443}: "spectrum/udp"}},
			},
			Bindings: []dispatch.Binding{{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Owner: cdn}},
		}
		if moved {
			tb.Bindings = append(tb.Bindings, dispatch.Binding{Prefix: netip.MustParsePrefix("192.0.2.10/32"), Owner: spectrum})
		}
		return tb
	}
	if err := d.Replace(table(false)); err != nil {
		t.Fatal(err)
	}
	if err := d.Attach(); err != nil {
		t.Fatal(err)
	}
	moving := f.dial(t, netip.MustParseAddrPort("192.0.2.10:443"), "a.example")
	staying := f.dial(t, netip.MustParseAddrPort("192.0.2.20:443"), "a.example")
	for _, c := range []*h3Client{moving, staying} {
		if got, err := c.get("/before", 2*time.Second); err != nil || got != "200 ok /before" {
			t.Fatalf("%s before: %q %v", c.dst, got, err)
		}
	}

	// The upgrade: a new socket takes cdn/udp. It gets new flows, never
	// the established connections' datagrams.
	next := listenUDPCount(t)
	if err := d.Register("cdn/udp", next.pc); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		for _, c := range []*h3Client{moving, staying} {
			if got, err := c.get(fmt.Sprintf("/upgraded%d", i), 2*time.Second); err != nil || got != fmt.Sprintf("200 ok /upgraded%d", i) {
				t.Fatalf("%s after another socket took cdn/udp: %q %v", c.dst, got, err)
			}
		}
	}
	if n := next.n.Load(); n != 0 {
		t.Errorf("the new cdn/udp socket got %d datagrams of established connections", n)
	}
	if _, err := quic.DialAddr(context.Background(), "192.0.2.20:443", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h3"}}, &quic.Config{HandshakeIdleTimeout: 200 * time.Millisecond}); err == nil {
		t.Error("a new connection after the switch completed on the old cdn socket")
	}
	if next.n.Load() == 0 {
		t.Error("the new cdn/udp socket did not get the new connection's Initial")
	}
	if err := d.Register("cdn/udp", f.p.UDPConn()); err != nil { // back, for the move
		t.Fatal(err)
	}

	// The move: 192.0.2.10 leaves the cdn.
	f.owned.Store(false)
	if err := d.Replace(table(true)); err != nil {
		t.Fatal(err)
	}
	if got, err := moving.get("/moved", 2*time.Second); err != nil || got != "200 ok /moved" {
		t.Fatalf("after the move, before Reowned: %q %v", got, err)
	}
	slow := make(chan string, 1)
	go func() {
		got, err := moving.get("/slow", 3*time.Second)
		slow <- fmt.Sprint(got, err)
	}()
	time.Sleep(50 * time.Millisecond) // the request is in flight
	f.p.Reowned()
	if !waitFor(time.Second, func() bool { return f.p.unowned() == 1 }) {
		t.Errorf("unowned gauge %d after the move, want 1", f.p.unowned())
	}
	time.Sleep(100 * time.Millisecond)
	if got, err := moving.get("/after-goaway", time.Second); err == nil {
		t.Errorf("a request after GOAWAY was served: %q", got)
	}
	if got := <-slow; got != "200 ok /slow<nil>" {
		t.Errorf("the request in flight at the move: %s", got)
	}
	select {
	case <-moving.qc.Context().Done():
		var ae *quic.ApplicationError
		if err := context.Cause(moving.qc.Context()); !errors.As(err, &ae) || ae.ErrorCode != quic.ApplicationErrorCode(http3.ErrCodeNoError) {
			t.Errorf("the moved connection closed with %v, want H3_NO_ERROR", err)
		}
	case <-time.After(2 * time.Second):
		t.Error("the moved connection is still open 2 s after its last request")
	}
	if !waitFor(time.Second, func() bool { return f.p.unowned() == 0 && f.p.qs.connected() == 1 }) {
		t.Errorf("after the moved connection closed: unowned %d, connected sockets %d (want 0, 1)", f.p.unowned(), f.p.qs.connected())
	}
	if got, err := staying.get("/staying", 2*time.Second); err != nil || got != "200 ok /staying" {
		t.Errorf("the connection that did not move, after the move: %q %v", got, err)
	}
	before := other.n.Load()
	if _, err := quic.DialAddr(context.Background(), "192.0.2.10:443", &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h3"}}, &quic.Config{HandshakeIdleTimeout: 200 * time.Millisecond}); err == nil {
		t.Error("a new connection to the moved address was served by the cdn")
	}
	if other.n.Load() == before {
		t.Error("the new owner's socket did not get the new connection's Initial")
	}
}

// TestHTTP3StatelessResetSharedKey: process A serves a connection and
// vanishes without a word (its sockets closed); process B, with the key
// file A made, gets the connection's next datagrams and answers with a
// stateless reset the client accepts: it fails at once, not after its idle
// timeout. With a key of its own, B's reset is not the connection's, and the
// client waits out its idle timeout.
func TestHTTP3StatelessResetSharedKey(t *testing.T) {
	for _, shared := range []bool{true, false} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			key := filepath.Join(t.TempDir(), "quic-reset-key")
			a := startH3(t, key)
			st, err := os.Stat(key)
			if err != nil || st.Size() != 32 || st.Mode().Perm() != 0o600 {
				t.Fatalf("the key file: %v %v", st, err)
			}
			c := a.dial(t, netip.MustParseAddrPort("192.0.2.10:443"), "a.example")
			if got, err := c.get("/a", 2*time.Second); err != nil || got != "200 ok /a" {
				t.Fatalf("on A: %q %v", got, err)
			}
			bkey := key
			if !shared {
				bkey = filepath.Join(t.TempDir(), "other-key")
			}
			b, err := New(Options{Config: Config{HTTP3: true, HTTP3Port: 443}, QUICResetKeyFile: bkey, Dial: a.ns.Dial, Socket: a.ns.Socket})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Shutdown(context.Background()) })
			a.p.qs.Close() // A vanishes: no CONNECTION_CLOSE
			start := time.Now()
			_, err = c.get("/b", 4*time.Second)
			took := time.Since(start)
			select { // the connection's end follows the request's at once
			case <-c.qc.Context().Done():
			case <-time.After(time.Second):
			}
			var sr *quic.StatelessResetError
			reset := errors.As(err, &sr) || errors.As(context.Cause(c.qc.Context()), &sr)
			switch {
			case shared && (!reset || took > time.Second):
				t.Errorf("shared key: after %v: %v (connection: %v), want a stateless reset at once", took, err, context.Cause(c.qc.Context()))
			case !shared && reset:
				t.Errorf("a key of B's own reset A's connection: %v", err)
			}
		})
	}
}

func TestResetKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k")
	k1, made, err := loadResetKey(path)
	if err != nil || !made {
		t.Fatal(made, err)
	}
	k2, made, err := loadResetKey(path)
	if err != nil || made || *k1 != *k2 {
		t.Fatalf("second load: made %v, %v, same %v", made, err, k1 != nil && k2 != nil && *k1 == *k2)
	}
	os.Chmod(path, 0o644)
	if _, _, err := loadResetKey(path); err == nil {
		t.Error("a key others may read was taken")
	}
	os.WriteFile(path, []byte("short"), 0o600)
	os.Chmod(path, 0o600)
	if _, _, err := loadResetKey(path); err == nil {
		t.Error("a 5-byte key was taken")
	}
	a, _, err := loadResetKey("")
	b, _, _ := loadResetKey("")
	if a == nil || b == nil || err != nil || *a == *b {
		t.Errorf("no file: %v %v %v, want two random keys", a, b, err)
	}
}

// TestHTTP3ConnectedSocketBudget: when the descriptor budget refuses a
// connected socket, the connection stays on the listener and keeps
// serving, and the refusal is counted; the socket's descriptor goes back to
// the budget when its connection closes.
func TestHTTP3ConnectedSocketBudget(t *testing.T) {
	b, err := fdlimit.New(fdlimit.Options{Limit: fdlimit.OpenNow() + 200, Accept: -1, Admin: -1, Dial: 10, CDN: 10, Other: 10})
	if err != nil {
		t.Fatal(err)
	}
	f := startH3(t, "", func(o *Options) { o.FDs = b })
	c0 := f.dial(t, netip.MustParseAddrPort("192.0.2.10:443"), "a.example")
	if got, err := c0.get("/0", 2*time.Second); err != nil || got != "200 ok /0" { // the origin connection, pooled
		t.Fatalf("first connection: %q %v", got, err)
	}
	before := b.Used()
	c1 := f.dial(t, netip.MustParseAddrPort("192.0.2.10:443"), "a.example")
	if got, err := c1.get("/1", 2*time.Second); err != nil || got != "200 ok /1" {
		t.Fatalf("second connection: %q %v", got, err)
	}
	if b.Used() != before+1 || f.p.qs.connected() != 2 {
		t.Fatalf("a connected socket: budget used %d (was %d), %d sockets", b.Used(), before, f.p.qs.connected())
	}
	for b.Acquire(fdlimit.CDN, 1) {
	}
	c2 := f.dial(t, netip.MustParseAddrPort("192.0.2.10:443"), "a.example")
	if got, err := c2.get("/2", 2*time.Second); err != nil || got != "200 ok /2" {
		t.Fatalf("connection on the listener: %q %v", got, err)
	}
	if n, bad := c2.sc.Stats(); n == 0 || len(bad) > 0 {
		t.Errorf("on the listener: %d datagrams, from wrong sources %v", n, bad)
	}
	if got := f.p.qs.connected(); got != 2 {
		t.Errorf("%d connected sockets with the budget spent, want 2", got)
	}
	if got := testutil.ToFloat64(f.p.qsm.failures.WithLabelValues("budget")); got != 1 {
		t.Errorf("budget refusals counted: %v, want 1", got)
	}
	used := b.Used()
	c1.qc.CloseWithError(0, "")
	if !waitFor(2*time.Second, func() bool { return b.Used() == used-1 && f.p.qs.connected() == 1 }) {
		t.Errorf("after the connection closed: budget used %d (was %d), %d sockets", b.Used(), used, f.p.qs.connected())
	}
}

// TestHTTP3ConnectedSocketsPerAddress: past limits.max_quic_sockets_per_address
// on one dialled address, connections stay on the listener (and serve);
// another address has its own count.
func TestHTTP3ConnectedSocketsPerAddress(t *testing.T) {
	f := startH3(t, "", func(o *Options) { o.Limits.MaxQUICSocketsPerAddress = 2 })
	for i := range 3 {
		c := f.dial(t, netip.MustParseAddrPort("192.0.2.10:443"), "a.example")
		if got, err := c.get("/", 2*time.Second); err != nil || got != "200 ok /" {
			t.Fatalf("connection %d: %q %v", i, got, err)
		}
	}
	if got := f.p.qs.connected(); got != 2 {
		t.Errorf("%d connected sockets on one address, want the limit, 2", got)
	}
	if got := testutil.ToFloat64(f.p.qsm.failures.WithLabelValues("address_cap")); got != 1 {
		t.Errorf("address_cap refusals: %v, want 1", got)
	}
	c := f.dial(t, netip.MustParseAddrPort("192.0.2.11:443"), "a.example")
	if got, err := c.get("/", 2*time.Second); err != nil || got != "200 ok /" {
		t.Fatalf("on another address: %q %v", got, err)
	}
	if got := f.p.qs.connected(); got != 3 {
		t.Errorf("%d connected sockets, want 3 (another address)", got)
	}
}
