package proxy

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestActiveConnsSeries: edgeproxy_cdn_connections_active has the
// protocols the configuration serves, and one it no longer serves only
// while that one holds connections.
func TestActiveConnsSeries(t *testing.T) {
	m := newMetrics(nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.active)
	protocols := func() []string {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, mf := range mfs {
			for _, s := range mf.GetMetric() {
				got = append(got, s.GetLabel()[0].GetValue())
			}
		}
		slices.Sort(got)
		return got
	}
	for _, c := range []struct {
		cfg  Config
		want []string
	}{
		{Config{}, nil},
		{Config{HTTPPorts: []uint16{80}}, []string{"http/1.1"}},
		{Config{HTTPSPorts: []uint16{443}}, []string{"h2", "http/1.1+tls"}},
		{Config{HTTPSPorts: []uint16{443}, HTTP3: true, HTTP3Port: 443}, []string{"h2", "h3", "http/1.1+tls"}},
	} {
		m.active.serve(c.cfg)
		if got := protocols(); !slices.Equal(got, c.want) {
			t.Errorf("%+v: %v, want %v", c.cfg, got, c.want)
		}
	}
	// An h2 connection stays open across a reload that takes https_ports
	// away: its series stays until it closes.
	h2 := m.active.of(connH2)
	h2.Inc()
	m.active.serve(Config{HTTPPorts: []uint16{80}})
	if got, want := protocols(), []string{"h2", "http/1.1"}; !slices.Equal(got, want) {
		t.Errorf("an h2 connection open after https_ports went: %v, want %v", got, want)
	}
	h2.Dec()
	if got, want := protocols(), []string{"http/1.1"}; !slices.Equal(got, want) {
		t.Errorf("the h2 connection closed: %v, want %v", got, want)
	}
}
