package config

import (
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

// designExample is the core shape of the configuration file (docs/config.md
// has every key).
const designExample = `
node: edge-1
shutdown_grace: 30s
admin:
  listen: 127.0.0.1:9180
  token_file: ""
dispatch:
  netns: ""
  pin_dir: /sys/fs/bpf/edgeproxy
store:
  path: /var/lib/edgeproxy/bindings.db
prefixes:
  - cidr: 192.0.2.0/24
    service: spectrum
bindings:
  - cidr: 192.0.2.0/25
    service: cdn
  - cidr: 192.0.2.200/32
    service: cdn
  - cidr: 192.0.2.201/32
    service: cdn
    protocol: tcp
    port: 443
cdn:
  http_ports: [80]
  https_ports: [443]
  http3: true
  http3_port: 443
  certificates:
    - cert_file: site.pem
      key_file: site-key.pem
  sites:
    - hosts: ["www.example.com", "*.example.com"]
      edge_ips: ["192.0.2.200/32"]
      origins: ["http://127.0.0.1:8080", "http://127.0.0.1:8081"]
spectrum:
  apps:
    - name: ssh
      protocol: tcp
      edge: 192.0.2.128/25
      ports: "22"
      origins: ["127.0.0.1:2222"]
      proxy_protocol: "off"
`

func TestDesignExample(t *testing.T) {
	c, err := Parse([]byte(designExample))
	if err != nil {
		t.Fatal(err)
	}
	if c.Node != "edge-1" || time.Duration(c.ShutdownGrace) != 30*time.Second || c.PinDir() != "/sys/fs/bpf/edgeproxy" {
		t.Errorf("decoded %+v", c)
	}
	st := c.State
	if len(st.Prefixes) != 1 || len(st.Bindings) != 3 || st.Bindings[2].Protocol != dispatch.TCP || st.Bindings[2].PrefixID != st.Prefixes[0].ID {
		t.Errorf("state %+v", st)
	}
	svc := c.Services
	if len(svc.Apps) != 1 || svc.Apps[0].Ports.First != 22 || !svc.CDN.Serves(dispatch.UDP, 443) {
		t.Errorf("services %+v", svc)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.Listen != DefaultAdminListen || c.PinDir() != dispatch.DefaultPinDir || c.Store.Path != DefaultStorePath || !c.CDN.HTTP3 {
		t.Errorf("defaults %+v", c)
	}
	empty := ""
	c.Dispatch.PinDir = &empty
	if c.PinDir() != "" {
		t.Error("pin_dir: \"\" is not unpinned")
	}
	if c.BindingCapacity() != dispatch.DefaultBindingCapacity {
		t.Errorf("binding capacity %d, want the default", c.BindingCapacity())
	}
}

// TestErrorsNameTheItem: every error names the key path and the reason.
func TestErrorsNameTheItem(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"nodes: x", "nodes: unknown key"},
		{"admin: {listen: nowhere}", "admin.listen"},
		{"shutdown_grace: soon", "not a duration"},
		{"spectrum: {apps: [{name: a, protocol: tcp, edge: 192.0.2.0/24, ports: \"70000\", origins: [\"127.0.0.1:1\"]}]}", `spectrum.apps[0].ports: "70000" is not a port`},
		{"spectrum: {apps: [{name: a, protocol: sctp, edge: 192.0.2.0/24, ports: \"1\", origins: [\"127.0.0.1:1\"]}]}", "spectrum.apps[0].protocol"},
		{"spectrum: {apps: [{name: a, protocol: tcp, edge: 192.0.2.1/24, ports: \"1\", origins: [\"127.0.0.1:1\"]}]}", "spectrum.apps[0].edge"},
		{"spectrum: {apps: [{name: a, protocol: tcp, edge: 192.0.2.0/24, ports: \"1\"}]}", "spectrum.apps[0].origins"},
		{"spectrum: {apps: [{name: a, protocol: tcp, edge: 192.0.2.0/24, ports: \"1\", origins: [\"127.0.0.1:1\"], proxy_protocol: simple}]}", "simple (Simple Proxy Protocol) is for udp"},
		{"spectrum: {apps: [{name: a, protocol: tcp, edge: 192.0.2.0/24, ports: \"1-10\", origins: [x]}, {name: b, protocol: tcp, edge: 192.0.2.0/24, ports: \"5-20\", origins: [x]}]}", `spectrum app "b": ports: overlap`},
		{"spectrum: {apps: [{name: a, protocol: tcp, edge: 192.0.2.0/24, ports: \"60000-65000\", origins: [\"127.0.0.1:62000\"]}]}", "maps past port 65535"},
		{"spectrum: {apps: [{name: a, protocol: tcp, edge: 192.0.2.0/24, ports: \"1\", origins: [x], ip_firewall: {deny: [nope]}}]}", "spectrum.apps[0].ip_firewall.deny[0]"},
		{"spectrum: {apps: [{name: a, protocol: udp, edge: 192.0.2.0/24, ports: \"1\", origins: [x], proxy_protocol: v1}]}", "v1 is for tcp"},
		{"spectrum: {apps: [{name: a, protocol: tcp, edge: 192.0.2.0/24, ports: \"1\", origins: [x], idle_timeout: -1s}]}", "not a duration"},
		{"spectrum: {max_datagram: 70000}", "spectrum.max_datagram"},
		{"dispatch: {binding_capacity: -1}", "dispatch.binding_capacity: -1 is out of range"},
		{"dispatch: {binding_capacity: 99999999}", "dispatch.binding_capacity: 99999999 is out of range"},
		{"spectrum: {max_udp_flows: -1}", "spectrum.max_udp_flows"},
		{"spectrum: {max_udp_flows_per_app: -1}", "spectrum.max_udp_flows_per_app"},
		{"fd_budget: {reserve_dial: -1}", "fd_budget.reserve_dial"},
		{"fd_budget: {limit: -5}", "fd_budget.limit"},
		{"fd_budget: {limits: 5}", "fd_budget.limits: unknown key"},
		{"cdn: {http_ports: [0]}", "cdn.http_ports[0]"},
		{"cdn: {http_ports: [443]}", "port 443 is already in"},
		{"cdn: {http3_port: 8443}", "http3_port: 8443 is not one of https_ports"},
		{"cdn: {sites: [{hosts: [a.example], origins: [\"ftp://x\"]}]}", "cdn.sites[0].origins[0]"},
		{"cdn: {sites: [{hosts: [\"*x\"], origins: [\"http://x\"]}]}", "cdn.sites[0].hosts[0]"},
		{"cdn: {sites: [{hosts: [a.example], origins: [\"http://x\"]}, {hosts: [A.example], origins: [\"http://y\"]}]}", "is also a host of cdn.sites[0]"},
		{"cdn: {sites: [{hosts: [a.example], origins: [\"http://x\"], routes: [{path: api, origins: [\"http://y\"]}]}]}", "routes[0].path"},
		{"cdn: {certificates: [{cert_file: a, key_file: b, default: true}, {cert_file: c, key_file: d, default: true}]}", "at most one may be"},
		{"cdn: {sites: [{hosts: [a.example], origins: [\"http://x\"], balance: random}]}", "cdn.sites[0].balance: \"random\""},
		{"cdn: {sites: [{hosts: [a.example], origins: [\"http://x\"], health_check: {path: health}}]}", "cdn.sites[0].health_check.path"},
		{"cdn: {sites: [{hosts: [a.example], origins: [\"http://x\"], health_check: {path: /h, interval: 1s, timeout: 2s}}]}", "cdn.sites[0].health_check.timeout"},
		{"cdn: {sites: [{hosts: [a.example], origins: [\"http://x\"], health_check: {path: /h, intervall: 1s}}]}", "cdn.sites[0].health_check.intervall: unknown key"},
		{"cdn: {sites: [{hosts: [a.example], origins: [\"http://x\"], retries: {budget: 2}}]}", "cdn.sites[0].retries"},
		{"cdn: {sites: [{hosts: [a.example], origins: [\"http://x\"], origin_tls: {ca_file: /nonexistent/ca.pem}}]}", "cdn.sites[0].origin_tls.ca_file"},
		{"cdn: {sites: [{hosts: [a.example], origins: [\"http://x\"], health_check: {path: /a}}, {hosts: [b.example], origins: [\"http://x\"], health_check: {path: /b}}]}", "origin http://x is also an origin of cdn.sites[0]"},
		{"cdn: {limits: {max_streams: -1}}", "cdn.limits.max_streams: -1 is negative"},
		{"cdn: {limits: {quic_retry_threshold: -5}}", "cdn.limits.quic_retry_threshold"},
		{"cdn: {limits: {client_reset_budget: -1}}", "cdn.limits.client_reset_budget"},
		{"cdn: {limits: {reset_ban: soon}}", "not a duration"},
		{"bindings: [{cidr: 192.0.2.0/25, service: cdn, port: 443}]", "protocol and port go together"},
		{"prefixes: [{cidr: 192.0.2.0/24, service: cdn}]\n---\nnode: x", "more than one YAML document"},
	} {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant an error containing %q", tc.yaml, err, tc.want)
		}
	}
}

func TestSpectrumApps(t *testing.T) {
	c, err := Parse([]byte(`spectrum:
  apps:
    - {name: a, protocol: udp, edge: "2001:db8::/48", ports: "1000-2000", origins: ["[2001:db8:ff::1]:3000", "origin.example"], proxy_protocol: simple,
       idle_timeout: 30s, connect_timeout: 2s, max_connections: 7, ip_firewall: {allow: [198.51.100.0/24], deny: [198.51.100.7]}}
`))
	if err != nil {
		t.Fatal(err)
	}
	apps := c.Apps
	a := apps[0]
	if a.Protocol != "udp" || a.Ports.First != 1000 || a.Ports.Last != 2000 || a.Proxy != "simple" ||
		a.IdleTimeout != 30*time.Second || a.ConnectTimeout != 2*time.Second || a.MaxConnections != 7 ||
		len(a.Origins) != 2 || a.Origins[0].Host != "2001:db8:ff::1" || a.Origins[0].Port != 3000 || a.Origins[1].Port != 0 ||
		len(a.Firewall.Allow) != 1 || a.Firewall.Deny[0].Bits() != 32 {
		t.Errorf("app %+v", a)
	}
}

func TestOriginForms(t *testing.T) {
	c, err := Parse([]byte(`cdn: {sites: [{hosts: [a.example], origins: ["http://o1:80", {url: "http://o2:80", weight: 3}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	o := c.CDN.Sites[0].Origins
	if o[0].URL != "http://o1:80" || o[1].URL != "http://o2:80" || o[1].Weight != 3 {
		t.Errorf("origins %+v", o)
	}
	if _, err := Parse([]byte(`cdn: {sites: [{hosts: [a.example], origins: [{url: "http://o2:80", wieght: 3}]}]}`)); err == nil {
		t.Error("unknown key in an origin object accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(designExample))
	f.Add([]byte("{}"))
	f.Add([]byte("prefixes: [{cidr: 192.0.2.0/24, service: cdn}]\nbindings: [{cidr: 192.0.2.0/25, service: spectrum, protocol: tcp, port: 22}]"))
	f.Add([]byte("spectrum: {apps: [{name: a, protocol: udp, edge: \"2001:db8::/64\", ports: \"*\", origins: [\"[::1]\"], proxy_protocol: simple}]}"))
	f.Add([]byte("cdn: {sites: [{hosts: [a.example], origins: [{url: \"http://o\"}]}]}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		// A valid configuration yields a valid state and table.
		again, err := c.Config.Plan()
		if err != nil {
			t.Fatalf("valid config, invalid plan the second time: %v", err)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("valid config, invalid state: %v", err)
		}
		if err := bindings.Table(c.State, c.Services).Validate(); err != nil {
			t.Fatalf("valid config, invalid dispatch table: %v", err)
		}
	})
}

// TestFloodLimits: the flood limits reach the proxy's Limits.
func TestFloodLimits(t *testing.T) {
	c, err := Parse([]byte(`cdn:
  limits: {max_streams: 100, connection_reset_budget: 7, client_reset_budget: 70, reset_ban: 5m, max_quic_handshakes: 50, quic_retry_threshold: 5}
  timeouts: {quic_handshake: 1s}
`))
	if err != nil {
		t.Fatal(err)
	}
	l := c.Limits
	if l.MaxStreams != 100 || l.ConnResetBudget != 7 || l.ClientResetBudget != 70 || l.ResetBan != 5*time.Minute ||
		l.MaxQUICHandshakes != 50 || l.QUICRetryThreshold != 5 || l.QUICHandshakeTimeout != time.Second {
		t.Errorf("limits %+v", l)
	}
}

// TestDecodeErrorsNameTheKeyPath: a key the schema does not have and a value
// of the wrong kind are named by their key path, in the file's words, not
// Go's: one case per shape.
func TestDecodeErrorsNameTheKeyPath(t *testing.T) {
	app := "{name: a, protocol: tcp, edge: 192.0.2.0/24, ports: \"1\", origins: [x]"
	for _, tc := range []struct{ yaml, want string }{
		{"nodes: x", "nodes: unknown key"},
		{"spectrum: {apps: [" + app + ", prot: tcp}]}", "spectrum.apps[0].prot: unknown key"},
		{"cdn: {sites: [{hosts: [a.example], origins: [{url: \"http://o\", wieght: 3}]}]}", "cdn.sites[0].origins[0].wieght: unknown key"},
		{"node: [a]", "node: must be a string"},
		{"node: {a: b}", "node: must be a string"},
		{"cdn: {http_ports: [x]}", "cdn.http_ports[0]: must be an integer"},
		{"cdn: {http3: maybe}", "cdn.http3: must be true or false"},
		{"cdn: {sites: [{hosts: [a.example], origins: [\"http://x\"], retries: {budget: lots}}]}", "cdn.sites[0].retries.budget: must be a number"},
		{"prefixes: 192.0.2.0/24", "prefixes: must be a list"},
		{"admin: 127.0.0.1:1", "admin: must be a mapping of keys"},
		{"[1, 2]", "the file: must be a mapping of keys"},
		{"shutdown_grace: soon", `shutdown_grace: "soon" is not a duration`},
		{"shutdown_grace: [1s]", "shutdown_grace: must be a duration"},
		{"cdn: {sites: [{hosts: [a.example], origins: [[x]]}]}", "cdn.sites[0].origins[0]: must be a mapping of keys"},
		{"base: &b {listen: 127.0.0.1:1}\nadmin: *b", "base: unknown key"},
		{"x: &b {listn: 127.0.0.1:1}\nadmin: {<<: *b}", "admin.listn: unknown key"},
	} {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant an error containing %q", tc.yaml, err, tc.want)
			continue
		}
		for _, goName := range []string{"config.", "!!", "unmarshal", "field "} {
			if strings.Contains(err.Error(), goName) {
				t.Errorf("%s: %v speaks Go (%q)", tc.yaml, err, goName)
			}
		}
	}
	// Aliases and merge keys still decode.
	c, err := Parse([]byte("dispatch: &d {pin_dir: \"\"}\nstore: {path: \"\"}\nadmin: {<<: {listen: \"127.0.0.1:9\"}}\n"))
	if err != nil || c.Admin.Listen != "127.0.0.1:9" || c.PinDir() != "" {
		t.Errorf("merge key: %v %+v", err, c)
	}
	// A scalar of another type is a string where a string is wanted.
	if c, err := Parse([]byte("node: 5")); err != nil || c.Node != "5" {
		t.Errorf("node: 5: %v", err)
	}
}

// TestAliasBomb: a document whose aliases would make the walk of its
// schema explode is refused, bounded.
func TestAliasBomb(t *testing.T) {
	origins := strings.Repeat("x, ", 2000)
	apps := strings.Repeat(", *a", 2000)
	doc := "spectrum: {apps: [&a {name: a, origins: [" + origins + "x]}" + apps + "]}"
	_, err := Parse([]byte(doc))
	if err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("got %v", err)
	}
}
