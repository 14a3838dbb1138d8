package proxy

import (
	"crypto/tls"
	"strconv"
	"sync"
	"sync/atomic"
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
	active       *activeConns
	certExpiry   *prometheus.GaugeVec
	refusedConns prometheus.Counter
	refusedH3    prometheus.Counter
	retries      *prometheus.CounterVec
	upgrades     prometheus.Gauge
	refused      map[string]prometheus.Counter // by reason (check.go)
	spoofed      prometheus.Counter
	handoffs     prometheus.Counter
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
		active: &activeConns{desc: prometheus.NewDesc("edgeproxy_cdn_connections_active",
			"Open client connections by protocol (http/1.1, http/1.1+tls, h2, h3): the protocols the configuration serves, and another while it holds connections.",
			[]string{"protocol"}, nil)},
		certExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edgeproxy_cdn_certificate_expiry_timestamp_seconds",
			Help: "When each certificate expires (Unix time), by its first name and source.",
		}, []string{"name", "source"}),
		refusedConns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_connections_refused_total",
			Help: "Client connections refused at accept: limits.max_connections were open, or the descriptor budget (fd_budget) was spent.",
		}),
		refusedH3: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_http3_foreign_handshakes_total",
			Help: "QUIC handshakes refused because their destination is not bound to the cdn.",
		}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_cdn_retries_total",
			Help: "Requests sent again to another origin after a connection failure, by site.",
		}, []string{"site"}),
		upgrades: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgeproxy_cdn_upgraded_connections",
			Help: "Open upgraded connections (WebSocket and other Upgrade protocols) relayed to origins.",
		}),
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgeproxy_cdn_requests_refused_total",
		Help: "Requests the edge refused before routing because no origin may read them (check.go), by reason.",
	}, []string{"reason"})
	m.refused = map[string]prometheus.Counter{}
	for _, r := range refusalReasons {
		m.refused[r] = refused.WithLabelValues(r)
	}
	m.spoofed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgeproxy_cdn_spoofed_headers_total",
		Help: "Client headers dropped because they spell one the proxy sets (X-Forwarded-Proto, X-Forwarded-Host, X-Edge-Addr, X-Request-Id) in any case, or an underscore look-alike of one it sets or drops.",
	})
	m.handoffs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "edgeproxy_cdn_http1_handoffs_total",
		Help: "HTTP/1.1 connections the proxy's own engine handed to the general path at a request it does not serve itself (a body, an Upgrade, HTTP/1.0, a refusal, an HTTP/2 origin).",
	})
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.handshakes, m.active, m.certExpiry, m.refusedConns, m.refusedH3, m.retries, m.upgrades, refused, m.spoofed, m.handoffs)
	}
	return m
}

// The protocols of edgeproxy_cdn_connections_active.
const (
	connH1    = iota // http/1.1
	connH1TLS        // http/1.1+tls
	connH2           // h2
	connH3           // h3
	numConnProtocols
)

var connProtocolNames = [numConnProtocols]string{"http/1.1", "http/1.1+tls", "h2", "h3"}

// activeConns is edgeproxy_cdn_connections_active, a collector: a
// protocol's series is there while the configuration serves it (serve),
// or while it holds connections (those of ports a reload took away), so
// that no series can only ever be zero: no http/1.1 without http_ports, no
// http/1.1+tls nor h2 without https_ports, no h3 without http3.
type activeConns struct {
	desc   *prometheus.Desc
	open   [numConnProtocols]connGauge
	served atomic.Uint32 // a bit per protocol
}

// connGauge counts a protocol's open connections.
type connGauge struct{ n atomic.Int64 }

func (g *connGauge) Inc() { g.n.Add(1) }
func (g *connGauge) Dec() { g.n.Add(-1) }

// of returns the gauge of protocol i (connH1, ...).
func (a *activeConns) of(i int) *connGauge { return &a.open[i] }

// serve sets the protocols cfg serves.
func (a *activeConns) serve(cfg Config) {
	var bits uint32
	if len(cfg.HTTPPorts) > 0 {
		bits |= 1 << connH1
	}
	if len(cfg.HTTPSPorts) > 0 {
		bits |= 1<<connH1TLS | 1<<connH2
	}
	if cfg.HTTP3 {
		bits |= 1 << connH3
	}
	a.served.Store(bits)
}

func (a *activeConns) Describe(ch chan<- *prometheus.Desc) { ch <- a.desc }

func (a *activeConns) Collect(ch chan<- prometheus.Metric) {
	served := a.served.Load()
	for i := range numConnProtocols {
		n := a.open[i].n.Load()
		if served&(1<<i) != 0 || n != 0 {
			ch <- prometheus.MustNewConstMetric(a.desc, prometheus.GaugeValue, float64(n), connProtocolNames[i])
		}
	}
}

// refuse counts a refused request.
func (m *metrics) refuse(reason string) {
	if c := m.refused[reason]; c != nil {
		c.Inc()
	}
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

// originCollector exports the origin pools' state and counters.
type originCollector struct {
	pools                                                      *originPools
	up, active, requests, connects, reuse, failures, ejections *prometheus.Desc
}

func newOriginCollector(pools *originPools) *originCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("edgeproxy_cdn_origin_"+name, help, []string{"origin"}, nil)
	}
	return &originCollector{
		pools:     pools,
		up:        d("up", "1 when the origin takes requests; 0 when its health check says down or it is ejected."),
		active:    d("active_requests", "Requests in flight to the origin."),
		requests:  d("requests_total", "Requests sent to the origin, retries included."),
		connects:  d("connects_total", "Connections opened to the origin."),
		reuse:     d("reuse_ratio", "Share of requests sent over a connection already open: 1 - connects/requests."),
		failures:  d("failures_total", "Connection failures and timeouts with the origin."),
		ejections: d("ejections_total", "Times the origin was ejected after failures in a row."),
	}
}

func (c *originCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.active, c.requests, c.connects, c.reuse, c.failures, c.ejections} {
		ch <- d
	}
}

func (c *originCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, o := range c.pools.all() {
		up := 0.0
		if o.health.usable(now) {
			up = 1
		}
		req, conn := o.requests.Load(), o.connects.Load()
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, o.name)
		ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(o.active.Load()), o.name)
		ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(req), o.name)
		ch <- prometheus.MustNewConstMetric(c.connects, prometheus.CounterValue, float64(conn), o.name)
		ch <- prometheus.MustNewConstMetric(c.reuse, prometheus.GaugeValue, reuseRatio(req, conn), o.name)
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(o.failures.Load()), o.name)
		ch <- prometheus.MustNewConstMetric(c.ejections, prometheus.CounterValue, float64(o.health.ejectedTotal.Load()), o.name)
	}
}
