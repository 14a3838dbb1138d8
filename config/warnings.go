package config

import (
	"fmt"
	"net/netip"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// Warning is something a valid file declares that an operator almost never
// means: it loads and serves, and does not do what it seems to. Start and
// reload log each one; edgeproxy check prints the same, and fails on them
// with --strict.
type Warning struct {
	// Key is the key path, as errors name it; empty for the whole file.
	Key string
	// Reason says what is wrong and what it does.
	Reason string
}

func (w Warning) String() string {
	if w.Key == "" {
		return w.Reason
	}
	return w.Key + ": " + w.Reason
}

// Warnings returns the plan's warnings with st the binding state in force:
// the file's with the store's items (nil: the file's alone). Start, reload
// and check all take theirs from here.
func (p *Plan) Warnings(st *bindings.State) []Warning {
	if st == nil {
		st = p.State
	}
	var ws []Warning
	if p.empty {
		ws = append(ws, Warning{Reason: "the file is empty: every key takes its default, and nothing is bound to a service"})
	}
	if c := p.Proxy; len(c.HTTPSPorts) > 0 && len(c.Sites) > 0 && len(p.CDN.Certificates) == 0 {
		ws = append(ws, Warning{Key: "cdn.certificates", Reason: fmt.Sprintf("none, and https_ports %v serve TLS: every handshake fails", c.HTTPSPorts)})
	}
	ws = append(ws, siteWarnings(p, st)...)
	ws = append(ws, appWarnings(p, st)...)
	if p.Store.Etcd.Enabled() && p.Store.Path == "" {
		ws = append(ws, Warning{Key: "store.etcd", Reason: "set without store.path: a restart while etcd cannot be reached starts with no API-made bindings"})
	}
	return ws
}

// siteWarnings: a site's edge_ips none of whose addresses is bound to the
// cdn, and sites when no address at all is: such a site is never served,
// and its hosts answer 421 on the cdn's addresses.
func siteWarnings(p *Plan, st *bindings.State) []Warning {
	var ws []Warning
	anyCDN := reaches(st, netip.Prefix{}, bindings.CDN)
	for i, s := range p.Proxy.Sites {
		if len(s.EdgeIPs) == 0 && !anyCDN {
			ws = append(ws, Warning{Key: siteKey(i), Reason: "no address is bound to the cdn: the site is never served"})
		}
		for j, e := range s.EdgeIPs {
			if !reaches(st, e, bindings.CDN) {
				ws = append(ws, Warning{
					Key:    fmt.Sprintf("%s.edge_ips[%d]", siteKey(i), j),
					Reason: fmt.Sprintf("no address of %s is bound to the cdn: the site is not served there, and its hosts answer 421 on the cdn's addresses", e),
				})
			}
		}
	}
	return ws
}

// appWarnings: a spectrum app whose edge is in no prefix, or whose
// prefixes bind none of its addresses to spectrum: it never receives
// traffic.
func appWarnings(p *Plan, st *bindings.State) []Warning {
	var ws []Warning
	for i, a := range p.Services.Apps {
		key := fmt.Sprintf("spectrum.apps[%d].edge", i)
		switch {
		case !inPrefix(st, a.Edge):
			ws = append(ws, Warning{Key: key, Reason: fmt.Sprintf("%s is inside no prefix: the app never receives traffic", a.Edge)})
		case !reaches(st, a.Edge, bindings.Spectrum):
			ws = append(ws, Warning{Key: key, Reason: fmt.Sprintf("no address of %s is bound to spectrum: the app never receives traffic", a.Edge)})
		}
	}
	return ws
}

// inPrefix reports whether some prefix of st overlaps e.
func inPrefix(st *bindings.State, e netip.Prefix) bool {
	for _, p := range st.Prefixes {
		if p.CIDR.Overlaps(e) {
			return true
		}
	}
	return false
}

// reaches reports whether some address of e (an invalid prefix: any
// address) belongs to svc on some protocol and port: an item of svc lies
// inside e, or the most specific items that contain e include one of svc.
// It does not look further: an item inside e shadowed by more specific
// ones still counts.
func reaches(st *bindings.State, e netip.Prefix, svc bindings.Service) bool {
	best, bestIsSvc := -1, false
	consider := func(c netip.Prefix, s bindings.Service) bool {
		if e.IsValid() && !c.Overlaps(e) {
			return false
		}
		if !e.IsValid() || c.Bits() >= e.Bits() { // c lies inside e
			return s == svc
		}
		switch { // c contains e
		case c.Bits() > best:
			best, bestIsSvc = c.Bits(), s == svc
		case c.Bits() == best:
			bestIsSvc = bestIsSvc || s == svc
		}
		return false
	}
	for _, p := range st.Prefixes {
		if consider(p.CIDR, p.Service) {
			return true
		}
	}
	for _, b := range st.Bindings {
		if consider(b.CIDR, b.Service) {
			return true
		}
	}
	return bestIsSvc
}
