package server

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// scrape returns the series lines of s's /metrics whose name begins with
// prefix.
func scrape(t *testing.T, c apiClient, prefix string) []string {
	t.Helper()
	resp, err := c.ns.HTTPClient().Get(c.Base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
	}
	var lines []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, prefix) {
			lines = append(lines, line)
		}
	}
	return lines
}

// TestFDBudgetSeriesOfRunningServices: the descriptor budget's series by
// class are those of the services that run. A node whose services all have
// sockets given has none; one that runs spectrum alone has spectrum's,
// and not the cdn's nor the dials' (the cdn's origin dials).
func TestFDBudgetSeriesOfRunningServices(t *testing.T) {
	first, c := startWithAPI(t, "")
	for _, line := range scrape(t, c, "edgeproxy_fd_budget_") {
		if strings.Contains(line, "class=") {
			t.Errorf("%s: no service runs", line)
		}
	}
	first.Close() // one server attached to the namespace at a time

	ns := c.ns
	cfg := writeConfig(t, `admin: {listen: "127.0.0.1:0"}
dispatch: {pin_dir: ""}
store: {path: ""}
prefixes:
  - {cidr: 192.0.2.0/24, service: spectrum}
spectrum:
  apps:
    - {name: ssh, protocol: tcp, edge: 192.0.2.0/24, ports: "22", origins: ["127.0.0.1:9"]}
`)
	s, err := Start(Options{Config: cfg, Sockets: map[string]syscall.Conn{"cdn/tcp": nil, "cdn/udp": nil}, Dial: ns.Dial, Socket: ns.Socket})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c.Base = "http://" + s.AdminAddr().String()
	seen := map[string]bool{}
	for _, line := range scrape(t, c, "edgeproxy_fd_budget_") {
		switch {
		case strings.Contains(line, `class="spectrum"`):
			seen[line[:strings.IndexByte(line, '{')]] = true
		case strings.Contains(line, "class="):
			t.Errorf("%s: only spectrum runs", line)
		}
	}
	for _, name := range []string{"edgeproxy_fd_budget_ceiling", "edgeproxy_fd_budget_used", "edgeproxy_fd_budget_refused_total"} {
		if !seen[name] {
			t.Errorf("no %s{class=\"spectrum\"}", name)
		}
	}
}

// TestAuditWithoutStore: a node without a store (nor a fleet) keeps no
// audit log; GET /v1/audit says so with 404 naming the path, as the API
// does for other absent features, not a 500.
func TestAuditWithoutStore(t *testing.T) {
	_, c := startWithAPI(t, "")
	status, errs := c.do("GET", "/v1/audit", "")
	if status != 404 || !strings.Contains(string(errs), "path: this node keeps no audit log") {
		t.Errorf("GET /v1/audit without a store: %d %s, want 404 path: this node keeps no audit log", status, errs)
	}
}

// TestCDNActiveSeriesOfServedProtocols: edgeproxy_cdn_connections_active
// has the protocols the cdn's configuration serves: http/1.1 alone on a
// cdn without https_ports or http3; a reload that adds https_ports adds
// http/1.1+tls and h2 (the registry stays across reloads).
func TestCDNActiveSeriesOfServedProtocols(t *testing.T) {
	ns := netns.New(t)
	const base = `admin: {listen: "127.0.0.1:0"}
dispatch: {pin_dir: ""}
store: {path: ""}
prefixes:
  - {cidr: 192.0.2.0/24, service: cdn}
cdn:
  access_log: "off"
  http3: false
  http_ports: [80]
  https_ports: %s
  sites:
    - {hosts: ["*"], origins: ["http://127.0.0.1:9"]}
`
	s, err := Start(Options{Config: writeConfig(t, fmt.Sprintf(base, "[]")), Sockets: map[string]syscall.Conn{"spectrum/tcp": nil, "spectrum/udp": nil}, Dial: ns.Dial, Socket: ns.Socket})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := apiClient{t: t, ns: ns, Client: &admin.Client{Base: "http://" + s.AdminAddr().String(), HTTP: ns.HTTPClient()}}
	protocols := func() []string {
		var got []string
		for _, line := range scrape(t, c, "edgeproxy_cdn_connections_active{") {
			if m := labelPair.FindStringSubmatch(line); m != nil && m[1] == "protocol" {
				got = append(got, m[2])
			}
		}
		slices.Sort(got)
		return got
	}
	if got := protocols(); !slices.Equal(got, []string{"http/1.1"}) {
		t.Errorf("http_ports only: edgeproxy_cdn_connections_active of %v, want http/1.1 only", got)
	}
	if err := s.Reload(writeConfig(t, fmt.Sprintf(base, "[443]"))); err != nil {
		t.Fatal(err)
	}
	if got, want := protocols(), []string{"h2", "http/1.1", "http/1.1+tls"}; !slices.Equal(got, want) {
		t.Errorf("after a reload that adds https_ports: edgeproxy_cdn_connections_active of %v, want %v", got, want)
	}
}
