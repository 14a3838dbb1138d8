package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestSystemdNotify: started with NOTIFY_SOCKET (as a Type=notify unit
// starts it), the binary tells it READY=1 with its pid once it serves,
// RELOADING=1 then READY=1 around a SIGHUP, and STOPPING=1 at SIGTERM.
func TestSystemdNotify(t *testing.T) {
	ns := netns.New(t)
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	os.Setenv("NOTIFY_SOCKET", sock)
	in := startInstance(t, ns, `store: {path: ""}
prefixes: [{cidr: 192.0.2.0/24, service: spectrum}]
`)
	os.Unsetenv("NOTIFY_SOCKET")
	next := func(what string) string {
		t.Helper()
		ln.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 4096)
		n, err := ln.Read(b)
		if err != nil {
			t.Fatalf("waiting for %s: %v\n%s", what, err, in.stderr)
		}
		return string(b[:n])
	}
	pid := strconv.Itoa(in.cmd.Process.Pid)
	if got := next("READY=1"); !strings.Contains(got, "READY=1\n") || !strings.Contains(got, "MAINPID="+pid+"\n") {
		t.Errorf("at start: %q, want READY=1 and MAINPID=%s", got, pid)
	}
	in.cmd.Process.Signal(syscall.SIGHUP)
	if got := next("RELOADING=1"); !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Errorf("at SIGHUP: %q, want RELOADING=1 with MONOTONIC_USEC", got)
	}
	if got := next("READY=1 after the reload"); !strings.Contains(got, "READY=1\n") {
		t.Errorf("after the reload: %q, want READY=1", got)
	}
	in.cmd.Process.Signal(syscall.SIGTERM)
	if got := next("STOPPING=1"); !strings.HasPrefix(got, "STOPPING=1\n") {
		t.Errorf("at SIGTERM: %q, want STOPPING=1", got)
	}
	in.cmd.Wait()
}

// TestSystemdNotifyUpgrade: at a live upgrade the parent says it upgrades,
// the child sends READY=1 with MAINPID= its own pid once it serves, and the
// parent sends no STOPPING=1 as it drains (the unit's main process is the
// child's by then).
func TestSystemdNotifyUpgrade(t *testing.T) {
	ns := netns.New(t)
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	u := startUpgradable(t, ns, "shutdown_grace: 1s\nprefixes: [{cidr: 192.0.2.0/24, service: spectrum}]\n", "NOTIFY_SOCKET="+sock)
	var got []string
	read := func(d time.Duration) {
		for {
			ln.SetReadDeadline(time.Now().Add(d))
			b := make([]byte, 4096)
			n, err := ln.Read(b)
			if err != nil {
				return
			}
			got = append(got, string(b[:n]))
		}
	}
	read(500 * time.Millisecond)
	st, _ := u.upgrade(t)
	if code, _ := u.waitExit(5 * time.Second); code != 0 {
		t.Errorf("the old process exited %d", code)
	}
	read(300 * time.Millisecond)
	all := strings.Join(got, "|")
	if !strings.Contains(all, "STATUS=upgrading") {
		t.Errorf("no STATUS=upgrading from the parent: %q", all)
	}
	if !strings.Contains(all, "READY=1\nMAINPID="+strconv.Itoa(st.PID)+"\n") {
		t.Errorf("no READY=1 with the child's pid %d: %q", st.PID, all)
	}
	if strings.Contains(all, "STOPPING=1") {
		t.Errorf("the parent said STOPPING=1 as it drained: %q", all)
	}
}
