package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen makes a notify socket (a path, or an abstract name) and points
// NOTIFY_SOCKET at it.
func listen(t *testing.T, abstract bool) *net.UnixConn {
	t.Helper()
	name := filepath.Join(t.TempDir(), "notify")
	env := name
	if abstract {
		env = "@edgeproxy-sdnotify-test-" + strconv.Itoa(os.Getpid())
		name = "\x00" + env[1:]
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", env)
	return c
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 4096)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

func TestSend(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		c := listen(t, abstract)
		if err := Ready("serving"); err != nil {
			t.Fatal(err)
		}
		if got, want := read(t, c), "READY=1\nMAINPID="+strconv.Itoa(os.Getpid())+"\nSTATUS=serving\n"; got != want {
			t.Errorf("abstract %v: Ready sent %q, want %q", abstract, got, want)
		}
		if err := Reloading(); err != nil {
			t.Fatal(err)
		}
		if got := read(t, c); !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") {
			t.Errorf("Reloading sent %q", got)
		}
		if err := Stopping("draining"); err != nil {
			t.Fatal(err)
		}
		if got := read(t, c); got != "STOPPING=1\nSTATUS=draining\n" {
			t.Errorf("Stopping sent %q", got)
		}
	}
}

// TestNoSocket: without NOTIFY_SOCKET nothing is sent and nothing fails;
// a socket that is not there is an error naming the protocol.
func TestNoSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Ready("serving"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v", err)
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "none"))
	if err := Ready("serving"); err == nil || !strings.Contains(err.Error(), "sd_notify") {
		t.Errorf("to a socket that is not there: %v", err)
	}
}
