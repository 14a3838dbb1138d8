package load

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/selfsigned"
	"github.com/quic-go/quic-go/http3"
)

// TestInNamespace runs the generators from a test whose thread alone is in
// a fresh network namespace, against servers on a documentation prefix
// routed to lo there, as the harness's smoke tests do: given the
// namespace's dial and listen functions, every socket the generators make
// on other goroutines lands in the namespace too.
func TestInNamespace(t *testing.T) {
	ns := netns.New(t)
	ctx := context.Background()

	ln, err := net.Listen("tcp", "192.0.2.130:18210")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(hello)}
	go srv.Serve(ln)
	defer srv.Close()
	r, err := HTTP(ctx, HTTPOptions{URL: "http://192.0.2.130:18210/", Rate: 1000, Duration: 200 * time.Millisecond, Conns: 4, Dial: ns.DialContext})
	checkHTTP(t, r, err, 150)

	c, err := TCPConnect(ctx, TCPConnectOptions{Addr: "192.0.2.130:18210", Duration: 100 * time.Millisecond, Conns: 2, Dial: ns.DialContext,
		Request: []byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")})
	if err != nil || c.Errors != 0 || c.Conns < 10 {
		t.Fatalf("tcpconn: %+v %v", c, err)
	}

	dir := t.TempDir()
	certFile, keyFile, err := selfsigned.Write(dir, "h3", "192.0.2.131")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("192.0.2.131"), Port: 18211})
	if err != nil {
		t.Fatal(err)
	}
	h3srv := &http3.Server{Handler: http.HandlerFunc(hello), TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}})}
	go h3srv.Serve(udp)
	defer h3srv.Close()
	r, err = HTTP(ctx, HTTPOptions{URL: "https://192.0.2.131:18211/", Proto: "h3", Insecure: true, LocalAddr: "127.0.0.1", Duration: 200 * time.Millisecond, Conns: 1, Streams: 4, ListenPacket: ns.ListenPacket})
	checkHTTP(t, r, err, 50)

	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("192.0.2.132"), Port: 18212})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		b := make([]byte, 2048)
		for {
			n, from, err := echo.ReadFromUDP(b)
			if err != nil {
				return
			}
			echo.WriteToUDP(b[:n], from)
		}
	}()
	u, err := UDP(ctx, UDPOptions{Addr: "192.0.2.132:18212", LocalAddr: "127.0.0.1", Rate: 2000, Duration: 200 * time.Millisecond, Dial: ns.Dial})
	if err != nil || u.Sent != 400 || u.Loss > 0.01 {
		t.Fatalf("udp rate: %+v %v", u, err)
	}
	u, err = UDP(ctx, UDPOptions{Addr: "192.0.2.132:18212", LocalAddr: "127.0.0.1", Inflight: 2, Duration: 100 * time.Millisecond, Dial: ns.Dial})
	if err != nil || u.Lost != 0 || u.Received < 50 {
		t.Fatalf("udp rr: %+v %v", u, err)
	}
}
