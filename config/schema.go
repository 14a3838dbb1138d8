// Package config decodes and validates edgeproxy's YAML configuration. The
// decoding is strict: an unknown key is an error. Every error names the item
// (`spectrum.apps[2].ports: "70000" is not a port`). docs/config.md documents
// every key.
package config

import (
	"path/filepath"
	"time"

	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/internal/fdlimit"
)

// Config is the whole configuration file. A key tagged reload:"restart"
// holds sockets, servers or the data plane's state: a reload cannot change
// it (RestartKeys, CheckReload).
type Config struct {
	// Node names this instance in logs and metrics. Empty: the host name.
	Node string `yaml:"node" reload:"restart"`
	// Labels describe the node for staged rollouts (a change scoped to a
	// label selector applies only on the nodes it selects).
	Labels map[string]string `yaml:"labels" reload:"restart"`
	// ShutdownGrace bounds how long SIGTERM waits for connections to drain.
	ShutdownGrace Duration `yaml:"shutdown_grace" reload:"restart"`
	Admin         Admin    `yaml:"admin" reload:"restart"`
	Dispatch      Dispatch `yaml:"dispatch" reload:"restart"`
	Store         Store    `yaml:"store" reload:"restart"`
	// Prefixes are onboarded with their default service.
	Prefixes []Prefix `yaml:"prefixes"`
	// Bindings move parts of prefixes (or one protocol and port of them) to
	// another service.
	Bindings []Binding `yaml:"bindings"`
	CDN      CDN       `yaml:"cdn"`
	Spectrum Spectrum  `yaml:"spectrum"`
	// FDBudget shares the process's file descriptors out among the
	// services.
	FDBudget FDBudget `yaml:"fd_budget" reload:"restart"`
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
	// BindingCapacity bounds the bindings of the data plane, IPv4 and
	// IPv6 together; their traffic counters take 48 bytes each on every
	// CPU. Zero: dispatch.DefaultBindingCapacity.
	BindingCapacity int `yaml:"binding_capacity"`
}

// Store configures where API-made prefixes and bindings persist.
type Store struct {
	// Path of the embedded store (a database file). Empty: API-made
	// changes are not persisted. With Etcd, it keeps this node's copy of
	// the last state it applied.
	Path string `yaml:"path"`
	// Etcd, when it has endpoints, makes the node one of a fleet sharing
	// its API-made items through etcd.
	Etcd Etcd `yaml:"etcd"`
	// AuditRetention bounds the audit log, in entries. Zero: 100000.
	AuditRetention int `yaml:"audit_retention"`
}

// Etcd configures the fleet's store.
type Etcd struct {
	Endpoints []string `yaml:"endpoints"`
	// Prefix is the key prefix of this fleet's keys. Empty: /edgeproxy/.
	Prefix string `yaml:"prefix"`
	// DialTimeout bounds connecting and each write. Zero: 2s.
	DialTimeout Duration `yaml:"dial_timeout"`
	// NodeTTL is the lease of the node's key: a node that stops is dropped
	// from the fleet after it. Zero: 5s.
	NodeTTL      Duration `yaml:"node_ttl"`
	CAFile       string   `yaml:"ca_file"`
	CertFile     string   `yaml:"cert_file"`
	KeyFile      string   `yaml:"key_file"`
	Username     string   `yaml:"username"`
	PasswordFile string   `yaml:"password_file"`
}

// Enabled reports whether the fleet's store is configured.
func (e Etcd) Enabled() bool { return len(e.Endpoints) > 0 }

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
	HTTP3 bool `yaml:"http3" reload:"restart"`
	// HTTP3Port is the UDP port of HTTP/3; one of HTTPSPorts.
	HTTP3Port int `yaml:"http3_port" reload:"restart"`
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
	QUICResetKeyFile string `yaml:"quic_reset_key_file" reload:"restart"`
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

// Spectrum configures the L4 proxy.
type Spectrum struct {
	// MaxConnections bounds concurrent TCP connections (two file
	// descriptors each). Zero: as many as the descriptor budget allows.
	MaxConnections int `yaml:"max_connections" reload:"restart"`
	// MaxUDPFlows bounds concurrent UDP flows (two file descriptors each).
	// Zero: as many as the descriptor budget allows.
	MaxUDPFlows int `yaml:"max_udp_flows" reload:"restart"`
	// MaxUDPFlowsPerApp bounds one app's UDP flows, so that one app's flood
	// cannot take every other app's. Zero: half of max_udp_flows with two
	// UDP apps or more, else max_udp_flows.
	MaxUDPFlowsPerApp int `yaml:"max_udp_flows_per_app" reload:"restart"`
	// MaxDatagram is the largest UDP payload forwarded. Zero: 2048.
	MaxDatagram int   `yaml:"max_datagram" reload:"restart"`
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

// Defaults of the keys a file leaves out.
const (
	DefaultAdminListen = "127.0.0.1:9180"
	DefaultStorePath   = "/var/lib/edgeproxy/bindings.db"
	// LegacyStorePath is where the store's file was by default while it
	// was JSON: a node whose store.path is the default and missing takes
	// it from there (imported).
	LegacyStorePath      = "/var/lib/edgeproxy/bindings.json"
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

// BindingCapacity returns the data plane's binding capacity: the default
// when the key is absent.
func (c *Config) BindingCapacity() int {
	if c.Dispatch.BindingCapacity == 0 {
		return dispatch.DefaultBindingCapacity
	}
	return c.Dispatch.BindingCapacity
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
