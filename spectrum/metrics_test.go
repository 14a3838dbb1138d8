package spectrum

import (
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// series lists the spectrum series reg gathers: the metric's name and
// its labels, one map each.
func series(t *testing.T, reg *prometheus.Registry) map[string][]map[string]string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]map[string]string{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out[mf.GetName()] = append(out[mf.GetName()], labels)
		}
	}
	return out
}

// TestNoSeriesOnlyZero: an app has the series its protocol and mode can
// move, and no other: no datagrams nor drops for a TCP app, no
// spp_missing for a UDP app without Simple Proxy Protocol, no series of
// the other protocol; the TCP copy paths and the unowned gauge of a
// protocol only where an app of it is configured.
func TestNoSeriesOnlyZero(t *testing.T) {
	ns := netns.New(t)
	edge := netip.MustParsePrefix("192.0.2.0/24")
	origin := []Origin{{Host: "127.0.0.1", Port: 9}}
	tcpApp := App{Name: "ssh", Protocol: TCP, Edge: edge, Ports: Ports{First: 22, Last: 22}, Origins: origin}
	udpApp := App{Name: "dns", Protocol: UDP, Edge: edge, Ports: Ports{First: 53, Last: 53}, Origins: origin}
	sppApp := App{Name: "game", Protocol: UDP, Edge: edge, Ports: Ports{First: 7777, Last: 7777}, Origins: origin, Proxy: ProxySimple}
	for _, c := range []struct {
		name   string
		apps   []App
		protos []string // of connections_unowned
		copied bool
	}{
		{"tcp only", []App{tcpApp}, []string{"tcp"}, true},
		{"udp only", []App{udpApp, sppApp}, []string{"udp"}, false},
		{"both", []App{tcpApp, udpApp}, []string{"tcp", "udp"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			p, err := New(Options{Dial: ns.Dial, Apps: c.apps, Registerer: reg,
				Owns: func(bool, netip.AddrPort) bool { return true }})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { p.tcp.Close(); p.udp.Close() }()
			protoOf := map[string]App{}
			for _, a := range c.apps {
				protoOf[a.Name] = a
			}
			all := series(t, reg)
			for name, ss := range all {
				for _, l := range ss {
					app, ok := l["app"]
					if !ok {
						continue
					}
					a := protoOf[app]
					if proto, ok := l["protocol"]; ok && proto != string(a.Protocol) {
						t.Errorf("%s%v: app %s is %s", name, l, app, a.Protocol)
					}
					switch {
					case a.Protocol == TCP && (name == "edgeproxy_spectrum_datagrams_total" || name == "edgeproxy_spectrum_dropped_total"):
						t.Errorf("%s%v: a TCP app has no datagrams", name, l)
					case a.Proxy != ProxySimple && l["reason"] == "spp_missing":
						t.Errorf("%s%v: app %s has no Simple Proxy Protocol", name, l, app)
					}
				}
			}
			var protos []string
			for _, l := range all["edgeproxy_spectrum_connections_unowned"] {
				protos = append(protos, l["protocol"])
			}
			if len(protos) != len(c.protos) || len(protos) > 0 && protos[0] != c.protos[0] || len(protos) > 1 && protos[1] != c.protos[1] {
				t.Errorf("connections_unowned for %v, want %v", protos, c.protos)
			}
			if got := len(all["edgeproxy_spectrum_tcp_copied_bytes_total"]) == 2; got != c.copied {
				t.Errorf("tcp_copied_bytes_total series: %v, want %v", all["edgeproxy_spectrum_tcp_copied_bytes_total"], c.copied)
			}
			if c.name == "udp only" {
				var reasons []string
				for _, l := range all["edgeproxy_spectrum_dropped_total"] {
					if l["app"] == "game" {
						reasons = append(reasons, l["reason"])
					}
				}
				if len(reasons) != 3 {
					t.Errorf("the SPP app's drops: %v, want spp_missing, too_big, write", reasons)
				}
			}
		})
	}
}
