package fleet

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's fleet metrics.
type metrics struct {
	n        *Node
	refused  prometheus.Counter
	resyncs  prometheus.Counter
	stale    *prometheus.Desc
	revision *prometheus.Desc
	last     *prometheus.Desc
	nodes    *prometheus.Desc
}

func newMetrics(n *Node) metrics {
	return metrics{
		n: n,
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeproxy_fleet_refused_total",
			Help: "Changes of the fleet this node refused (its own configuration conflicts, or it cannot read the value).",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeproxy_fleet_resyncs_total",
			Help: "Full reads of the fleet's state: at the first start, and when the revision held was compacted.",
		}),
		stale:    prometheus.NewDesc("edgeproxy_fleet_stale", "1 while the fleet's store does not answer: the node serves its last applied state.", nil, nil),
		revision: prometheus.NewDesc("edgeproxy_fleet_revision", "The revision of the fleet's state this node holds.", nil, nil),
		last:     prometheus.NewDesc("edgeproxy_fleet_store_revision", "The revision of the fleet state's last change, as last read.", nil, nil),
		nodes:    prometheus.NewDesc("edgeproxy_fleet_nodes", "The fleet's nodes by state, as this node sees them.", []string{"state"}, nil),
	}
}

func (m metrics) Describe(ch chan<- *prometheus.Desc) {
	m.refused.Describe(ch)
	m.resyncs.Describe(ch)
	ch <- m.stale
	ch <- m.revision
	ch <- m.last
	ch <- m.nodes
}

func (m metrics) Collect(ch chan<- prometheus.Metric) {
	m.refused.Collect(ch)
	m.resyncs.Collect(ch)
	s := m.n.Summary()
	stale := 0.0
	if s.Stale {
		stale = 1
	}
	ch <- prometheus.MustNewConstMetric(m.stale, prometheus.GaugeValue, stale)
	ch <- prometheus.MustNewConstMetric(m.revision, prometheus.GaugeValue, float64(s.Applied))
	ch <- prometheus.MustNewConstMetric(m.last, prometheus.GaugeValue, float64(s.Revision))
	for _, st := range []string{"in_sync", "behind", "failed", "stale"} {
		ch <- prometheus.MustNewConstMetric(m.nodes, prometheus.GaugeValue, float64(s.States[st]), st)
	}
}
