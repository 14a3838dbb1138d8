package spectrum

import (
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/internal/netaddr"
)

// After a move. spectrum keeps its connections and flows on addresses that
// left it (an L4 proxy cannot ask a client to reconnect), unless the change
// asked for a drain deadline: then, when it passes, CloseUnowned ends those
// still held. The gauge edgeproxy_spectrum_connections_unowned counts them.

// eachUnowned calls tcp with each connection, and udp with each flow, held
// on an address spectrum no longer owns.
func (p *Proxy) eachUnowned(tcp func(*tcpPair), udp func(*flow)) {
	if p.owns == nil {
		return
	}
	p.mu.Lock()
	var pairs []*tcpPair
	for pair := range p.pairs {
		if !p.owns(false, netaddr.AddrPort(pair.client.LocalAddr())) {
			pairs = append(pairs, pair)
		}
	}
	var flows []*flow
	for _, f := range p.flows {
		if !p.owns(true, f.key.edge) {
			flows = append(flows, f)
		}
	}
	p.mu.Unlock()
	for _, pair := range pairs {
		tcp(pair)
	}
	for _, f := range flows {
		udp(f)
	}
}

// CloseUnowned ends every connection and flow held on an address spectrum
// no longer owns (a move's drain deadline passed), and returns how many.
func (p *Proxy) CloseUnowned() int {
	n := 0
	p.eachUnowned(func(pair *tcpPair) { n++; pair.closeBoth("moved") }, func(f *flow) { n++; f.close("moved") })
	return n
}

// unownedCollector is edgeproxy_spectrum_connections_unowned, by protocol:
// a protocol's series while an app of that protocol is configured or one
// of its connections or flows is still held, so that a proxy of TCP apps
// only has no udp series, which could only ever be zero.
type unownedCollector struct {
	p    *Proxy
	desc *prometheus.Desc
}

func (p *Proxy) unownedGauges() prometheus.Collector {
	return unownedCollector{p: p, desc: prometheus.NewDesc("edgeproxy_spectrum_connections_unowned",
		"Connections (tcp) and flows (udp) held on addresses spectrum no longer owns: kept after a move until a drain deadline, or their end.",
		[]string{"protocol"}, nil)}
}

func (c unownedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c unownedCollector) Collect(ch chan<- prometheus.Metric) {
	tcp, udp := 0, 0
	c.p.eachUnowned(func(*tcpPair) { tcp++ }, func(*flow) { udp++ })
	hasTCP, hasUDP := false, false
	if t := c.p.apps.Load(); t != nil {
		for _, a := range t.apps {
			hasTCP = hasTCP || a.Protocol == TCP
			hasUDP = hasUDP || a.Protocol == UDP
		}
	}
	if hasTCP || tcp > 0 {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(tcp), "tcp")
	}
	if hasUDP || udp > 0 {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(udp), "udp")
	}
}

// ownsFunc is Options.Owns.
type ownsFunc = func(udp bool, dst netip.AddrPort) bool
