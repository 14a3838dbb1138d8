package bindings

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns a Prometheus collector of the manager's state:
// edgeproxy_bindings and edgeproxy_prefixes by service and source (a
// prefix's default binding counts as a binding).
func (m *Manager) Collector() prometheus.Collector { return stateCollector{m} }

var (
	descBindings = prometheus.NewDesc("edgeproxy_bindings",
		"Bindings (default bindings of prefixes included) by service and source.", []string{"service", "source"}, nil)
	descPrefixes = prometheus.NewDesc("edgeproxy_prefixes",
		"Onboarded prefixes by default service and source.", []string{"service", "source"}, nil)
)

type stateCollector struct{ m *Manager }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descBindings
	ch <- descPrefixes
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct {
		svc Service
		src Source
	}
	bindings, prefixes := map[key]int{}, map[key]int{}
	c.m.mu.Lock()
	for _, p := range c.m.state.Prefixes {
		prefixes[key{p.Service, p.Source}]++
		bindings[key{p.Service, p.Source}]++
	}
	for _, b := range c.m.state.Bindings {
		bindings[key{b.Service, b.Source}]++
	}
	c.m.mu.Unlock()
	for _, si := range Catalogue {
		for _, src := range []Source{FromConfig, FromAPI} {
			k := key{si.ID, src}
			ch <- prometheus.MustNewConstMetric(descBindings, prometheus.GaugeValue, float64(bindings[k]), string(si.ID), string(src))
			ch <- prometheus.MustNewConstMetric(descPrefixes, prometheus.GaugeValue, float64(prefixes[k]), string(si.ID), string(src))
		}
	}
}
