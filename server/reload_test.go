package server

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestReloadRollsBack: a reload the binding state refuses (it drops the
// prefix an API-made binding lives in) puts the services' configuration
// back as it was.
func TestReloadRollsBack(t *testing.T) {
	ns := netns.New(t)
	const base = `dispatch: {pin_dir: ""}
store: {path: ""}
admin: {listen: "127.0.0.1:0"}
cdn: {http_ports: [80], https_ports: [], http3: false, access_log: "off", sites: [{hosts: [a.example], origins: ["http://127.0.0.1:1"]}]}
spectrum: {apps: [{name: a, protocol: tcp, edge: 198.51.100.0/24, ports: "7", origins: ["127.0.0.1:7"]}]}
prefixes:
  - {cidr: 192.0.2.0/24, service: cdn}
  - {cidr: 198.51.100.0/24, service: spectrum}
`
	s, err := Start(Options{Config: writeConfig(t, base), Dial: ns.Dial, Socket: ns.Socket})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := s.Bindings.Prefixes()[0] // 192.0.2.0/24
	if _, err := s.Bindings.CreateBinding(context.Background(), p.ID, netip.MustParsePrefix("192.0.2.128/25"), 0, 0, bindings.Spectrum); err != nil {
		t.Fatal(err)
	}

	next := strings.NewReplacer(
		`origins: ["http://127.0.0.1:1"]`, `origins: ["http://127.0.0.1:2"]`,
		`ports: "7"`, `ports: "8"`,
		"  - {cidr: 192.0.2.0/24, service: cdn}\n", "",
	).Replace(base)
	err = s.Reload(writeConfig(t, next))
	if err == nil || !strings.Contains(err.Error(), "192.0.2.128/25") {
		t.Fatalf("reload dropping the prefix of an API-made binding: %v, want a refusal naming it", err)
	}
	if got := s.CDN.Config().Sites[0].Origins[0].URL.String(); got != "http://127.0.0.1:1" {
		t.Errorf("the cdn kept the refused reload's origin %s", got)
	}
	if got := s.Spectrum.Apps()[0].Ports; got.First != 7 {
		t.Errorf("spectrum kept the refused reload's ports %+v", got)
	}
	if n := len(s.Bindings.Prefixes()); n != 2 {
		t.Errorf("%d prefixes after a refused reload", n)
	}
}
