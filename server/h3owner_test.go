package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/selfsigned"
	estore "github.com/edgeproxy/edgeproxy/store"
)

// h3Target is the cdn address the handshakes go to: 192.0.2.0/24 is the
// configuration's cdn prefix; the store's bindings are elsewhere.
var h3Target = netip.MustParseAddrPort("192.0.2.10:443")

// h3Server starts the server in the test's namespace with HTTP/3 on, the
// configuration's cdn prefix 192.0.2.0/24, and n API-made bindings in the
// store (/128s and /64s in the /48s of 2001:db8::/32, 1000 to a prefix,
// every tenth port-scoped udp/443). It returns the server and the pool
// that trusts its certificate.
func h3Server(tb testing.TB, ns *netns.NS, n int) (*Server, *x509.CertPool) {
	tb.Helper()
	dir := tb.TempDir()
	cert, key, err := selfsigned.Write(dir, "a", "a.example")
	if err != nil {
		tb.Fatal(err)
	}
	pool, err := selfsigned.Pool(cert)
	if err != nil {
		tb.Fatal(err)
	}
	st := &bindings.State{}
	const per = 1000
	for i := range (n + per - 1) / per {
		a := [16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i)}
		st.Prefixes = append(st.Prefixes, bindings.NewPrefix(netip.PrefixFrom(netip.AddrFrom16(a), 48), bindings.Spectrum, bindings.FromAPI))
	}
	for i := range n {
		p := st.Prefixes[i/per]
		a := p.CIDR.Addr().As16()
		k := i % per
		a[6], a[7], a[15] = byte(k>>8), byte(k), 1
		cidr := netip.PrefixFrom(netip.AddrFrom16(a), 128)
		var proto dispatch.Protocol
		var port uint16
		switch {
		case k%100 == 0:
			cidr = netip.PrefixFrom(netip.AddrFrom16(a), 64).Masked()
		case k%10 == 0:
			proto, port = dispatch.UDP, 443
		}
		b := bindings.NewBinding(cidr, proto, port, bindings.CDN, bindings.FromAPI)
		b.PrefixID = p.ID
		st.Bindings = append(st.Bindings, b)
	}
	store := filepath.Join(dir, "bindings.json")
	if err := estore.Seed(store, st); err != nil {
		tb.Fatal(err)
	}
	cfg := writeConfig(tb, fmt.Sprintf(`admin: {listen: "127.0.0.1:0"}
dispatch: {pin_dir: ""}
store: {path: %q}
prefixes: [{cidr: 192.0.2.0/24, service: cdn}]
cdn:
  http_ports: [80]
  https_ports: [443]
  http3: true
  http3_port: 443
  access_log: "off"
  certificates: [{cert_file: %q, key_file: %q, default: true}]
  sites: [{hosts: [a.example], origins: ["http://127.0.0.1:1"]}]
`, store, cert, key))
	s, err := Start(Options{Config: cfg, Dial: ns.Dial, Socket: ns.Socket})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s, pool
}

// h3Client returns a QUIC transport on a loopback socket of the namespace
// (outside every steered prefix, so the replies reach it) and the TLS
// configuration of an HTTP/3 client of a.example.
func h3Client(tb testing.TB, pool *x509.CertPool) (*quic.Transport, *tls.Config) {
	tb.Helper()
	os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	tb.Cleanup(func() { tr.Close(); pc.Close() })
	return tr, &tls.Config{RootCAs: pool, ServerName: "a.example", NextProtos: []string{http3.NextProtoH3}}
}

// handshake makes one QUIC handshake with the cdn and closes the
// connection.
func handshake(tr *quic.Transport, tlsConf *tls.Config, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(h3Target), tlsConf, &quic.Config{HandshakeIdleTimeout: timeout})
	if err != nil {
		return err
	}
	return c.CloseWithError(0, "")
}

// TestHostileHTTP3HandshakeWhileAPIHoldsLock: a flood of Initials makes the
// cdn ask who owns the dialled address on every handshake; before the
// ownership snapshot it asked Resolve, under the lock every admin API change
// holds, scanning every binding (11.4 ms and 11.2 MB a handshake at 100,000
// bindings), so handshakes and the API stalled each other. Here an API
// change holds the manager's lock for the whole test while 8 clients
// handshake: every handshake completes, which none could if the check took
// the lock. 1000 bindings, 8×5 handshakes; EDGEPROXY_ATTACK=1: 100,000
// bindings, 8×50.
func TestHostileHTTP3HandshakeWhileAPIHoldsLock(t *testing.T) {
	ns := netns.New(t)
	n, each := 1000, 5
	if os.Getenv("EDGEPROXY_ATTACK") == "1" {
		n, each = 100_000, 50
	}
	s, pool := h3Server(t, ns, n)
	tr, tlsConf := h3Client(t, pool)
	if err := handshake(tr, tlsConf, 5*time.Second); err != nil {
		t.Fatalf("a handshake with the API idle: %v", err)
	}

	held, release, changed := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		changed <- s.Bindings.Change(func(*bindings.State) error {
			close(held)
			<-release
			return errors.New("abandoned")
		})
	}()
	<-held
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 8*each)
	start := time.Now()
	for range 8 {
		wg.Go(func() {
			for range each {
				if err := handshake(tr, tlsConf, 5*time.Second); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	close(release)
	if err := <-changed; err == nil {
		t.Fatal("the abandoned change was applied")
	}
	close(errs)
	failed := 0
	for err := range errs {
		if failed == 0 {
			t.Errorf("a handshake while an API change holds the lock: %v", err)
		}
		failed++
	}
	if failed > 0 {
		t.Fatalf("%d of %d handshakes failed while an API change held the lock", failed, 8*each)
	}
	t.Logf("attack: %d bindings, %d HTTP/3 handshakes while an API change held the manager's lock: all completed, %.0f handshakes/s",
		n, 8*each, float64(8*each)/took.Seconds())
}

// BenchmarkHTTP3Handshake: one QUIC handshake with the cdn through the
// server (quic-go's client, TLS 1.3, ALPN h3, the connection closed), with
// 10 and with 100,000 bindings in the store. The allocations are the whole
// process's, server side included, where the ownership check runs.
func BenchmarkHTTP3Handshake(b *testing.B) {
	for _, n := range []int{10, 100_000} {
		b.Run(fmt.Sprintf("bindings=%d", n), func(b *testing.B) {
			ns := netns.New(b)
			_, pool := h3Server(b, ns, n)
			tr, tlsConf := h3Client(b, pool)
			if err := handshake(tr, tlsConf, 5*time.Second); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := handshake(tr, tlsConf, 5*time.Second); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/handshake")
		})
	}
}
