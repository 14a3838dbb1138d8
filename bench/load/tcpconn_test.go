package load

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func listen(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestTCPConnect(t *testing.T) {
	// connect and close only
	addr := listen(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	r, err := TCPConnect(context.Background(), TCPConnectOptions{Addr: addr, Conns: 2, Duration: 200 * time.Millisecond, Reset: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("connect only: %d conns, %.0f/s, %s", r.Conns, r.Rate, r.Latency.Summary())
	if r.Errors != 0 || r.Conns < 50 || r.Latency.Count() != int64(r.Conns) {
		t.Fatalf("%+v", r)
	}

	// an HTTP-like request, answer read until the server closes
	addr = listen(t, func(c net.Conn) {
		line, _ := bufio.NewReader(c).ReadString('\n')
		if line == "GET / HTTP/1.1\r\n" {
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
		}
	})
	req := []byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	r, err = TCPConnect(context.Background(), TCPConnectOptions{Addr: addr, Rate: 300, Duration: 300 * time.Millisecond, Conns: 4, Request: req, LocalAddr: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("request until EOF at 300/s: %d conns, %.0f/s, %s", r.Conns, r.Rate, r.Latency.Summary())
	if r.Errors != 0 || r.Conns < 80 || r.Conns > 91 {
		t.Fatalf("%+v (%s)", r, r.FirstError)
	}

	// a fixed-size answer
	addr = listen(t, func(c net.Conn) { io.CopyN(c, c, 4) })
	r, err = TCPConnect(context.Background(), TCPConnectOptions{Addr: addr, Duration: 100 * time.Millisecond, Request: []byte("ping"), Response: 4})
	if err != nil || r.Errors != 0 || r.Conns == 0 {
		t.Fatalf("%+v %v", r, err)
	}

	// TLS handshakes, then a request and an answer until the server closes
	tsrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer tsrv.Close()
	r, err = TCPConnect(context.Background(), TCPConnectOptions{Addr: tsrv.Listener.Addr().String(), Duration: 200 * time.Millisecond, Conns: 2,
		TLS: &tls.Config{InsecureSkipVerify: true}, Request: req})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TLS: %d conns, %.0f/s, %s", r.Conns, r.Rate, r.Latency.Summary())
	if r.Errors != 0 || r.Conns < 10 {
		t.Fatalf("TLS: %+v (%s)", r, r.FirstError)
	}

	// nothing listening: every connection fails
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	r, err = TCPConnect(context.Background(), TCPConnectOptions{Addr: dead, Duration: 50 * time.Millisecond})
	if err != nil || r.Errors == 0 || r.Errors != r.Conns || r.FirstError == "" {
		t.Fatalf("refused: %+v %v", r, err)
	}
}
