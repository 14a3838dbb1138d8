package bindings_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

type probe struct {
	proto dispatch.Protocol
	addr  netip.Addr
	port  uint16
}

// probesOf returns destinations at every edge of the views: addresses in
// and around each item, on the ports where something begins or ends.
func probesOf(g *gen, views ...bindings.View) []probe {
	var cidrs []netip.Prefix
	ports := slices.Clone(portPool)
	for _, v := range views {
		for _, b := range v.State.AllBindings() {
			cidrs = append(cidrs, b.CIDR)
			if b.PortScoped() {
				ports = append(ports, b.Port, b.Port-1, b.Port+1)
			}
		}
		for _, a := range v.Services.Apps {
			cidrs = append(cidrs, a.Edge)
			ports = append(ports, a.Ports.First, a.Ports.Last, a.Ports.First-1, a.Ports.Last+1)
		}
		ports = append(ports, v.Services.CDN.HTTP...)
		ports = append(ports, v.Services.CDN.HTTPS...)
	}
	ports = append(ports, 1, 65535)
	var out []probe
	for _, p := range cidrs {
		for range 4 {
			a := g.addrIn(p)
			if g.r.IntN(4) == 0 {
				a = g.addrIn(netip.PrefixFrom(p.Addr(), max(p.Bits()-1, 0)).Masked())
			}
			for _, proto := range []dispatch.Protocol{dispatch.TCP, dispatch.UDP} {
				for range 6 {
					port := ports[g.r.IntN(len(ports))]
					if g.r.IntN(8) == 0 {
						port = uint16(1 + g.r.IntN(65535))
					}
					if port != 0 {
						out = append(out, probe{proto, a, port})
					}
				}
			}
		}
	}
	return out
}

// checkPlan holds the plan of before → after to the resolver: a
// destination is in a row exactly when its outcome changes, in one row
// only, and the row says how.
func checkPlan(t *testing.T, what string, before, after bindings.View, probes []probe) int {
	t.Helper()
	rows := bindings.Plan(before, after, bindings.Changed(before, after))
	for _, r := range rows {
		if len(r.Ranges) == 0 || len(r.Ports) == 0 || r.Before.Same(r.After) {
			t.Fatalf("%s: an empty or unchanging row %v", what, r)
		}
	}
	changed := 0
	for _, p := range probes {
		eb := bindings.EffectOf(bindings.Resolve(before.State, before.Services, p.proto, p.addr, p.port))
		ea := bindings.EffectOf(bindings.Resolve(after.State, after.Services, p.proto, p.addr, p.port))
		var in []bindings.PlanRow
		for _, r := range rows {
			if r.Covers(p.proto, p.addr, p.port) {
				in = append(in, r)
			}
		}
		switch {
		case eb.Same(ea) && len(in) > 0:
			t.Fatalf("%s: %s %s:%d fares the same (%s), but the plan has it: %v", what, p.proto, p.addr, p.port, eb, in)
		case !eb.Same(ea) && len(in) != 1:
			t.Fatalf("%s: %s %s:%d goes %s → %s, but %d rows of the plan have it: %v", what, p.proto, p.addr, p.port, eb, ea, len(in), rows)
		case !eb.Same(ea):
			changed++
			r := in[0]
			if !sameEffect(r.Before, eb) || !sameEffect(r.After, ea) {
				t.Fatalf("%s: %s %s:%d goes %s → %s (by %v → %v), the plan says %v", what, p.proto, p.addr, p.port, eb, ea, eb.Binding, ea.Binding, r)
			}
		}
	}
	return changed
}

func sameEffect(a, b bindings.Effect) bool {
	id := func(e bindings.Effect) string {
		if e.Binding == nil {
			return ""
		}
		return e.Binding.ID
	}
	return a.Outcome == b.Outcome && a.Service == b.Service && a.App == b.App && id(a) == id(b)
}

// TestPlanCases: every single move and deletion of every item of every
// shared case, planned and held to the resolver.
func TestPlanCases(t *testing.T) {
	g := newGen(t)
	plans, changed := 0, 0
	for _, c := range loadCases(t).Cases {
		st, svc := caseState(t, c)
		before := bindings.View{State: st, Services: svc}
		var probes []probe
		for _, p := range c.Probes {
			proto, dst := parseProbe(t, p)
			probes = append(probes, probe{proto, dst.Addr(), dst.Port()})
		}
		var afters []*bindings.State
		for i := range st.Prefixes {
			for _, s := range []bindings.Service{bindings.CDN, bindings.Spectrum, bindings.MagicTransit} {
				if s != st.Prefixes[i].Service {
					a := st.Clone()
					a.Prefixes[i].Service = s
					afters = append(afters, a)
				}
			}
			a := st.Clone()
			id := a.Prefixes[i].ID
			a.Prefixes = slices.Delete(a.Prefixes, i, i+1)
			a.Bindings = slices.DeleteFunc(a.Bindings, func(b bindings.Binding) bool { return b.PrefixID == id })
			afters = append(afters, a)
		}
		for i := range st.Bindings {
			for _, s := range []bindings.Service{bindings.CDN, bindings.Spectrum, bindings.MagicTransit} {
				if s != st.Bindings[i].Service {
					a := st.Clone()
					a.Bindings[i].Service = s
					afters = append(afters, a)
				}
			}
			a := st.Clone()
			a.Bindings = slices.Delete(a.Bindings, i, i+1)
			afters = append(afters, a)
		}
		for _, a := range afters {
			if bindings.Validate(a, svc, nil) != nil {
				continue
			}
			after := bindings.View{State: a, Services: svc}
			plans++
			changed += checkPlan(t, c.Name, before, after, append(slices.Clone(probes), probesOf(g, before, after)...))
		}
	}
	t.Logf("%d plans, %d changed destinations agree with the resolver", plans, changed)
	if plans < 20 || changed < 100 {
		t.Errorf("%d plans and %d changed destinations: too few to say much", plans, changed)
	}
}

// TestPlanRandom: random changes of random states, made through the
// manager's operations as dry runs: the dry run changes nothing, says what
// the real change then makes, and its plan holds to the resolver.
func TestPlanRandom(t *testing.T) {
	g := newGen(t)
	ctx := context.Background()
	plans, changed := 0, 0
	for range 60 {
		st, svc := g.state()
		for i := range st.Prefixes {
			st.Prefixes[i].Source = bindings.FromAPI
		}
		m := bindings.NewManager(&amender{}, nil)
		if err := m.Apply(st, svc, nil); err != nil {
			t.Fatal(err)
		}
		for range 10 {
			cur, _ := m.Current()
			if len(cur.Prefixes) == 0 {
				break
			}
			var d bindings.DryRun
			dctx := bindings.WithDryRun(ctx, &d)
			services := []bindings.Service{bindings.CDN, bindings.Spectrum, bindings.MagicTransit}
			svcID := services[g.r.IntN(3)]
			var do func(context.Context) error
			switch op := g.r.IntN(6); {
			case op == 0 || len(cur.Bindings) == 0:
				p := cur.Prefixes[g.r.IntN(len(cur.Prefixes))]
				do = func(ctx context.Context) error {
					_, err := m.MoveBinding(ctx, p.ID, p.DefaultBinding().ID, svcID)
					return err
				}
			case op == 1:
				b := cur.Bindings[g.r.IntN(len(cur.Bindings))]
				do = func(ctx context.Context) error {
					_, err := m.MoveBinding(ctx, b.PrefixID, b.ID, svcID)
					return err
				}
			case op == 2:
				b := cur.Bindings[g.r.IntN(len(cur.Bindings))]
				do = func(ctx context.Context) error {
					_, _, err := m.DeleteBinding(ctx, b.PrefixID, b.ID)
					return err
				}
			case op == 3:
				p := cur.Prefixes[g.r.IntN(len(cur.Prefixes))]
				cidr := g.sub(p.CIDR, 1, 10)
				var proto dispatch.Protocol
				var port uint16
				if g.r.IntN(2) == 0 {
					proto, port = g.proto(), g.pick(portPool)
				}
				do = func(ctx context.Context) error {
					_, err := m.CreateBinding(ctx, p.ID, cidr, proto, port, svcID)
					return err
				}
			case op == 4:
				var bs []bindings.Binding
				for range 1 + g.r.IntN(3) {
					p := cur.Prefixes[g.r.IntN(len(cur.Prefixes))]
					bs = append(bs, bindings.NewBinding(g.sub(p.CIDR, 1, 10), 0, 0, services[g.r.IntN(3)], bindings.FromAPI))
				}
				do = func(ctx context.Context) error {
					_, err := m.Batch(ctx, bs)
					return err
				}
			default:
				p := cur.Prefixes[g.r.IntN(len(cur.Prefixes))]
				do = func(ctx context.Context) error {
					_, err := m.DeletePrefix(ctx, p.ID, true)
					return err
				}
			}
			dryErr := do(dctx)
			if now, _ := m.Current(); !cmp.Equal(sortedState(cur), sortedState(now), stateCmp...) {
				t.Fatalf("a dry run changed the state")
			}
			err := do(ctx)
			if (err == nil) != (dryErr == nil) {
				t.Fatalf("the dry run answered %v, the change %v", dryErr, err)
			}
			if err != nil {
				continue
			}
			now, _ := m.Current()
			if diff := cmp.Diff(sortedState(d.After.State), sortedState(now), stateCmp...); diff != "" {
				t.Fatalf("the dry run's after is not what the change made (-dry +made):\n%s", diff)
			}
			plans++
			changed += checkPlan(t, "random", d.Before, d.After, probesOf(g, d.Before, d.After))
		}
	}
	t.Logf("%d plans, %d changed destinations agree with the resolver", plans, changed)
	if plans < 100 || changed < 1000 {
		t.Errorf("%d plans and %d changed destinations: too few to say much", plans, changed)
	}
}

// TestPlanWords: the plan of a move as an operator reads it.
func TestPlanWords(t *testing.T) {
	cdnPorts := bindings.CDNPorts{HTTP: []uint16{80}, HTTPS: []uint16{443}, HTTP3: true, HTTP3Port: 443}
	p := bindings.NewPrefix(netip.MustParsePrefix("127.1.1.0/24"), bindings.CDN, bindings.FromConfig)
	b := bindings.NewBinding(netip.MustParsePrefix("127.1.1.128/25"), 0, 0, bindings.CDN, bindings.FromAPI)
	svc := bindings.Services{CDN: cdnPorts, Apps: []bindings.App{
		{Name: "ssh", Protocol: dispatch.TCP, Edge: netip.MustParsePrefix("127.1.1.192/26"), Ports: dispatch.PortRange{First: 22, Last: 22}},
	}}
	before := &bindings.State{Prefixes: []bindings.Prefix{p}, Bindings: []bindings.Binding{b}}
	before.AssignPrefixes()
	after := before.Clone()
	after.Bindings[0].Service = bindings.Spectrum
	bv, av := bindings.View{State: before, Services: svc}, bindings.View{State: after, Services: svc}
	var got []string
	for _, r := range bindings.Plan(bv, av, bindings.Changed(bv, av)) {
		got = append(got, r.String())
	}
	want := []string{
		"127.1.1.128/25 tcp/80, tcp/443, udp/443: cdn → refuse (no spectrum app)",
		`127.1.1.192/26 tcp/22: refuse (cdn does not serve it) → spectrum (app "ssh")`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// smallPlane is a data plane of a binding capacity of two.
type smallPlane struct{}

func (smallPlane) BindingCapacity() int { return 2 }

func (smallPlane) Replace(t *dispatch.Table) error {
	if len(t.Bindings) > 2 {
		return fmt.Errorf("%w: %w: %d bindings exceed the binding capacity of 2", dispatch.ErrInvalidTable, dispatch.ErrCapacity, len(t.Bindings))
	}
	return nil
}

// TestCapacityRefused: a change past the data plane's capacity is a
// conflict naming the key that sets it, in a dry run as in the change.
func TestCapacityRefused(t *testing.T) {
	m := bindings.NewManager(smallPlane{}, nil)
	p := bindings.NewPrefix(netip.MustParsePrefix("192.0.2.0/24"), bindings.CDN, bindings.FromConfig)
	if err := m.Apply(&bindings.State{Prefixes: []bindings.Prefix{p}}, bindings.Services{CDN: bindings.CDNPorts{HTTP: []uint16{80}}}, nil); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := m.CreateBinding(ctx, p.ID, netip.MustParsePrefix("192.0.2.0/25"), 0, 0, bindings.CDN); err != nil {
		t.Fatal(err)
	}
	var d bindings.DryRun
	for _, ctx := range []context.Context{bindings.WithDryRun(ctx, &d), ctx} {
		_, err := m.CreateBinding(ctx, p.ID, netip.MustParsePrefix("192.0.2.128/25"), 0, 0, bindings.CDN)
		var e *bindings.Error
		if !errors.As(err, &e) || e.Kind != bindings.KindConflict || e.Field != "dispatch.binding_capacity" || !strings.Contains(err.Error(), "capacity of 2") {
			t.Fatalf("past the capacity: %v", err)
		}
	}
}

// BenchmarkPlanMovePrefix: the plan of moving a prefix's default binding
// with n bindings inside (the widest plan a single change makes).
func BenchmarkPlanMovePrefix(b *testing.B) {
	for _, n := range []int{1000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			p := bindings.NewPrefix(netip.MustParsePrefix("10.0.0.0/8"), bindings.CDN, bindings.FromAPI)
			st := &bindings.State{Prefixes: []bindings.Prefix{p}}
			for i := range n {
				a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
				st.Bindings = append(st.Bindings, bindings.NewBinding(netip.PrefixFrom(a, 32), 0, 0, bindings.Spectrum, bindings.FromAPI))
			}
			st.AssignPrefixes()
			svc := bindings.Services{CDN: bindings.CDNPorts{HTTP: []uint16{80}, HTTPS: []uint16{443}, HTTP3: true, HTTP3Port: 443}}
			after := st.Clone()
			after.Prefixes[0].Service = bindings.MagicTransit
			bv, av := bindings.View{State: st, Services: svc}, bindings.View{State: after, Services: svc}
			for b.Loop() {
				if rows := bindings.Plan(bv, av, bindings.Changed(bv, av)); len(rows) == 0 {
					b.Fatal("no rows")
				}
			}
		})
	}
}
