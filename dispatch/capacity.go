package dispatch

import (
	"net/netip"
	"unsafe"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// DefaultBindingCapacity is the binding capacity (Options.BindingCapacity)
// of a dispatcher whose Options do not set one. Its counters take
// BindingCounterBytes(DefaultBindingCapacity), 6 MiB, on every CPU.
const DefaultBindingCapacity = 1 << 17

// MaxBindingCapacity bounds Options.BindingCapacity.
const MaxBindingCapacity = 1 << 21

// BindingCounterBytes is the memory the per-binding counters of a
// dispatcher of binding capacity c take on each CPU: a slot for each
// binding of both generations.
func BindingCounterBytes(c int) int {
	return 2 * c * int(unsafe.Sizeof(bpf.DispatchBindingCount{}))
}

// capacityMaps are the maps sized from the binding capacity, two entries
// for each binding of a table: one in each generation.
var capacityMaps = []string{bpf.DispatchMapBind4, bpf.DispatchMapBind6, bpf.DispatchMapBindingCounters}

// BindingKey is a binding's identity in the data plane: its prefix, and
// for a port-scoped binding its protocol and port. A binding keeps its
// counters while its key stays in the table, whatever its owner.
type BindingKey struct {
	Prefix   netip.Prefix
	Protocol Protocol // 0 for an address binding
	Port     uint16   // 0 for an address binding
}

// Key returns b's identity in the data plane.
func (b Binding) Key() BindingKey {
	return BindingKey{Prefix: b.Prefix, Protocol: b.Protocol, Port: b.Port}
}

func (k BindingKey) String() string {
	if k.Protocol != 0 {
		return k.Prefix.String() + " " + ProtoPort{k.Protocol, k.Port}.String()
	}
	return k.Prefix.String()
}

// BindingCount counts the program's decisions for the packets one binding
// owned, summed over CPUs.
type BindingCount struct {
	Steered uint64 // assigned to a registered socket, or passed by a pass owner to the kernel
	Refused uint64 // the owner does not serve the port: dropped
	Missed  uint64 // a label without socket, or a socket that did not fit: dropped
}
