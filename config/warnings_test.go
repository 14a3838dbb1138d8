package config

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// TestWarnings: what a valid file declares and almost never means, each
// named by its key; a file without such things warns of nothing.
func TestWarnings(t *testing.T) {
	const cdn = "prefixes: [{cidr: 192.0.2.0/24, service: cdn}, {cidr: 198.51.100.0/24, service: spectrum}]\n"
	site := func(edge string) string {
		return cdn + "cdn: {https_ports: [], http3: false, sites: [{hosts: [a.example], origins: [\"http://127.0.0.1:8080\"], edge_ips: [" + edge + "]}]}\n"
	}
	app := func(edge string) string {
		return cdn + "spectrum: {apps: [{name: a, protocol: tcp, edge: " + edge + ", ports: \"22\", origins: [\"127.0.0.1:22\"]}]}\n"
	}
	for _, c := range []struct {
		name, file string
		want       []string
	}{
		{"nothing to say", site("192.0.2.7") + "spectrum: {apps: [{name: a, protocol: tcp, edge: 198.51.100.0/25, ports: \"22\", origins: [\"127.0.0.1:22\"]}]}\n", nil},
		{"empty", "# only a comment\n", []string{"the file is empty: every key takes its default, and nothing is bound to a service"}},
		{"empty mapping", "{}\n", []string{"the file is empty: every key takes its default, and nothing is bound to a service"}},
		{"site on spectrum's address", site("198.51.100.7"), []string{"cdn.sites[0].edge_ips[0]: no address of 198.51.100.7/32 is bound to the cdn: the site is not served there, and its hosts answer 421 on the cdn's addresses"}},
		{"site outside every prefix", site("203.0.113.0/24"), []string{"cdn.sites[0].edge_ips[0]: no address of 203.0.113.0/24 is bound to the cdn: the site is not served there, and its hosts answer 421 on the cdn's addresses"}},
		{"site over both", site("192.0.0.0/8"), nil},
		{"site on a cdn binding in spectrum's prefix", site("198.51.100.7") + "bindings: [{cidr: 198.51.100.0/28, service: cdn, protocol: tcp, port: 80}]\n", nil},
		{"site on spectrum's binding in the cdn's prefix", site("192.0.2.7") + "bindings: [{cidr: 192.0.2.0/28, service: spectrum}]\n", []string{"cdn.sites[0].edge_ips[0]: no address of 192.0.2.7/32 is bound to the cdn: the site is not served there, and its hosts answer 421 on the cdn's addresses"}},
		{"https without a certificate", cdn + "cdn: {sites: [{hosts: [a.example], origins: [\"http://127.0.0.1:8080\"]}]}\n", []string{"cdn.certificates: none, and https_ports [443] serve TLS: every handshake fails"}},
		{"no cdn at all", "cdn: {https_ports: [], http3: false, sites: [{hosts: [a.example], origins: [\"http://127.0.0.1:8080\"]}]}\n", []string{"cdn.sites[0]: no address is bound to the cdn: the site is never served"}},
		{"app outside every prefix", app("203.0.113.0/24"), []string{"spectrum.apps[0].edge: 203.0.113.0/24 is inside no prefix: the app never receives traffic"}},
		{"app in the cdn's prefix", app("192.0.2.0/25"), []string{"spectrum.apps[0].edge: no address of 192.0.2.0/25 is bound to spectrum: the app never receives traffic"}},
		{"app on a spectrum binding in the cdn's prefix", app("192.0.2.0/25") + "bindings: [{cidr: 192.0.2.64/26, service: spectrum}]\n", nil},
		{"etcd without a store", "node: n\nstore: {path: \"\", etcd: {endpoints: [\"http://127.0.0.1:2379\"]}}\n", []string{"store.etcd: set without store.path: a restart while etcd cannot be reached starts with no API-made bindings"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Parse([]byte(c.file))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range p.Warnings(nil) {
				got = append(got, w.String())
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("warnings\n got %q\nwant %q", got, c.want)
			}
		})
	}
}

// TestWarningsTakeTheStoresItems: the state in force is the file's with
// the store's; a binding made through the API serves the site.
func TestWarningsTakeTheStoresItems(t *testing.T) {
	p, err := Parse([]byte("prefixes: [{cidr: 198.51.100.0/24, service: spectrum}]\ncdn: {https_ports: [], http3: false, sites: [{hosts: [a.example], origins: [\"http://127.0.0.1:8080\"], edge_ips: [198.51.100.7]}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Warnings(nil)) != 1 {
		t.Fatalf("the file alone: %v", p.Warnings(nil))
	}
	api := &bindings.State{Bindings: []bindings.Binding{bindings.NewBinding(netip.MustParsePrefix("198.51.100.0/25"), 0, 0, bindings.CDN, bindings.FromAPI)}}
	if ws := p.Warnings(bindings.Merge(p.State, api)); len(ws) != 0 {
		t.Errorf("with the store's binding: %v", ws)
	}
}
