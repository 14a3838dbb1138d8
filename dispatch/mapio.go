//go:build linux

package dispatch

import (
	"cmp"
	"errors"
	"math/bits"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// The orders of trie keys: by their bits, as the trie sees them. Writing in
// this order keeps consecutive inserts on the same path through the trie,
// which makes large writes faster than random order (docs/dataplane.md).
func cmpBind4(a, b bpf.DispatchBind4Key) int {
	return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port),
		cmp.Compare(bits.ReverseBytes32(a.Addr), bits.ReverseBytes32(b.Addr)), cmp.Compare(a.Prefixlen, b.Prefixlen))
}

func cmpBind6(a, b bpf.DispatchBind6Key) int {
	return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port),
		cmpAddr6(a.Addr, b.Addr), cmp.Compare(a.Prefixlen, b.Prefixlen))
}

func cmpApp4(a, b bpf.DispatchApp4Key) int {
	return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Owner, b.Owner),
		cmp.Compare(a.Port, b.Port), cmp.Compare(bits.ReverseBytes32(a.Addr), bits.ReverseBytes32(b.Addr)),
		cmp.Compare(a.Prefixlen, b.Prefixlen))
}

func cmpApp6(a, b bpf.DispatchApp6Key) int {
	return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Owner, b.Owner),
		cmp.Compare(a.Port, b.Port), cmpAddr6(a.Addr, b.Addr), cmp.Compare(a.Prefixlen, b.Prefixlen))
}

func cmpAddr6(a, b [4]uint32) int {
	for i := range a {
		if c := cmp.Compare(bits.ReverseBytes32(a[i]), bits.ReverseBytes32(b[i])); c != 0 {
			return c
		}
	}
	return 0
}

// batchSize bounds the entries of one batch syscall.
const batchSize = 8192

// syncMap writes the difference from old to next into generation gen of m
// (each key's genOf set to gen), in the order of order when it is not nil.
func syncMap[K comparable, V comparable](m *ebpf.Map, gen uint8, genOf func(*K) *uint8, old, next map[K]V, order func(a, b K) int) error {
	var dels []K
	for k := range old {
		if _, ok := next[k]; !ok {
			*genOf(&k) = gen
			dels = append(dels, k)
		}
	}
	type kv struct {
		k K
		v V
	}
	var ups []kv
	for k, v := range next {
		if ov, ok := old[k]; ok && ov == v {
			continue
		}
		*genOf(&k) = gen
		ups = append(ups, kv{k, v})
	}
	if order != nil {
		slices.SortFunc(dels, order)
		slices.SortFunc(ups, func(a, b kv) int { return order(a.k, b.k) })
	}
	keys := make([]K, len(ups))
	vals := make([]V, len(ups))
	for i, u := range ups {
		keys[i], vals[i] = u.k, u.v
	}
	// Deletes first, so that a full map has room for the updates.
	if err := batchDelete(m, dels); err != nil {
		return err
	}
	return batchUpdate(m, keys, vals)
}

// syncArray writes the changed slots of an array map whose slots of this
// generation start at base. Absent means zero.
func syncArray(m *ebpf.Map, old, next map[uint32]uint32, base uint32) error {
	var keys, vals []uint32
	for k, v := range next {
		if old[k] != v {
			keys = append(keys, base+k)
			vals = append(vals, v)
		}
	}
	for k := range old {
		if _, ok := next[k]; !ok {
			keys = append(keys, base+k)
			vals = append(vals, 0)
		}
	}
	return batchUpdate(m, keys, vals)
}

func batchUpdate[K, V any](m *ebpf.Map, keys []K, vals []V) error {
	for len(keys) > 0 {
		n := min(len(keys), batchSize)
		if _, err := m.BatchUpdate(keys[:n], vals[:n], nil); err != nil {
			if !errors.Is(err, ebpf.ErrNotSupported) {
				return err
			}
			for i := range n {
				if err := m.Put(keys[i], vals[i]); err != nil {
					return err
				}
			}
		}
		keys, vals = keys[n:], vals[n:]
	}
	return nil
}

func batchDelete[K any](m *ebpf.Map, keys []K) error {
	for len(keys) > 0 {
		n := min(len(keys), batchSize)
		if _, err := m.BatchDelete(keys[:n], nil); err != nil {
			if !errors.Is(err, ebpf.ErrNotSupported) {
				return err
			}
			for i := range n {
				if err := m.Delete(keys[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					return err
				}
			}
		}
		keys = keys[n:]
	}
	return nil
}

// readGenMap reads the entries of generation gen of m into into, with
// their generation (genOf of a key) set to 0.
func readGenMap[K comparable, V any](m *ebpf.Map, gen uint8, genOf func(*K) *uint8, into map[K]V) error {
	return readMap(m, func(k K, v V) {
		if g := genOf(&k); *g == gen {
			*g = 0
			into[k] = v
		}
	})
}

// readGenArray reads the non-zero slots of the generation of an array map
// whose size slots start at base into into, by their index from base.
func readGenArray(m *ebpf.Map, base, size uint32, into map[uint32]uint32) error {
	return readMap(m, func(k, v uint32) {
		if k >= base && k < base+size && v != 0 {
			into[k-base] = v
		}
	})
}

// readMap calls fn for every entry of m, in batches where the kernel can.
func readMap[K, V any](m *ebpf.Map, fn func(K, V)) error {
	keys := make([]K, batchSize)
	vals := make([]V, batchSize)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			fn(keys[i], vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			break
		}
		if err != nil {
			return err
		}
	}
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		fn(k, v)
	}
	return it.Err()
}
