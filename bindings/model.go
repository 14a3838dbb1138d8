// Package bindings holds the model of who answers which address: the service
// catalogue, onboarded prefixes with their default service, and bindings of
// sub-ranges (or one protocol and port of them) to services. It validates a
// whole candidate state, resolves an address to its outcome with the reasons,
// and translates a state into the dispatcher's table.
//
// The package knows no sockets: package dispatch steers, this package decides
// what it steers.
package bindings

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"

	"github.com/edgeproxy/edgeproxy/dispatch"
)

// Service is the id of a service: "cdn", "spectrum" or "magic-transit".
type Service string

// The services.
const (
	CDN          Service = "cdn"
	Spectrum     Service = "spectrum"
	MagicTransit Service = "magic-transit"
)

// ServiceInfo is an entry of the service catalogue.
type ServiceInfo struct {
	ID   Service `json:"id"`
	Name string  `json:"name"`
}

// Catalogue lists the services, in a stable order.
var Catalogue = []ServiceInfo{
	{CDN, "CDN"},
	{Spectrum, "Spectrum"},
	{MagicTransit, "Magic Transit"},
}

// Known reports whether s is in the catalogue.
func (s Service) Known() bool {
	switch s {
	case CDN, Spectrum, MagicTransit:
		return true
	}
	return false
}

// Name returns the display name of s.
func (s Service) Name() string {
	for _, si := range Catalogue {
		if si.ID == s {
			return si.Name
		}
	}
	return string(s)
}

// Source says where a prefix or binding was declared.
type Source string

// The sources.
const (
	FromConfig Source = "config"
	FromAPI    Source = "api"
)

// Prefix is an onboarded address block with its default service. Its default
// binding is the prefix itself.
type Prefix struct {
	ID      string
	CIDR    netip.Prefix
	Service Service
	Source  Source
}

// NewPrefix returns a prefix with its id derived from the CIDR.
func NewPrefix(cidr netip.Prefix, svc Service, src Source) Prefix {
	return Prefix{ID: PrefixID(cidr), CIDR: cidr, Service: svc, Source: src}
}

func (p Prefix) String() string { return fmt.Sprintf("prefix %s (%s)", p.CIDR, p.Service) }

// DefaultBinding returns the binding that the prefix itself is.
func (p Prefix) DefaultBinding() Binding {
	return Binding{ID: BindingID(p.CIDR, 0, 0), PrefixID: p.ID, CIDR: p.CIDR, Service: p.Service, Source: p.Source, Default: true}
}

// Binding maps a CIDR inside a prefix, or one protocol and port of it, to a
// service.
type Binding struct {
	ID       string
	PrefixID string
	CIDR     netip.Prefix
	// Protocol and Port are zero for an address binding, both set for a
	// port-scoped one.
	Protocol dispatch.Protocol
	Port     uint16
	Service  Service
	Source   Source
	Default  bool // the prefix's own binding
}

// NewBinding returns a binding with its id derived from the CIDR, protocol
// and port. The prefix is found later by containment (see State.PrefixOf).
func NewBinding(cidr netip.Prefix, proto dispatch.Protocol, port uint16, svc Service, src Source) Binding {
	return Binding{ID: BindingID(cidr, proto, port), CIDR: cidr, Protocol: proto, Port: port, Service: svc, Source: src}
}

// PortScoped reports whether b takes only one protocol and port.
func (b Binding) PortScoped() bool { return b.Protocol != 0 }

func (b Binding) String() string {
	if b.PortScoped() {
		return fmt.Sprintf("binding %s %s/%d -> %s", b.CIDR, b.Protocol, b.Port, b.Service)
	}
	return fmt.Sprintf("binding %s -> %s", b.CIDR, b.Service)
}

// PrefixID is the id of the prefix cidr: stable, derived from the CIDR alone.
func PrefixID(cidr netip.Prefix) string {
	return hashID("prefix " + cidr.String())
}

// BindingID is the id of a binding: stable, derived from the CIDR, protocol
// and port, never from the service.
func BindingID(cidr netip.Prefix, proto dispatch.Protocol, port uint16) string {
	if proto == 0 {
		return hashID("binding " + cidr.String())
	}
	return hashID(fmt.Sprintf("binding %s %s/%d", cidr, proto, port))
}

func hashID(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// CDNPorts are the ports the cdn serves on every address bound to it.
type CDNPorts struct {
	HTTP      []uint16 // tcp, cleartext
	HTTPS     []uint16 // tcp, TLS
	HTTP3     bool
	HTTP3Port uint16 // udp; one of HTTPS
}

// Serves reports whether the cdn serves proto/port.
func (c CDNPorts) Serves(proto dispatch.Protocol, port uint16) bool {
	switch proto {
	case dispatch.TCP:
		for _, ps := range [][]uint16{c.HTTP, c.HTTPS} {
			for _, p := range ps {
				if p == port {
					return true
				}
			}
		}
	case dispatch.UDP:
		return c.HTTP3 && c.HTTP3Port == port
	}
	return false
}

// App is a spectrum application as the data plane sees it: which protocol
// and ports of which edge range it serves.
type App struct {
	Name     string
	Protocol dispatch.Protocol
	Edge     netip.Prefix
	Ports    dispatch.PortRange
}

func (a App) String() string {
	return fmt.Sprintf("app %q (%s %s ports %s)", a.Name, a.Protocol, a.Edge, a.Ports)
}

// Serves reports whether a serves proto to addr and port.
func (a App) Serves(proto dispatch.Protocol, addr netip.Addr, port uint16) bool {
	return a.Protocol == proto && a.Edge.Contains(addr) && a.Ports.Contains(port)
}

// Services is what the services serve: the cdn's ports and spectrum's apps.
type Services struct {
	CDN  CDNPorts
	Apps []App
}

// State is a whole candidate binding state: prefixes and the bindings inside
// them (default bindings are implied by the prefixes).
type State struct {
	Prefixes []Prefix
	Bindings []Binding
}

// Clone returns a copy of s that shares nothing with it.
func (s *State) Clone() *State {
	return &State{
		Prefixes: append([]Prefix(nil), s.Prefixes...),
		Bindings: append([]Binding(nil), s.Bindings...),
	}
}

// PrefixOf returns the prefix that contains cidr, if any. Prefixes do not
// overlap in a valid state, so there is at most one.
func (s *State) PrefixOf(cidr netip.Prefix) (Prefix, bool) {
	return newIndex(s).containing(cidr, cidr.Bits())
}

// AssignPrefixes sets the PrefixID of every binding that has none to the
// prefix that contains it.
func (s *State) AssignPrefixes() {
	idx := newIndex(s)
	for i := range s.Bindings {
		if b := &s.Bindings[i]; b.PrefixID == "" {
			if p, ok := idx.containing(b.CIDR, b.CIDR.Bits()); ok {
				b.PrefixID = p.ID
			}
		}
	}
}

// AllBindings returns the default bindings of every prefix followed by the
// other bindings.
func (s *State) AllBindings() []Binding {
	out := make([]Binding, 0, len(s.Prefixes)+len(s.Bindings))
	for _, p := range s.Prefixes {
		out = append(out, p.DefaultBinding())
	}
	return append(out, s.Bindings...)
}
