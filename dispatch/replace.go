package dispatch

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// Replace makes t the table the program steers by, atomically from the
// traffic's point of view: t is written into the generation the program does
// not read, and one store to the state map switches the program over. A lookup
// sees the old table or the new one, never a mix. Only the difference to what
// that generation held is written, in batches.
//
// On error nothing changes for traffic: the active table stays as it was.
func (d *Dispatcher) Replace(t *Table) error {
	if err := t.Validate(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	objs, done, err := d.use()
	if err != nil {
		return err
	}
	defer done()

	next, err := compile(t, d.labelIndex)
	if err != nil {
		return err
	}
	if err := d.checkLimits(next); err != nil {
		return err
	}
	return d.switchTo(objs, next)
}

// switchTo writes next into the generation the program does not read and
// flips to it. The caller holds mu and uses objs.
func (d *Dispatcher) switchTo(objs *bpf.DispatchObjects, next *entries) error {
	// Programs that read the inactive generation before the last flip must
	// be done before we write into it.
	if d.quiesced != nil {
		<-d.quiesced
		d.quiesced = nil
	}
	gen := 1 - d.active
	if d.dirty[gen] {
		var err error
		if d.written[gen], err = d.readGen(uint8(gen)); err != nil {
			return err
		}
		d.dirty[gen] = false
	}
	if err := d.writeGen(uint8(gen), d.written[gen], next); err != nil {
		d.dirty[gen] = true
		return err
	}
	d.written[gen] = next

	// Critical section: from this store on, every lookup uses the new table.
	if err := objs.State.Put(uint32(0), &bpf.DispatchState{Gen: gen}); err != nil {
		return fmt.Errorf("switch generation: %w", err)
	}
	d.active = gen

	quiesced := make(chan struct{})
	d.quiesced = quiesced
	go func() {
		waitForReaders()
		close(quiesced)
	}()
	return nil
}

func (d *Dispatcher) checkLimits(e *entries) error {
	switch {
	case len(e.bind4) > d.limits.bind:
		return fmt.Errorf("%w: %d IPv4 bindings exceed the capacity of %d", ErrInvalidTable, len(e.bind4), d.limits.bind)
	case len(e.bind6) > d.limits.bind:
		return fmt.Errorf("%w: %d IPv6 bindings exceed the capacity of %d", ErrInvalidTable, len(e.bind6), d.limits.bind)
	case len(e.app4) > d.limits.apps:
		return fmt.Errorf("%w: %d IPv4 app entries exceed the capacity of %d", ErrInvalidTable, len(e.app4), d.limits.apps)
	case len(e.app6) > d.limits.apps:
		return fmt.Errorf("%w: %d IPv6 app entries exceed the capacity of %d", ErrInvalidTable, len(e.app6), d.limits.apps)
	case len(e.ports) > d.limits.ports:
		return fmt.Errorf("%w: %d port entries exceed the capacity of %d", ErrInvalidTable, len(e.ports), d.limits.ports)
	}
	return nil
}

// waitForReaders returns once every program run that started before the call
// has finished. sk_lookup programs run inside RCU read-side sections, and
// membarrier(MEMBARRIER_CMD_GLOBAL) waits for an RCU grace period.
func waitForReaders() {
	const membarrierCmdGlobal = 1
	if _, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0); errno != 0 {
		// Not available (nohz_full CPUs): a program run takes microseconds.
		time.Sleep(50 * time.Millisecond)
	}
}

// writeGen turns generation gen from old into next.
func (d *Dispatcher) writeGen(gen uint8, old, next *entries) error {
	o := d.objs
	if err := syncMap(o.Bind4, old.bind4, next.bind4, func(k *bpf.DispatchBind4Key) { k.Gen = gen }, cmpBind4); err != nil {
		return fmt.Errorf("write bind4: %w", err)
	}
	if err := syncMap(o.Bind6, old.bind6, next.bind6, func(k *bpf.DispatchBind6Key) { k.Gen = gen }, cmpBind6); err != nil {
		return fmt.Errorf("write bind6: %w", err)
	}
	if err := syncMap(o.App4, old.app4, next.app4, func(k *bpf.DispatchApp4Key) { k.Gen = gen }, cmpApp4); err != nil {
		return fmt.Errorf("write app4: %w", err)
	}
	if err := syncMap(o.App6, old.app6, next.app6, func(k *bpf.DispatchApp6Key) { k.Gen = gen }, cmpApp6); err != nil {
		return fmt.Errorf("write app6: %w", err)
	}
	if err := syncMap(o.Ports, old.ports, next.ports, func(k *bpf.DispatchPortKey) { k.Gen = gen }, nil); err != nil {
		return fmt.Errorf("write ports: %w", err)
	}
	if err := syncArray(o.Portinfo, old.portinfo, next.portinfo, uint32(gen)<<17); err != nil {
		return fmt.Errorf("write portinfo: %w", err)
	}
	if err := syncArray(o.Owners, old.owners, next.owners, uint32(gen)*256); err != nil {
		return fmt.Errorf("write owners: %w", err)
	}
	return nil
}

// The orders of trie keys: by their bits, as the trie sees them. Writing in
// this order keeps consecutive inserts on the same path through the trie,
// which makes large writes about a third faster than random order.
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

// syncMap writes the difference from old to next into m, with setGen applied
// to every key, in the order of order when it is not nil.
func syncMap[K comparable, V comparable](m *ebpf.Map, old, next map[K]V, setGen func(*K), order func(a, b K) int) error {
	var dels []K
	for k := range old {
		if _, ok := next[k]; !ok {
			setGen(&k)
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
		setGen(&k)
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

// readGen reads generation gen back from the maps: after a takeover, or when
// a write failed half-way.
func (d *Dispatcher) readGen(gen uint8) (*entries, error) {
	o := d.objs
	e := newEntries()
	if err := readMap(o.Bind4, func(k bpf.DispatchBind4Key, v bpf.DispatchBindVal) {
		if k.Gen == gen {
			k.Gen = 0
			e.bind4[k] = v
		}
	}); err != nil {
		return nil, fmt.Errorf("read bind4: %w", err)
	}
	if err := readMap(o.Bind6, func(k bpf.DispatchBind6Key, v bpf.DispatchBindVal) {
		if k.Gen == gen {
			k.Gen = 0
			e.bind6[k] = v
		}
	}); err != nil {
		return nil, fmt.Errorf("read bind6: %w", err)
	}
	if err := readMap(o.App4, func(k bpf.DispatchApp4Key, v bpf.DispatchAppVal) {
		if k.Gen == gen {
			k.Gen = 0
			e.app4[k] = v
		}
	}); err != nil {
		return nil, fmt.Errorf("read app4: %w", err)
	}
	if err := readMap(o.App6, func(k bpf.DispatchApp6Key, v bpf.DispatchAppVal) {
		if k.Gen == gen {
			k.Gen = 0
			e.app6[k] = v
		}
	}); err != nil {
		return nil, fmt.Errorf("read app6: %w", err)
	}
	if err := readMap(o.Ports, func(k bpf.DispatchPortKey, v uint32) {
		if k.Gen == gen {
			k.Gen = 0
			e.ports[k] = v
		}
	}); err != nil {
		return nil, fmt.Errorf("read ports: %w", err)
	}
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
	base, size := uint32(gen)<<17, uint32(1<<17)
	if err := readMap(o.Portinfo, func(k, v uint32) {
		if k >= base && k < base+size && v != 0 {
			e.portinfo[k-base] = v
		}
	}); err != nil {
		return nil, fmt.Errorf("read portinfo: %w", err)
	}
	base, size = uint32(gen)*256, 256
	if err := readMap(o.Owners, func(k, v uint32) {
		if k >= base && k < base+size && v != 0 {
			e.owners[k-base] = v
		}
	}); err != nil {
		return nil, fmt.Errorf("read owners: %w", err)
	}
	return e, nil
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

// readLabels loads the label names of pinned state, so that the indices in
// the maps keep their meaning.
func (d *Dispatcher) readLabels() error {
	labels := map[string]uint32{}
	err := readMap(d.objs.Labels, func(idx uint32, v bpf.DispatchLabelName) {
		if name := labelString(v); name != "" {
			labels[name] = idx
		}
	})
	d.labels.Store(&labels)
	return err
}

// labelOf returns the index of a known label.
func (d *Dispatcher) labelOf(name string) (uint32, bool) {
	idx, ok := (*d.labels.Load())[name]
	return idx, ok
}

func labelString(v bpf.DispatchLabelName) string {
	b := make([]byte, 0, len(v.Name))
	for _, c := range v.Name {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(bytes.TrimSpace(b))
}

// labelIndex returns the index of a label, allocating one for a new name.
// The caller holds d.mu and uses the objects.
func (d *Dispatcher) labelIndex(name string) (uint32, error) {
	labels := *d.labels.Load()
	if idx, ok := labels[name]; ok {
		return idx, nil
	}
	if err := CheckLabel(name); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrInvalidTable, err)
	}
	used := make(map[uint32]bool, len(labels))
	for _, idx := range labels {
		used[idx] = true
	}
	for idx := uint32(0); idx < MaxLabels; idx++ {
		if used[idx] {
			continue
		}
		var v bpf.DispatchLabelName
		for i := range len(name) {
			v.Name[i] = int8(name[i])
		}
		if err := d.objs.Labels.Put(idx, &v); err != nil {
			return 0, fmt.Errorf("write label %q: %w", name, err)
		}
		next := make(map[string]uint32, len(labels)+1)
		for k, v := range labels {
			next[k] = v
		}
		next[name] = idx
		d.labels.Store(&next)
		return idx, nil
	}
	return 0, fmt.Errorf("%w: more than %d labels", ErrInvalidTable, MaxLabels)
}
