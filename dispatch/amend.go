//go:build linux

package dispatch

import (
	"fmt"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// Amend changes the bindings of the table the program steers by, leaving
// owners, port sets and apps as they are: the bindings in remove go (each
// must be there), those in add come (none may be there unless removed in
// the same call). The result is atomic for the traffic, as with Replace.
//
// A change of exactly one binding — one added, one removed, or one given to
// another owner — is one entry of a trie, so it is written in place into the
// generation the program reads: a lookup sees the entry before or after,
// and no generation switch or grace period is needed. This is what makes an
// API call that moves one binding cost microseconds in the data plane. Any
// larger change is written into the other generation and switched to.
func (d *Dispatcher) Amend(remove, add []Binding) error {
	return d.change(func(objs *bpf.DispatchObjects) error {
		changes, err := planAmend(d.written[d.active], remove, add)
		switch {
		case err != nil:
			return err
		case len(changes) == 0:
			return nil
		case len(changes) == 1:
			return d.amendInPlace(objs, changes[0])
		}
		return d.amendSwitch(objs, changes)
	})
}

// planAmend checks remove and add against cur, the generation the program
// reads, and returns the net change per key, in the order of the calls.
func planAmend(cur *entries, remove, add []Binding) ([]bindChange, error) {
	at := map[bindKey]int{} // the index in changes of a key's change
	var changes []bindChange
	for i, b := range remove {
		if err := checkBinding(b); err != nil {
			return nil, invalid("remove[%d] %s: %v", i, b, err)
		}
		k := bindKeyOf(b)
		if !cur.hasBind(k) {
			return nil, invalid("remove[%d] %s: not in the table", i, b)
		}
		if _, dup := at[k]; dup {
			return nil, invalid("remove[%d] %s: removed twice", i, b)
		}
		at[k] = len(changes)
		changes = append(changes, bindChange{b: b, k: k})
	}
	for i, b := range add {
		if err := checkBinding(b); err != nil {
			return nil, invalid("add[%d] %s: %v", i, b, err)
		}
		if cur.owners[uint32(b.Owner)] == 0 {
			return nil, invalid("add[%d] %s: owner %d has no policy", i, b, b.Owner)
		}
		k := bindKeyOf(b)
		j, seen := at[k]
		if cur.hasBind(k) && !(seen && changes[j].val == nil) {
			return nil, invalid("add[%d] %s: already in the table", i, b)
		}
		if seen && changes[j].val != nil {
			return nil, invalid("add[%d] %s: added twice", i, b)
		}
		c := bindChange{b: b, k: k, val: bindVal(b)}
		if seen {
			changes[j] = c
			continue
		}
		at[k] = len(changes)
		changes = append(changes, c)
	}
	return changes, nil
}

// amendSwitch writes the table the program reads, with changes made, into
// the other generation and switches to it.
func (d *Dispatcher) amendSwitch(objs *bpf.DispatchObjects, changes []bindChange) error {
	next := d.written[d.active].clone()
	for _, c := range changes {
		next.apply(c)
	}
	if err := d.checkLimits(next); err != nil {
		return err
	}
	return d.switchTo(objs, next)
}

// amendInPlace writes one change in place, in the generation the program
// reads. A new port-scoped entry raises its port's flag first (the flag
// only lets the program look; the entry is not there yet); a removed one
// lowers it after.
func (d *Dispatcher) amendInPlace(objs *bpf.DispatchObjects, c bindChange) error {
	cur, gen := d.written[d.active], uint8(d.active)
	pi := portIndex(c.b.Protocol, c.b.Port)
	raise := c.b.PortScoped() && c.val != nil && !cur.hasBind(c.k)
	lower := c.b.PortScoped() && c.val == nil
	if c.val != nil && !cur.hasBind(c.k) {
		n4, n6 := len(cur.bind4), len(cur.bind6)
		if c.k.v4 {
			n4++
		} else {
			n6++
		}
		if err := d.checkBindings(n4, n6); err != nil {
			return fmt.Errorf("amend %s: %w", c.b, err)
		}
	}
	fresh := false
	if c.val != nil {
		slot, isNew, err := d.slots.slotFor(objs, c.k)
		if err != nil {
			return fmt.Errorf("amend %s: %w", c.b, err)
		}
		c.val.Slot, fresh = slot, isNew
	}
	err := func() error {
		if raise {
			cur.portScoped[pi]++
			if err := d.writePortinfo(objs, cur, gen, pi); err != nil {
				return err
			}
		}
		if err := writeBind(objs, gen, c.k, c.val); err != nil {
			return err
		}
		cur.setBind(c.k, c.val)
		d.slots.amended(gen, c.k, c.val != nil)
		if lower {
			cur.portScoped[pi]--
			return d.writePortinfo(objs, cur, gen, pi)
		}
		return nil
	}()
	if err != nil {
		if fresh && !cur.hasBind(c.k) {
			d.slots.release([]bindKey{c.k})
		}
		// Resynchronize the mirror with what the maps hold.
		if e, rerr := d.readGen(gen); rerr == nil {
			d.written[gen] = e
		}
		return fmt.Errorf("amend %s: %w", c.b, err)
	}
	return nil
}

// writeBind gives key k of generation gen the value val in bind4 or bind6,
// or deletes it when val is nil.
func writeBind(objs *bpf.DispatchObjects, gen uint8, k bindKey, val *bpf.DispatchBindVal) error {
	if k.v4 {
		k.k4.Gen = gen
		if val == nil {
			return objs.Bind4.Delete(k.k4)
		}
		return objs.Bind4.Put(k.k4, val)
	}
	k.k6.Gen = gen
	if val == nil {
		return objs.Bind6.Delete(k.k6)
	}
	return objs.Bind6.Put(k.k6, val)
}

// writePortinfo brings slot pi of generation gen in line with e's count.
func (d *Dispatcher) writePortinfo(objs *bpf.DispatchObjects, e *entries, gen uint8, pi uint32) error {
	setPortScoped(e, pi)
	return objs.Portinfo.Put(portinfoBase(gen)+pi, e.portinfo[pi])
}
