package bindings

import (
	"github.com/edgeproxy/edgeproxy/dispatch"
)

// The dispatcher's owners of the services.
const (
	ownerCDN      dispatch.Owner = 1
	ownerSpectrum dispatch.Owner = 2
	ownerMT       dispatch.Owner = 3
)

var owners = map[Service]dispatch.Owner{CDN: ownerCDN, Spectrum: ownerSpectrum, MagicTransit: ownerMT}

// Label returns the dispatcher label of a service's socket for a protocol,
// such as "cdn/tcp". The services register their sockets under these.
func Label(svc Service, proto dispatch.Protocol) string {
	return string(svc) + "/" + proto.String()
}

// Labels are the labels of every socket the services own.
var Labels = []string{
	Label(CDN, dispatch.TCP), Label(CDN, dispatch.UDP),
	Label(Spectrum, dispatch.TCP), Label(Spectrum, dispatch.UDP),
}

func spectrumLabel(p dispatch.Protocol) string { return Label(Spectrum, p) }

// Table translates a valid state and what the services serve into the
// dispatcher's table: one dispatch binding per prefix and per binding, the
// cdn's ports as a port set, spectrum's apps as apps, magic transit as pass.
// Validate the state first: Table does not.
func Table(st *State, svc Services) *dispatch.Table {
	cdnPorts := map[dispatch.ProtoPort]string{}
	for _, ps := range [][]uint16{svc.CDN.HTTP, svc.CDN.HTTPS} {
		for _, p := range ps {
			cdnPorts[dispatch.ProtoPort{Protocol: dispatch.TCP, Port: p}] = Label(CDN, dispatch.TCP)
		}
	}
	if svc.CDN.HTTP3 {
		cdnPorts[dispatch.ProtoPort{Protocol: dispatch.UDP, Port: svc.CDN.HTTP3Port}] = Label(CDN, dispatch.UDP)
	}
	t := &dispatch.Table{
		Owners: map[dispatch.Owner]dispatch.Policy{
			ownerCDN:      {Kind: dispatch.PolicyPorts, Ports: cdnPorts},
			ownerSpectrum: {Kind: dispatch.PolicyApps},
			ownerMT:       {Kind: dispatch.PolicyPass},
		},
		Bindings: make([]dispatch.Binding, 0, len(st.Prefixes)+len(st.Bindings)),
		Apps:     make([]dispatch.App, 0, len(svc.Apps)),
	}
	for _, p := range st.Prefixes {
		t.Bindings = append(t.Bindings, dispatchBinding(p.DefaultBinding()))
	}
	for _, b := range st.Bindings {
		t.Bindings = append(t.Bindings, dispatchBinding(b))
	}
	for _, a := range svc.Apps {
		t.Apps = append(t.Apps, dispatch.App{Owner: ownerSpectrum, Protocol: a.Protocol, Edge: a.Edge, Ports: a.Ports, Label: spectrumLabel(a.Protocol)})
	}
	return t
}

// dispatchBinding is the dispatch binding of b.
func dispatchBinding(b Binding) dispatch.Binding {
	return dispatch.Binding{Prefix: b.CIDR, Protocol: b.Protocol, Port: b.Port, Owner: owners[b.Service]}
}

// Key is b's identity in the data plane, under which its traffic is
// counted whatever its service.
func (b Binding) Key() dispatch.BindingKey { return dispatchBinding(b).Key() }
