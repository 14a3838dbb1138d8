package server

import (
	"io"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// seriesLine is one series of the Prometheus text: its name and labels.
var seriesLine = regexp.MustCompile(`^([a-z_]+)(?:\{(.*)\})? `)

// labelPair is one label of a series.
var labelPair = regexp.MustCompile(`([a-z_]+)="([^"]*)"`)

// TestMetricsNoSeriesOnlyZero scrapes /metrics of a server with a TCP app
// and a UDP app: no series that could only ever be zero, such as the
// datagrams or drops of the TCP app, Simple Proxy Protocol drops of an app
// without it, or either app's series under the other's protocol.
func TestMetricsNoSeriesOnlyZero(t *testing.T) {
	ns := netns.New(t)
	cfg := writeConfig(t, `admin: {listen: "127.0.0.1:0"}
dispatch: {pin_dir: ""}
store: {path: ""}
prefixes:
  - {cidr: 192.0.2.0/24, service: spectrum}
spectrum:
  apps:
    - {name: ssh, protocol: tcp, edge: 192.0.2.0/24, ports: "22", origins: ["127.0.0.1:9"]}
    - {name: dns, protocol: udp, edge: 192.0.2.0/24, ports: "53", origins: ["127.0.0.1:9"]}
`)
	s, err := Start(Options{Config: cfg, Sockets: map[string]syscall.Conn{"cdn/tcp": nil, "cdn/udp": nil}, Dial: ns.Dial, Socket: ns.Socket})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := ns.HTTPClient().Get("http://" + s.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
	}
	protoOf := map[string]string{"ssh": "tcp", "dns": "udp"}
	seen := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		m := seriesLine.FindStringSubmatch(line)
		if m == nil || !strings.HasPrefix(m[1], "edgeproxy_spectrum_") {
			continue
		}
		name, labels := m[1], map[string]string{}
		for _, l := range labelPair.FindAllStringSubmatch(m[2], -1) {
			labels[l[1]] = l[2]
		}
		seen[name] = true
		app := labels["app"]
		if proto, ok := labels["protocol"]; ok && app != "" && proto != protoOf[app] {
			t.Errorf("%s: app %s is %s", line, app, protoOf[app])
		}
		switch {
		case app == "ssh" && (name == "edgeproxy_spectrum_datagrams_total" || name == "edgeproxy_spectrum_dropped_total"):
			t.Errorf("%s: a TCP app moves no datagrams", line)
		case labels["reason"] == "spp_missing":
			t.Errorf("%s: no app speaks Simple Proxy Protocol", line)
		}
	}
	for _, name := range []string{"edgeproxy_spectrum_connections_total", "edgeproxy_spectrum_datagrams_total", "edgeproxy_spectrum_tcp_copied_bytes_total", "edgeproxy_spectrum_connections_unowned"} {
		if !seen[name] {
			t.Errorf("no %s", name)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", b)
	}
}
