package main

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// captureStdout runs fn and returns what it printed.
func captureStdout(t *testing.T, fn func() int) (string, int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	code := fn()
	os.Stdout = old
	w.Close()
	b, _ := io.ReadAll(r)
	return string(b), code
}

func TestLoadCommands(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer srv.Close()
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
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
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"http", "-url", srv.URL, "-d", "200ms", "-c", "2", "-rate", "200", "-H", "X-Test: 1"}, "open loop at 200 req/s"},
		{[]string{"tcpconn", "-addr", addr, "-d", "100ms", "-c", "2", "-request", `GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`}, "0 errors"},
		{[]string{"udp", "-addr", echo.LocalAddr().String(), "-d", "100ms", "-inflight", "2"}, "loss 0.000%"},
		{[]string{"udp", "-addr", echo.LocalAddr().String(), "-d", "100ms", "-rate", "1000", "-local", "127.0.0.1"}, "100 sent"},
	} {
		out, code := captureStdout(t, func() int { return loadCmd(c.args) })
		t.Logf("%s:\n%s", c.args[0], out)
		if code != 0 || !strings.Contains(out, c.want) || !strings.Contains(out, "p99.9") {
			t.Errorf("edgebench load %s: exit %d, want %q in:\n%s", strings.Join(c.args, " "), code, c.want, out)
		}
	}
	if _, code := captureStdout(t, func() int { return loadCmd([]string{"http", "-url", "http://127.0.0.1:1/", "-d", "50ms"}) }); code != 1 {
		t.Errorf("a refused connection: exit %d, want 1", code)
	}
}
