package spectrum_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
	"github.com/edgeproxy/edgeproxy/server"
)

// spectrumServer starts the wiring in a fresh namespace with the real
// spectrum proxy (and named echo sockets for the cdn), from this
// configuration's prefixes and apps.
func spectrumServer(t *testing.T, yaml string) (*netns.NS, *server.Server) {
	t.Helper()
	ns := netns.New(t)
	cfg, err := config.Load(testutil.WriteConfig(t, "admin: {listen: \"127.0.0.1:0\"}\ndispatch: {pin_dir: \"\"}\nstore: {path: \"\"}\n"+yaml))
	if err != nil {
		t.Fatal(err)
	}
	socks := echo.Sockets(t, bindings.Labels...)
	delete(socks, "spectrum/tcp")
	delete(socks, "spectrum/udp")
	s, err := server.Start(server.Options{Config: cfg, Sockets: socks, Logger: testLogger(t), Dial: ns.Dial, Socket: ns.Socket})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.Spectrum == nil {
		t.Fatal("no spectrum proxy")
	}
	return ns, s
}

// greeting connects and returns the origin's first line: its name and the
// address it was reached on.
func greeting(t *testing.T, network, dst string) string {
	t.Helper()
	c, err := net.DialTimeout(network, dst, 2*time.Second)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if network == "udp" {
		c.Write([]byte("hi\n"))
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "timeout"
		}
		return "read: " + err.Error()
	}
	return strings.TrimSpace(line)
}

const spectrumPrefixes = `prefixes:
  - {cidr: 192.0.2.0/24, service: spectrum}
  - {cidr: "2001:db8:5::/48", service: spectrum}
`

// TestSpectrumAppsForward: TCP and UDP apps on one port, on a range (the
// origin port follows by offset) and on any port, IPv4 and IPv6; UDP
// replies come from the address and port the client sent to (the client's
// socket is connected, so it takes nothing else).
func TestSpectrumAppsForward(t *testing.T) {
	spectrumServer(t, spectrumPrefixes+`spectrum:
  apps:
    - {name: one, protocol: tcp, edge: 192.0.2.0/24, ports: "22", origins: ["127.0.0.1:2222"]}
    - {name: one-udp, protocol: udp, edge: 192.0.2.0/24, ports: "53", origins: ["127.0.0.1:5353"]}
    - {name: range, protocol: tcp, edge: 192.0.2.0/24, ports: "1000-2000", origins: ["127.0.0.1:3000"]}
    - {name: range-udp, protocol: udp, edge: 192.0.2.0/24, ports: "1000-2000", origins: ["127.0.0.1:3000"]}
    - {name: any6, protocol: tcp, edge: "2001:db8:5::/48", ports: "*", origins: ["[::1]:4000"]}
    - {name: any6-udp, protocol: udp, edge: "2001:db8:5::/48", ports: "*", origins: ["[::1]:4000"]}
    - {name: keep, protocol: tcp, edge: 192.0.2.128/25, ports: "7000-7010", origins: ["127.0.0.2"]}
`)
	echo.Start(t, "o2222", "127.0.0.1:2222")
	echo.Start(t, "o5353", "127.0.0.1:5353")
	echo.Start(t, "o3005", "127.0.0.1:3005")
	echo.Start(t, "o3000", "127.0.0.1:3000")
	echo.Start(t, "o4000", "[::1]:4000")
	echo.Start(t, "keep", "127.0.0.2:7005")
	for _, tc := range []struct{ network, dst, want string }{
		{"tcp", "192.0.2.10:22", "o2222 127.0.0.1:2222"},
		{"udp", "192.0.2.10:53", "o5353 127.0.0.1:5353"},
		{"tcp", "192.0.2.10:1005", "o3005 127.0.0.1:3005"},
		{"udp", "192.0.2.10:1005", "o3005 127.0.0.1:3005"},
		{"tcp", "192.0.2.10:1000", "o3000 127.0.0.1:3000"},
		{"tcp", "[2001:db8:5::9]:8765", "o4000 [::1]:4000"},
		{"udp", "[2001:db8:5::9]:8765", "o4000 [::1]:4000"},
		{"tcp", "192.0.2.200:7005", "keep 127.0.0.2:7005"},
		{"tcp", "192.0.2.10:23", "read: EOF"}, // refused by the data plane: no app serves it
	} {
		got := greeting(t, tc.network, tc.dst)
		if tc.want == "read: EOF" {
			if !strings.Contains(got, "refused") && !strings.Contains(got, "reset") {
				t.Errorf("%s %s: %q, want refused", tc.network, tc.dst, got)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("%s %s: %q, want %q", tc.network, tc.dst, got, tc.want)
		}
	}
}

// TestSpectrumHalfClose: the client's end of writing reaches the origin,
// whose answer still reaches the client.
func TestSpectrumHalfClose(t *testing.T) {
	spectrumServer(t, spectrumPrefixes+`spectrum:
  apps: [{name: rev, protocol: tcp, edge: 192.0.2.0/24, ports: "9", origins: ["127.0.0.1:9009"]}]
`)
	// The origin reads to EOF, then answers with what it read, reversed.
	ln, err := echo.ListenTCP("127.0.0.1:9009", false)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
			b[i], b[j] = b[j], b[i]
		}
		c.Write(b)
	}()
	c, err := net.Dial("tcp", "192.0.2.10:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte("half-close"))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "esolc-flah" {
		t.Fatalf("after half-close: %q, %v", got, err)
	}
}

// TestSpectrumFirewall: a denied client is refused before any origin is
// dialled, over TCP and UDP; an allowed one passes.
func TestSpectrumFirewall(t *testing.T) {
	_, s := spectrumServer(t, spectrumPrefixes+`spectrum:
  apps:
    - {name: fw, protocol: tcp, edge: 192.0.2.0/24, ports: "22", origins: ["127.0.0.1:2222"], ip_firewall: {deny: [198.51.100.66]}}
    - {name: fw-udp, protocol: udp, edge: 192.0.2.0/24, ports: "53", origins: ["127.0.0.1:5353"], ip_firewall: {allow: [198.51.100.0/25], deny: [198.51.100.66/32]}}
`)
	echo.Start(t, "o2222", "127.0.0.1:2222")
	echo.Start(t, "o5353", "127.0.0.1:5353")
	from := func(network, src, dst string) string {
		d := net.Dialer{Timeout: 2 * time.Second}
		if network == "tcp" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		} else {
			d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(src)}
		}
		c, err := d.Dial(network, dst)
		if err != nil {
			if strings.Contains(err.Error(), "reset") || strings.Contains(err.Error(), "refused") {
				return "no answer" // the reset came back during connect
			}
			return err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		if network == "udp" {
			c.Write([]byte("hi\n"))
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return "no answer"
		}
		name, _, _ := strings.Cut(line, " ")
		return name
	}
	for _, tc := range []struct{ network, src, want string }{
		{"tcp", "198.51.100.66", "no answer"},
		{"tcp", "198.51.100.67", "o2222"},
		{"udp", "198.51.100.66", "no answer"},
		{"udp", "198.51.100.200", "no answer"}, // not in allow
		{"udp", "198.51.100.5", "o5353"},
	} {
		dst := "192.0.2.10:22"
		if tc.network == "udp" {
			dst = "192.0.2.10:53"
		}
		if got := from(tc.network, tc.src, dst); got != tc.want {
			t.Errorf("%s from %s: %s, want %s", tc.network, tc.src, got, tc.want)
		}
	}
	if n := promtest.ToFloat64(s.Spectrum.RefusedCounter("fw", "tcp", "firewall")); n != 1 {
		t.Errorf("tcp firewall refusals = %v, want 1", n)
	}
	if n := promtest.ToFloat64(s.Spectrum.RefusedCounter("fw-udp", "udp", "firewall")); n != 2 {
		t.Errorf("udp firewall refusals = %v, want 2", n)
	}
}

// TestSpectrumFailover: TCP skips an origin that refuses connections; UDP
// marks an origin down on its ICMP error and moves the flow to the next.
func TestSpectrumFailover(t *testing.T) {
	spectrumServer(t, spectrumPrefixes+`spectrum:
  apps:
    - {name: tcp2, protocol: tcp, edge: 192.0.2.0/24, ports: "22", origins: ["127.0.0.1:1", "127.0.0.1:2222"]}
    - {name: udp2, protocol: udp, edge: 192.0.2.0/24, ports: "53", origins: ["127.0.0.1:1", "127.0.0.1:5353"]}
`)
	echo.Start(t, "live", "127.0.0.1:2222")
	echo.Start(t, "live", "127.0.0.1:5353")
	for i := range 4 {
		if got := greeting(t, "tcp", "192.0.2.10:22"); got != "live 127.0.0.1:2222" {
			t.Fatalf("tcp connection %d: %q", i, got)
		}
	}
	// One UDP flow: its first datagram may go to the dead origin; the ICMP
	// error moves the flow, and a retry is answered.
	c, err := net.Dial("udp", "192.0.2.11:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if line := testutil.AskUDP(c, "hi\n", 10, 300*time.Millisecond); !strings.HasPrefix(line, "live ") {
		t.Fatal("the udp flow never reached the live origin")
	}
	// New flows go to the live origin straight away.
	for i := range 3 {
		dst := fmt.Sprintf("192.0.2.%d:53", 20+i)
		if got := greeting(t, "udp", dst); got != "live 127.0.0.1:5353" {
			t.Errorf("udp flow %s: %q", dst, got)
		}
	}
}

// TestSpectrumFlowExpiry: a UDP flow idle for its app's idle_timeout is
// closed (its sockets too); the client's next datagram makes a new flow.
func TestSpectrumFlowExpiry(t *testing.T) {
	_, s := spectrumServer(t, spectrumPrefixes+`spectrum:
  apps: [{name: short, protocol: udp, edge: 192.0.2.0/24, ports: "53", origins: ["127.0.0.1:5353"], idle_timeout: 1s}]
`)
	echo.Start(t, "o", "127.0.0.1:5353")
	c, err := net.Dial("udp", "192.0.2.10:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ask := func() string {
		c.Write([]byte("hi\n"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err.Error()
		}
		return strings.TrimSpace(line)
	}
	if got := ask(); got != "o 127.0.0.1:5353" {
		t.Fatalf("first: %q", got)
	}
	if got := s.Spectrum.Flows(); got != 1 {
		t.Fatalf("flows = %d, want 1", got)
	}
	time.Sleep(2500 * time.Millisecond)
	if got := s.Spectrum.Flows(); got != 0 {
		t.Fatalf("after the idle timeout: flows = %d, want 0", got)
	}
	if got := ask(); got != "o 127.0.0.1:5353" {
		t.Fatalf("after expiry: %q", got)
	}
	if n := promtest.ToFloat64(s.Spectrum.ConnectionsCounter("short", "udp")); n != 2 {
		t.Fatalf("flows started = %v, want 2", n)
	}
}

// TestSpectrumProxyProtocolHAProxy: haproxy, with accept-proxy, reads the
// PROXY v1 and v2 headers spectrum writes and reports the client and edge
// addresses it found.
func TestSpectrumProxyProtocolHAProxy(t *testing.T) {
	haproxy := testutil.NeedTool(t, "haproxy", "haproxy")
	spectrumServer(t, spectrumPrefixes+`spectrum:
  apps:
    - {name: v1, protocol: tcp, edge: 192.0.2.0/24, ports: "81", origins: ["127.0.0.1:18080"], proxy_protocol: v1}
    - {name: v2, protocol: tcp, edge: 192.0.2.0/24, ports: "82", origins: ["127.0.0.1:18080"], proxy_protocol: v2}
    - {name: v2-6, protocol: tcp, edge: "2001:db8:5::/48", ports: "82", origins: ["127.0.0.1:18080"], proxy_protocol: v2}
`)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haproxy.cfg")
	os.WriteFile(cfg, []byte(`global
  maxconn 100
defaults
  mode http
  timeout connect 5s
  timeout client 10s
  timeout server 10s
frontend origin
  bind 127.0.0.1:18080 accept-proxy
  http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port] %[dst]:%[dst_port]\n"
`), 0o600)
	cmd := exec.Command(haproxy, "-f", cfg, "-db")
	var out testutil.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitListening(t, "127.0.0.1:18080", &out)

	for _, tc := range []struct{ src, dst string }{
		{"198.51.100.7", "192.0.2.10:81"},
		{"198.51.100.8", "192.0.2.10:82"},
		{"2001:db8:5::77", "[2001:db8:5::10]:82"},
	} {
		c, err := echo.FreebindDialer(netip.MustParseAddr(tc.src), 0).Dial("tcp", tc.dst)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
		body, _ := io.ReadAll(c)
		c.Close()
		// haproxy prints addresses bare, IPv6 without brackets.
		dst := netip.MustParseAddrPort(tc.dst)
		want := fmt.Sprintf("%s:%d %s:%d", tc.src, addrPortOf(c.LocalAddr()).Port(), dst.Addr(), dst.Port())
		if !strings.HasSuffix(string(body), want+"\n") {
			t.Errorf("%s -> %s: haproxy saw %q, want %q", tc.src, tc.dst, body, want)
		}
	}
}

func addrPortOf(a net.Addr) netip.AddrPort { return a.(*net.TCPAddr).AddrPort() }

func waitListening(t *testing.T, addr string, log fmt.Stringer) {
	t.Helper()
	if err := testutil.WaitFor(2*time.Second, func() error { return testutil.Accepts(addr) }); err != nil {
		t.Fatalf("nothing listens on %s: %v\n%s", addr, err, log)
	}
}

// TestSpectrumUDPProxyProtocolV2: the first datagram of a flow carries a
// PROXY v2 header (read by go-proxyproto's parser at the origin), the next
// ones do not.
func TestSpectrumUDPProxyProtocolV2(t *testing.T) {
	spectrumServer(t, spectrumPrefixes+`spectrum:
  apps: [{name: v2u, protocol: udp, edge: 192.0.2.0/24, ports: "53", origins: ["127.0.0.1:5353"], proxy_protocol: v2}]
`)
	pc, err := net.ListenPacket("udp", "127.0.0.1:5353")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	seen := make(chan string, 4)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			d := buf[:n]
			h, payload, err := proxyproto.ParseUDPDatagram(d)
			if err != nil {
				seen <- "plain " + string(d)
			} else {
				src, dst, _ := h.UDPAddrs()
				seen <- fmt.Sprintf("v2 %s %s %s", src, dst, payload)
			}
			pc.WriteTo([]byte("ok\n"), from)
		}
	}()
	d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP("198.51.100.9"), Port: 40001}}
	c, err := d.Dial("udp", "192.0.2.10:53")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, msg := range []string{"first", "second"} {
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 16)
		if n, err := c.Read(buf); err != nil || string(buf[:n]) != "ok\n" {
			t.Fatalf("reply to %s: %q %v", msg, buf[:n], err)
		}
	}
	if got := <-seen; got != "v2 198.51.100.9:40001 192.0.2.10:53 first" {
		t.Errorf("first datagram at the origin: %q", got)
	}
	if got := <-seen; got != "plain second" {
		t.Errorf("second datagram at the origin: %q", got)
	}
}

// TestSpectrumSimpleProxyProtocol: every datagram to the origin carries the
// 38-byte SPP header, checked byte by byte against the specification; the
// origin's replies carry one too, which is stripped; a reply without it is
// dropped and counted.
func TestSpectrumSimpleProxyProtocol(t *testing.T) {
	_, s := spectrumServer(t, spectrumPrefixes+`spectrum:
  apps: [{name: spp, protocol: udp, edge: "2001:db8:5::/48", ports: "27015", origins: ["[::1]:5353"], proxy_protocol: simple}]
`)
	pc, err := net.ListenPacket("udp", "[::1]:5353")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	got := make(chan []byte, 4)
	go func() {
		buf := make([]byte, 2048)
		for i := 0; ; i++ {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			d := append([]byte(nil), buf[:n]...)
			got <- d
			if i == 0 {
				// A reply with the header: the header it got, then "pong".
				pc.WriteTo(append(d[:38:38], "pong"...), from)
			} else {
				pc.WriteTo([]byte("no header"), from) // must be dropped
			}
		}
	}()
	client := netip.MustParseAddrPort("[2001:db8:5::abcd]:40002")
	edge := netip.MustParseAddrPort("[2001:db8:5::1]:27015")
	c, err := echo.FreebindUDPDialer(client.Addr(), int(client.Port())).Dial("udp", edge.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("ping"))
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("reply: %q %v", buf[:n], err)
	}

	// The header, byte by byte.
	h := <-got
	want := []byte{0x56, 0xEC}
	ca, ea := client.Addr().As16(), edge.Addr().As16()
	want = append(want, ca[:]...)
	want = append(want, ea[:]...)
	want = binary.BigEndian.AppendUint16(want, client.Port())
	want = binary.BigEndian.AppendUint16(want, edge.Port())
	want = append(want, "ping"...)
	if !bytes.Equal(h, want) {
		t.Fatalf("datagram at the origin:\n got %x\nwant %x", h, want)
	}

	c.Write([]byte("again"))
	<-got
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("a reply without the SPP header reached the client: %q", buf[:n])
	}
	if n := promtest.ToFloat64(s.Spectrum.DroppedCounter("spp", "spp_missing")); n != 1 {
		t.Fatalf("spp_missing drops = %v, want 1", n)
	}
}

// TestSpectrumIPv4ClientSPP: an IPv4 client's address is IPv4-mapped in the
// SPP header.
func TestSpectrumIPv4ClientSPP(t *testing.T) {
	spectrumServer(t, spectrumPrefixes+`spectrum:
  apps: [{name: spp4, protocol: udp, edge: 192.0.2.0/24, ports: "27015", origins: ["127.0.0.1:5353"], proxy_protocol: simple}]
`)
	pc, err := net.ListenPacket("udp", "127.0.0.1:5353")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP("198.51.100.4"), Port: 40003}}
	c, err := d.Dial("udp", "192.0.2.5:27015")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	pc.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	want := "56ec" + "00000000000000000000ffffc6336404" + "00000000000000000000ffffc0000205" + "9c43" + "6987" + "78"
	if got := fmt.Sprintf("%x", buf[:n]); got != want {
		t.Fatalf("header\n got %s\nwant %s", got, want)
	}
}

// testLogger sends the server's log lines to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}
