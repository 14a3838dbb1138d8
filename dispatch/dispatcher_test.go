//go:build linux

package dispatch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/internal/cases"
	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestSharedCases drives every shared case through the dispatcher: the model,
// the program under BPF_PROG_TEST_RUN, and real TCP and UDP traffic to named
// sockets, with a host service listening on the wildcard address of every
// probed port.
func TestSharedCases(t *testing.T) {
	f, err := cases.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) {
			_, d := setup(t)
			served := map[string]bool{}
			for _, p := range c.Probes {
				dst := parseDst(t, p.Dst)
				if key := fmt.Sprintf("%s/%d", p.Protocol, dst.Port()); !served[key] {
					served[key] = true
					serveHost(t, p.Protocol, dst.Port())
				}
			}
			table := caseTable(t, c)
			if err := d.Replace(table); err != nil {
				t.Fatal(err)
			}
			for _, p := range c.Probes {
				dst := parseDst(t, p.Dst)
				proto, _ := ParseProtocol(p.Protocol)
				if got := outcome(table.Decide(proto, dst)); got != p.Want {
					t.Errorf("model: %s %s = %s, want %s", p.Protocol, dst, got, p.Want)
				}
				v, err := d.Probe(proto, dst)
				if err != nil {
					t.Fatal(err)
				}
				if got := outcome(v); got != p.Want {
					t.Errorf("program: %s %s = %s, want %s", p.Protocol, dst, got, p.Want)
				}
				if got := ask(t, p.Protocol, dst); got != p.Want {
					t.Errorf("traffic: %s %s = %s, want %s", p.Protocol, dst, got, p.Want)
				}
			}
		})
	}
}

// TestBothFamiliesReachNamedSockets sends TCP and UDP over IPv4 and IPv6 to
// addresses of two owners and checks which named socket answered and that
// the socket saw the address the client dialled.
func TestBothFamiliesReachNamedSockets(t *testing.T) {
	_, d := setup(t)
	table := &Table{
		Owners: basePolicies(),
		Bindings: []Binding{
			{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Owner: ownerCDN},
			{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Owner: ownerSpectrum},
			{Prefix: netip.MustParsePrefix("2001:db8:1::/48"), Owner: ownerCDN},
			{Prefix: netip.MustParsePrefix("2001:db8:2::/48"), Owner: ownerSpectrum},
		},
		Apps: []App{
			{Owner: ownerSpectrum, Protocol: TCP, Edge: netip.MustParsePrefix("198.51.100.0/24"), Ports: AnyPort, Label: "spectrum/tcp"},
			{Owner: ownerSpectrum, Protocol: UDP, Edge: netip.MustParsePrefix("198.51.100.0/24"), Ports: AnyPort, Label: "spectrum/udp"},
			{Owner: ownerSpectrum, Protocol: TCP, Edge: netip.MustParsePrefix("2001:db8:2::/48"), Ports: PortRange{7000, 7100}, Label: "spectrum/tcp"},
			{Owner: ownerSpectrum, Protocol: UDP, Edge: netip.MustParsePrefix("2001:db8:2::/48"), Ports: PortRange{53, 53}, Label: "spectrum/udp"},
		},
	}
	if err := d.Replace(table); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		proto, dst, want string
	}{
		{"tcp", "192.0.2.7:443", "cdn"},
		{"udp", "192.0.2.7:443", "cdn"},
		{"tcp", "198.51.100.9:9999", "spectrum"},
		{"udp", "198.51.100.9:5353", "spectrum"},
		{"tcp", "[2001:db8:1::5]:80", "cdn"},
		{"udp", "[2001:db8:1::5]:443", "cdn"},
		{"tcp", "[2001:db8:2::5]:7050", "spectrum"},
		{"udp", "[2001:db8:2::5]:53", "spectrum"},
		{"tcp", "[2001:db8:2::5]:7101", "refuse"},
	} {
		dst := parseDst(t, tc.dst)
		if tc.want == "refuse" {
			if got := ask(t, tc.proto, dst); got != echo.Refused {
				t.Errorf("%s %s: got %s, want refused", tc.proto, dst, got)
			}
			continue
		}
		// Check the greeting in full: name and the address the server saw.
		c, err := net.DialTimeout(tc.proto, dst.String(), 2*time.Second)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.proto, dst, err)
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if tc.proto == "udp" {
			c.Write([]byte("hi"))
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil {
			t.Fatalf("%s %s: %v", tc.proto, dst, err)
		}
		want := tc.want + " " + dst.String() + "\n"
		if line != want {
			t.Errorf("%s %s: got %q, want %q", tc.proto, dst, line, want)
		}
	}
	counters, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c := counters["cdn/tcp"]; c.Lookups < 2 || c.Misses != 0 || c.Errors != 0 {
		t.Errorf("cdn/tcp counters = %+v, want 2+ lookups, no misses or errors", c)
	}
}

// TestRefusedPortNeverReachesHostListener: a host service on the wildcard
// address of a port is reachable on addresses outside every binding, but never
// through a bound address whose owner does not serve that port.
func TestRefusedPortNeverReachesHostListener(t *testing.T) {
	_, d := setup(t)
	serveHost(t, "tcp", 22)
	serveHost(t, "udp", 53)
	table := &Table{Owners: basePolicies(), Bindings: []Binding{
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Owner: ownerCDN},
		{Prefix: netip.MustParsePrefix("2001:db8::/32"), Owner: ownerCDN},
	}}
	if err := d.Replace(table); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ proto, dst, want string }{
		{"tcp", "192.0.2.10:22", "refuse"},
		{"udp", "192.0.2.10:53", "refuse"},
		{"tcp", "[2001:db8::10]:22", "refuse"},
		{"udp", "[2001:db8::10]:53", "refuse"},
		{"tcp", "198.51.100.10:22", "kernel"},
		{"udp", "198.51.100.10:53", "kernel"},
		{"tcp", "127.0.0.1:22", "kernel"},
	} {
		if got := ask(t, tc.proto, parseDst(t, tc.dst)); got != tc.want {
			t.Errorf("%s %s = %s, want %s", tc.proto, tc.dst, got, tc.want)
		}
	}
	v, err := d.Verdicts()
	if err != nil {
		t.Fatal(err)
	}
	if v.Refuse < 4 || v.NoMatch < 3 {
		t.Errorf("verdicts = %+v, want 4+ refusals and 3+ unmatched", v)
	}
}

// TestMissingSocketDropsAndCountsMiss: a label the table chooses but no
// socket is registered for drops the packet (fail closed) and counts a miss.
func TestMissingSocketDropsAndCountsMiss(t *testing.T) {
	netns.New(t)
	d := openDispatcher(t, Options{})
	if err := d.Attach(); err != nil {
		t.Fatal(err)
	}
	serveHost(t, "tcp", 443)
	table := &Table{Owners: basePolicies(), Bindings: []Binding{
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Owner: ownerCDN},
	}}
	if err := d.Replace(table); err != nil {
		t.Fatal(err)
	}
	if got := ask(t, "tcp", parseDst(t, "192.0.2.1:443")); got != "refuse" {
		t.Fatalf("no cdn socket: got %s, want refuse (never the host listener)", got)
	}
	if got := ask(t, "tcp", parseDst(t, "198.51.100.1:443")); got != "kernel" {
		t.Fatalf("unbound address: got %s, want the host listener", got)
	}
	c, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if got := c["cdn/tcp"]; got.Lookups != got.Misses || got.Misses < 1 || got.Errors != 0 {
		t.Errorf("cdn/tcp counters = %+v, want every lookup a miss", got)
	}
}

// TestEstablishedSurvivesMove: moving an address to another owner sends new
// connections to the new owner while an established one keeps working.
func TestEstablishedSurvivesMove(t *testing.T) {
	_, d := setup(t)
	anyTCP := App{Owner: ownerSpectrum, Protocol: TCP, Edge: netip.MustParsePrefix("192.0.2.0/24"), Ports: AnyPort, Label: "spectrum/tcp"}
	cdnTable := &Table{Owners: basePolicies(), Apps: []App{anyTCP}, Bindings: []Binding{
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Owner: ownerCDN},
	}}
	spectrumTable := &Table{Owners: basePolicies(), Apps: []App{anyTCP}, Bindings: []Binding{
		{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Owner: ownerSpectrum},
	}}
	if err := d.Replace(cdnTable); err != nil {
		t.Fatal(err)
	}
	dst := parseDst(t, "192.0.2.50:443")
	c, err := net.Dial("tcp", dst.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "cdn ") {
		t.Fatalf("before the move: greeting %q, want cdn", line)
	}

	if err := d.Replace(spectrumTable); err != nil {
		t.Fatal(err)
	}
	if got := ask(t, "tcp", dst); got != "spectrum" {
		t.Fatalf("after the move: new connection went to %s, want spectrum", got)
	}
	for i := range 3 {
		if _, err := c.Write([]byte("ping\n")); err != nil {
			t.Fatalf("established connection, write %d: %v", i, err)
		}
		if line, err := r.ReadString('\n'); err != nil || line != "ping\n" {
			t.Fatalf("established connection, echo %d: %q, %v", i, line, err)
		}
	}
}

// TestReusePortGroup: registering one socket of an SO_REUSEPORT group spreads
// connections over the whole group.
func TestReusePortGroup(t *testing.T) {
	netns.New(t)
	d := openDispatcher(t, Options{})
	var lns []*net.TCPListener
	for i, name := range []string{"a", "b"} {
		addr := "[::]:0"
		if i > 0 {
			addr = lns[0].Addr().String()
		}
		lns = append(lns, echo.StartTCP(t, name, addr, true))
	}
	if err := d.Register("cdn/tcp", lns[0]); err != nil {
		t.Fatal(err)
	}
	if err := d.Attach(); err != nil {
		t.Fatal(err)
	}
	table := &Table{Owners: basePolicies(), Bindings: []Binding{{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Owner: ownerCDN}}}
	if err := d.Replace(table); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for i := range 64 {
		// Vary the source port (and so the reuseport hash) by address.
		dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 443)
		got[ask(t, "tcp", dst)]++
	}
	if got["a"] == 0 || got["b"] == 0 || got["a"]+got["b"] != 64 {
		t.Fatalf("connections by socket = %v, want both members of the group to get some", got)
	}
}

// TestRegisterValidation: every unfit socket gets an error that says what is
// wrong, and nothing is registered.
func TestRegisterValidation(t *testing.T) {
	netns.New(t)
	d := openDispatcher(t, Options{})

	var mptcp net.ListenConfig
	mptcp.SetMultipathTCP(true)
	mln, err := mptcp.Listen(context.Background(), "tcp", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mln.Close()

	tcpLn, err := echo.ListenTCP("[::]:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer tcpLn.Close()
	udp, err := echo.ListenUDP("[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	connected, err := net.Dial("udp", "127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	defer connected.Close()
	v6only, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer v6only.Close()

	rawFile := func(domain, typ, proto int, listen bool) *os.File {
		fd, err := unix.Socket(domain, typ, proto)
		if err != nil {
			t.Fatal(err)
		}
		if listen {
			if err := unix.Listen(fd, 1); err != nil {
				t.Fatal(err)
			}
		}
		f := os.NewFile(uintptr(fd), "raw")
		t.Cleanup(func() { f.Close() })
		return f
	}
	notListening := rawFile(unix.AF_INET6, unix.SOCK_STREAM, unix.IPPROTO_TCP, false)
	unixSock := rawFile(unix.AF_UNIX, unix.SOCK_STREAM, 0, false)

	for _, tc := range []struct {
		name, label string
		conn        syscall.Conn
		is          error
		text        string
	}{
		{"mptcp", "cdn/tcp", mln.(*net.TCPListener), ErrMPTCP, "SetMultipathTCP(false)"},
		{"mptcp errno", "cdn/tcp", mln.(*net.TCPListener), unix.EOPNOTSUPP, "MPTCP"},
		{"udp socket for tcp label", "cdn/tcp", udp, ErrBadSocket, "wants a TCP socket"},
		{"tcp socket for udp label", "cdn/udp", tcpLn, ErrBadSocket, "wants a UDP socket"},
		{"connected udp", "cdn/udp", connected.(*net.UDPConn), ErrBadSocket, "connected"},
		{"ipv6-only", "cdn/udp", v6only.(*net.UDPConn), ErrBadSocket, "IPv6-only"},
		{"not listening", "cdn/tcp", notListening, ErrBadSocket, "not listening"},
		{"unix socket", "cdn/tcp", unixSock, unix.EINVAL, "address family"},
		{"bad label", "cdn", tcpLn, ErrBadSocket, "does not end in /tcp or /udp"},
	} {
		err := d.Register(tc.label, tc.conn)
		if err == nil {
			t.Errorf("%s: registered, want an error", tc.name)
			continue
		}
		if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: error %q, want one matching %v and saying %q", tc.name, err, tc.is, tc.text)
		}
		if _, ok := d.Cookie(tc.label); ok {
			t.Errorf("%s: a socket is registered under %s after the error", tc.name, tc.label)
		}
	}
	if err := d.Register("cdn/tcp", tcpLn); err != nil {
		t.Fatalf("a fit listener: %v", err)
	}
}

// TestRegisterReplaces: registering another socket under a label takes over
// new connections in one step; Unregister drops them and counts misses.
func TestRegisterReplaces(t *testing.T) {
	netns.New(t)
	d := openDispatcher(t, Options{})
	if err := d.Attach(); err != nil {
		t.Fatal(err)
	}
	table := &Table{Owners: basePolicies(), Bindings: []Binding{{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Owner: ownerCDN}}}
	if err := d.Replace(table); err != nil {
		t.Fatal(err)
	}
	dst := parseDst(t, "192.0.2.5:443")
	for _, name := range []string{"old", "new"} {
		ln, _ := listenNamed(t, name)
		if err := d.Register("cdn/tcp", ln); err != nil {
			t.Fatal(err)
		}
		if got := ask(t, "tcp", dst); got != name {
			t.Fatalf("after registering %s: got %s", name, got)
		}
	}
	if err := d.Unregister("cdn/tcp"); err != nil {
		t.Fatal(err)
	}
	if got := ask(t, "tcp", dst); got != "refuse" {
		t.Fatalf("after Unregister: got %s, want refuse", got)
	}
	if c, _ := d.Counters(); c["cdn/tcp"].Misses != 1 {
		t.Fatalf("misses = %d, want 1", c["cdn/tcp"].Misses)
	}
}

// TestMountsBPFFS: a pin dir below /sys/fs/bpf gets a bpf filesystem mounted
// there when none is (in a private mount namespace of this thread).
func TestMountsBPFFS(t *testing.T) {
	netns.New(t) // locks the thread
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		t.Fatalf("unshare mount namespace: %v", err)
	}
	// The thread now has mounts of its own: it must never run anything
	// else. netns.New's cleanup would unlock it; lock once more so that it
	// stays locked and ends with the test's goroutine.
	runtime.LockOSThread()
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	if isBPFFS("/sys/fs/bpf") {
		if err := unix.Unmount("/sys/fs/bpf", unix.MNT_DETACH); err != nil {
			t.Fatal(err)
		}
	}
	pin := "/sys/fs/bpf/edgeproxy-mount-test"
	d, err := Open(Options{PinDir: pin})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if !isBPFFS("/sys/fs/bpf") {
		t.Fatal("/sys/fs/bpf is not a bpf filesystem after Open")
	}
	if err := Unload(pin); err != nil {
		t.Fatal(err)
	}
}
