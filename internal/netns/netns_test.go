package netns_test

import (
	"context"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// inode names a network namespace by the inode of its file.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestFreshLeavesTheCallerWhereItIs(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := inode(t, "/proc/thread-self/ns/net")
	a := netns.Fresh(t)
	b := netns.Fresh(t)
	if after := inode(t, "/proc/thread-self/ns/net"); after != before {
		t.Fatalf("the caller's thread moved: namespace %d, then %d", before, after)
	}
	ia, ib := inode(t, a.Path()), inode(t, b.Path())
	if ia == before || ib == before || ia == ib {
		t.Fatalf("namespaces not distinct: caller %d, a %d, b %d", before, ia, ib)
	}
	var inside uint64
	if err := a.Do(func() error {
		inside = inode(t, "/proc/thread-self/ns/net")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if inside != ia {
		t.Fatalf("Do ran in namespace %d, want %d", inside, ia)
	}
}

func TestFreshIsSetUpAsNewIs(t *testing.T) {
	ns := netns.Fresh(t)
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "192.0.2.7:0")
		if err != nil {
			return err
		}
		b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_tw_reuse")
		if err != nil {
			return err
		}
		if got := strings.TrimSpace(string(b)); got != "1" {
			t.Errorf("tcp_tw_reuse = %s, want 1", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := ns.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial a documentation address inside the namespace: %v", err)
	}
	c.Close()
	// The same address is not routed in the test's own namespace.
	if _, err := net.Listen("tcp", "192.0.2.7:0"); err == nil {
		t.Fatal("192.0.2.7 is local outside the namespace too")
	}
}
