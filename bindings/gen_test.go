package bindings_test

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

// The random states and probes of the differential tests, and of the tests
// that check the operations and the ownership snapshot against them.

var (
	diffStates = flag.Int("diff.states", 250, "random states in the differential tests")
	diffProbes = flag.Int("diff.probes", 500, "probes per state in the differential tests")
	diffSeed   = flag.Uint64("diff.seed", 0, "seed of the differential tests (0: random)")
)

var portPool = []uint16{22, 53, 80, 443, 444, 1000, 1005, 1010, 2000, 5000, 8080, 8443}

type gen struct{ r *rand.Rand }

func newGen(t *testing.T) *gen {
	seed := *diffSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (rerun with -diff.seed=%d)", seed, seed)
	return &gen{rand.New(rand.NewPCG(seed, seed+1))}
}

func (g *gen) pick(xs []uint16) uint16 { return xs[g.r.IntN(len(xs))] }

func (g *gen) proto() dispatch.Protocol {
	if g.r.IntN(2) == 0 {
		return dispatch.TCP
	}
	return dispatch.UDP
}

// sub returns a random prefix inside p, bits longer than it (at most the
// address length).
func (g *gen) sub(p netip.Prefix, minExtra, maxExtra int) netip.Prefix {
	bits := min(p.Bits()+minExtra+g.r.IntN(maxExtra-minExtra+1), p.Addr().BitLen())
	return netip.PrefixFrom(g.addrIn(p), bits).Masked()
}

func (g *gen) addrIn(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		if g.r.IntN(2) == 0 {
			b[i/8] |= 1 << (7 - i%8)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// state returns a random valid state with what the services serve.
func (g *gen) state() (*bindings.State, bindings.Services) {
	var svc bindings.Services
	svc.CDN.HTTP = []uint16{80, 8080}[:1+g.r.IntN(2)]
	svc.CDN.HTTPS = []uint16{443, 8443}[:1+g.r.IntN(2)]
	svc.CDN.HTTP3 = g.r.IntN(3) > 0
	svc.CDN.HTTP3Port = 443

	st := &bindings.State{}
	services := []bindings.Service{bindings.CDN, bindings.Spectrum, bindings.MagicTransit}
	for range 1 + g.r.IntN(4) {
		var p netip.Prefix
		if g.r.IntN(2) == 0 {
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, byte(g.r.IntN(4)), 0}), 20+g.r.IntN(5)).Masked()
		} else {
			p = netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(g.r.IntN(4))}), 40+g.r.IntN(9)).Masked()
		}
		st.Prefixes = append(st.Prefixes, bindings.NewPrefix(p, services[g.r.IntN(3)], bindings.FromConfig))
		if bindings.Validate(st, svc, nil) != nil {
			st.Prefixes = st.Prefixes[:len(st.Prefixes)-1] // overlap
		}
	}

	// Apps: edges around the prefixes, some wider, some narrower.
	for i := range g.r.IntN(12) {
		p := st.Prefixes[g.r.IntN(len(st.Prefixes))].CIDR
		edge := g.sub(p, 0, 12)
		if g.r.IntN(5) == 0 {
			edge = netip.PrefixFrom(p.Addr(), p.Bits()-g.r.IntN(4)).Masked()
		}
		var ports dispatch.PortRange
		switch g.r.IntN(3) {
		case 0:
			pp := g.pick(portPool)
			ports = dispatch.PortRange{First: pp, Last: pp}
		case 1:
			a, b := g.pick(portPool), g.pick(portPool)
			if a > b {
				a, b = b, a
			}
			if a == b {
				b++
			}
			ports = dispatch.PortRange{First: a, Last: b}
		default:
			ports = dispatch.AnyPort
		}
		svc.Apps = append(svc.Apps, bindings.App{Name: fmt.Sprint("app", i), Protocol: g.proto(), Edge: edge, Ports: ports})
		if bindings.Validate(st, svc, nil) != nil {
			svc.Apps = svc.Apps[:len(svc.Apps)-1] // overlap on the same edge
		}
	}

	// Bindings: nested inside the prefixes, some port-scoped to a port
	// their service serves.
	for range g.r.IntN(30) {
		p := st.Prefixes[g.r.IntN(len(st.Prefixes))].CIDR
		cidr := g.sub(p, 1, 16)
		svcID := []bindings.Service{bindings.CDN, bindings.Spectrum}[g.r.IntN(2)]
		var proto dispatch.Protocol
		var port uint16
		if g.r.IntN(3) == 0 {
			switch {
			case svcID == bindings.CDN:
				proto, port = dispatch.TCP, g.pick(append(append([]uint16{}, svc.CDN.HTTP...), svc.CDN.HTTPS...))
				if svc.CDN.HTTP3 && g.r.IntN(3) == 0 {
					proto, port = dispatch.UDP, svc.CDN.HTTP3Port
				}
			case len(svc.Apps) > 0:
				a := svc.Apps[g.r.IntN(len(svc.Apps))]
				proto = a.Protocol
				port = a.Ports.First
				if a.Ports.Any() {
					port = g.pick(portPool)
				}
				if a.Edge.Bits() > p.Bits() && p.Contains(a.Edge.Addr()) {
					cidr = g.sub(a.Edge, 0, 8)
				}
			}
		}
		if g.r.IntN(8) == 0 {
			cidr = p // a port-scoped binding may cover its whole prefix
		}
		st.Bindings = append(st.Bindings, bindings.NewBinding(cidr, proto, port, svcID, bindings.FromAPI))
		st.AssignPrefixes()
		if bindings.Validate(st, svc, nil) != nil {
			st.Bindings = st.Bindings[:len(st.Bindings)-1]
		}
	}
	return st, svc
}

// probe returns a destination likely to hit an edge of the state.
func (g *gen) probe(st *bindings.State, svc bindings.Services) (dispatch.Protocol, netip.AddrPort) {
	var a netip.Addr
	switch n := g.r.IntN(10); {
	case n < 4 && len(st.Bindings) > 0:
		a = g.addrIn(st.Bindings[g.r.IntN(len(st.Bindings))].CIDR)
	case n < 6 && len(svc.Apps) > 0:
		a = g.addrIn(svc.Apps[g.r.IntN(len(svc.Apps))].Edge)
	case n < 9:
		a = g.addrIn(st.Prefixes[g.r.IntN(len(st.Prefixes))].CIDR)
	default:
		p := st.Prefixes[g.r.IntN(len(st.Prefixes))].CIDR
		a = g.addrIn(netip.PrefixFrom(p.Addr(), max(p.Bits()-2, 0)).Masked()) // around it
	}
	proto := g.proto()
	port := g.pick(portPool)
	if len(st.Bindings) > 0 && g.r.IntN(4) == 0 {
		if b := st.Bindings[g.r.IntN(len(st.Bindings))]; b.PortScoped() {
			proto, port = b.Protocol, b.Port
		}
	}
	if len(svc.Apps) > 0 && g.r.IntN(5) == 0 {
		r := svc.Apps[g.r.IntN(len(svc.Apps))].Ports
		port = max(1, []uint16{r.First, r.Last, r.First - 1, r.Last + 1}[g.r.IntN(4)])
	}
	return proto, netip.AddrPortFrom(a, port)
}

func outcomeCounts(counts map[string]int, n int, t *testing.T) {
	t.Logf("%d probes agree: %v", n, counts)
	for _, o := range []string{"cdn", "spectrum", "refuse", "kernel"} {
		if counts[o] < n/50 {
			t.Errorf("outcome %s is barely exercised (%d of %d)", o, counts[o], n)
		}
	}
}
