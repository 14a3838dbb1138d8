package spectrum

import (
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

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

// TestSetAppsForgetsSeries: an app that SetApps removes, renames or gives
// another protocol leaves no series behind, and an app that no longer
// speaks Simple Proxy Protocol no spp_missing; the apps that stay keep
// theirs, counts included.
func TestSetAppsForgetsSeries(t *testing.T) {
	ns := netns.New(t)
	edge := netip.MustParsePrefix("192.0.2.0/24")
	origin := []Origin{{Host: "127.0.0.1", Port: 9}}
	app := func(name string, proto Protocol, port uint16, mode ProxyProtocol) App {
		return App{Name: name, Protocol: proto, Edge: edge, Ports: Ports{First: port, Last: port}, Origins: origin, Proxy: mode}
	}
	reg := prometheus.NewRegistry()
	p, err := New(Options{Dial: ns.Dial, Registerer: reg, Owns: func(bool, netip.AddrPort) bool { return true },
		Apps: []App{app("ssh", TCP, 22, ProxyOff), app("dns", UDP, 53, ProxyOff), app("game", UDP, 7777, ProxySimple), app("web", TCP, 8080, ProxyOff)}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { p.tcp.Close(); p.udp.Close() }()
	p.RefusedCounter("ssh", "tcp", "firewall").Inc()
	p.RefusedCounter("dns", "udp", "limit").Inc()
	p.ConnectionsCounter("dns", "udp").Inc()
	// ssh goes, dns is renamed, game speaks no Simple Proxy Protocol now,
	// web is UDP now.
	if err := p.SetApps([]App{app("resolver", UDP, 53, ProxyOff), app("game", UDP, 7777, ProxyOff), app("web", UDP, 8080, ProxyOff)}); err != nil {
		t.Fatal(err)
	}
	kept := 0
	for name, ss := range series(t, reg) {
		for _, l := range ss {
			switch a := l["app"]; {
			case a == "ssh" || a == "dns":
				t.Errorf("%s%v: the app went", name, l)
			case a == "game" && l["reason"] == "spp_missing":
				t.Errorf("%s%v: game speaks no Simple Proxy Protocol now", name, l)
			case a == "web" && l["protocol"] == "tcp":
				t.Errorf("%s%v: web is UDP now", name, l)
			case a == "game" || a == "web" || a == "resolver":
				kept++
			}
		}
	}
	if kept == 0 {
		t.Error("no series of the apps that stay")
	}
	// An app that comes back starts from zero.
	if err := p.SetApps([]App{app("dns", UDP, 53, ProxyOff)}); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(p.ConnectionsCounter("dns", "udp")); got != 0 {
		t.Errorf("dns's connections after it came back: %v, want 0", got)
	}
}
