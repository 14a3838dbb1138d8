package dispatch

import (
	"testing"
	"unsafe"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// TestLayout: the layout constants, derived from the generated types, fit
// the maps of the object and what dispatch.c writes.
func TestLayout(t *testing.T) {
	spec, err := bpf.LoadDispatch()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what      string
		got, want uint64
	}{
		{"bind key bits (dispatch.c: 32 + plen)", uint64(bindKeyBits), 32},
		{"app key bits (dispatch.c: 64 + plen)", uint64(appKeyBits), 64},
		{"bind6 key bits", uint64(8 * (unsafe.Offsetof(bpf.DispatchBind6Key{}.Addr) - unsafe.Offsetof(bpf.DispatchBind6Key{}.Gen))), uint64(bindKeyBits)},
		{"app6 key bits", uint64(8 * (unsafe.Offsetof(bpf.DispatchApp6Key{}.Addr) - unsafe.Offsetof(bpf.DispatchApp6Key{}.Gen))), uint64(appKeyBits)},
		{"portinfo slots of both generations", uint64(spec.Maps[bpf.DispatchMapPortinfo].MaxEntries), 2 * portinfoSlots},
		{"owners slots of both generations", uint64(spec.Maps[bpf.DispatchMapOwners].MaxEntries), 2 * ownerSlots},
		{"meta value size", uint64(spec.Maps[bpf.DispatchMapMeta].ValueSize), uint64(metaSize)},
		{"portinfo slot of udp/0 in generation 1", uint64(portinfoBase(1) + portIndex(UDP, 0)), 1<<17 | 1<<16},
		{"owners slot 0 of generation 1", uint64(ownersBase(1)), 256},
		{"binding counter value size", uint64(spec.Maps[bpf.DispatchMapBindingCounters].ValueSize), uint64(BindingCounterBytes(1) / 2)},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.what, c.got, c.want)
		}
	}
	// The object's own sizes are those of the default capacity.
	for _, name := range capacityMaps {
		if got := spec.Maps[name].MaxEntries; got != 2*DefaultBindingCapacity {
			t.Errorf("%s: %d entries in the object, want 2 × DefaultBindingCapacity", name, got)
		}
	}
}
