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

// unownedGauges are edgeproxy_spectrum_connections_unowned, by protocol.
func (p *Proxy) unownedGauges() []prometheus.Collector {
	count := func(udp bool) func() float64 {
		return func() float64 {
			n := 0
			p.eachUnowned(func(*tcpPair) {
				if !udp {
					n++
				}
			}, func(*flow) {
				if udp {
					n++
				}
			})
			return float64(n)
		}
	}
	var out []prometheus.Collector
	for _, proto := range []string{"tcp", "udp"} {
		out = append(out, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "edgeproxy_spectrum_connections_unowned",
			Help:        "Connections (tcp) and flows (udp) held on addresses spectrum no longer owns: kept after a move until a drain deadline, or their end.",
			ConstLabels: prometheus.Labels{"protocol": proto},
		}, count(proto == "udp")))
	}
	return out
}

// ownsFunc is Options.Owns.
type ownsFunc = func(udp bool, dst netip.AddrPort) bool
