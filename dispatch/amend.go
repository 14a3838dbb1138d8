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
	d.mu.Lock()
	defer d.mu.Unlock()
	objs, done, err := d.use()
	if err != nil {
		return err
	}
	defer done()

	cur := d.written[d.active]
	type key struct {
		v4 bool
		k4 bpf.DispatchBind4Key
		k6 bpf.DispatchBind6Key
	}
	keyOf := func(b Binding) key {
		if b.Prefix.Addr().Is4() {
			return key{v4: true, k4: bpf.DispatchBind4Key{Prefixlen: 32 + uint32(b.Prefix.Bits()), Proto: uint8(b.Protocol), Port: b.Port, Addr: ip4(b.Prefix.Addr())}}
		}
		return key{k6: bpf.DispatchBind6Key{Prefixlen: 32 + uint32(b.Prefix.Bits()), Proto: uint8(b.Protocol), Port: b.Port, Addr: ip6(b.Prefix.Addr())}}
	}
	present := func(k key) bool {
		if k.v4 {
			_, ok := cur.bind4[k.k4]
			return ok
		}
		_, ok := cur.bind6[k.k6]
		return ok
	}

	// The net change per key: a value, or nil to delete.
	type change struct {
		b   Binding
		val *bpf.DispatchBindVal
	}
	changes := map[key]change{}
	var order []key
	for i, b := range remove {
		if err := checkBinding(b); err != nil {
			return invalid("remove[%d] %s: %v", i, b, err)
		}
		k := keyOf(b)
		if !present(k) {
			return invalid("remove[%d] %s: not in the table", i, b)
		}
		if _, dup := changes[k]; dup {
			return invalid("remove[%d] %s: removed twice", i, b)
		}
		changes[k] = change{b: b}
		order = append(order, k)
	}
	for i, b := range add {
		if err := checkBinding(b); err != nil {
			return invalid("add[%d] %s: %v", i, b, err)
		}
		if cur.owners[uint32(b.Owner)] == 0 {
			return invalid("add[%d] %s: owner %d has no policy", i, b, b.Owner)
		}
		k := keyOf(b)
		c, removed := changes[k]
		if present(k) && !(removed && c.val == nil) {
			return invalid("add[%d] %s: already in the table", i, b)
		}
		if removed && c.val != nil {
			return invalid("add[%d] %s: added twice", i, b)
		}
		if !removed {
			order = append(order, k)
		}
		changes[k] = change{b: b, val: &bpf.DispatchBindVal{Owner: uint32(b.Owner), Plen: uint32(b.Prefix.Bits())}}
	}
	if len(order) == 0 {
		return nil
	}

	if len(order) > 1 {
		next := cur.clone()
		for _, k := range order {
			c := changes[k]
			pi := portIndex(c.b.Protocol, c.b.Port)
			switch {
			case k.v4 && c.val != nil:
				if _, ok := next.bind4[k.k4]; !ok && c.b.PortScoped() {
					next.portScoped[pi]++
				}
				next.bind4[k.k4] = *c.val
			case k.v4:
				delete(next.bind4, k.k4)
				if c.b.PortScoped() {
					next.portScoped[pi]--
				}
			case c.val != nil:
				if _, ok := next.bind6[k.k6]; !ok && c.b.PortScoped() {
					next.portScoped[pi]++
				}
				next.bind6[k.k6] = *c.val
			default:
				delete(next.bind6, k.k6)
				if c.b.PortScoped() {
					next.portScoped[pi]--
				}
			}
			if c.b.PortScoped() {
				setPortScoped(next, pi)
			}
		}
		if err := d.checkLimits(next); err != nil {
			return err
		}
		return d.switchTo(objs, next)
	}

	// One entry: in place, in the generation the program reads. A new
	// port-scoped entry raises its port's flag first (the flag only lets
	// the program look; the entry is not there yet); a removed one lowers
	// it after.
	k := order[0]
	c := changes[k]
	gen := uint8(d.active)
	pi := portIndex(c.b.Protocol, c.b.Port)
	isNew := !present(k)
	if err := func() error {
		if c.b.PortScoped() && isNew && c.val != nil {
			cur.portScoped[pi]++
			if err := d.writePortinfo(objs, cur, gen, pi); err != nil {
				return err
			}
		}
		switch {
		case k.v4 && c.val != nil:
			kk := k.k4
			kk.Gen = gen
			if err := objs.Bind4.Put(kk, c.val); err != nil {
				return err
			}
			cur.bind4[k.k4] = *c.val
		case k.v4:
			kk := k.k4
			kk.Gen = gen
			if err := objs.Bind4.Delete(kk); err != nil {
				return err
			}
			delete(cur.bind4, k.k4)
		case c.val != nil:
			kk := k.k6
			kk.Gen = gen
			if err := objs.Bind6.Put(kk, c.val); err != nil {
				return err
			}
			cur.bind6[k.k6] = *c.val
		default:
			kk := k.k6
			kk.Gen = gen
			if err := objs.Bind6.Delete(kk); err != nil {
				return err
			}
			delete(cur.bind6, k.k6)
		}
		if c.b.PortScoped() && c.val == nil {
			cur.portScoped[pi]--
			return d.writePortinfo(objs, cur, gen, pi)
		}
		return nil
	}(); err != nil {
		// Resynchronize the mirror with what the maps hold.
		if e, rerr := d.readGen(gen); rerr == nil {
			d.written[gen] = e
		}
		return fmt.Errorf("amend %s: %w", c.b, err)
	}
	return nil
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

// writePortinfo brings slot pi of generation gen in line with e's count.
func (d *Dispatcher) writePortinfo(objs *bpf.DispatchObjects, e *entries, gen uint8, pi uint32) error {
	setPortScoped(e, pi)
	return objs.Portinfo.Put(uint32(gen)<<17|pi, e.portinfo[pi])
}

// checkBinding is Table.Validate's check of one binding.
func checkBinding(b Binding) error {
	switch {
	case !b.Prefix.IsValid():
		return fmt.Errorf("no prefix")
	case b.Prefix != b.Prefix.Masked():
		return fmt.Errorf("host bits set")
	case b.Prefix.Addr().Is4In6():
		return fmt.Errorf("IPv4-mapped IPv6 prefix")
	case (b.Protocol != 0 || b.Port != 0) && (checkProtocol(b.Protocol) != nil || b.Port == 0):
		return fmt.Errorf("a port-scoped binding needs tcp or udp and a port")
	}
	return nil
}
