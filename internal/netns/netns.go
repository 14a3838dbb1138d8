// Package netns gives a test a fresh network namespace of its own, with lo up
// and the documentation prefixes routed locally, so that traffic to them
// stays inside it.
//
// A namespace belongs to an OS thread. New locks the test's goroutine to its
// thread and moves that thread; sockets created on it live in the namespace
// and may then be used from any goroutine. Code that must create sockets on
// other goroutines (load generators) runs them through NS.Go; a service
// started in the namespace is given NS.Dial and NS.Socket, which make its
// later sockets there.
//
// Privileged tests call New (or Require): without root and CAP_BPF the test
// skips with a reason, unless EDGEPROXY_REQUIRE_PRIVILEGES=1, which CI sets:
// then it fails.
package netns

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// DocPrefixes are routed to lo in every namespace New creates.
var DocPrefixes = []string{"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"}

// Require skips tb when the process lacks the privileges for kernel tests,
// or fails it when EDGEPROXY_REQUIRE_PRIVILEGES=1.
func Require(tb testing.TB) {
	tb.Helper()
	if reason := missingPrivileges(); reason != "" {
		if os.Getenv("EDGEPROXY_REQUIRE_PRIVILEGES") == "1" {
			tb.Fatalf("privileged test cannot run: %s (EDGEPROXY_REQUIRE_PRIVILEGES=1)", reason)
		}
		tb.Skipf("needs privileges: %s (set EDGEPROXY_REQUIRE_PRIVILEGES=1 to fail instead)", reason)
	}
}

func missingPrivileges() string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "the ip command is not installed: apt-get install -y iproute2"
	}
	var hdr unix.CapUserHeader
	var data [2]unix.CapUserData
	hdr.Version = unix.LINUX_CAPABILITY_VERSION_3
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Sprintf("capget: %v", err)
	}
	for _, c := range []struct {
		bit  uint
		name string
	}{{unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}, {unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}, {unix.CAP_BPF, "CAP_BPF"}} {
		if data[c.bit/32].Effective&(1<<(c.bit%32)) == 0 {
			return "missing " + c.name
		}
	}
	return ""
}

// NS is a network namespace made for one test.
type NS struct {
	fd int // the namespace
}

// New moves the calling goroutine, locked to its OS thread, into a fresh
// network namespace with lo up, DocPrefixes routed to lo, ICMP rate limits
// off and tcp_tw_reuse on. The thread returns to its namespace when the test
// ends. Call it on the test's goroutine, before creating any socket.
func New(tb testing.TB) *NS {
	tb.Helper()
	Require(tb)

	runtime.LockOSThread()
	orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		tb.Fatalf("open current netns: %v", err)
	}
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		unix.Close(orig)
		runtime.UnlockOSThread()
		tb.Fatalf("unshare netns: %v", err)
	}
	fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("open new netns: %v", err)
	}
	ns := &NS{fd: fd}
	tb.Cleanup(func() {
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// The thread must not run anything else: leave it locked so
			// the runtime ends it with the goroutine.
			tb.Errorf("return to original netns: %v", err)
			return
		}
		unix.Close(orig)
		unix.Close(fd)
		runtime.UnlockOSThread()
	})

	if err := setUp(); err != nil {
		tb.Fatalf("%v", err)
	}
	return ns
}

// Fresh makes a fresh network namespace, set up as New's is, without moving
// the calling goroutine: a thread of its own enters it, sets it up and ends.
// The namespace lives while the returned NS (its descriptor, closed when the
// test ends), a thread or process inside it, or a socket of it does. Use it
// for the second and later namespaces of a test, through Do, Go, Dial,
// Socket and Path.
func Fresh(tb testing.TB) *NS {
	tb.Helper()
	Require(tb)
	type made struct {
		fd  int
		err error
	}
	c := make(chan made, 1)
	go func() {
		// The thread is never unlocked: it ends with the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			c <- made{-1, fmt.Errorf("unshare netns: %w", err)}
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			c <- made{-1, fmt.Errorf("open new netns: %w", err)}
			return
		}
		if err := setUp(); err != nil {
			unix.Close(fd)
			c <- made{-1, err}
			return
		}
		c <- made{fd, nil}
	}()
	m := <-c
	if m.err != nil {
		tb.Fatalf("fresh netns: %v", m.err)
	}
	tb.Cleanup(func() { unix.Close(m.fd) })
	return &NS{fd: m.fd}
}

// setUp makes the calling thread's fresh namespace what New and Fresh
// promise: lo up, DocPrefixes routed to it, ICMP rate limits off and
// tcp_tw_reuse on. The ip commands it runs are forked from the thread, so
// they act in its namespace.
func setUp() error {
	cmds := [][]string{{"link", "set", "lo", "up"}}
	for _, p := range DocPrefixes {
		cmds = append(cmds, []string{"route", "add", "local", p, "dev", "lo"})
	}
	for _, c := range cmds {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	for k, v := range map[string]string{
		"net/ipv4/icmp_ratelimit":    "0",
		"net/ipv4/icmp_msgs_per_sec": "1000000",
		"net/ipv6/icmp/ratelimit":    "0",
		"net/ipv4/tcp_tw_reuse":      "1",
	} {
		if err := Sysctl(k, v); err != nil {
			return err
		}
	}
	return nil
}

// Sysctl writes a sysctl of the calling thread's network namespace, as in
// Sysctl("net/ipv4/tcp_tw_reuse", "1").
func Sysctl(key, value string) error {
	if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// Do runs fn on a fresh OS thread that has entered ns, and waits for it.
// Sockets fn creates live in ns.
func (ns *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	ns.Go(func() { errc <- fn() })
	return <-errc
}

// Go runs fn on a goroutine locked to an OS thread that has entered ns. The
// thread is never reused: it ends with the goroutine.
func (ns *NS) Go(fn func()) {
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the runtime then ends the thread, which
		// must not return to the pool in another namespace.
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			panic(fmt.Sprintf("netns: setns: %v", err))
		}
		fn()
	}()
}

// Path returns a path naming the namespace while the test runs, usable with
// nsenter --net=PATH or as dispatch.netns.
func (ns *NS) Path() string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), ns.fd)
}

// siocgskns is the ioctl that opens the network namespace of a socket.
const siocgskns = 0x894C

// LockInto locks the calling goroutine to its OS thread and moves the thread
// into the network namespace of conn, so that sockets the goroutine creates
// live beside conn. When the thread is already there it only locks. A moved
// thread is never unlocked: it ends with the goroutine.
func LockInto(conn syscall.Conn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var nsfd int
	var ierr error
	if err := raw.Control(func(fd uintptr) {
		nsfd, ierr = unix.IoctlRetInt(int(fd), siocgskns)
	}); err != nil {
		return err
	}
	if ierr != nil {
		return fmt.Errorf("SIOCGSKNS: %w", ierr)
	}
	defer unix.Close(nsfd)
	runtime.LockOSThread()
	var want, have unix.Stat_t
	if err := unix.Fstat(nsfd, &want); err != nil {
		return err
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &have); err != nil {
		return err
	}
	if want.Ino == have.Ino && want.Dev == have.Dev {
		return nil
	}
	if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns: %w", err)
	}
	return nil
}

// BPFFS mounts a fresh bpf filesystem on a temporary directory, for pinned
// state that no other test sees, and unmounts it when the test ends.
func BPFFS(tb testing.TB) string {
	tb.Helper()
	Require(tb)
	dir := tb.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		tb.Fatalf("mount bpffs on %s: %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			tb.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// Dial dials with d from inside ns, whatever thread calls it: the Dial of
// a service (spectrum.Options, proxy.Options, server.Options) that a test
// serves in ns, whose later sockets (origin connections, UDP flows'
// sockets) would otherwise be born in the namespace of whatever thread
// makes them.
func (ns *NS) Dial(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Socket is socket(2) inside ns, whatever thread calls it: the Socket of
// a cdn (proxy.Options, server.Options) that a test serves in ns, which
// makes each HTTP/3 connection's socket.
func (ns *NS) Socket(domain, typ, proto int) (int, error) {
	fd := -1
	err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(domain, typ, proto)
		return err
	})
	return fd, err
}

// ListenPacket listens from inside ns, whatever thread calls it: for a
// client's sockets made on goroutines of its own (bench/load's HTTP/3).
func (ns *NS) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := ns.Do(func() error {
		var err error
		c, err = new(net.ListenConfig).ListenPacket(ctx, network, address)
		return err
	})
	return c, err
}

// DialContext dials from inside ns, whatever thread calls it: for clients
// such as net/http's Transport that dial on goroutines of their own.
func (ns *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return ns.Dial(ctx, &net.Dialer{}, network, addr)
}

// HTTPClient returns an HTTP client whose connections are made inside ns.
func (ns *NS) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: ns.DialContext, MaxIdleConnsPerHost: 16}, Timeout: 60 * time.Second}
}
