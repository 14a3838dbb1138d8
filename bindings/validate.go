package bindings

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/edgeproxy/edgeproxy/dispatch"
)

// Guard is an address that no prefix may contain, with what it is: an
// operator must not be able to steer the admin API, an origin or the host's
// own addresses away. Validate knows no sockets and no interfaces: callers
// pass the addresses in (the configuration's, and the server's interface
// addresses). Loopback, unspecified, link-local and multicast addresses
// are refused whatever the guards.
type Guard struct {
	Addr netip.Addr
	What string // e.g. "the admin listen address 127.0.0.1:9180"
}

// Longest prefixes that may be onboarded.
const (
	MaxPrefixBits4 = 24
	MaxPrefixBits6 = 48
)

// Shortest prefixes that may be onboarded: anything shorter is a typo that
// would steer a large part of the internet (0.0.0.0/1, 2000::/3). /19 is
// the shortest IPv6 allocation a regional registry makes to an operator.
const (
	MinPrefixBits4 = 8
	MinPrefixBits6 = 19
)

// reserved are addresses no prefix may cover on any host, whatever it is
// configured with: steering them would cut the host off from its own
// services (loopback, the unspecified address that wildcard sockets
// answer on) or from its network (link-local, multicast).
var reserved = []struct {
	p    netip.Prefix
	what string
}{
	{netip.MustParsePrefix("0.0.0.0/32"), "the unspecified address"},
	{netip.MustParsePrefix("127.0.0.1/32"), "the loopback address"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local addresses"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast addresses"},
	{netip.MustParsePrefix("255.255.255.255/32"), "the broadcast address"},
	{netip.MustParsePrefix("::/128"), "the unspecified address"},
	{netip.MustParsePrefix("::1/128"), "the loopback address"},
	{netip.MustParsePrefix("fe80::/10"), "link-local addresses"},
	{netip.MustParsePrefix("ff00::/8"), "multicast addresses"},
}

// Validate checks a whole candidate state against what the services serve
// and the guarded addresses. It is a pure function: the configuration
// loader, reload and the admin API share it. It returns an *Error whose
// Problems name every offending item and the rule it breaks, or nil.
func Validate(st *State, svc Services, guards []Guard) error {
	var e errList
	validateServices(&e, svc)

	idx := newIndex(st)
	for i, p := range st.Prefixes {
		if j := idx.prefixAt[p.CIDR]; j != i {
			e.conflict(prefixItem(p), "cidr", "duplicate of %s", describePrefix(st.Prefixes[j]))
			continue
		}
		checkPrefix(&e, p, idx, guards)
	}

	type bkey struct {
		cidr  netip.Prefix
		proto dispatch.Protocol
		port  uint16
	}
	seen := make(map[bkey]int, len(st.Bindings))
	for i, b := range st.Bindings {
		k := bkey{b.CIDR, b.Protocol, b.Port}
		if j, dup := seen[k]; dup {
			e.conflict(bindingItem(b), "cidr", "duplicate of %s", describeBinding(st.Bindings[j]))
			continue
		}
		seen[k] = i
		checkBinding(&e, b, idx, svc)
	}
	return e.err()
}

// checkPrefix checks the rules of one prefix: its CIDR and length, its
// service, that no other prefix of idx contains it, and the guards. (A
// prefix that contains another is reported on the other.)
func checkPrefix(e *errList, p Prefix, idx *index, guards []Guard) {
	item := prefixItem(p)
	if err := checkCIDR(p.CIDR); err != nil {
		e.add(item, "cidr", "%v", err)
		return
	}
	switch {
	case p.CIDR.Addr().Is4() && p.CIDR.Bits() > MaxPrefixBits4:
		e.add(item, "cidr", "an IPv4 prefix may be at most /%d long", MaxPrefixBits4)
	case p.CIDR.Addr().Is6() && p.CIDR.Bits() > MaxPrefixBits6:
		e.add(item, "cidr", "an IPv6 prefix may be at most /%d long", MaxPrefixBits6)
	case p.CIDR.Addr().Is4() && p.CIDR.Bits() < MinPrefixBits4:
		e.add(item, "cidr", "an IPv4 prefix must be at least /%d long: a shorter one steers a large part of the internet", MinPrefixBits4)
	case p.CIDR.Addr().Is6() && p.CIDR.Bits() < MinPrefixBits6:
		e.add(item, "cidr", "an IPv6 prefix must be at least /%d long: a shorter one steers a large part of the internet", MinPrefixBits6)
	}
	for _, r := range reserved {
		if !p.CIDR.Overlaps(r.p) {
			continue
		}
		if r.p.IsSingleIP() {
			e.add(item, "cidr", "contains %s (%s): steering it would cut the host off from its own services", r.p.Addr(), r.what)
		} else {
			e.add(item, "cidr", "overlaps %s (%s): steering them would cut the host off from its network", r.p, r.what)
		}
	}
	if !p.Service.Known() {
		e.add(item, "service_id", "%q is not a service (want cdn, spectrum or magic-transit)", p.Service)
	}
	if q, ok := idx.containing(p.CIDR, p.CIDR.Bits()-1); ok {
		e.conflict(item, "cidr", "overlaps %s, which contains it", describePrefix(q))
	}
	for _, g := range guards {
		if isReserved(g.Addr.Unmap()) {
			continue // reported above, whatever the guard says it is
		}
		if p.CIDR.Contains(g.Addr.Unmap()) {
			e.add(item, "cidr", "contains %s (%s): steering it would cut edgeproxy off", g.Addr, g.What)
		}
	}
}

func isReserved(a netip.Addr) bool {
	for _, r := range reserved {
		if r.p.Contains(a) {
			return true
		}
	}
	return false
}

// checkBinding checks the rules of one binding, but for duplicates: its
// CIDR, its service, that it sits inside a prefix of idx without repeating
// the prefix's default, and that its service serves its port.
func checkBinding(e *errList, b Binding, idx *index, svc Services) {
	item := bindingItem(b)
	if err := checkCIDR(b.CIDR); err != nil {
		e.add(item, "cidr", "%v", err)
		return
	}
	switch {
	case !b.Service.Known():
		e.add(item, "service_id", "%q is not a service (want cdn, spectrum or magic-transit)", b.Service)
	case b.Service == MagicTransit:
		e.add(item, "service_id", "magic-transit can only be the default service of a prefix, not a binding inside one")
	}
	p, ok := idx.containing(b.CIDR, b.CIDR.Bits())
	switch {
	case !ok:
		e.add(item, "cidr", "is not inside any onboarded prefix")
	case b.PrefixID != "" && b.PrefixID != p.ID:
		e.add(item, "prefix_id", "is inside %s, not prefix %s", describePrefix(p), b.PrefixID)
	case p.CIDR == b.CIDR && !b.PortScoped():
		e.conflict(item, "cidr", "duplicate of the default binding of %s (change the prefix's service instead)", describePrefix(p))
	}
	var serr *dispatch.ScopeError
	if errors.As(dispatch.CheckScope(b.Protocol, int(b.Port)), &serr) {
		e.add(item, serr.Field, "%s", serr.Reason)
		return
	}
	if !b.PortScoped() {
		return
	}
	switch b.Service {
	case CDN:
		if !svc.CDN.Serves(b.Protocol, b.Port) {
			e.add(item, "port", "cdn does not serve %s/%d (it serves %s)", b.Protocol, b.Port, svc.CDN)
		}
	case Spectrum:
		if !appsCover(svc.Apps, b.Protocol, b.Port, b.CIDR) {
			e.add(item, "port", "no spectrum app serves %s/%d on the whole of %s", b.Protocol, b.Port, b.CIDR)
		}
	}
}

// validateServices checks the cdn's ports and the spectrum apps.
func validateServices(e *errList, svc Services) {
	validateCDNPorts(e, svc.CDN)
	validateApps(e, svc.Apps)
}

// validateCDNPorts checks the cdn's ports: real, each in one list, and the
// HTTP/3 port one of the HTTPS ports.
func validateCDNPorts(e *errList, cdn CDNPorts) {
	add := func(field, format string, args ...any) {
		e.addKind(KindInvalid, "cdn", field, format, args...)
	}
	seen := map[uint16]string{}
	for _, ps := range []struct {
		field string
		ports []uint16
	}{{"http_ports", cdn.HTTP}, {"https_ports", cdn.HTTPS}} {
		for _, p := range ps.ports {
			if p == 0 {
				add(ps.field, "0 is not a port")
			} else if other, dup := seen[p]; dup {
				add(ps.field, "port %d is already in %s", p, other)
			}
			seen[p] = ps.field
		}
	}
	if cdn.HTTP3 && !slices.Contains(cdn.HTTPS, cdn.HTTP3Port) {
		add("http3_port", "%d is not one of https_ports %v", cdn.HTTP3Port, cdn.HTTPS)
	}
}

// validateApps checks the spectrum apps: named once each, an edge, a
// protocol and a port range, and no two of one class overlapping on one edge.
func validateApps(e *errList, apps []App) {
	names := map[string]bool{}
	for i, a := range apps {
		item := describeApp(a)
		add := func(field, format string, args ...any) {
			e.addKind(KindInvalid, item, field, format, args...)
		}
		switch {
		case a.Name == "":
			add("name", "an app needs a name")
		case names[a.Name]:
			add("name", "another app is named %q", a.Name)
		}
		names[a.Name] = true
		if err := checkCIDR(a.Edge); err != nil {
			add("edge", "%v", err)
			continue
		}
		if a.Protocol != dispatch.TCP && a.Protocol != dispatch.UDP {
			add("protocol", "%s is neither tcp nor udp", a.Protocol)
			continue
		}
		if r := a.Ports; !r.Valid() {
			add("ports", "%d-%d is not a port range", r.First, r.Last)
			continue
		}
		for _, o := range apps[:i] {
			if o.Protocol == a.Protocol && o.Edge == a.Edge && sameClass(o.Ports, a.Ports) && o.Ports.Overlaps(a.Ports) {
				add("ports", "overlap those of %s on the same edge: which app serves a port must be clear", describeApp(o))
			}
		}
	}
}

func sameClass(a, b dispatch.PortRange) bool { return a.Specificity() == b.Specificity() }

// appsCover reports whether apps serve proto/port on every address of cidr.
func appsCover(apps []App, proto dispatch.Protocol, port uint16, cidr netip.Prefix) bool {
	var edges []netip.Prefix
	for _, a := range apps {
		if a.Protocol == proto && a.Ports.Contains(port) && a.Edge.Addr().Is4() == cidr.Addr().Is4() && a.Edge.Overlaps(cidr) {
			edges = append(edges, a.Edge)
		}
	}
	return covered(cidr, edges)
}

// covered reports whether the union of edges covers c.
func covered(c netip.Prefix, edges []netip.Prefix) bool {
	inside := false
	for _, e := range edges {
		if e.Bits() <= c.Bits() && e.Contains(c.Addr()) {
			return true
		}
		if e.Bits() > c.Bits() && c.Contains(e.Addr()) {
			inside = true
		}
	}
	if !inside || c.Bits() == c.Addr().BitLen() {
		return false
	}
	lo, hi := halves(c)
	return covered(lo, edges) && covered(hi, edges)
}

// halves splits c into its two halves.
func halves(c netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := c.Bits() + 1
	lo := netip.PrefixFrom(c.Addr(), bits)
	b := c.Addr().AsSlice()
	b[c.Bits()/8] |= 1 << (7 - c.Bits()%8)
	a, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(a, bits)
}

func checkCIDR(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return errors.New("no CIDR")
	case p.Addr().Zone() != "":
		return fmt.Errorf("%s has a zone", p)
	case p.Addr().Is4In6():
		return fmt.Errorf("%s is an IPv4-mapped IPv6 prefix: write it as IPv4", p)
	case p.Masked() != p:
		return fmt.Errorf("%s has host bits set (did you mean %s?)", p, p.Masked())
	}
	return nil
}

type prefixItem Prefix

func (p prefixItem) String() string { return describePrefix(Prefix(p)) }

type bindingItem Binding

func (b bindingItem) String() string { return describeBinding(Binding(b)) }

func describePrefix(p Prefix) string {
	return fmt.Sprintf("prefix %s (%s, from %s)", p.CIDR, p.Service, sourceOr(p.Source))
}

func describeBinding(b Binding) string {
	if b.PortScoped() {
		return fmt.Sprintf("binding %s %s/%d -> %s (from %s)", b.CIDR, b.Protocol, b.Port, b.Service, sourceOr(b.Source))
	}
	return fmt.Sprintf("binding %s -> %s (from %s)", b.CIDR, b.Service, sourceOr(b.Source))
}

func describeApp(a App) string { return fmt.Sprintf("spectrum app %q", a.Name) }

func sourceOr(s Source) string {
	if s == "" {
		return "?"
	}
	return string(s)
}

func (c CDNPorts) String() string {
	var parts []string
	for _, p := range c.HTTP {
		parts = append(parts, fmt.Sprintf("tcp/%d", p))
	}
	for _, p := range c.HTTPS {
		parts = append(parts, fmt.Sprintf("tcp/%d", p))
	}
	if c.HTTP3 {
		parts = append(parts, fmt.Sprintf("udp/%d", c.HTTP3Port))
	}
	if len(parts) == 0 {
		return "no ports"
	}
	return strings.Join(parts, ", ")
}

// index finds prefixes by CIDR and by containment.
type index struct {
	byCIDR   map[netip.Prefix]Prefix
	prefixAt map[netip.Prefix]int // the first prefix with that CIDR
	count4   [33]int              // prefixes per length, so that containing
	count6   [129]int             // looks only where there are some
}

func newIndex(st *State) *index {
	idx := &index{byCIDR: make(map[netip.Prefix]Prefix, len(st.Prefixes)), prefixAt: make(map[netip.Prefix]int, len(st.Prefixes))}
	for i, p := range st.Prefixes {
		idx.add(p, i)
	}
	return idx
}

// add indexes p, the i-th prefix; a second prefix with the same CIDR is
// counted but not found.
func (idx *index) add(p Prefix, i int) {
	if !p.CIDR.IsValid() {
		return
	}
	if _, ok := idx.byCIDR[p.CIDR]; !ok {
		idx.byCIDR[p.CIDR] = p
		idx.prefixAt[p.CIDR] = i
	}
	idx.counts(p.CIDR)[p.CIDR.Bits()]++
}

// remove forgets p.
func (idx *index) remove(p Prefix) {
	delete(idx.byCIDR, p.CIDR)
	delete(idx.prefixAt, p.CIDR)
	idx.counts(p.CIDR)[p.CIDR.Bits()]--
}

func (idx *index) counts(c netip.Prefix) []int {
	if c.Addr().Is4() {
		return idx.count4[:]
	}
	return idx.count6[:]
}

// containing returns the longest prefix at most maxBits long that contains c.
func (idx *index) containing(c netip.Prefix, maxBits int) (Prefix, bool) {
	counts := idx.counts(c)
	for bits := min(maxBits, c.Bits(), len(counts)-1); bits >= 0; bits-- {
		if counts[bits] == 0 {
			continue
		}
		if p, ok := idx.byCIDR[netip.PrefixFrom(c.Addr(), bits).Masked()]; ok {
			return p, true
		}
	}
	return Prefix{}, false
}
