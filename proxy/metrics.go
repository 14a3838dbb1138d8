package proxy

import (
	"crypto/tls"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the proxy's Prometheus metrics, named edgeproxy_cdn_*.
type metrics struct {
	// series caches the counters and histograms of a request's labels:
	// looking them up by label values costs more than the request's own
	// bookkeeping.
	series sync.Map // seriesKey -> *requestSeries

	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	handshakes   *prometheus.CounterVec
	active       *prometheus.GaugeVec
	certExpiry   *prometheus.GaugeVec
	refusedConns prometheus.Counter
	refusedH3    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_requests_total",
			Help: "Requests by site (- for none), status code and protocol.",
		}, []string{"site", "code", "protocol"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edgeproxy_cdn_request_duration_seconds",
			Help:    "Time from a request's first byte to its last byte sent, by protocol.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"protocol"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_tls_handshakes_total",
			Help: "Completed TLS handshakes by version, TCP and QUIC.",
		}, []string{"version"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgeproxy_cdn_connections_active",
			Help: "Open client connections by protocol (http/1.1, http/1.1+tls, h2, h3).",
		}, []string{"protocol"}),
		certExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgeproxy_cdn_certificate_expiry_timestamp_seconds",
			Help: "When each certificate expires (Unix time), by its first name and source.",
		}, []string{"name", "source"}),
		refusedConns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_connections_refused_total",
			Help: "Client connections refused because limits.max_connections were open.",
		}),
		refusedH3: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_http3_foreign_handshakes_total",
			Help: "QUIC handshakes refused because their destination is not bound to the cdn.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.handshakes, m.active, m.certExpiry, m.refusedConns, m.refusedH3)
	}
	return m
}

func (m *metrics) handshake(version uint16) {
	m.handshakes.WithLabelValues(tls.VersionName(version)).Inc()
}

func (m *metrics) setCertificates(certs []Certificate) {
	m.certExpiry.Reset()
	for _, c := range certs {
		if c.Leaf == nil {
			continue
		}
		name := c.Leaf.Subject.CommonName
		if names := certNames(c.Leaf); len(names) > 0 {
			name = names[0]
		}
		m.certExpiry.WithLabelValues(name, c.Source).Set(float64(c.Leaf.NotAfter.Unix()))
	}
}

type seriesKey struct {
	site   string
	status int
	proto  string
}

type requestSeries struct {
	count   prometheus.Counter
	latency prometheus.Observer
}

// request counts a finished request.
func (m *metrics) request(site string, status int, proto string, d time.Duration) {
	k := seriesKey{site, status, proto}
	v, ok := m.series.Load(k)
	if !ok {
		v, _ = m.series.LoadOrStore(k, &requestSeries{
			count:   m.requests.WithLabelValues(site, strconv.Itoa(status), proto),
			latency: m.latency.WithLabelValues(proto),
		})
	}
	s := v.(*requestSeries)
	s.count.Inc()
	s.latency.Observe(d.Seconds())
}
