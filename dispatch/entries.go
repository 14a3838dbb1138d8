package dispatch

import (
	"encoding/binary"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// entries is one generation of the program's tables as map entries. Keys carry
// generation 0; the writer sets the generation it writes to. portinfo and
// owners hold only non-zero values (absent means zero).
type entries struct {
	bind4    map[bpf.DispatchBind4Key]bpf.DispatchBindVal
	bind6    map[bpf.DispatchBind6Key]bpf.DispatchBindVal
	app4     map[bpf.DispatchApp4Key]bpf.DispatchAppVal
	app6     map[bpf.DispatchApp6Key]bpf.DispatchAppVal
	ports    map[bpf.DispatchPortKey]uint32
	portinfo map[uint32]uint32 // portIndex -> flags | class<<piClassShift
	owners   map[uint32]uint32 // owner -> kind

	// portScoped counts the port-scoped bindings per portinfo index, so
	// that the flag can be cleared when the last one goes.
	portScoped map[uint32]int
}

func newEntries() *entries {
	return &entries{
		bind4:      map[bpf.DispatchBind4Key]bpf.DispatchBindVal{},
		bind6:      map[bpf.DispatchBind6Key]bpf.DispatchBindVal{},
		app4:       map[bpf.DispatchApp4Key]bpf.DispatchAppVal{},
		app6:       map[bpf.DispatchApp6Key]bpf.DispatchAppVal{},
		ports:      map[bpf.DispatchPortKey]uint32{},
		portinfo:   map[uint32]uint32{},
		owners:     map[uint32]uint32{},
		portScoped: map[uint32]int{},
	}
}

// clone returns a deep copy of e.
func (e *entries) clone() *entries {
	return &entries{
		bind4: maps.Clone(e.bind4), bind6: maps.Clone(e.bind6),
		app4: maps.Clone(e.app4), app6: maps.Clone(e.app6),
		ports: maps.Clone(e.ports), portinfo: maps.Clone(e.portinfo),
		owners: maps.Clone(e.owners), portScoped: maps.Clone(e.portScoped),
	}
}

// ip4 returns the address as the uint32 whose memory holds it in network
// byte order, as the program reads ctx->local_ip4.
func ip4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func ip6(a netip.Addr) (out [4]uint32) {
	b := a.As16()
	for i := range out {
		out[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return out
}

// bindKey is a binding's key: in bind4 for an IPv4 prefix, else in bind6.
type bindKey struct {
	v4 bool
	k4 bpf.DispatchBind4Key
	k6 bpf.DispatchBind6Key
}

// bindKeyOf is the one constructor of binding keys (of generation 0).
func bindKeyOf(b Binding) bindKey {
	plen, addr := bindKeyBits+uint32(b.Prefix.Bits()), b.Prefix.Addr()
	if addr.Is4() {
		return bindKey{v4: true, k4: bpf.DispatchBind4Key{Prefixlen: plen, Proto: uint8(b.Protocol), Port: b.Port, Addr: ip4(addr)}}
	}
	return bindKey{k6: bpf.DispatchBind6Key{Prefixlen: plen, Proto: uint8(b.Protocol), Port: b.Port, Addr: ip6(addr)}}
}

// bindVal is b's value in bind4 or bind6.
func bindVal(b Binding) *bpf.DispatchBindVal {
	return &bpf.DispatchBindVal{Owner: uint32(b.Owner), Plen: uint32(b.Prefix.Bits())}
}

// portKeyOf is the one constructor of keys of the ports map (of generation 0).
func portKeyOf(o Owner, pp ProtoPort) bpf.DispatchPortKey {
	return bpf.DispatchPortKey{Owner: uint8(o), Proto: uint8(pp.Protocol), Port: uint32(pp.Port)}
}

// putApp is the one constructor of app keys (of generation 0): it puts a's
// entry of kind for port (a port, a range class, or 0 for any port).
func (e *entries) putApp(a App, kind bpf.DispatchAppKind, port uint32, v bpf.DispatchAppVal) {
	plen, addr := appKeyBits+uint32(a.Edge.Bits()), a.Edge.Addr()
	if addr.Is4() {
		e.app4[bpf.DispatchApp4Key{Prefixlen: plen, Proto: uint8(a.Protocol), Kind: uint8(kind), Owner: uint8(a.Owner), Port: port, Addr: ip4(addr)}] = v
		return
	}
	e.app6[bpf.DispatchApp6Key{Prefixlen: plen, Proto: uint8(a.Protocol), Kind: uint8(kind), Owner: uint8(a.Owner), Port: port, Addr: ip6(addr)}] = v
}

// hasBind reports whether e holds key k.
func (e *entries) hasBind(k bindKey) bool {
	if k.v4 {
		_, ok := e.bind4[k.k4]
		return ok
	}
	_, ok := e.bind6[k.k6]
	return ok
}

// setBind gives k the value v, or deletes it when v is nil.
func (e *entries) setBind(k bindKey, v *bpf.DispatchBindVal) {
	switch {
	case k.v4 && v != nil:
		e.bind4[k.k4] = *v
	case k.v4:
		delete(e.bind4, k.k4)
	case v != nil:
		e.bind6[k.k6] = *v
	default:
		delete(e.bind6, k.k6)
	}
}

// bindChange is the change of one binding's entry: to val, or away when
// val is nil.
type bindChange struct {
	b   Binding
	k   bindKey
	val *bpf.DispatchBindVal
}

// apply makes c in e, with the port-scoped count and flag of c's port.
func (e *entries) apply(c bindChange) {
	had := e.hasBind(c.k)
	e.setBind(c.k, c.val)
	if !c.b.PortScoped() {
		return
	}
	pi := portIndex(c.b.Protocol, c.b.Port)
	switch {
	case c.val != nil && !had:
		e.portScoped[pi]++
	case c.val == nil && had:
		e.portScoped[pi]--
	}
	setPortScoped(e, pi)
}

// setPortScoped sets or clears the port-scoped flag of portinfo index pi
// from the count in e.
func setPortScoped(e *entries, pi uint32) {
	v := e.portinfo[pi] &^ piPortScoped
	if e.portScoped[pi] > 0 {
		v |= piPortScoped
	} else {
		delete(e.portScoped, pi)
	}
	if v == 0 {
		delete(e.portinfo, pi)
	} else {
		e.portinfo[pi] = v
	}
}

// countPortScoped counts the port-scoped bindings of e per port, as read
// back from the maps.
func (e *entries) countPortScoped() {
	for k := range e.bind4 {
		if k.Proto != 0 {
			e.portScoped[portIndex(Protocol(k.Proto), k.Port)]++
		}
	}
	for k := range e.bind6 {
		if k.Proto != 0 {
			e.portScoped[portIndex(Protocol(k.Proto), k.Port)]++
		}
	}
}

// compile turns a validated table into map entries. label returns the index
// of a label name.
func compile(t *Table, label func(string) (uint32, error)) (*entries, error) {
	e := newEntries()
	for o, pol := range t.Owners {
		e.owners[uint32(o)] = uint32(pol.Kind)
		for pp, name := range pol.Ports {
			idx, err := label(name)
			if err != nil {
				return nil, err
			}
			e.ports[portKeyOf(o, pp)] = idx
		}
	}
	for _, b := range t.Bindings {
		e.apply(bindChange{b: b, k: bindKeyOf(b), val: bindVal(b)})
	}
	for _, p := range []Protocol{TCP, UDP} {
		if err := compileApps(e, t.Apps, p, label); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// compileApps writes the app entries of protocol p. Single-port apps are keyed
// by their port and any-port apps by port 0. Range apps are keyed by range
// class (rangeClasses), one entry per class they cover.
func compileApps(e *entries, apps []App, p Protocol, label func(string) (uint32, error)) error {
	classes, err := rangeClasses(e, apps, p)
	if err != nil {
		return err
	}
	for _, a := range apps {
		if a.Protocol != p {
			continue
		}
		idx, err := label(a.Label)
		if err != nil {
			return err
		}
		v := bpf.DispatchAppVal{Label: idx, Plen: uint32(a.Edge.Bits())}
		switch a.Ports.Specificity() {
		case specSingle:
			e.portinfo[portIndex(p, a.Ports.First)] |= piSingleApp
			e.putApp(a, bpf.DispatchAppKindAPP_SINGLE, uint32(a.Ports.First), v)
		case specAny:
			e.putApp(a, bpf.DispatchAppKindAPP_ANY, 0, v)
		case specRange:
			for _, c := range classes {
				if a.Ports.Contains(c.first) {
					e.putApp(a, bpf.DispatchAppKindAPP_RANGE, c.class, v)
				}
			}
		}
	}
	return nil
}

// rangeClass is a piece of the ports that ranges cover, from first on, and
// its class number.
type rangeClass struct {
	first uint16
	class uint32
}

// rangeClasses cuts the ports of p at every range app's ends into pieces,
// gives each piece that some range covers a class number, and writes the
// class of each of its ports into portinfo. A range covers a piece whole
// or not at all, so its first port stands for it.
func rangeClasses(e *entries, apps []App, p Protocol) ([]rangeClass, error) {
	var ranges []PortRange
	var cuts []int // each range [a,b] starts a piece at a and at b+1
	for _, a := range apps {
		if a.Protocol == p && a.Ports.Specificity() == specRange {
			ranges = append(ranges, a.Ports)
			cuts = append(cuts, int(a.Ports.First), int(a.Ports.Last)+1)
		}
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	var classes []rangeClass
	for i := 0; i+1 < len(cuts); i++ {
		lo := uint16(cuts[i])
		if !slices.ContainsFunc(ranges, func(r PortRange) bool { return r.Contains(lo) }) {
			continue
		}
		next := uint32(len(classes) + 1)
		if next > maxClasses {
			return nil, fmt.Errorf("%w: more than %d distinct %s port ranges", ErrInvalidTable, maxClasses, p)
		}
		classes = append(classes, rangeClass{lo, next})
		for port := cuts[i]; port < cuts[i+1]; port++ {
			e.portinfo[portIndex(p, uint16(port))] |= next << piClassShift
		}
	}
	return classes, nil
}
