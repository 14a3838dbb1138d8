package bindings

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/edgeproxy/edgeproxy/dispatch"
)

// A plan says what a change does to traffic before it is made: for the
// destinations the change can reach, every (protocol, port) whose outcome
// differs, grouped into rows of address ranges and port sets that change
// the same way. It is a pure function of the resolver before and after.

// View is what decides every destination's outcome: a binding state and
// what the services serve.
type View struct {
	State    *State
	Services Services
}

// Effect is the outcome a destination has and what decides it.
type Effect struct {
	Outcome Outcome
	Service Service  // "" outside every prefix
	Binding *Binding // the deciding binding; nil outside every prefix
	App     string   // the spectrum app that serves it
}

// EffectOf is the effect of a resolution.
func EffectOf(r Resolution) Effect {
	e := Effect{Outcome: r.Outcome, Service: r.Service, Binding: r.Binding}
	if r.App != nil {
		e.App = r.App.Name
	}
	return e
}

// Same reports whether traffic fares the same under e and f: the same
// outcome, and for spectrum the same app.
func (e Effect) Same(f Effect) bool { return e.Outcome == f.Outcome && e.App == f.App }

func (e Effect) key() string {
	id := ""
	if e.Binding != nil {
		id = e.Binding.ID
	}
	return string(e.Outcome) + "|" + string(e.Service) + "|" + id + "|" + e.App
}

// String says the effect in a few words: "cdn", `spectrum (app "ssh")`,
// "refuse (no spectrum app)".
func (e Effect) String() string {
	switch e.Outcome {
	case OutcomeSpectrum:
		return fmt.Sprintf("spectrum (app %q)", e.App)
	case OutcomeRefuse:
		if e.Service == Spectrum {
			return "refuse (no spectrum app)"
		}
		return "refuse (" + string(e.Service) + " does not serve it)"
	case OutcomeKernel:
		if e.Service == "" {
			return "kernel (outside every prefix)"
		}
		return "kernel (" + string(e.Service) + ")"
	}
	return string(e.Outcome)
}

// PortSpan is a protocol's ports First through Last.
type PortSpan struct {
	Protocol    dispatch.Protocol
	First, Last uint16
}

// String is "tcp/443" or "tcp/1-79".
func (s PortSpan) String() string {
	if s.First == s.Last {
		return fmt.Sprintf("%s/%d", s.Protocol, s.First)
	}
	return fmt.Sprintf("%s/%d-%d", s.Protocol, s.First, s.Last)
}

// PlanRow is a set of destinations whose outcome a change changes the same
// way: every address of Ranges on every port of Ports goes from Before to
// After.
type PlanRow struct {
	Ranges        []netip.Prefix
	Ports         []PortSpan
	Before, After Effect
}

// maxRanges is how many ranges a row's String names.
const maxRanges = 4

// String is the row in one line:
// "127.1.1.128/25 tcp/80, udp/443: cdn → refuse (no spectrum app)".
func (r PlanRow) String() string {
	var b strings.Builder
	for i, p := range r.Ranges {
		if i == maxRanges {
			fmt.Fprintf(&b, " and %d more", len(r.Ranges)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(p.String())
	}
	b.WriteString(" ")
	for i, s := range r.Ports {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(s.String())
	}
	fmt.Fprintf(&b, ": %s → %s", r.Before, r.After)
	return b.String()
}

// Covers reports whether the row holds proto to addr and port.
func (r PlanRow) Covers(proto dispatch.Protocol, addr netip.Addr, port uint16) bool {
	in := false
	for _, p := range r.Ranges {
		if p.Contains(addr) {
			in = true
			break
		}
	}
	if !in {
		return false
	}
	for _, s := range r.Ports {
		if s.Protocol == proto && s.First <= port && port <= s.Last {
			return true
		}
	}
	return false
}

// Changed returns the address ranges where a change from before to after
// can change an outcome: the CIDR of every item (prefix, binding, app
// edge) added, removed or given another service. When the cdn's ports
// differ, every prefix of both.
func Changed(before, after View) []netip.Prefix {
	var out []netip.Prefix
	if !slices.Equal(before.Services.CDN.HTTP, after.Services.CDN.HTTP) || !slices.Equal(before.Services.CDN.HTTPS, after.Services.CDN.HTTPS) ||
		before.Services.CDN.HTTP3 != after.Services.CDN.HTTP3 || before.Services.CDN.HTTP3Port != after.Services.CDN.HTTP3Port {
		for _, v := range []View{before, after} {
			for _, p := range v.State.Prefixes {
				out = append(out, p.CIDR)
			}
		}
		return outermost(out)
	}
	items := func(v View) map[string]netip.Prefix {
		m := map[string]netip.Prefix{}
		for _, b := range v.State.AllBindings() {
			m[b.ID+"|"+string(b.Service)] = b.CIDR
		}
		for _, a := range v.Services.Apps {
			m[a.String()] = a.Edge
		}
		return m
	}
	b, a := items(before), items(after)
	for k, p := range b {
		if _, ok := a[k]; !ok {
			out = append(out, p)
		}
	}
	for k, p := range a {
		if _, ok := b[k]; !ok {
			out = append(out, p)
		}
	}
	return outermost(out)
}

// outermost returns ps without duplicates and without the prefixes inside
// another of them, in address order.
func outermost(ps []netip.Prefix) []netip.Prefix {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, comparePrefix)
	out := ps[:0]
	for _, p := range ps {
		if n := len(out); n > 0 && covers(out[n-1], p) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// covers reports whether p holds all of q.
func covers(p, q netip.Prefix) bool {
	return p.Addr().Is4() == q.Addr().Is4() && p.Bits() <= q.Bits() && p.Contains(q.Addr())
}

// Plan returns, for the destinations inside scope, every change of outcome
// from before to after, as rows in address order. The destinations are cut
// into regions where the items (prefixes, bindings, app edges) that hold
// them are the same, and each region's ports into spans where no item's
// port or range begins or ends: within one, every destination has the same
// outcome, so one of each is asked.
func Plan(before, after View, scope []netip.Prefix) []PlanRow {
	p := planner{before: before, after: after, rows: map[string]*PlanRow{}}
	for _, s := range outermost(scope) {
		p.scope(s)
	}
	rows := make([]PlanRow, 0, len(p.order))
	for _, k := range p.order {
		row := *p.rows[k]
		row.Ranges = aggregate(row.Ranges)
		rows = append(rows, row)
	}
	slices.SortStableFunc(rows, func(a, b PlanRow) int {
		return cmp.Or(comparePrefix(a.Ranges[0], b.Ranges[0]), cmp.Compare(a.Ports[0].Protocol, b.Ports[0].Protocol), cmp.Compare(a.Ports[0].First, b.Ports[0].First))
	})
	return rows
}

type planner struct {
	before, after View
	rows          map[string]*PlanRow
	order         []string
}

// held are the items of one view whose CIDR is one prefix.
type held struct {
	prefixes []Prefix
	bindings []Binding
	apps     []App
}

func (h *held) add(o held) {
	h.prefixes = append(h.prefixes, o.prefixes...)
	h.bindings = append(h.bindings, o.bindings...)
	h.apps = append(h.apps, o.apps...)
}

// view is the items of h as a view with v's cdn ports.
func (h held) view(v View) View {
	svc := v.Services
	svc.Apps = h.apps
	return View{State: &State{Prefixes: h.prefixes, Bindings: h.bindings}, Services: svc}
}

// node is a CIDR inside the scope where some item begins, with the items
// of each view whose CIDR it is.
type node struct {
	cidr          netip.Prefix
	before, after held
	children      []*node
}

// split files v's items: those that hold all of s into outer, those inside
// s under the node of their CIDR.
func split(v View, s netip.Prefix, outer *held, nodes map[netip.Prefix]*node, side func(*node) *held) {
	at := func(p netip.Prefix) *held {
		n, ok := nodes[p]
		if !ok {
			n = &node{cidr: p}
			nodes[p] = n
		}
		return side(n)
	}
	file(v.State.Prefixes, func(p Prefix) netip.Prefix { return p.CIDR }, s, &outer.prefixes, func(h *held) *[]Prefix { return &h.prefixes }, at)
	file(v.State.Bindings, func(b Binding) netip.Prefix { return b.CIDR }, s, &outer.bindings, func(h *held) *[]Binding { return &h.bindings }, at)
	file(v.Services.Apps, func(a App) netip.Prefix { return a.Edge }, s, &outer.apps, func(h *held) *[]App { return &h.apps }, at)
}

// file appends each item whose CIDR holds all of s to outer, and each
// inside s to the list of its CIDR's node.
func file[T any](items []T, cidr func(T) netip.Prefix, s netip.Prefix, outer *[]T, list func(*held) *[]T, at func(netip.Prefix) *held) {
	for _, it := range items {
		switch c := cidr(it); {
		case covers(c, s):
			*outer = append(*outer, it)
		case covers(s, c):
			l := list(at(c))
			*l = append(*l, it)
		}
	}
}

func (p *planner) scope(s netip.Prefix) {
	var outerB, outerA held
	nodes := map[netip.Prefix]*node{s: {cidr: s}}
	split(p.before, s, &outerB, nodes, func(n *node) *held { return &n.before })
	split(p.after, s, &outerA, nodes, func(n *node) *held { return &n.after })
	root := nodes[s]
	root.before.add(outerB)
	root.after.add(outerA)

	// The nodes as a tree: in address order a prefix comes before the
	// prefixes inside it, so the chain of holders is a stack.
	sorted := make([]*node, 0, len(nodes))
	for _, n := range nodes {
		sorted = append(sorted, n)
	}
	slices.SortFunc(sorted, func(a, b *node) int { return comparePrefix(a.cidr, b.cidr) })
	stack := []*node{}
	for _, n := range sorted {
		for len(stack) > 0 && !covers(stack[len(stack)-1].cidr, n.cidr) {
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 {
			top := stack[len(stack)-1]
			top.children = append(top.children, n)
		}
		stack = append(stack, n)
	}
	p.walk(root, held{}, held{})
}

// walk plans n's region (n less its children) with the items of the nodes
// above it, then its children.
func (p *planner) walk(n *node, b, a held) {
	b.add(n.before)
	a.add(n.after)
	holes := make([]netip.Prefix, len(n.children))
	for i, c := range n.children {
		holes[i] = c.cidr
	}
	if region := subtract(n.cidr, holes); len(region) > 0 {
		p.region(region, b.view(p.before), a.view(p.after))
	}
	for _, c := range n.children {
		// Each child gets its own copy of the chain.
		p.walk(c, held{slices.Clip(b.prefixes), slices.Clip(b.bindings), slices.Clip(b.apps)},
			held{slices.Clip(a.prefixes), slices.Clip(a.bindings), slices.Clip(a.apps)})
	}
}

// region plans one region, whose destinations are held by the items of
// before and after.
func (p *planner) region(region []netip.Prefix, before, after View) {
	addr := region[0].Addr()
	type change struct {
		before, after Effect
		ports         []PortSpan
	}
	var changes []*change
	byKey := map[string]*change{}
	for _, proto := range []dispatch.Protocol{dispatch.TCP, dispatch.UDP} {
		edges := portEdges(proto, before, after)
		for i := 0; i+1 < len(edges); i++ {
			first, last := uint16(edges[i]), uint16(edges[i+1]-1)
			eb := EffectOf(resolveQuiet(before.State, before.Services, proto, addr, first))
			ea := EffectOf(resolveQuiet(after.State, after.Services, proto, addr, first))
			if eb.Same(ea) {
				continue
			}
			k := eb.key() + "→" + ea.key()
			c, ok := byKey[k]
			if !ok {
				c = &change{before: eb, after: ea}
				byKey[k] = c
				changes = append(changes, c)
			}
			if n := len(c.ports); n > 0 && c.ports[n-1].Protocol == proto && int(c.ports[n-1].Last)+1 == int(first) {
				c.ports[n-1].Last = last
			} else {
				c.ports = append(c.ports, PortSpan{proto, first, last})
			}
		}
	}
	// Regions that change the same way on the same ports share a row.
	for _, c := range changes {
		var k strings.Builder
		k.WriteString(c.before.key() + "→" + c.after.key())
		for _, s := range c.ports {
			k.WriteString(" " + s.String())
		}
		row, ok := p.rows[k.String()]
		if !ok {
			row = &PlanRow{Ports: c.ports, Before: c.before, After: c.after}
			p.rows[k.String()] = row
			p.order = append(p.order, k.String())
		}
		row.Ranges = append(row.Ranges, region...)
	}
}

// portEdges returns the first port of every span of proto's ports 1-65535
// where no item of either view begins or ends, and 65536 last.
func portEdges(proto dispatch.Protocol, views ...View) []int {
	edges := []int{1, 1 << 16}
	mark := func(first, last uint16) { edges = append(edges, int(first), int(last)+1) }
	for _, v := range views {
		cdn := v.Services.CDN
		if proto == dispatch.TCP {
			for _, port := range slices.Concat(cdn.HTTP, cdn.HTTPS) {
				mark(port, port)
			}
		} else if cdn.HTTP3 {
			mark(cdn.HTTP3Port, cdn.HTTP3Port)
		}
		for _, b := range v.State.Bindings {
			if b.Protocol == proto {
				mark(b.Port, b.Port)
			}
		}
		for _, a := range v.Services.Apps {
			if a.Protocol == proto {
				mark(a.Ports.First, a.Ports.Last)
			}
		}
	}
	slices.Sort(edges)
	edges = slices.Compact(edges)
	// Port 0 is no destination.
	if edges[0] == 0 {
		edges = edges[1:]
	}
	return edges
}

// aggregate returns disjoint prefixes ps in address order, each two halves
// of a prefix joined into it.
func aggregate(ps []netip.Prefix) []netip.Prefix {
	slices.SortFunc(ps, comparePrefix)
	out := ps[:0]
	for _, p := range ps {
		out = append(out, p)
		for n := len(out); n >= 2; n = len(out) {
			a, b := out[n-2], out[n-1]
			if a.Bits() != b.Bits() || a.Bits() == 0 {
				break
			}
			parent := netip.PrefixFrom(a.Addr(), a.Bits()-1).Masked()
			if lo, hi := halves(parent); lo != a || hi != b {
				break
			}
			out = append(out[:n-2], parent)
		}
	}
	return out
}

// subtract returns the addresses of p outside holes (prefixes inside p,
// none inside another) as CIDRs in address order.
func subtract(p netip.Prefix, holes []netip.Prefix) []netip.Prefix {
	if len(holes) == 0 {
		return []netip.Prefix{p}
	}
	for _, h := range holes {
		if covers(h, p) {
			return nil
		}
	}
	lo, hi := halves(p)
	var inLo, inHi []netip.Prefix
	for _, h := range holes {
		if covers(lo, h) {
			inLo = append(inLo, h)
		} else {
			inHi = append(inHi, h)
		}
	}
	return append(subtract(lo, inLo), subtract(hi, inHi)...)
}
