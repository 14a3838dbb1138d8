package config

import (
	"net"
	"net/netip"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

// admin checks admin.listen; a literal address is a guard.
func (b *planner) admin() {
	l := b.p.Admin.Listen
	ap, err := netip.ParseAddrPort(l)
	if err != nil {
		if _, _, herr := net.SplitHostPort(l); herr != nil {
			b.fail("admin.listen: %q is not host:port", l)
		}
		return
	}
	if !ap.Addr().IsUnspecified() {
		b.guard(ap.Addr(), "the admin listen address "+l)
	}
}

// prefixes adds the file's prefixes to the binding state.
func (b *planner) prefixes() {
	st := b.p.State
	for i, p := range b.p.Config.Prefixes {
		cidr, err := bindings.ParseCIDR(p.CIDR)
		if err != nil {
			b.fail("prefixes[%d].cidr: %v", i, err)
			continue
		}
		svc, err := bindings.ParseService(p.Service)
		if err != nil {
			b.fail("prefixes[%d] %s: service: %v", i, p.CIDR, err)
			continue
		}
		st.Prefixes = append(st.Prefixes, bindings.NewPrefix(cidr, svc, bindings.FromConfig))
	}
}

// bindings adds the file's bindings to the binding state and assigns them
// their prefixes.
func (b *planner) bindings() {
	st := b.p.State
	for i, in := range b.p.Config.Bindings {
		if bd, ok := b.binding(i, in); ok {
			st.Bindings = append(st.Bindings, bd)
		}
	}
	st.AssignPrefixes()
}

func (b *planner) binding(i int, in Binding) (bindings.Binding, bool) {
	cidr, err := bindings.ParseCIDR(in.CIDR)
	if err != nil {
		b.fail("bindings[%d].cidr: %v", i, err)
		return bindings.Binding{}, false
	}
	svc, err := bindings.ParseService(in.Service)
	if err != nil {
		b.fail("bindings[%d] %s: service: %v", i, in.CIDR, err)
		return bindings.Binding{}, false
	}
	proto, port, err := dispatch.ParseScope(in.Protocol, in.Port)
	if err != nil {
		b.fail("bindings[%d] %s: %v", i, in.CIDR, err)
		return bindings.Binding{}, false
	}
	return bindings.NewBinding(cidr, proto, port, svc, bindings.FromConfig), true
}
