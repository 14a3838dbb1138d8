//go:build linux

package dispatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// slotTable gives each binding identity (its trie key of generation 0:
// prefix, protocol, port) a slot of binding_counters for as long as it is
// in either generation. The slot is the entry's bind_val.slot, so it stays
// the binding's across Replace and Amend, and after a takeover it is read
// back from the tries. A slot that leaves both generations is free once no
// program run can still charge it, and is zeroed before it is given again:
// a new binding never starts with an old one's traffic.
//
// Writers hold the Dispatcher's mu and take mu for each change;
// BindingCounters holds mu for reading across its read of the counters, so
// that no slot changes hands in between.
type slotTable struct {
	mu      sync.RWMutex
	of      map[bindKey]slotUse
	active  uint8    // the generation the program reads, for readers
	free    []uint32 // below hw, unused, no program run can charge them
	pending []uint32 // left the generation the program reads in place: free after a grace period
	hw      uint32   // every slot at or above hw has never been given
	size    uint32
}

// slotUse is a binding's slot and the generations that hold it.
type slotUse struct {
	slot uint32
	gens uint8 // bit g: in generation g
}

// newSlotTable makes the slot table of size slots from what the two
// generations hold, read back from the maps: every slot their entries name
// is in use, the others free. A key whose generations disagree keeps the
// active one's slot; the other generation is rewritten before it is read.
func newSlotTable(size uint32, written [2]*entries, active uint32) *slotTable {
	s := &slotTable{of: map[bindKey]slotUse{}, active: uint8(active), size: size}
	used := map[uint32]bool{}
	for _, gen := range []uint32{active, 1 - active} {
		each(written[gen], func(k bindKey, v bpf.DispatchBindVal) {
			if v.Slot >= size {
				return
			}
			used[v.Slot] = true
			u, ok := s.of[k]
			if !ok {
				u.slot = v.Slot
			}
			u.gens |= 1 << gen
			s.of[k] = u
			s.hw = max(s.hw, v.Slot+1)
		})
	}
	for slot := range s.hw {
		if !used[slot] {
			s.free = append(s.free, slot)
		}
	}
	return s
}

// each calls fn for every binding entry of e.
func each(e *entries, fn func(bindKey, bpf.DispatchBindVal)) {
	for k, v := range e.bind4 {
		fn(bindKey{v4: true, k4: k}, v)
	}
	for k, v := range e.bind6 {
		fn(bindKey{k6: k}, v)
	}
}

// errNoSlot means more bindings than the counters have slots for; the
// capacity checks keep it from happening.
var errNoSlot = errors.New("no free binding counter slot")

// alloc returns a slot no binding holds and no program run can charge.
// Slots freed in place wait for a grace period, taken only when nothing
// else is left. The caller holds mu and zeroes the slot.
func (s *slotTable) alloc() (uint32, error) {
	if len(s.free) == 0 && s.hw < s.size {
		s.hw++
		return s.hw - 1, nil
	}
	if len(s.free) == 0 && len(s.pending) > 0 {
		waitForReaders()
		s.free, s.pending = s.pending, nil
	}
	if len(s.free) == 0 {
		return 0, errNoSlot
	}
	slot := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	return slot, nil
}

// place gives every binding of next, the table about to be written into
// generation gen over old, its slot: the one it holds, or a new one,
// zeroed. A binding of old that is in no other generation and not in next
// gives its slot back first: nothing reads gen while it is written, so a
// full table can be replaced by another as large. It returns the keys
// that got a new slot, for release if the write fails.
func (s *slotTable) place(objs *bpf.DispatchObjects, gen uint8, old, next *entries) ([]bindKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	each(old, func(k bindKey, _ bpf.DispatchBindVal) {
		if u, ok := s.of[k]; ok && u.gens == 1<<gen && !next.hasBind(k) {
			delete(s.of, k)
			s.free = append(s.free, u.slot)
		}
	})
	var added []bindKey
	var fresh []uint32
	slotOf := func(k bindKey) (uint32, error) {
		if u, ok := s.of[k]; ok {
			return u.slot, nil
		}
		slot, err := s.alloc()
		if err != nil {
			return 0, err
		}
		s.of[k] = slotUse{slot: slot}
		added = append(added, k)
		fresh = append(fresh, slot)
		return slot, nil
	}
	var err error
	for k, v := range next.bind4 {
		if v.Slot, err = slotOf(bindKey{v4: true, k4: k}); err != nil {
			break
		}
		next.bind4[k] = v
	}
	for k, v := range next.bind6 {
		if err != nil {
			break
		}
		if v.Slot, err = slotOf(bindKey{k6: k}); err != nil {
			break
		}
		next.bind6[k] = v
	}
	if err == nil {
		err = zeroSlots(objs.BindingCounters, fresh)
	}
	if err != nil {
		s.releaseLocked(added)
		return nil, fmt.Errorf("binding counters: %w", err)
	}
	return added, nil
}

// release gives back the slots of keys that got one from place but are in
// no generation: the write failed. They wait for a grace period, as the
// write may have reached the maps in part.
func (s *slotTable) release(keys []bindKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked(keys)
}

func (s *slotTable) releaseLocked(keys []bindKey) {
	for _, k := range keys {
		if u, ok := s.of[k]; ok && u.gens == 0 {
			delete(s.of, k)
			s.pending = append(s.pending, u.slot)
		}
	}
}

// wrote records that generation gen, which held old, now holds next. A
// binding that left both generations frees its slot at once: nothing reads
// a generation while it is written.
func (s *slotTable) wrote(gen uint8, old, next *entries) {
	s.mu.Lock()
	defer s.mu.Unlock()
	each(next, func(k bindKey, _ bpf.DispatchBindVal) {
		u := s.of[k]
		u.gens |= 1 << gen
		s.of[k] = u
	})
	each(old, func(k bindKey, _ bpf.DispatchBindVal) {
		if next.hasBind(k) {
			return
		}
		u, ok := s.of[k]
		if !ok {
			return
		}
		if u.gens &^= 1 << gen; u.gens == 0 {
			delete(s.of, k)
			s.free = append(s.free, u.slot)
			return
		}
		s.of[k] = u
	})
}

// switched records that the program reads generation gen.
func (s *slotTable) switched(gen uint8) {
	s.mu.Lock()
	s.active = gen
	s.mu.Unlock()
}

// slotFor returns the slot of k, written in place into generation gen: its
// own, or a new one, zeroed. fresh says it is new.
func (s *slotTable) slotFor(objs *bpf.DispatchObjects, k bindKey) (slot uint32, fresh bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u, ok := s.of[k]; ok {
		return u.slot, false, nil
	}
	if slot, err = s.alloc(); err != nil {
		return 0, false, fmt.Errorf("binding counters: %w", err)
	}
	if err := zeroSlots(objs.BindingCounters, []uint32{slot}); err != nil {
		s.free = append(s.free, slot)
		return 0, false, fmt.Errorf("binding counters: %w", err)
	}
	s.of[k] = slotUse{slot: slot}
	return slot, true, nil
}

// amended records an in-place change of k in generation gen: in it now, or
// (in false) gone from it. A slot that leaves both generations so waits for
// a grace period: a program run may still hold the entry.
func (s *slotTable) amended(gen uint8, k bindKey, in bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.of[k]
	if !ok {
		return
	}
	if in {
		u.gens |= 1 << gen
	} else {
		u.gens &^= 1 << gen
	}
	if u.gens == 0 {
		delete(s.of, k)
		s.pending = append(s.pending, u.slot)
		return
	}
	s.of[k] = u
}

// zeroSlots sets the counters of slots to zero on every CPU.
func zeroSlots(m *ebpf.Map, slots []uint32) error {
	if len(slots) == 0 {
		return nil
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	n := max(1, min(len(slots), counterBatch/cpus))
	zeros := make([]bpf.DispatchBindingCount, n*cpus)
	for len(slots) > 0 {
		k := min(len(slots), n)
		if _, err := m.BatchUpdate(slots[:k], zeros[:k*cpus], nil); err != nil {
			return fmt.Errorf("zero slots: %w", err)
		}
		slots = slots[k:]
	}
	return nil
}

// counterBatch bounds the per-CPU values of one batch of binding_counters.
const counterBatch = 1 << 16

// BindingCounters returns the counters of every binding of the table the
// program steers by, summed over CPUs: one batched read of the counter
// slots in use, whatever the number of bindings. A binding's counters
// start at zero when it enters either generation and follow it through
// Replace and Amend while it stays in one, whatever its owner. Over a live
// upgrade they start at zero in the new process, which counts in maps of
// its own.
func (d *Dispatcher) BindingCounters() (map[BindingKey]BindingCount, error) {
	objs, done, err := d.use()
	if err != nil {
		return nil, err
	}
	defer done()
	s := d.slots
	s.mu.RLock()
	defer s.mu.RUnlock()
	sums, err := readSlots(objs.BindingCounters, s.hw)
	if err != nil {
		return nil, fmt.Errorf("read binding counters: %w", err)
	}
	out := make(map[BindingKey]BindingCount, len(s.of))
	for k, u := range s.of {
		if u.gens&(1<<s.active) != 0 {
			out[k.binding()] = sums[u.slot]
		}
	}
	return out, nil
}

// BindingCapacity returns the most bindings a table of this dispatcher
// holds (Options.BindingCapacity, or the default).
func (d *Dispatcher) BindingCapacity() int { return d.limits.bind }

// readSlots reads slots [0, n) of binding_counters, summed over CPUs, in
// batches.
func readSlots(m *ebpf.Map, n uint32) ([]BindingCount, error) {
	sums := make([]BindingCount, n)
	if n == 0 {
		return sums, nil
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, err
	}
	batch := max(1, min(int(n), counterBatch/cpus))
	keys := make([]uint32, batch)
	vals := make([]bpf.DispatchBindingCount, batch*cpus)
	var cursor ebpf.MapBatchCursor
	for read := uint32(0); read < n; {
		got, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range got {
			if keys[i] >= n {
				continue
			}
			for _, c := range vals[i*cpus : (i+1)*cpus] {
				sums[keys[i]].Steered += c.Steered
				sums[keys[i]].Refused += c.Refused
				sums[keys[i]].Missed += c.Missed
			}
		}
		read += uint32(got)
		if errors.Is(err, ebpf.ErrKeyNotExist) || got == 0 {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return sums, nil
}

// binding returns the binding identity of a key of generation 0.
func (k bindKey) binding() BindingKey {
	if k.v4 {
		var a [4]byte
		binary.NativeEndian.PutUint32(a[:], k.k4.Addr)
		return BindingKey{Prefix: netip.PrefixFrom(netip.AddrFrom4(a), int(k.k4.Prefixlen-bindKeyBits)),
			Protocol: Protocol(k.k4.Proto), Port: k.k4.Port}
	}
	var a [16]byte
	for i, w := range k.k6.Addr {
		binary.NativeEndian.PutUint32(a[4*i:], w)
	}
	return BindingKey{Prefix: netip.PrefixFrom(netip.AddrFrom16(a), int(k.k6.Prefixlen-bindKeyBits)),
		Protocol: Protocol(k.k6.Proto), Port: k.k6.Port}
}

// PinnedBindingCounters reads the per-binding counters of the table the
// pinned program in pinDir steers by, summed over CPUs, without taking
// the pin dir's lock or changing anything: what BindingCounters of the
// running process returns, for a process other than the writer (an
// operator's tool, a test). A writer that changes the table meanwhile may
// show a binding's counters just before or after the change. Pinned state
// of another schema is ErrStale.
func PinnedBindingCounters(pinDir string) (map[BindingKey]BindingCount, error) {
	schema, err := objectSchema()
	if err != nil {
		return nil, err
	}
	m, err := readPinnedMeta(filepath.Join(pinDir, bpf.DispatchMapMeta))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%w: %s holds no meta map", ErrNothingPinned, pinDir)
	case err != nil:
		return nil, err
	case m.Magic != metaMagic:
		return nil, fmt.Errorf("%w: %s has magic %#x", ErrForeign, pinDir, m.Magic)
	case m.Schema != schema:
		return nil, fmt.Errorf("%w: %s has schema %d, this binary reads %d", ErrStale, pinDir, m.Schema, schema)
	}
	maps := map[string]*ebpf.Map{}
	defer func() {
		for _, m := range maps {
			m.Close()
		}
	}()
	for _, name := range []string{bpf.DispatchMapState, bpf.DispatchMapBind4, bpf.DispatchMapBind6, bpf.DispatchMapBindingCounters} {
		mm, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", filepath.Join(pinDir, name), err)
		}
		maps[name] = mm
	}
	var st bpf.DispatchState
	if err := maps[bpf.DispatchMapState].Lookup(uint32(0), &st); err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	e := newEntries()
	gen := uint8(st.Gen & 1)
	if err := readGenMap(maps[bpf.DispatchMapBind4], gen, bind4Gen, e.bind4); err != nil {
		return nil, fmt.Errorf("read bind4: %w", err)
	}
	if err := readGenMap(maps[bpf.DispatchMapBind6], gen, bind6Gen, e.bind6); err != nil {
		return nil, fmt.Errorf("read bind6: %w", err)
	}
	var hw uint32
	each(e, func(_ bindKey, v bpf.DispatchBindVal) { hw = max(hw, v.Slot+1) })
	hw = min(hw, maps[bpf.DispatchMapBindingCounters].MaxEntries())
	sums, err := readSlots(maps[bpf.DispatchMapBindingCounters], hw)
	if err != nil {
		return nil, fmt.Errorf("read binding counters: %w", err)
	}
	out := map[BindingKey]BindingCount{}
	each(e, func(k bindKey, v bpf.DispatchBindVal) {
		if v.Slot < hw {
			out[k.binding()] = sums[v.Slot]
		}
	})
	return out, nil
}

// objectSchema is the schema version of the embedded object.
var objectSchema = sync.OnceValues(func() (uint32, error) {
	spec, err := bpf.LoadDispatch()
	if err != nil {
		return 0, fmt.Errorf("load dispatch spec: %w", err)
	}
	var d Dispatcher
	if err := d.readSpec(spec); err != nil {
		return 0, err
	}
	return d.schema, nil
})
