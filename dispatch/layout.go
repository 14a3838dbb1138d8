package dispatch

import (
	"unsafe"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// The layout of the program's maps, derived from the generated types.
const (
	// bindKeyBits are the bits of a binding's trie key in front of its
	// address (generation, protocol, port), which every entry matches in
	// full: the trie's prefix length is these plus the binding's.
	bindKeyBits = uint32(8 * (unsafe.Offsetof(bpf.DispatchBind4Key{}.Addr) - unsafe.Offsetof(bpf.DispatchBind4Key{}.Gen)))
	// appKeyBits are those of an app's trie key (generation, protocol,
	// kind, owner, port).
	appKeyBits = uint32(8 * (unsafe.Offsetof(bpf.DispatchApp4Key{}.Addr) - unsafe.Offsetof(bpf.DispatchApp4Key{}.Gen)))

	// ownerSlots are the owners map's slots of one generation: one per
	// value of a key's owner byte.
	ownerSlots = 1 << (8 * unsafe.Sizeof(bpf.DispatchPortKey{}.Owner))
	// portSlots are the ports of one protocol: one per value of a key's
	// port.
	portSlots = 1 << (8 * unsafe.Sizeof(bpf.DispatchBind4Key{}.Port))
	// portinfoSlots are the portinfo map's slots of one generation: the
	// ports of tcp, then those of udp.
	portinfoSlots = 2 * portSlots

	// metaSize is the size of the meta map's value.
	metaSize = uint32(unsafe.Sizeof(bpf.DispatchMeta{}))
)

// Flags of portinfo values; the range class sits in the bits above
// piClassShift.
const (
	piPortScoped = 1
	piSingleApp  = 2

	piClassShift = 16
)

// maxClasses bounds the range classes per protocol (the bits above
// piClassShift).
const maxClasses = 1<<(32-piClassShift) - 1

// portIndex is the slot of protocol p's port in one generation of portinfo.
func portIndex(p Protocol, port uint16) uint32 {
	if p == UDP {
		return portSlots + uint32(port)
	}
	return uint32(port)
}

// portinfoBase is the first portinfo slot of generation gen.
func portinfoBase(gen uint8) uint32 { return uint32(gen) * portinfoSlots }

// ownersBase is the first owners slot of generation gen.
func ownersBase(gen uint8) uint32 { return uint32(gen) * ownerSlots }
