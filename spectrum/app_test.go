package spectrum

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

// TestMatchAgreesWithBindings: the app the proxy picks for a destination is
// the app the bindings layer (and so the data plane) picked, on random
// overlapping apps.
func TestMatchAgreesWithBindings(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	m := newMetrics(nil)
	pfx := netip.MustParsePrefix("192.0.2.0/24")
	st := &bindings.State{Prefixes: []bindings.Prefix{bindings.NewPrefix(pfx, bindings.Spectrum, bindings.FromConfig)}}
	pool := []uint16{1, 22, 53, 80, 443, 1000, 1500, 2000, 65535}
	probes := 0
	for range 300 {
		var svc bindings.Services
		tab := &table{}
		for i := range 1 + r.IntN(10) {
			edge := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(r.IntN(256))}), 24+r.IntN(9)).Masked()
			var ports Ports
			switch r.IntN(3) {
			case 0:
				p := pool[r.IntN(len(pool))]
				ports = Ports{First: p, Last: p}
			case 1:
				a, b := pool[r.IntN(len(pool))], pool[r.IntN(len(pool))]
				ports = Ports{First: min(a, b), Last: max(a, b)}
				if ports.First == ports.Last {
					continue
				}
			default:
				ports = dispatch.AnyPort
			}
			proto, dproto := TCP, dispatch.TCP
			if r.IntN(2) == 0 {
				proto, dproto = UDP, dispatch.UDP
			}
			name := fmt.Sprint("a", i)
			ba := bindings.App{Name: name, Protocol: dproto, Edge: edge, Ports: ports}
			if bindings.Validate(st, bindings.Services{Apps: append(svc.Apps, ba)}, nil) != nil {
				continue // same edge, overlapping: not a valid configuration
			}
			svc.Apps = append(svc.Apps, ba)
			tab.apps = append(tab.apps, newApp(App{Name: name, Protocol: proto, Edge: edge, Ports: ports, Origins: []Origin{{Host: "x"}}}, m))
		}
		for range 200 {
			addr := netip.AddrFrom4([4]byte{192, 0, 2, byte(r.IntN(256))})
			port := pool[r.IntN(len(pool))]
			proto, dproto := TCP, dispatch.TCP
			if r.IntN(2) == 0 {
				proto, dproto = UDP, dispatch.UDP
			}
			want := ""
			if res := bindings.Resolve(st, svc, dproto, addr, port); res.App != nil {
				want = res.App.Name
			}
			got := ""
			if a := tab.match(proto, addr, port); a != nil {
				got = a.Name
			}
			probes++
			if got != want {
				t.Fatalf("%s %s:%d: proxy picks %q, bindings %q", proto, addr, port, got, want)
			}
		}
	}
	t.Logf("%d probes agree", probes)
}

func TestOriginAddr(t *testing.T) {
	m := newMetrics(nil)
	for _, tc := range []struct {
		ports  Ports
		origin Origin
		dialed uint16
		want   string
	}{
		{Ports{First: 22, Last: 22}, Origin{Host: "127.0.0.1", Port: 2222}, 22, "127.0.0.1:2222"},
		{Ports{First: 1000, Last: 2000}, Origin{Host: "127.0.0.1", Port: 3000}, 1005, "127.0.0.1:3005"},
		{dispatch.AnyPort, Origin{Host: "::1", Port: 4000}, 8765, "[::1]:4000"},
		{Ports{First: 7000, Last: 7010}, Origin{Host: "origin.example", Port: 0}, 7005, "origin.example:7005"},
	} {
		a := newApp(App{Name: "x", Protocol: TCP, Ports: tc.ports, Origins: []Origin{tc.origin}}, m)
		if got := a.originAddr(0, tc.dialed); got != tc.want {
			t.Errorf("%v %v %d: %s, want %s", tc.ports, tc.origin, tc.dialed, got, tc.want)
		}
	}
}

func TestSPPRoundTrip(t *testing.T) {
	client := netip.MustParseAddrPort("198.51.100.4:40003")
	proxy := netip.MustParseAddrPort("[2001:db8::1]:27015")
	d := append(appendSPP(nil, client, proxy), "data"...)
	if len(d) != sppHeaderLen+4 {
		t.Fatalf("length %d", len(d))
	}
	c, p, payload, err := parseSPP(d)
	if err != nil || c != client || p != proxy || string(payload) != "data" {
		t.Fatalf("parse: %v %v %q %v", c, p, payload, err)
	}
	for _, bad := range [][]byte{nil, d[:37], append([]byte{0x56, 0xED}, d[2:]...)} {
		if _, _, _, err := parseSPP(bad); err == nil {
			t.Errorf("parsed %x", bad)
		}
	}
}

func FuzzParseSPP(f *testing.F) {
	f.Add(append(appendSPP(nil, netip.MustParseAddrPort("1.2.3.4:5"), netip.MustParseAddrPort("[::1]:6")), 1, 2))
	f.Add([]byte{0x56, 0xEC})
	f.Fuzz(func(t *testing.T, d []byte) {
		c, p, payload, err := parseSPP(d)
		if err != nil {
			return
		}
		again := append(appendSPP(nil, c, p), payload...)
		if len(again) != len(d) {
			t.Fatalf("re-encoding changes the length")
		}
	})
}
