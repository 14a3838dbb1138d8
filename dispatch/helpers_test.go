//go:build linux

package dispatch

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/cases"
	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// The owners the tests give the services of the shared cases.
const (
	ownerCDN      Owner = 1
	ownerSpectrum Owner = 2
	ownerMT       Owner = 3
)

var serviceOwner = map[string]Owner{"cdn": ownerCDN, "spectrum": ownerSpectrum, "magic-transit": ownerMT}

func basePolicies() map[Owner]Policy {
	return map[Owner]Policy{
		ownerCDN: {Kind: PolicyPorts, Ports: map[ProtoPort]string{
			{TCP, 80}: "cdn/tcp", {TCP, 443}: "cdn/tcp", {UDP, 443}: "cdn/udp",
		}},
		ownerSpectrum: {Kind: PolicyApps},
		ownerMT:       {Kind: PolicyPass},
	}
}

// caseTable writes a shared case as a dispatch table by hand, as the bindings
// layer will: each prefix and binding is a binding, each app an app of the
// spectrum owner.
func caseTable(tb testing.TB, c cases.Case) *Table {
	tb.Helper()
	t := &Table{Owners: basePolicies()}
	for _, it := range append(append([]cases.Item{}, c.Prefixes...), c.Bindings...) {
		b := Binding{Prefix: netip.MustParsePrefix(it.CIDR), Owner: serviceOwner[it.Service], Port: uint16(it.Port)}
		if it.Protocol != "" {
			p, err := ParseProtocol(it.Protocol)
			if err != nil {
				tb.Fatal(err)
			}
			b.Protocol = p
		}
		t.Bindings = append(t.Bindings, b)
	}
	for _, a := range c.SpectrumApps {
		p, err := ParseProtocol(a.Protocol)
		if err != nil {
			tb.Fatal(err)
		}
		t.Apps = append(t.Apps, App{
			Owner: ownerSpectrum, Protocol: p, Edge: netip.MustParsePrefix(a.Edge),
			Ports: mustPorts(tb, a.Ports), Label: "spectrum/" + a.Protocol,
		})
	}
	return t
}

func mustPorts(tb testing.TB, s string) PortRange {
	tb.Helper()
	if s == "*" {
		return AnyPort
	}
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	a, err1 := strconv.ParseUint(lo, 10, 16)
	b, err2 := strconv.ParseUint(hi, 10, 16)
	if err1 != nil || err2 != nil {
		tb.Fatalf("bad ports %q", s)
	}
	return PortRange{uint16(a), uint16(b)}
}

// outcome turns a verdict into the words of the shared cases.
func outcome(v Verdict) string {
	switch v.Action {
	case Kernel:
		return "kernel"
	case Refuse:
		return "refuse"
	}
	name, _, _ := strings.Cut(v.Label, "/")
	return name
}

// openDispatcher opens a dispatcher that the test closes.
func openDispatcher(tb testing.TB, opts Options) *Dispatcher {
	tb.Helper()
	d, err := Open(opts)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

// serveNamed starts a named TCP and UDP echo server and registers them under
// name+"/tcp" and name+"/udp". It must run on the namespace's thread.
func serveNamed(tb testing.TB, d *Dispatcher, name string) {
	tb.Helper()
	ln, pc := listenNamed(tb, name)
	if err := d.Register(name+"/tcp", ln); err != nil {
		tb.Fatal(err)
	}
	if err := d.Register(name+"/udp", pc); err != nil {
		tb.Fatal(err)
	}
}

// listenNamed starts a TCP and a UDP echo server named name on the wildcard
// address; the test closes them.
func listenNamed(tb testing.TB, name string) (*net.TCPListener, *net.UDPConn) {
	tb.Helper()
	return echo.Start(tb, name, "[::]:0")
}

// serveHost starts "host" echo servers on the wildcard address and the given
// port, as a host service outside edgeproxy would.
func serveHost(tb testing.TB, proto string, port uint16) {
	tb.Helper()
	addr := fmt.Sprintf("[::]:%d", port)
	switch proto {
	case "tcp":
		echo.StartTCP(tb, "host", addr, false)
	case "udp":
		echo.StartUDP(tb, "host", addr)
	}
}

// ask sends real traffic and returns who answered in the words of the shared
// cases: a server's name, "kernel" for the host servers, or "refuse".
func ask(tb testing.TB, proto string, dst netip.AddrPort) string {
	tb.Helper()
	got, err := echo.Ask(proto, dst, 2*time.Second)
	if err != nil {
		tb.Fatalf("%s %s: %v", proto, dst, err)
	}
	if got == "host" {
		return "kernel"
	}
	return got
}

func parseDst(tb testing.TB, s string) netip.AddrPort {
	tb.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		tb.Fatal(err)
	}
	return ap
}

// setup gives the test a namespace and an attached, unpinned dispatcher with
// named cdn and spectrum sockets.
func setup(tb testing.TB) (*netns.NS, *Dispatcher) {
	tb.Helper()
	ns := netns.New(tb)
	d := openDispatcher(tb, Options{})
	serveNamed(tb, d, "cdn")
	serveNamed(tb, d, "spectrum")
	if err := d.Attach(); err != nil {
		tb.Fatal(err)
	}
	return ns, d
}
