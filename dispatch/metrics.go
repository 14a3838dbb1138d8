//go:build linux

package dispatch

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns a Prometheus collector of the program's counters, read
// from the maps at every scrape: per label edgeproxy_dispatch_lookups_total,
// _misses_total and _errors_total, edgeproxy_dispatch_socket_registered, and
// per outcome edgeproxy_dispatch_verdicts_total.
func (d *Dispatcher) Collector() prometheus.Collector { return collector{d} }

var (
	descLookups = prometheus.NewDesc("edgeproxy_dispatch_lookups_total",
		"Lookups in which the table chose the label.", []string{"label"}, nil)
	descMisses = prometheus.NewDesc("edgeproxy_dispatch_misses_total",
		"Lookups dropped because no socket was registered under the chosen label.", []string{"label"}, nil)
	descErrors = prometheus.NewDesc("edgeproxy_dispatch_errors_total",
		"Lookups dropped because the label's socket did not fit the packet.", []string{"label"}, nil)
	descRegistered = prometheus.NewDesc("edgeproxy_dispatch_socket_registered",
		"1 if a socket is registered under the label, else 0.", []string{"label"}, nil)
	descVerdicts = prometheus.NewDesc("edgeproxy_dispatch_verdicts_total",
		"Program runs by outcome: no_match and pass go to the kernel, refuse and fail are dropped, steer is assigned to a socket.", []string{"verdict"}, nil)
)

type collector struct{ d *Dispatcher }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLookups, descMisses, descErrors, descRegistered, descVerdicts} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	if counters, err := c.d.Counters(); err == nil {
		for label, n := range counters {
			ch <- prometheus.MustNewConstMetric(descLookups, prometheus.CounterValue, float64(n.Lookups), label)
			ch <- prometheus.MustNewConstMetric(descMisses, prometheus.CounterValue, float64(n.Misses), label)
			ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(n.Errors), label)
			registered := 0.0
			if _, ok := c.d.Cookie(label); ok {
				registered = 1
			}
			ch <- prometheus.MustNewConstMetric(descRegistered, prometheus.GaugeValue, registered, label)
		}
	}
	if v, err := c.d.Verdicts(); err == nil {
		for name, n := range map[string]uint64{"no_match": v.NoMatch, "pass": v.Pass, "refuse": v.Refuse, "steer": v.Steer, "fail": v.Fail} {
			ch <- prometheus.MustNewConstMetric(descVerdicts, prometheus.CounterValue, float64(n), name)
		}
	}
}
