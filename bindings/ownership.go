package bindings

import (
	"math/bits"
	"net/netip"
	"slices"

	"github.com/edgeproxy/edgeproxy/dispatch"
)

// Ownership is an immutable snapshot of who owns which destination: every
// binding (default bindings of prefixes included) in a path-compressed
// binary trie per address family, and the ports the cdn serves. It answers
// in the time of a walk down the trie (at most the address's length in
// nodes, in practice a few), allocating nothing, and takes no lock: the
// Manager publishes a new one after every successful change and readers
// load it from an atomic pointer. It is what the data plane's hot paths ask
// (the cdn's HTTP/3 handshake); Resolve stays the explainer, with the
// reason, and TestOwnershipMatchesResolve holds the two equal.
//
// A change builds the next snapshot beside the current one, copying only the
// nodes on the paths it changes (persistent trie), so a single API change
// costs a few hundred bytes whatever the number of bindings, and readers of
// the old snapshot are never disturbed.
type Ownership struct {
	v4, v6 *ownNode
	cdn    CDNPorts
}

// ownNode is a node of the trie: a prefix, where an address binding, one or
// more port-scoped bindings, or only a fork of the tree may sit. A child's
// prefix is longer than its parent's and starts with it; the bit just past
// the parent's prefix picks the child.
type ownNode struct {
	pfx   netip.Prefix
	child [2]*ownNode
	owner dispatch.Owner // the address binding's owner at exactly pfx; 0: none
	ports []portOwner    // port-scoped bindings at exactly pfx, by protocol and port
	tx    *ownTx         // the build that made the node: only it may change it
}

type portOwner struct {
	proto dispatch.Protocol
	port  uint16
	owner dispatch.Owner
}

// ownTx is one build of a snapshot. Nodes it made are its own to change in
// place (a whole build makes every node); every other node is copied on its
// way to a change, so published snapshots never change.
type ownTx struct{ _ int }

// NewOwnership returns the ownership snapshot of a valid state and what the
// services serve. Validate the state first: like Table, it does not.
func NewOwnership(st *State, svc Services) *Ownership {
	o := &Ownership{cdn: CDNPorts{
		HTTP: slices.Clone(svc.CDN.HTTP), HTTPS: slices.Clone(svc.CDN.HTTPS),
		HTTP3: svc.CDN.HTTP3, HTTP3Port: svc.CDN.HTTP3Port,
	}}
	tx := &ownTx{}
	for _, p := range st.Prefixes {
		o.set(tx, dispatchBinding(p.DefaultBinding()))
	}
	for _, b := range st.Bindings {
		o.set(tx, dispatchBinding(b))
	}
	return o
}

// amended returns the snapshot after the data plane's bindings in remove
// were taken out and those in add put in, as Dispatcher.Amend does. o does
// not change.
func (o *Ownership) amended(remove, add []dispatch.Binding) *Ownership {
	next := *o
	tx := &ownTx{}
	for _, b := range remove {
		b.Owner = 0
		next.set(tx, b)
	}
	for _, b := range add {
		next.set(tx, b)
	}
	return &next
}

// set makes b's owner (0: none) the owner of its prefix, protocol and port.
func (o *Ownership) set(tx *ownTx, b dispatch.Binding) {
	p := b.Prefix.Masked()
	if !p.IsValid() {
		return
	}
	root := &o.v6
	if p.Addr().Is4() {
		root = &o.v4
	}
	*root = tx.update(*root, p, b)
}

// Owner returns the service that owns proto, addr and port: the owner of the
// longest binding that contains addr, a port-scoped one for proto and port
// before an address binding of the same length. It is empty outside every
// binding.
func (o *Ownership) Owner(proto dispatch.Protocol, addr netip.Addr, port uint16) Service {
	addr = addr.Unmap()
	n := o.v6
	if addr.Is4() {
		n = o.v4
	}
	var best dispatch.Owner
	for n != nil && n.pfx.Contains(addr) {
		if w := n.portOwner(proto, port); w != 0 {
			best = w
		} else if n.owner != 0 {
			best = n.owner
		}
		at := n.pfx.Bits()
		if at >= addr.BitLen() {
			break
		}
		n = n.child[bitAt(addr, at)]
	}
	switch best {
	case ownerCDN:
		return CDN
	case ownerSpectrum:
		return Spectrum
	case ownerMT:
		return MagicTransit
	}
	return ""
}

// CDN reports whether the cdn's socket receives proto to addr and port: the
// address belongs to the cdn and the cdn serves proto/port. It is
// Resolve(...).Outcome == OutcomeCDN, without the lock, the scan and the
// sentence.
func (o *Ownership) CDN(proto dispatch.Protocol, addr netip.Addr, port uint16) bool {
	return o.cdn.Serves(proto, port) && o.Owner(proto, addr, port) == CDN
}

func (n *ownNode) portOwner(proto dispatch.Protocol, port uint16) dispatch.Owner {
	lo, hi := 0, len(n.ports)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if e := n.ports[mid]; e.proto < proto || (e.proto == proto && e.port < port) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(n.ports) && n.ports[lo].proto == proto && n.ports[lo].port == port {
		return n.ports[lo].owner
	}
	return 0
}

// update returns the tree n with b applied at the node of exactly p (made
// when missing), pruned of nodes that hold nothing. Nodes not made by tx are
// copied, never changed.
func (tx *ownTx) update(n *ownNode, p netip.Prefix, b dispatch.Binding) *ownNode {
	if n == nil {
		leaf := &ownNode{pfx: p, tx: tx}
		leaf.apply(b)
		return leaf.prune()
	}
	c := commonBits(n.pfx.Addr(), p.Addr(), min(n.pfx.Bits(), p.Bits()))
	switch {
	case c == n.pfx.Bits() && c == p.Bits(): // n is p
		n = tx.own(n)
		n.apply(b)
	case c == n.pfx.Bits(): // n contains p
		n = tx.own(n)
		i := bitAt(p.Addr(), c)
		n.child[i] = tx.update(n.child[i], p, b)
	case c == p.Bits(): // p contains n
		m := &ownNode{pfx: p, tx: tx}
		m.child[bitAt(n.pfx.Addr(), c)] = n
		m.apply(b)
		n = m
	default: // they part at bit c
		m := &ownNode{pfx: netip.PrefixFrom(p.Addr(), c).Masked(), tx: tx}
		m.child[bitAt(n.pfx.Addr(), c)] = n
		m.child[bitAt(p.Addr(), c)] = tx.update(nil, p, b)
		n = m
	}
	return n.prune()
}

// own returns n, or a copy of it that tx may change.
func (tx *ownTx) own(n *ownNode) *ownNode {
	if n.tx == tx {
		return n
	}
	c := *n
	c.tx = tx
	return &c
}

// apply sets b's owner (0: none) at n. The ports slice is replaced, never
// written: an older snapshot may share it.
func (n *ownNode) apply(b dispatch.Binding) {
	if b.Protocol == 0 {
		n.owner = b.Owner
		return
	}
	ports := make([]portOwner, 0, len(n.ports)+1)
	for _, e := range n.ports {
		if e.proto != b.Protocol || e.port != b.Port {
			ports = append(ports, e)
		}
	}
	if b.Owner != 0 {
		ports = append(ports, portOwner{b.Protocol, b.Port, b.Owner})
		slices.SortFunc(ports, func(x, y portOwner) int {
			if x.proto != y.proto {
				return int(x.proto) - int(y.proto)
			}
			return int(x.port) - int(y.port)
		})
	}
	if len(ports) == 0 {
		ports = nil
	}
	n.ports = ports
}

// prune returns n, or what replaces it when it holds no binding: nothing
// without children, its child with one.
func (n *ownNode) prune() *ownNode {
	if n.owner != 0 || len(n.ports) > 0 {
		return n
	}
	switch {
	case n.child[0] == nil:
		return n.child[1]
	case n.child[1] == nil:
		return n.child[0]
	}
	return n
}

// bitAt returns bit i of a, counted from the most significant.
func bitAt(a netip.Addr, i int) int {
	if a.Is4() {
		b := a.As4()
		return int(b[i>>3]>>(7-i&7)) & 1
	}
	b := a.As16()
	return int(b[i>>3]>>(7-i&7)) & 1
}

// commonBits returns how many leading bits a and b (one family) share, at
// most limit.
func commonBits(a, b netip.Addr, limit int) int {
	x, y := a.As16(), b.As16()
	off := 0
	if a.Is4() {
		off = 96
	}
	for i := off / 8; i < 16; i++ {
		if d := x[i] ^ y[i]; d != 0 {
			return min(limit, i*8+bits.LeadingZeros8(d)-off)
		}
	}
	return limit
}
