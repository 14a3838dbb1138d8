// Package config decodes and validates edgeproxy's YAML configuration. The
// decoding is strict: an unknown key is an error. Every error names the item
// (`spectrum.apps[2].ports: "70000" is not a port`). docs/config.md documents
// every key.
package config

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
	"github.com/edgeproxy/edgeproxy/proxy"
	"github.com/edgeproxy/edgeproxy/spectrum"
)

// Config is the whole configuration file.
type Config struct {
	// Node names this instance in logs and metrics. Empty: the host name.
	Node string `yaml:"node"`
	// ShutdownGrace bounds how long SIGTERM waits for connections to drain.
	ShutdownGrace Duration `yaml:"shutdown_grace"`
	Admin         Admin    `yaml:"admin"`
	Dispatch      Dispatch `yaml:"dispatch"`
	Store         Store    `yaml:"store"`
	// Prefixes are onboarded with their default service.
	Prefixes []Prefix `yaml:"prefixes"`
	// Bindings move parts of prefixes (or one protocol and port of them) to
	// another service.
	Bindings []Binding `yaml:"bindings"`
	CDN      CDN       `yaml:"cdn"`
	Spectrum Spectrum  `yaml:"spectrum"`
	// FDBudget shares the process's file descriptors out among the
	// services.
	FDBudget FDBudget `yaml:"fd_budget"`
}

// FDBudget sizes the process's one descriptor budget (internal/fdlimit).
// Zero: the default.
type FDBudget struct {
	// Limit is the number of descriptors shared out. Zero: the open-file
	// limit; it may not be above it.
	Limit int `yaml:"limit"`
	// ReserveAccept: for connections accepted and not yet refused. 64.
	ReserveAccept int `yaml:"reserve_accept"`
	// ReserveAdmin: the admin API's connections (which it bounds). 64.
	ReserveAdmin int `yaml:"reserve_admin"`
	// ReserveDial: the cdn's origin connections and health checks.
	// min(1024, limit/16).
	ReserveDial int `yaml:"reserve_dial"`
	// ReserveCDN: the cdn's client connections, which spectrum may not
	// take. min(2048, limit/8).
	ReserveCDN int `yaml:"reserve_cdn"`
	// ReserveOther: files, listeners, maps, logs, beyond those open at
	// the start. 128.
	ReserveOther int `yaml:"reserve_other"`
}

// FDBudgetOptions returns the budget's options.
func (c *Config) FDBudgetOptions() fdlimit.Options {
	b := c.FDBudget
	return fdlimit.Options{Limit: b.Limit, Accept: b.ReserveAccept, Admin: b.ReserveAdmin,
		Dial: b.ReserveDial, CDN: b.ReserveCDN, Other: b.ReserveOther}
}

// Admin configures the admin API.
type Admin struct {
	// Listen is the address of the admin API, /metrics, /healthz and
	// /readyz.
	Listen string `yaml:"listen"`
	// TokenFile holds the bearer token that mutating API calls need. Empty:
	// no token is needed.
	TokenFile string `yaml:"token_file"`
}

// Dispatch configures the data plane.
type Dispatch struct {
	// Netns is the path of a network namespace to run in, entered before
	// any socket is created. Empty: the namespace edgeproxy starts in.
	Netns string `yaml:"netns"`
	// PinDir is where the program, link and maps are pinned, on a bpf
	// filesystem. Nil (absent): /sys/fs/bpf/edgeproxy. Empty string:
	// unpinned, so that stopping detaches the program (bound prefixes open
	// to the kernel's normal lookup).
	PinDir *string `yaml:"pin_dir"`
}

// Store configures where API-made prefixes and bindings persist.
type Store struct {
	// Path of the store file. Empty: API-made changes are not persisted.
	Path string `yaml:"path"`
}

// Prefix is an onboarded prefix.
type Prefix struct {
	CIDR    string `yaml:"cidr"`
	Service string `yaml:"service"`
}

// Binding is a binding inside a prefix; protocol and port make it
// port-scoped.
type Binding struct {
	CIDR     string `yaml:"cidr"`
	Service  string `yaml:"service"`
	Protocol string `yaml:"protocol"`
	Port     int    `yaml:"port"`
}

// CDN configures the HTTP ingress proxy.
type CDN struct {
	// HTTPPorts are the TCP ports served in cleartext.
	HTTPPorts []int `yaml:"http_ports"`
	// HTTPSPorts are the TCP ports served with TLS.
	HTTPSPorts []int `yaml:"https_ports"`
	// HTTP3 serves HTTP/3 on UDP HTTP3Port.
	HTTP3 bool `yaml:"http3"`
	// HTTP3Port is the UDP port of HTTP/3; one of HTTPSPorts.
	HTTP3Port int `yaml:"http3_port"`
	// LoopID is the CDN-Loop token (RFC 8586) added to forwarded requests;
	// a request that carries it already is refused with 508. Empty:
	// "edgeproxy".
	LoopID       string        `yaml:"loop_id"`
	Certificates []Certificate `yaml:"certificates"`
	Sites        []Site        `yaml:"sites"`
	Limits       CDNLimits     `yaml:"limits"`
	Timeouts     CDNTimeouts   `yaml:"timeouts"`
	// AccessLog is where request lines go: "stderr" (default, with the
	// logs), "off", or a file path.
	AccessLog string `yaml:"access_log"`
	// QUICResetKeyFile holds the QUIC stateless-reset key the node's
	// processes share; made at the first start if missing. Empty: beside
	// the store (QUICResetKeyPath).
	QUICResetKeyFile string `yaml:"quic_reset_key_file"`
}

// CDNLimits bound what clients may send. Zero: the default.
type CDNLimits struct {
	// MaxHeaderBytes bounds a request's line and headers. Default 32768.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxBodyBytes bounds a request body. Default 104857600 (100 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxConnections bounds open client connections, TCP and QUIC.
	// Default: half the open-file limit after a reserve.
	MaxConnections int `yaml:"max_connections"`
	// MaxStreams bounds HTTP/2 and HTTP/3 requests in flight in the whole
	// process; more are answered 503. Default 8192.
	MaxStreams int `yaml:"max_streams"`
	// ConnectionResetBudget is how many streams a connection may reset
	// (or cancel) in 10 s before it is closed. Default 200.
	ConnectionResetBudget int `yaml:"connection_reset_budget"`
	// ClientResetBudget is how many streams one client address (IPv6: its
	// /64) may reset in 10 s, over all its connections, before its
	// connections are refused for ResetBan. Default 1000.
	ClientResetBudget int      `yaml:"client_reset_budget"`
	ResetBan          Duration `yaml:"reset_ban"` // default 60s
	// MaxQUICHandshakes bounds QUIC handshakes in flight. Default 1024.
	MaxQUICHandshakes int `yaml:"max_quic_handshakes"`
	// QUICRetryThreshold is the number of QUIC handshakes in flight from
	// which new Initials must first prove their address with a Retry.
	// Default 64.
	QUICRetryThreshold int `yaml:"quic_retry_threshold"`
	// MaxQUICSocketsPerAddress bounds the connected UDP sockets (one per
	// HTTP/3 connection) on one dialled address. Default 1024.
	MaxQUICSocketsPerAddress int `yaml:"max_quic_sockets_per_address"`
}

// CDNTimeouts bound how long the proxy waits. Zero: the default.
type CDNTimeouts struct {
	ReadHeader      Duration `yaml:"read_header"`      // a request's head; 10s
	Body            Duration `yaml:"body"`             // between reads of a request body; 60s
	Send            Duration `yaml:"send"`             // between writes of a response; 60s
	Idle            Duration `yaml:"idle"`             // keep-alive wait; 75s
	UpstreamConnect Duration `yaml:"upstream_connect"` // dial an origin; 5s
	Upstream        Duration `yaml:"upstream"`         // each read from an origin; 60s
	TunnelIdle      Duration `yaml:"tunnel_idle"`      // an upgraded connection (WebSocket) without traffic; 10m
	QUICHandshake   Duration `yaml:"quic_handshake"`   // a QUIC handshake without progress; 2s
}

// Certificate is a TLS certificate chain and its key, PEM files.
type Certificate struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Default marks the certificate presented when no site's name matches
	// the client's SNI on the address it dialled. Default: the first.
	Default bool `yaml:"default"`
}

// Site is a customer's site on the cdn.
type Site struct {
	// Hosts are exact names or "*." wildcards.
	Hosts []string `yaml:"hosts"`
	// EdgeIPs restrict the site to these addresses. Empty: every cdn
	// address.
	EdgeIPs []string `yaml:"edge_ips"`
	// Origins are URLs ("http://127.0.0.1:8080"): the default route.
	Origins []Origin `yaml:"origins"`
	// Routes send path prefixes to other origins; the longest prefix wins.
	Routes []Route `yaml:"routes"`
	// Balance chooses among a route's origins: round_robin (default,
	// weighted) or least_connections.
	Balance string `yaml:"balance"`
	// HealthCheck, when set, checks the site's origins actively.
	HealthCheck *HealthCheck `yaml:"health_check"`
	// PassiveHealth ejects origins that keep failing.
	PassiveHealth PassiveHealth `yaml:"passive_health"`
	// Retries bound the retries of the site's requests.
	Retries Retries `yaml:"retries"`
	// OriginTLS is how https origins are spoken to.
	OriginTLS OriginTLS `yaml:"origin_tls"`
}

// HealthCheck is an active health check of a site's origins.
type HealthCheck struct {
	Path      string   `yaml:"path"`      // GET this; 2xx and 3xx are good
	Interval  Duration `yaml:"interval"`  // 5s
	Timeout   Duration `yaml:"timeout"`   // 2s
	Healthy   int      `yaml:"healthy"`   // good checks in a row to be up again; 2
	Unhealthy int      `yaml:"unhealthy"` // failed checks in a row to be down; 3
}

// PassiveHealth ejects an origin after failures in a row.
type PassiveHealth struct {
	MaxFailures int      `yaml:"max_failures"` // connection failures and timeouts in a row; 3
	Ejection    Duration `yaml:"ejection"`     // 30s, doubling while it keeps failing
}

// Retries bound retries of idempotent requests.
type Retries struct {
	// Max is how many other origins a request may try; absent: 2; 0: no
	// retries.
	Max *int `yaml:"max"`
	// Budget is the most retries may be as a share of the site's
	// requests; 0.2.
	Budget float64 `yaml:"budget"`
	// MinPerSecond retries are allowed whatever the budget; 10.
	MinPerSecond float64 `yaml:"min_per_second"`
}

// OriginTLS is how the proxy speaks TLS to https origins.
type OriginTLS struct {
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"` // for private origins only
	CAFile             string `yaml:"ca_file"`              // PEM CAs in place of the system's
	ServerName         string `yaml:"server_name"`          // verified and sent as SNI; the URL's host
}

// allOrigins lists the site's origins, its routes' included.
func (s *Site) allOrigins() []Origin {
	out := slices.Clone(s.Origins)
	for _, r := range s.Routes {
		out = append(out, r.Origins...)
	}
	return out
}

// Route sends a path prefix of a site to origins.
type Route struct {
	Path    string   `yaml:"path"`
	Origins []Origin `yaml:"origins"`
}

// Origin is an origin of a site: a URL string, or {url, weight}.
type Origin struct {
	URL    string `yaml:"url"`
	Weight int    `yaml:"weight"`
}

// UnmarshalYAML accepts a plain string or the object form.
func (o *Origin) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		o.URL, o.Weight = n.Value, 0
		return nil
	}
	type plain Origin
	var p plain
	if err := decodeStrict(n, &p); err != nil {
		return err
	}
	*o = Origin(p)
	return nil
}

// Spectrum configures the L4 proxy.
type Spectrum struct {
	// MaxConnections bounds concurrent TCP connections (two file
	// descriptors each). Zero: as many as the descriptor budget allows.
	MaxConnections int `yaml:"max_connections"`
	// MaxUDPFlows bounds concurrent UDP flows (two file descriptors each).
	// Zero: as many as the descriptor budget allows.
	MaxUDPFlows int `yaml:"max_udp_flows"`
	// MaxUDPFlowsPerApp bounds one app's UDP flows, so that one app's flood
	// cannot take every other app's. Zero: half of max_udp_flows with two
	// UDP apps or more, else max_udp_flows.
	MaxUDPFlowsPerApp int `yaml:"max_udp_flows_per_app"`
	// MaxDatagram is the largest UDP payload forwarded. Zero: 2048.
	MaxDatagram int   `yaml:"max_datagram"`
	Apps        []App `yaml:"apps"`
}

// App is a spectrum application.
type App struct {
	Name string `yaml:"name"`
	// Protocol is tcp or udp.
	Protocol string `yaml:"protocol"`
	// Edge is the address range the app answers on.
	Edge string `yaml:"edge"`
	// Ports: "22", "1000-2000" or "*".
	Ports string `yaml:"ports"`
	// Origins are host:port (a range maps by offset from that port) or a
	// bare host (keeps the port the client dialled).
	Origins []string `yaml:"origins"`
	// ProxyProtocol: off, v1, v2, or simple (udp).
	ProxyProtocol string `yaml:"proxy_protocol"`
	// IdleTimeout closes a connection or flow idle both ways this long.
	// Zero: 10m for tcp, 60s for udp.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// ConnectTimeout bounds a TCP dial to an origin. Zero: 5s.
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// MaxConnections bounds the app's concurrent connections or flows.
	// Zero: no limit of its own.
	MaxConnections int `yaml:"max_connections"`
	// IPFirewall allows or denies clients before the origin is dialled.
	IPFirewall IPFirewall `yaml:"ip_firewall"`
}

// IPFirewall lists client ranges: deny wins; with allow set, a client must
// be in it.
type IPFirewall struct {
	Allow []string `yaml:"allow"`
	Deny  []string `yaml:"deny"`
}

// Duration is a time.Duration written as "30s".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 30s)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// Defaults of the keys a file leaves out.
const (
	DefaultAdminListen   = "127.0.0.1:9180"
	DefaultStorePath     = "/var/lib/edgeproxy/bindings.json"
	DefaultShutdownGrace = 30 * time.Second
)

// Default returns a configuration with every default set.
func Default() *Config {
	return &Config{
		ShutdownGrace: Duration(DefaultShutdownGrace),
		Admin:         Admin{Listen: DefaultAdminListen},
		Store:         Store{Path: DefaultStorePath},
		CDN:           CDN{HTTPPorts: []int{80}, HTTPSPorts: []int{443}, HTTP3: true, HTTP3Port: 443, AccessLog: "stderr"},
	}
}

// PinDir returns the pin directory: the default when the key is absent.
func (c *Config) PinDir() string {
	if c.Dispatch.PinDir == nil {
		return dispatch.DefaultPinDir
	}
	return *c.Dispatch.PinDir
}

// Load reads, decodes and validates a configuration file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes and validates a configuration.
func Parse(b []byte) (*Config, error) {
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decode: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode: more than one YAML document")
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func decodeStrict(n *yaml.Node, v any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// Validate checks every key and the binding state the file declares.
func (c *Config) Validate() error {
	st, serr := c.BindingState()
	svc, verr := c.Services()
	errs := []error{serr, verr}
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if _, err := netip.ParseAddrPort(c.Admin.Listen); err != nil {
		if _, _, herr := net.SplitHostPort(c.Admin.Listen); herr != nil {
			fail("admin.listen: %q is not host:port", c.Admin.Listen)
		}
	}
	defaults := 0
	for i, cert := range c.CDN.Certificates {
		if cert.CertFile == "" || cert.KeyFile == "" {
			fail("cdn.certificates[%d]: cert_file and key_file are both needed", i)
		}
		if cert.Default {
			defaults++
		}
	}
	if defaults > 1 {
		fail("cdn.certificates: %d are marked default; at most one may be", defaults)
	}
	if c.CDN.Limits.MaxHeaderBytes < 0 || c.CDN.Limits.MaxBodyBytes < 0 || c.CDN.Limits.MaxConnections < 0 {
		fail("cdn.limits: limits are not negative")
	}
	for _, l := range []struct {
		key string
		v   int
	}{
		{"max_streams", c.CDN.Limits.MaxStreams}, {"connection_reset_budget", c.CDN.Limits.ConnectionResetBudget},
		{"client_reset_budget", c.CDN.Limits.ClientResetBudget}, {"max_quic_handshakes", c.CDN.Limits.MaxQUICHandshakes},
		{"quic_retry_threshold", c.CDN.Limits.QUICRetryThreshold},
		{"max_quic_sockets_per_address", c.CDN.Limits.MaxQUICSocketsPerAddress},
	} {
		if l.v < 0 {
			fail("cdn.limits.%s: %d is negative (0: the default)", l.key, l.v)
		}
	}
	if c.CDN.Limits.ResetBan < 0 {
		fail("cdn.limits.reset_ban: negative")
	}
	if c.CDN.Timeouts.QUICHandshake < 0 {
		fail("cdn.timeouts.quic_handshake: negative")
	}
	for _, k := range []struct {
		key string
		n   int
	}{{"limit", c.FDBudget.Limit}, {"reserve_accept", c.FDBudget.ReserveAccept}, {"reserve_admin", c.FDBudget.ReserveAdmin},
		{"reserve_dial", c.FDBudget.ReserveDial}, {"reserve_cdn", c.FDBudget.ReserveCDN}, {"reserve_other", c.FDBudget.ReserveOther}} {
		if k.n < 0 {
			fail("fd_budget.%s: %d is negative", k.key, k.n)
		}
	}
	if c.CDN.LoopID != "" && strings.ContainsAny(c.CDN.LoopID, ",; \t") {
		fail("cdn.loop_id: %q is not a token", c.CDN.LoopID)
	}
	if c.CDN.AccessLog == "" {
		fail("cdn.access_log: empty (want stderr, off or a file path)")
	}
	for i, s := range c.CDN.Sites {
		if len(s.Hosts) == 0 {
			fail("cdn.sites[%d].hosts: a site needs at least one host", i)
		}
		for j, h := range s.Hosts {
			if err := checkHost(h); err != nil {
				fail("cdn.sites[%d].hosts[%d]: %v", i, j, err)
			}
		}
		for j, e := range s.EdgeIPs {
			if _, err := parseEdgeIP(e); err != nil {
				fail("cdn.sites[%d].edge_ips[%d]: %v", i, j, err)
			}
		}
		if len(s.Origins) == 0 {
			fail("cdn.sites[%d].origins: a site needs at least one origin", i)
		}
		for j, o := range s.Origins {
			if _, err := parseOriginURL(o.URL); err != nil {
				fail("cdn.sites[%d].origins[%d]: %v", i, j, err)
			}
			if o.Weight < 0 {
				fail("cdn.sites[%d].origins[%d].weight: %d is negative", i, j, o.Weight)
			}
		}
		switch s.Balance {
		case "", "round_robin", "least_connections":
		default:
			fail("cdn.sites[%d].balance: %q is not round_robin or least_connections", i, s.Balance)
		}
		if hc := s.HealthCheck; hc != nil {
			if !strings.HasPrefix(hc.Path, "/") {
				fail("cdn.sites[%d].health_check.path: %q does not start with /", i, hc.Path)
			}
			if hc.Healthy < 0 || hc.Unhealthy < 0 {
				fail("cdn.sites[%d].health_check: healthy and unhealthy are not negative", i)
			}
			if hc.Timeout > hc.Interval && hc.Interval > 0 {
				fail("cdn.sites[%d].health_check.timeout: %v is longer than the interval %v", i, time.Duration(hc.Timeout), time.Duration(hc.Interval))
			}
		}
		if s.PassiveHealth.MaxFailures < 0 {
			fail("cdn.sites[%d].passive_health.max_failures: %d is negative", i, s.PassiveHealth.MaxFailures)
		}
		if r := s.Retries; (r.Max != nil && (*r.Max < 0 || *r.Max > 10)) || r.Budget < 0 || r.Budget > 1 || r.MinPerSecond < 0 {
			fail("cdn.sites[%d].retries: max is 0 to 10, budget 0 to 1, min_per_second not negative", i)
		}
		if f := s.OriginTLS.CAFile; f != "" {
			if _, err := os.Stat(f); err != nil {
				fail("cdn.sites[%d].origin_tls.ca_file: %v", i, err)
			}
		}
		for j, r := range s.Routes {
			if !strings.HasPrefix(r.Path, "/") {
				fail("cdn.sites[%d].routes[%d].path: %q does not start with /", i, j, r.Path)
			}
			if len(r.Origins) == 0 {
				fail("cdn.sites[%d].routes[%d].origins: a route needs at least one origin", i, j)
			}
			for k, o := range r.Origins {
				if _, err := parseOriginURL(o.URL); err != nil {
					fail("cdn.sites[%d].routes[%d].origins[%d]: %v", i, j, k, err)
				}
			}
		}
	}
	// An origin shared by sites has one health check.
	checkOf := map[string]int{}
	for i, s := range c.CDN.Sites {
		if s.HealthCheck == nil {
			continue
		}
		for _, o := range s.allOrigins() {
			if j, ok := checkOf[o.URL]; ok && *c.CDN.Sites[j].HealthCheck != *s.HealthCheck {
				fail("cdn.sites[%d].health_check: origin %s is also an origin of cdn.sites[%d], whose health check differs", i, o.URL, j)
			} else if !ok {
				checkOf[o.URL] = i
			}
		}
	}
	// A host must name one site on any address.
	for i, a := range c.CDN.Sites {
		for j := i + 1; j < len(c.CDN.Sites); j++ {
			b := c.CDN.Sites[j]
			for _, h := range a.Hosts {
				if slices.ContainsFunc(b.Hosts, func(x string) bool { return strings.EqualFold(x, h) }) && edgesOverlap(a.EdgeIPs, b.EdgeIPs) {
					fail("cdn.sites[%d].hosts: %q is also a host of cdn.sites[%d] on the same addresses", j, h, i)
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return bindings.Validate(st, svc, c.Guards())
}

// BindingState returns the binding state the file declares.
func (c *Config) BindingState() (*bindings.State, error) {
	var errs []error
	st := &bindings.State{}
	for i, p := range c.Prefixes {
		cidr, err := bindings.ParseCIDR(p.CIDR)
		if err != nil {
			errs = append(errs, fmt.Errorf("prefixes[%d].cidr: %v", i, err))
			continue
		}
		svc, err := bindings.ParseService(p.Service)
		if err != nil {
			errs = append(errs, fmt.Errorf("prefixes[%d] %s: service: %v", i, p.CIDR, err))
			continue
		}
		st.Prefixes = append(st.Prefixes, bindings.NewPrefix(cidr, svc, bindings.FromConfig))
	}
	for i, b := range c.Bindings {
		cidr, err := bindings.ParseCIDR(b.CIDR)
		if err != nil {
			errs = append(errs, fmt.Errorf("bindings[%d].cidr: %v", i, err))
			continue
		}
		svc, err := bindings.ParseService(b.Service)
		if err != nil {
			errs = append(errs, fmt.Errorf("bindings[%d] %s: service: %v", i, b.CIDR, err))
			continue
		}
		proto, port, err := dispatch.ParseScope(b.Protocol, b.Port)
		if err != nil {
			errs = append(errs, fmt.Errorf("bindings[%d] %s: %v", i, b.CIDR, err))
			continue
		}
		st.Bindings = append(st.Bindings, bindings.NewBinding(cidr, proto, port, svc, bindings.FromConfig))
	}
	st.AssignPrefixes()
	return st, errors.Join(errs...)
}

// Services returns what the services serve: the cdn's ports and the
// spectrum apps.
func (c *Config) Services() (bindings.Services, error) {
	var errs []error
	var svc bindings.Services
	ports := func(field string, in []int) []uint16 {
		out := make([]uint16, 0, len(in))
		for i, p := range in {
			if p < 1 || p > 65535 {
				errs = append(errs, fmt.Errorf("cdn.%s[%d]: %d is not a port (want 1-65535)", field, i, p))
				continue
			}
			out = append(out, uint16(p))
		}
		return out
	}
	svc.CDN.HTTP = ports("http_ports", c.CDN.HTTPPorts)
	svc.CDN.HTTPS = ports("https_ports", c.CDN.HTTPSPorts)
	svc.CDN.HTTP3 = c.CDN.HTTP3
	if c.CDN.HTTP3 {
		if c.CDN.HTTP3Port < 1 || c.CDN.HTTP3Port > 65535 {
			errs = append(errs, fmt.Errorf("cdn.http3_port: %d is not a port (want 1-65535)", c.CDN.HTTP3Port))
		}
		svc.CDN.HTTP3Port = uint16(c.CDN.HTTP3Port)
	}
	for i, a := range c.Spectrum.Apps {
		at := func(field string) string { return fmt.Sprintf("spectrum.apps[%d].%s", i, field) }
		proto, err := dispatch.ParseProtocol(a.Protocol)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", at("protocol"), err))
			continue
		}
		edge, err := bindings.ParseCIDR(a.Edge)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", at("edge"), err))
			continue
		}
		pr, err := bindings.ParsePorts(a.Ports)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", at("ports"), err))
			continue
		}
		if len(a.Origins) == 0 {
			errs = append(errs, fmt.Errorf("%s: an app needs at least one origin", at("origins")))
		}
		for j, o := range a.Origins {
			_, port, err := ParseAppOrigin(o)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s[%d]: %v", at("origins"), j, err))
				continue
			}
			if port != 0 && !pr.Any() && int(port)+int(pr.Last-pr.First) > 65535 {
				errs = append(errs, fmt.Errorf("%s[%d]: %q: the range %s maps past port 65535 from there", at("origins"), j, o, pr))
			}
		}
		for _, l := range []struct {
			field string
			list  []string
		}{{"ip_firewall.allow", a.IPFirewall.Allow}, {"ip_firewall.deny", a.IPFirewall.Deny}} {
			for j, e := range l.list {
				if _, err := parseEdgeIP(e); err != nil {
					errs = append(errs, fmt.Errorf("%s[%d]: %v", at(l.field), j, err))
				}
			}
		}
		if a.MaxConnections < 0 {
			errs = append(errs, fmt.Errorf("%s: %d is negative", at("max_connections"), a.MaxConnections))
		}
		switch a.ProxyProtocol {
		case "", "off", "v1", "v2":
			if a.ProxyProtocol == "v1" && proto == dispatch.UDP {
				errs = append(errs, fmt.Errorf("%s: v1 is for tcp; udp takes v2 or simple", at("proxy_protocol")))
			}
		case "simple":
			if proto != dispatch.UDP {
				errs = append(errs, fmt.Errorf("%s: simple (Simple Proxy Protocol) is for udp apps", at("proxy_protocol")))
			}
		default:
			errs = append(errs, fmt.Errorf("%s: %q is not one of off, v1, v2, simple", at("proxy_protocol"), a.ProxyProtocol))
		}
		svc.Apps = append(svc.Apps, bindings.App{Name: a.Name, Protocol: proto, Edge: edge, Ports: pr})
	}
	for _, l := range []struct {
		field string
		n     int
	}{{"max_connections", c.Spectrum.MaxConnections}, {"max_udp_flows", c.Spectrum.MaxUDPFlows},
		{"max_udp_flows_per_app", c.Spectrum.MaxUDPFlowsPerApp}} {
		if l.n < 0 {
			errs = append(errs, fmt.Errorf("spectrum.%s: %d is negative", l.field, l.n))
		}
	}
	if d := c.Spectrum.MaxDatagram; d < 0 || d > 65535 {
		errs = append(errs, fmt.Errorf("spectrum.max_datagram: %d is not a UDP payload size (0-65535)", d))
	}
	return svc, errors.Join(errs...)
}

// SpectrumApps returns the spectrum apps as the L4 proxy takes them. Call it
// on a validated configuration.
func (c *Config) SpectrumApps() []spectrum.App {
	var out []spectrum.App
	for _, a := range c.Spectrum.Apps {
		edge, _ := bindings.ParseCIDR(a.Edge)
		pr, _ := bindings.ParsePorts(a.Ports)
		sa := spectrum.App{
			Name: a.Name, Protocol: spectrum.Protocol(a.Protocol), Edge: edge,
			Ports:          pr,
			Proxy:          spectrum.ProxyProtocol(a.ProxyProtocol),
			IdleTimeout:    time.Duration(a.IdleTimeout),
			ConnectTimeout: time.Duration(a.ConnectTimeout),
			MaxConnections: a.MaxConnections,
		}
		for _, o := range a.Origins {
			host, port, _ := ParseAppOrigin(o)
			sa.Origins = append(sa.Origins, spectrum.Origin{Host: host, Port: port})
		}
		for _, e := range a.IPFirewall.Allow {
			p, _ := parseEdgeIP(e)
			sa.Firewall.Allow = append(sa.Firewall.Allow, p)
		}
		for _, e := range a.IPFirewall.Deny {
			p, _ := parseEdgeIP(e)
			sa.Firewall.Deny = append(sa.Firewall.Deny, p)
		}
		out = append(out, sa)
	}
	return out
}

// ParseAppOrigin parses a spectrum origin: "host:port" or a bare host (a
// name, an IP address, or an IPv6 address in brackets). The port is 0 for a
// bare host.
func ParseAppOrigin(s string) (host string, port uint16, err error) {
	if s == "" {
		return "", 0, errors.New("empty origin")
	}
	host = s
	if h, p, err := net.SplitHostPort(s); err == nil {
		if port, err = bindings.ParsePort(p); err != nil {
			return "", 0, fmt.Errorf("origin %q: %v", s, err)
		}
		host = h
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return "", 0, fmt.Errorf("origin %q: %q in brackets is not an IPv6 address", s, host)
		}
	}
	switch {
	case host == "":
		return "", 0, fmt.Errorf("origin %q has no host", s)
	case strings.ContainsAny(host, "[]/ \t"):
		return "", 0, fmt.Errorf("origin %q is not host:port or a host", s)
	case strings.Contains(host, ":"):
		if _, err := netip.ParseAddr(host); err != nil {
			return "", 0, fmt.Errorf("origin %q is not host:port or a host (an IPv6 address with a port needs brackets)", s)
		}
	}
	return host, port, nil
}

func parseOriginURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http:// or https:// URL", s)
	}
	return u, nil
}

func parseEdgeIP(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return bindings.ParseCIDR(s)
}

func checkHost(h string) error {
	if h == "*" {
		return nil // the catch-all
	}
	name := strings.TrimPrefix(h, "*.")
	if name == "" || strings.ContainsAny(name, "*/: ") || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") {
		return fmt.Errorf("%q is not a host name or a *. wildcard", h)
	}
	return nil
}

// Guards returns the addresses no prefix may contain: the admin listen
// address and the literal addresses of origins.
func (c *Config) Guards() []bindings.Guard {
	var gs []bindings.Guard
	if ap, err := netip.ParseAddrPort(c.Admin.Listen); err == nil && !ap.Addr().IsUnspecified() {
		gs = append(gs, bindings.Guard{Addr: ap.Addr().Unmap(), What: "the admin listen address " + c.Admin.Listen})
	}
	for i, s := range c.CDN.Sites {
		for j, o := range s.Origins {
			if u, err := parseOriginURL(o.URL); err == nil {
				if a, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil {
					gs = append(gs, bindings.Guard{Addr: a.Unmap(), What: fmt.Sprintf("origin %s of cdn.sites[%d].origins[%d]", o.URL, i, j)})
				}
			}
		}
	}
	for i, a := range c.Spectrum.Apps {
		for j, o := range a.Origins {
			if h, _, err := ParseAppOrigin(o); err == nil {
				if addr, err := netip.ParseAddr(h); err == nil {
					gs = append(gs, bindings.Guard{Addr: addr.Unmap(), What: fmt.Sprintf("origin %s of spectrum.apps[%d].origins[%d]", o, i, j)})
				}
			}
		}
	}
	return gs
}

// edgesOverlap reports whether two edge_ips lists share an address (empty
// means every address).
func edgesOverlap(a, b []string) bool {
	if len(a) == 0 || len(b) == 0 {
		return true
	}
	for _, x := range a {
		px, err := parseEdgeIP(x)
		if err != nil {
			continue
		}
		for _, y := range b {
			if py, err := parseEdgeIP(y); err == nil && px.Overlaps(py) {
				return true
			}
		}
	}
	return false
}

// QUICResetKeyPath is the file of the QUIC stateless-reset key:
// cdn.quic_reset_key_file, else quic-reset-key beside store.path, else ""
// (a random key for each process).
func (c *Config) QUICResetKeyPath() string {
	switch {
	case c.CDN.QUICResetKeyFile != "":
		return c.CDN.QUICResetKeyFile
	case c.Store.Path != "":
		return filepath.Join(filepath.Dir(c.Store.Path), "quic-reset-key")
	}
	return ""
}

// ProxyConfig returns the cdn's configuration as the proxy takes it,
// loading the certificates. Call it on a validated configuration.
func (c *Config) ProxyConfig() (proxy.Config, proxy.Limits, error) {
	pc := proxy.Config{HTTP3: c.CDN.HTTP3, HTTP3Port: uint16(c.CDN.HTTP3Port), LoopID: c.CDN.LoopID}
	for _, p := range c.CDN.HTTPPorts {
		pc.HTTPPorts = append(pc.HTTPPorts, uint16(p))
	}
	for _, p := range c.CDN.HTTPSPorts {
		pc.HTTPSPorts = append(pc.HTTPSPorts, uint16(p))
	}
	for i, cf := range c.CDN.Certificates {
		cert, err := tls.LoadX509KeyPair(cf.CertFile, cf.KeyFile)
		if err != nil {
			return pc, proxy.Limits{}, fmt.Errorf("cdn.certificates[%d]: %w", i, err)
		}
		pc.Certificates = append(pc.Certificates, proxy.Certificate{Certificate: cert, Default: cf.Default, Source: cf.CertFile})
	}
	urls := func(os []Origin) []proxy.Origin {
		var out []proxy.Origin
		for _, o := range os {
			u, _ := parseOriginURL(o.URL)
			out = append(out, proxy.Origin{URL: u, Weight: o.Weight})
		}
		return out
	}
	for _, s := range c.CDN.Sites {
		ps := proxy.Site{
			Hosts: s.Hosts, Origins: urls(s.Origins), Balance: proxy.Balance(s.Balance),
			Passive: proxy.PassiveHealth{MaxFailures: s.PassiveHealth.MaxFailures, Ejection: time.Duration(s.PassiveHealth.Ejection)},
			Retries: proxy.Retries{Budget: s.Retries.Budget, MinPerSecond: s.Retries.MinPerSecond},
			OriginTLS: proxy.OriginTLS{
				InsecureSkipVerify: s.OriginTLS.InsecureSkipVerify, CAFile: s.OriginTLS.CAFile, ServerName: s.OriginTLS.ServerName,
			},
		}
		if s.Retries.Max != nil {
			ps.Retries.Max = *s.Retries.Max
			if ps.Retries.Max == 0 {
				ps.Retries.Max = -1 // the proxy's "off"
			}
		}
		if hc := s.HealthCheck; hc != nil {
			ps.HealthCheck = &proxy.HealthCheck{
				Path: hc.Path, Interval: time.Duration(hc.Interval), Timeout: time.Duration(hc.Timeout),
				Healthy: hc.Healthy, Unhealthy: hc.Unhealthy,
			}
		}
		for _, e := range s.EdgeIPs {
			p, _ := parseEdgeIP(e)
			ps.EdgeIPs = append(ps.EdgeIPs, p)
		}
		for _, r := range s.Routes {
			ps.Routes = append(ps.Routes, proxy.Route{Path: r.Path, Origins: urls(r.Origins)})
		}
		pc.Sites = append(pc.Sites, ps)
	}
	t := c.CDN.Timeouts
	lim := proxy.Limits{
		MaxHeaderBytes: c.CDN.Limits.MaxHeaderBytes, MaxBodyBytes: c.CDN.Limits.MaxBodyBytes, MaxConnections: c.CDN.Limits.MaxConnections,
		ReadHeaderTimeout: time.Duration(t.ReadHeader), BodyTimeout: time.Duration(t.Body), SendTimeout: time.Duration(t.Send),
		IdleTimeout: time.Duration(t.Idle), UpstreamConnectTimeout: time.Duration(t.UpstreamConnect), UpstreamTimeout: time.Duration(t.Upstream),
		TunnelIdleTimeout: time.Duration(t.TunnelIdle),
		MaxStreams:        c.CDN.Limits.MaxStreams, ConnResetBudget: c.CDN.Limits.ConnectionResetBudget,
		ClientResetBudget: c.CDN.Limits.ClientResetBudget, ResetBan: time.Duration(c.CDN.Limits.ResetBan),
		MaxQUICHandshakes: c.CDN.Limits.MaxQUICHandshakes, QUICRetryThreshold: c.CDN.Limits.QUICRetryThreshold,
		QUICHandshakeTimeout:     time.Duration(c.CDN.Timeouts.QUICHandshake),
		MaxQUICSocketsPerAddress: c.CDN.Limits.MaxQUICSocketsPerAddress,
	}
	return pc, lim, nil
}
