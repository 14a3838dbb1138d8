package bindings

import (
	"cmp"
	"fmt"
	"net/netip"

	"github.com/edgeproxy/edgeproxy/dispatch"
)

// Outcome is what happens to a connection or datagram.
type Outcome string

// The outcomes.
const (
	OutcomeCDN      Outcome = "cdn"      // the cdn's socket receives it
	OutcomeSpectrum Outcome = "spectrum" // spectrum's socket receives it
	OutcomeRefuse   Outcome = "refuse"   // TCP reset / ICMP unreachable
	OutcomeKernel   Outcome = "kernel"   // not steered: the kernel's normal lookup decides
)

// Resolution is the outcome for one destination and why.
type Resolution struct {
	Outcome Outcome
	Service Service  // the service that owns the address; empty outside every prefix
	Binding *Binding // the binding that decided the owner; nil outside every prefix
	App     *App     // the spectrum app that serves it, for OutcomeSpectrum
	Reason  string   // one sentence
}

// Resolve says what happens to a packet of protocol proto to addr and port,
// under state st and what the services serve. It follows the rules of
// docs/design.md literally and is the service-level model that the data
// plane must agree with.
func Resolve(st *State, svc Services, proto dispatch.Protocol, addr netip.Addr, port uint16) Resolution {
	addr = addr.Unmap()
	owner := ownerOf(st, proto, addr, port)
	if owner == nil {
		// Bindings sit inside prefixes: none applies.
		return Resolution{Outcome: OutcomeKernel, Reason: fmt.Sprintf("%s is outside every onboarded prefix, so the kernel's normal socket lookup decides.", addr)}
	}
	by := "the default binding of its prefix"
	switch {
	case owner.PortScoped():
		by = fmt.Sprintf("the port-scoped binding %s %s/%d", owner.CIDR, owner.Protocol, owner.Port)
	case !owner.Default:
		by = fmt.Sprintf("the binding %s", owner.CIDR)
	}
	r := decide(owner, svc, proto, addr, port)
	switch r.Outcome {
	case OutcomeKernel:
		r.Reason = fmt.Sprintf("%s belongs to magic-transit by %s, which passes every port to the kernel's normal lookup.", addr, by)
	case OutcomeCDN:
		r.Reason = fmt.Sprintf("%s belongs to cdn by %s, and cdn serves %s/%d.", addr, by, proto, port)
	case OutcomeSpectrum:
		r.Reason = fmt.Sprintf("%s belongs to spectrum by %s, and %s serves %s/%d there.", addr, by, r.App, proto, port)
	case OutcomeRefuse:
		if owner.Service == CDN {
			r.Reason = fmt.Sprintf("%s belongs to cdn by %s, and cdn does not serve %s/%d (it serves %s).", addr, by, proto, port, svc.CDN)
		} else {
			r.Reason = fmt.Sprintf("%s belongs to spectrum by %s, and no spectrum app serves %s/%d there.", addr, by, proto, port)
		}
	}
	return r
}

// resolveQuiet is Resolve without the reason, for the many destinations a
// plan asks about.
func resolveQuiet(st *State, svc Services, proto dispatch.Protocol, addr netip.Addr, port uint16) Resolution {
	addr = addr.Unmap()
	owner := ownerOf(st, proto, addr, port)
	if owner == nil {
		return Resolution{Outcome: OutcomeKernel}
	}
	return decide(owner, svc, proto, addr, port)
}

// ownerOf returns the binding that owns proto to addr and port: the
// longest match, a tie going to the port-scoped binding; nil outside every
// prefix.
func ownerOf(st *State, proto dispatch.Protocol, addr netip.Addr, port uint16) *Binding {
	prefix := -1
	for i, p := range st.Prefixes {
		if p.CIDR.Contains(addr) && (prefix < 0 || p.CIDR.Bits() > st.Prefixes[prefix].CIDR.Bits()) {
			prefix = i
		}
	}
	if prefix < 0 {
		return nil // bindings sit inside prefixes: none applies
	}
	// The prefix's default binding holds its whole CIDR with no port: a
	// binding beats it by a longer CIDR, or by a port at the same length.
	best, bits, scoped := -1, st.Prefixes[prefix].CIDR.Bits(), false
	for i := range st.Bindings {
		b := &st.Bindings[i]
		if !b.CIDR.Contains(addr) || (b.PortScoped() && (b.Protocol != proto || b.Port != port)) {
			continue
		}
		if n := b.CIDR.Bits(); n > bits || (n == bits && b.PortScoped() && !scoped) {
			best, bits, scoped = i, n, b.PortScoped()
		}
	}
	if best < 0 {
		def := st.Prefixes[prefix].DefaultBinding()
		return &def
	}
	b := st.Bindings[best]
	return &b
}

// decide is the outcome of proto to addr and port under owner, without
// its reason.
func decide(owner *Binding, svc Services, proto dispatch.Protocol, addr netip.Addr, port uint16) Resolution {
	r := Resolution{Service: owner.Service, Binding: owner}
	switch owner.Service {
	case MagicTransit:
		r.Outcome = OutcomeKernel
	case CDN:
		r.Outcome = OutcomeRefuse
		if svc.CDN.Serves(proto, port) {
			r.Outcome = OutcomeCDN
		}
	case Spectrum:
		r.Outcome = OutcomeRefuse
		if a := appFor(svc.Apps, proto, addr, port); a != nil {
			r.Outcome, r.App = OutcomeSpectrum, a
		}
	}
	return r
}

// appFor returns the app that serves proto to addr and port: the most
// specific edge, then a single port over a range over any port.
func appFor(apps []App, proto dispatch.Protocol, addr netip.Addr, port uint16) *App {
	var best *App
	for i := range apps {
		a := &apps[i]
		if !a.Serves(proto, addr, port) {
			continue
		}
		if best == nil || cmp.Or(cmp.Compare(a.Edge.Bits(), best.Edge.Bits()), cmp.Compare(a.Ports.Specificity(), best.Ports.Specificity())) > 0 {
			best = a
		}
	}
	return best
}
