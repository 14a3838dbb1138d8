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
	portinfo map[uint32]uint32 // (udp<<16 | port) -> flags | class<<16
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

// Flags of portinfo values; the range class sits in the high 16 bits.
const (
	piPortScoped = 1
	piSingleApp  = 2
)

// maxClasses bounds the range classes per protocol (16 bits in portinfo).
const maxClasses = 1<<16 - 1

func portIndex(p Protocol, port uint16) uint32 {
	if p == UDP {
		return 1<<16 | uint32(port)
	}
	return uint32(port)
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
			e.ports[bpf.DispatchPortKey{Owner: uint8(o), Proto: uint8(pp.Protocol), Port: uint32(pp.Port)}] = idx
		}
	}

	for _, b := range t.Bindings {
		v := bpf.DispatchBindVal{Owner: uint32(b.Owner), Plen: uint32(b.Prefix.Bits())}
		if b.PortScoped() {
			e.portinfo[portIndex(b.Protocol, b.Port)] |= piPortScoped
			e.portScoped[portIndex(b.Protocol, b.Port)]++
		}
		if b.Prefix.Addr().Is4() {
			e.bind4[bpf.DispatchBind4Key{
				Prefixlen: 32 + uint32(b.Prefix.Bits()),
				Proto:     uint8(b.Protocol),
				Port:      b.Port,
				Addr:      ip4(b.Prefix.Addr()),
			}] = v
		} else {
			e.bind6[bpf.DispatchBind6Key{
				Prefixlen: 32 + uint32(b.Prefix.Bits()),
				Proto:     uint8(b.Protocol),
				Port:      b.Port,
				Addr:      ip6(b.Prefix.Addr()),
			}] = v
		}
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
// class: the ports of p are cut at every range's ends into intervals, each
// interval with a set of covering ranges gets a class number in portinfo,
// and each range app gets one entry per class it covers.
func compileApps(e *entries, apps []App, p Protocol, label func(string) (uint32, error)) error {
	var cuts []int // each range [a,b] starts a piece at a and at b+1
	for _, a := range apps {
		if a.Protocol == p && a.Ports.class() == 1 {
			cuts = append(cuts, int(a.Ports.First), int(a.Ports.Last)+1)
		}
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)

	// classOf[i] is the class of the piece [cuts[i], cuts[i+1]); 0 if no
	// range covers it.
	classOf := make([]uint32, len(cuts))
	covered := func(lo int) bool {
		for _, a := range apps {
			if a.Protocol == p && a.Ports.class() == 1 && a.Ports.Contains(uint16(lo)) {
				return true
			}
		}
		return false
	}
	next := uint32(1)
	for i := 0; i+1 < len(cuts); i++ {
		if !covered(cuts[i]) {
			continue
		}
		if next > maxClasses {
			return fmt.Errorf("%w: more than %d distinct %s port ranges", ErrInvalidTable, maxClasses, p)
		}
		classOf[i] = next
		for port := cuts[i]; port < cuts[i+1]; port++ {
			e.portinfo[portIndex(p, uint16(port))] |= next << 16
		}
		next++
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
		put := func(kind bpf.DispatchAppKind, port uint32) {
			if a.Edge.Addr().Is4() {
				e.app4[bpf.DispatchApp4Key{
					Prefixlen: 64 + uint32(a.Edge.Bits()),
					Proto:     uint8(p),
					Kind:      uint8(kind),
					Owner:     uint8(a.Owner),
					Port:      port,
					Addr:      ip4(a.Edge.Addr()),
				}] = v
			} else {
				e.app6[bpf.DispatchApp6Key{
					Prefixlen: 64 + uint32(a.Edge.Bits()),
					Proto:     uint8(p),
					Kind:      uint8(kind),
					Owner:     uint8(a.Owner),
					Port:      port,
					Addr:      ip6(a.Edge.Addr()),
				}] = v
			}
		}
		switch a.Ports.class() {
		case 2:
			e.portinfo[portIndex(p, a.Ports.First)] |= piSingleApp
			put(bpf.DispatchAppKindAPP_SINGLE, uint32(a.Ports.First))
		case 0:
			put(bpf.DispatchAppKindAPP_ANY, 0)
		case 1:
			for i := 0; i+1 < len(cuts); i++ {
				if classOf[i] != 0 && a.Ports.Contains(uint16(cuts[i])) {
					put(bpf.DispatchAppKindAPP_RANGE, classOf[i])
				}
			}
		}
	}
	return nil
}
