package spectrum

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the proxy's Prometheus metrics, named edgeproxy_spectrum_*.
type metrics struct {
	connections *prometheus.CounterVec
	active      *prometheus.GaugeVec
	bytes       *prometheus.CounterVec
	datagrams   *prometheus.CounterVec
	refused     *prometheus.CounterVec
	dropped     *prometheus.CounterVec
	originDown  *prometheus.CounterVec
	copied      *prometheus.CounterVec

	copiedOnce                 sync.Once // the first TCP app makes the copied series
	copiedBuffer, copiedSplice prometheus.Counter

	logsSuppressed prometheus.Counter
	fdShortage     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_spectrum_connections_total",
			Help: "TCP connections and UDP flows accepted, by app.",
		}, []string{"app", "protocol"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgeproxy_spectrum_active",
			Help: "TCP connections and UDP flows open now, by app.",
		}, []string{"app", "protocol"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_spectrum_bytes_total",
			Help: "Payload bytes forwarded, by app and direction (to_origin, to_client).",
		}, []string{"app", "protocol", "direction"}),
		datagrams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_spectrum_datagrams_total",
			Help: "UDP datagrams forwarded, by app and direction (to_origin, to_client).",
		}, []string{"app", "direction"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_spectrum_refused_total",
			Help: "Connections and flows refused, by reason: firewall, limit (the proxy's, the app's or the descriptor budget's), share (an app's part of the UDP flows), origin_down, socket, no_app.",
		}, []string{"app", "protocol", "reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_spectrum_dropped_total",
			Help: "UDP datagrams dropped, by reason: spp_missing (a reply without its Simple Proxy Protocol header), too_big (larger than spectrum.max_datagram), write (the socket refused it).",
		}, []string{"app", "reason"}),
		originDown: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_spectrum_origin_failures_total",
			Help: "Times an origin failed (TCP connect error, UDP ICMP error) and was skipped for a while.",
		}, []string{"app"}),
		copied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_spectrum_tcp_copied_bytes_total",
			Help: "TCP payload bytes moved, by path: buffer (small messages, read and written through a small buffer) or splice (bulk, through a pipe in the kernel).",
		}, []string{"path"}),
		logsSuppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeproxy_spectrum_refusal_logs_suppressed_total",
			Help: "Refusal log lines left out by the rate limit (the refusals are still counted in edgeproxy_spectrum_refused_total).",
		}),
		fdShortage: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeproxy_spectrum_fd_exhausted_total",
			Help: "Origin dials and flow sockets that failed with EMFILE or ENFILE: a local shortage, refused as limit, never an origin failure.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.connections, m.active, m.bytes, m.datagrams, m.refused, m.dropped, m.originDown,
			m.copied, m.logsSuppressed, m.fdShortage)
	}
	return m
}

// appMetrics are one app's metrics, looked up once: only the series its
// protocol and mode can move, so that /metrics has no series that can
// only ever be zero (no datagrams nor drops for a TCP app, no spp_missing
// for a UDP app without Simple Proxy Protocol). The others are nil.
type appMetrics struct {
	m                               *metrics
	name                            string
	proto                           Protocol
	connections                     prometheus.Counter
	active                          prometheus.Gauge
	bytesToOrigin, bytesToClient    prometheus.Counter
	datagramsToOrigin, datagramsToC prometheus.Counter
	sppMissing, writeDrops, tooBig  prometheus.Counter
	originDown                      prometheus.Counter
}

func (m *metrics) forApp(a App) *appMetrics {
	name, p := a.Name, string(a.Protocol)
	am := &appMetrics{
		m: m, name: name, proto: a.Protocol,
		connections:   m.connections.WithLabelValues(name, p),
		active:        m.active.WithLabelValues(name, p),
		bytesToOrigin: m.bytes.WithLabelValues(name, p, "to_origin"),
		bytesToClient: m.bytes.WithLabelValues(name, p, "to_client"),
		originDown:    m.originDown.WithLabelValues(name),
	}
	switch a.Protocol {
	case TCP:
		m.copiedOnce.Do(func() {
			m.copiedBuffer, m.copiedSplice = m.copied.WithLabelValues("buffer"), m.copied.WithLabelValues("splice")
		})
	case UDP:
		am.datagramsToOrigin = m.datagrams.WithLabelValues(name, "to_origin")
		am.datagramsToC = m.datagrams.WithLabelValues(name, "to_client")
		am.writeDrops = m.dropped.WithLabelValues(name, "write")
		am.tooBig = m.dropped.WithLabelValues(name, "too_big")
		if a.Proxy == ProxySimple {
			am.sppMissing = m.dropped.WithLabelValues(name, "spp_missing")
		}
	}
	return am
}

// forget deletes the series of the apps of old that now no longer has, so
// that an app a reload removed or renamed leaves none behind: every series
// of a name no app of now has, the series of the protocol an app of that
// name no longer has, spp_missing of an app that no longer speaks Simple
// Proxy Protocol. A connection or flow of such an app that is still open
// counts on in series no longer exported.
func (m *metrics) forget(old, now []App) {
	type nameProto struct {
		name  string
		proto Protocol
	}
	names, protos, spp := map[string]bool{}, map[nameProto]bool{}, map[string]bool{}
	for _, a := range now {
		names[a.Name] = true
		protos[nameProto{a.Name, a.Protocol}] = true
		spp[a.Name] = spp[a.Name] || a.Protocol == UDP && a.Proxy == ProxySimple
	}
	type partial interface{ DeletePartialMatch(prometheus.Labels) int }
	byProtocol := []partial{m.connections, m.active, m.bytes, m.refused}
	udpOnly := []partial{m.datagrams, m.dropped}
	for _, a := range old {
		app := prometheus.Labels{"app": a.Name}
		switch {
		case !names[a.Name]:
			for _, v := range append(append(byProtocol, udpOnly...), m.originDown) {
				v.DeletePartialMatch(app)
			}
		case !protos[nameProto{a.Name, a.Protocol}]:
			for _, v := range byProtocol {
				v.DeletePartialMatch(prometheus.Labels{"app": a.Name, "protocol": string(a.Protocol)})
			}
			if a.Protocol == UDP {
				for _, v := range udpOnly {
					v.DeletePartialMatch(app)
				}
			}
		case a.Protocol == UDP && a.Proxy == ProxySimple && !spp[a.Name]:
			m.dropped.DeleteLabelValues(a.Name, "spp_missing")
		}
	}
}

func (am *appMetrics) refuse(reason string) {
	am.m.refused.WithLabelValues(am.name, string(am.proto), reason).Inc()
}

// RefusedCounter returns the counter of an app's refusals for a reason
// (firewall, limit, origin_down, no_app), for tests and diagnostics.
func (p *Proxy) RefusedCounter(app, protocol, reason string) prometheus.Counter {
	return p.m.refused.WithLabelValues(app, protocol, reason)
}

// ConnectionsCounter returns the counter of an app's connections or flows.
func (p *Proxy) ConnectionsCounter(app, protocol string) prometheus.Counter {
	return p.m.connections.WithLabelValues(app, protocol)
}

// DroppedCounter returns the counter of an app's dropped datagrams for a
// reason (spp_missing, too_big, write).
func (p *Proxy) DroppedCounter(app, reason string) prometheus.Counter {
	return p.m.dropped.WithLabelValues(app, reason)
}

// OpenConnections returns the TCP connections open now (each a client's
// and its origin's): what a drain waits for.
func (p *Proxy) OpenConnections() int64 { return p.conns.Load() }

// Flows returns the number of open UDP flows.
func (p *Proxy) Flows() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.flows)
}

// Pipes returns the splice pipes open (lent and idle).
func (p *Proxy) Pipes() int { return p.pipes.inUse() }
