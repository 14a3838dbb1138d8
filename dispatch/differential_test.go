//go:build linux

package dispatch

import (
	"errors"
	"flag"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

var (
	diffTables = flag.Int("diff.tables", 250, "random tables in TestDifferential")
	diffProbes = flag.Int("diff.probes", 500, "probes per table in TestDifferential")
	diffSeed   = flag.Uint64("diff.seed", 0, "seed of TestDifferential (0: random)")
)

// Owners of the random tables: two of each steering kind and one pass.
const (
	rPorts1 Owner = 1
	rPorts2 Owner = 2
	rApps1  Owner = 3
	rApps2  Owner = 4
	rPass   Owner = 5
)

var rOwners = []Owner{rPorts1, rPorts2, rApps1, rApps2, rPass}

// portPool is where random ports come from, small enough that bindings, apps
// and probes collide often.
var portPool = []uint16{1, 22, 53, 80, 443, 444, 1000, 1001, 1005, 1010, 2000, 5000, 8080, 65535}

type gen struct {
	r *rand.Rand
	// bases are the addresses random prefixes are cut from; few, so that
	// prefixes nest and overlap.
	bases []netip.Addr
}

func newGen(seed uint64) *gen {
	g := &gen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	for range 4 {
		g.bases = append(g.bases, g.addr4(), g.addr6())
	}
	return g
}

func (g *gen) addr4() netip.Addr {
	return netip.AddrFrom4([4]byte{192, 0, byte(g.r.IntN(4)), byte(g.r.IntN(256))})
}

func (g *gen) addr6() netip.Addr {
	var b [16]byte
	b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
	b[5] = byte(g.r.IntN(3))
	for i := 6; i < 16; i++ {
		b[i] = byte(g.r.IntN(4))
	}
	return netip.AddrFrom16(b)
}

// near returns an address close to a base: it shares a random number of
// leading bits.
func (g *gen) near() netip.Addr {
	base := g.bases[g.r.IntN(len(g.bases))]
	var fresh netip.Addr
	if base.Is4() {
		fresh = g.addr4()
	} else {
		fresh = g.addr6()
	}
	keep := g.r.IntN(base.BitLen() + 1)
	bb, fb := base.AsSlice(), fresh.AsSlice()
	out := make([]byte, len(bb))
	for i := range out {
		for bit := 7; bit >= 0; bit-- {
			pos := i*8 + (7 - bit)
			src := fb
			if pos < keep {
				src = bb
			}
			out[i] |= src[i] & (1 << bit)
		}
	}
	a, _ := netip.AddrFromSlice(out)
	return a
}

func (g *gen) prefix() netip.Prefix {
	a := g.near()
	var bits int
	if a.Is4() {
		bits = 16 + g.r.IntN(17)
	} else {
		bits = 32 + g.r.IntN(97)
	}
	p, _ := a.Prefix(bits)
	return p
}

func (g *gen) proto() Protocol {
	if g.r.IntN(2) == 0 {
		return TCP
	}
	return UDP
}

func (g *gen) port() uint16 {
	if g.r.IntN(5) == 0 {
		return uint16(1 + g.r.IntN(65535))
	}
	return portPool[g.r.IntN(len(portPool))]
}

func (g *gen) ports() PortRange {
	switch g.r.IntN(3) {
	case 0:
		p := g.port()
		return PortRange{p, p}
	case 1:
		a, b := g.port(), g.port()
		if a > b {
			a, b = b, a
		}
		if a == b && b < 65535 {
			b++
		}
		return PortRange{a, b}
	}
	return AnyPort
}

func labelFor(prefix string, p Protocol) string { return prefix + "/" + p.String() }

// table returns a random valid table.
func (g *gen) table() *Table {
	t := &Table{Owners: map[Owner]Policy{
		rApps1: {Kind: PolicyApps},
		rApps2: {Kind: PolicyApps},
		rPass:  {Kind: PolicyPass},
	}}
	for _, o := range []Owner{rPorts1, rPorts2} {
		pol := Policy{Kind: PolicyPorts, Ports: map[ProtoPort]string{}}
		for range g.r.IntN(6) {
			p := g.proto()
			pol.Ports[ProtoPort{p, g.port()}] = labelFor([]string{"a", "b"}[o-1], p)
		}
		t.Owners[o] = pol
	}
	nb := 1 + g.r.IntN(60)
	seen := map[Binding]bool{}
	for range nb {
		b := Binding{Prefix: g.prefix(), Owner: rOwners[g.r.IntN(len(rOwners))]}
		if g.r.IntN(3) == 0 {
			b.Protocol, b.Port = g.proto(), g.port()
		}
		key := b
		key.Owner = 0
		if seen[key] {
			continue
		}
		seen[key] = true
		t.Bindings = append(t.Bindings, b)
	}
	for range g.r.IntN(25) {
		p := g.proto()
		o := []Owner{rApps1, rApps2}[g.r.IntN(2)]
		a := App{Owner: o, Protocol: p, Edge: g.prefix(), Ports: g.ports(), Label: labelFor([]string{"c", "d"}[g.r.IntN(2)], p)}
		t.Apps = append(t.Apps, a)
		if t.Validate() != nil {
			t.Apps = t.Apps[:len(t.Apps)-1] // an overlap on the same edge
		}
	}
	return t
}

// probe returns a destination likely to hit the table's edges.
func (g *gen) probe(t *Table) (Protocol, netip.AddrPort) {
	var a netip.Addr
	switch n := g.r.IntN(10); {
	case n < 4 && len(t.Bindings) > 0:
		a = g.inside(t.Bindings[g.r.IntN(len(t.Bindings))].Prefix)
	case n < 7 && len(t.Apps) > 0:
		a = g.inside(t.Apps[g.r.IntN(len(t.Apps))].Edge)
	default:
		a = g.near()
	}
	p := g.proto()
	port := g.port()
	// Aim at bindings' and apps' ports and at their edges.
	switch n := g.r.IntN(6); {
	case n == 0 && len(t.Apps) > 0:
		r := t.Apps[g.r.IntN(len(t.Apps))].Ports
		port = []uint16{r.First, r.Last, r.First - 1, r.Last + 1}[g.r.IntN(4)]
	case n == 1 && len(t.Bindings) > 0:
		if b := t.Bindings[g.r.IntN(len(t.Bindings))]; b.PortScoped() {
			p, port = b.Protocol, b.Port
		}
	}
	if port == 0 {
		port = 1
	}
	return p, netip.AddrPortFrom(a, port)
}

// inside returns a random address of p, or one of its ends.
func (g *gen) inside(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	switch g.r.IntN(4) {
	case 0: // first
	case 1: // last
		for i := p.Bits(); i < len(b)*8; i++ {
			b[i/8] |= 1 << (7 - i%8)
		}
	default:
		for i := p.Bits(); i < len(b)*8; i++ {
			if g.r.IntN(2) == 0 {
				b[i/8] |= 1 << (7 - i%8)
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// TestDifferential holds the BPF program to the model: random tables (both
// families, nested address and port-scoped bindings, apps on single ports,
// ranges and any port, pass owners) and random probes, the program's verdict
// under BPF_PROG_TEST_RUN against Table.Decide. Every table is written over
// the previous one, so the difference writes are tested too.
func TestDifferential(t *testing.T) {
	_, d := setup(t)
	for _, name := range []string{"a", "b", "c", "d"} {
		serveNamed(t, d, name)
	}
	seed := *diffSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (rerun with -diff.seed=%d)", seed, seed)
	g := newGen(seed)

	probes, steered, refused, kernel := 0, 0, 0, 0
	for i := range *diffTables {
		table := g.table()
		if err := table.Validate(); err != nil {
			t.Fatalf("table %d: generator made an invalid table: %v", i, err)
		}
		if err := d.Replace(table); err != nil {
			t.Fatalf("table %d: %v", i, err)
		}
		for range *diffProbes {
			p, dst := g.probe(table)
			want := table.Decide(p, dst)
			got, err := d.Probe(p, dst)
			if err != nil {
				t.Fatal(err)
			}
			probes++
			switch want.Action {
			case Steer:
				steered++
			case Refuse:
				refused++
			default:
				kernel++
			}
			if got != want {
				t.Fatalf("table %d, probe %s %s: program %v, model %v\ntable: %+v", i, p, dst, got, want, table)
			}
		}
	}
	t.Logf("%d probes agree: %d steered, %d refused, %d to the kernel", probes, steered, refused, kernel)
	if probes < 100_000 && !testing.Short() {
		t.Errorf("only %d probes, want at least 100,000", probes)
	}
	for _, n := range []int{steered, refused, kernel} {
		if n < probes/20 {
			t.Errorf("the probes do not exercise every outcome: %d steered, %d refused, %d kernel", steered, refused, kernel)
			break
		}
	}
}

// TestAmendDifferential: random sequences of Amend calls (mostly single
// bindings, written in place; sometimes several, switched), the program
// against the model of the amended table after each.
func TestAmendDifferential(t *testing.T) {
	_, d := setup(t)
	for _, name := range []string{"a", "b", "c", "d"} {
		serveNamed(t, d, name)
	}
	seed := *diffSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (rerun with -diff.seed=%d)", seed, seed)
	g := newGen(seed)
	probes := 0
	for range 20 {
		table := g.table()
		if err := d.Replace(table); err != nil {
			t.Fatal(err)
		}
		for round := range 40 {
			var remove, add []Binding
			n := 1
			if g.r.IntN(4) == 0 {
				n = 2 + g.r.IntN(4)
			}
			candidates := slices.Clone(table.Bindings) // present before this round
			for range n {
				switch {
				case len(candidates) > 0 && g.r.IntN(2) == 0:
					// Remove one, or move it (remove and add the same key).
					i := g.r.IntN(len(candidates))
					b := candidates[i]
					candidates = slices.Delete(candidates, i, i+1)
					table.Bindings = slices.DeleteFunc(table.Bindings, func(o Binding) bool { return o == b })
					remove = append(remove, b)
					if g.r.IntN(2) == 0 {
						b.Owner = rOwners[g.r.IntN(len(rOwners))]
						add = append(add, b)
						table.Bindings = append(table.Bindings, b)
					}
				default:
					b := Binding{Prefix: g.prefix(), Owner: rOwners[g.r.IntN(len(rOwners))]}
					if g.r.IntN(2) == 0 {
						b.Protocol, b.Port = g.proto(), g.port()
					}
					dup := false
					for _, o := range table.Bindings {
						dup = dup || (o.Prefix == b.Prefix && o.Protocol == b.Protocol && o.Port == b.Port)
					}
					for _, o := range remove {
						dup = dup || (o.Prefix == b.Prefix && o.Protocol == b.Protocol && o.Port == b.Port)
					}
					if !dup {
						add = append(add, b)
						table.Bindings = append(table.Bindings, b)
					}
				}
			}
			if err := d.Amend(remove, add); err != nil {
				t.Fatalf("round %d: amend -%v +%v: %v", round, remove, add, err)
			}
			for range 100 {
				p, dst := g.probe(table)
				want := table.Decide(p, dst)
				got, err := d.Probe(p, dst)
				if err != nil {
					t.Fatal(err)
				}
				probes++
				if got != want {
					t.Fatalf("round %d (amend -%v +%v), probe %s %s: program %v, model %v", round, remove, add, p, dst, got, want)
				}
			}
		}
	}
	t.Logf("%d probes agree after amends", probes)
}

// TestAmendRefusesBadChanges: removing what is not there, adding what is,
// or an owner without policy is refused and changes nothing.
func TestAmendRefusesBadChanges(t *testing.T) {
	_, d := setup(t)
	p24 := netip.MustParsePrefix("192.0.2.0/24")
	if err := d.Replace(&Table{Owners: basePolicies(), Bindings: []Binding{{Prefix: p24, Owner: ownerCDN}}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		remove, add []Binding
	}{
		{remove: []Binding{{Prefix: netip.MustParsePrefix("192.0.2.0/25"), Owner: ownerCDN}}},
		{add: []Binding{{Prefix: p24, Owner: ownerSpectrum}}},
		{add: []Binding{{Prefix: netip.MustParsePrefix("192.0.2.0/25"), Owner: 99}}},
		{add: []Binding{{Prefix: netip.MustParsePrefix("192.0.2.1/25"), Owner: ownerCDN}}},
	} {
		if err := d.Amend(tc.remove, tc.add); !errors.Is(err, ErrInvalidTable) {
			t.Errorf("amend -%v +%v: %v, want ErrInvalidTable", tc.remove, tc.add, err)
		}
	}
	if v, _ := d.Probe(TCP, netip.MustParseAddrPort("192.0.2.1:443")); v.Label != "cdn/tcp" {
		t.Fatalf("after refused amends: %v", v)
	}
}
