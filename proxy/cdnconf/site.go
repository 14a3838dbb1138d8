package cdnconf

import (
	"crypto/x509"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"time"
)

// Site is a customer's site.
type Site struct {
	// Hosts are exact names or "*." wildcards. A wildcard matches any name
	// below it, as nginx's server_name does, but not the name itself. "*"
	// alone makes the site the catch-all of its addresses, tried last.
	Hosts []string
	// EdgeIPs restrict the site to these addresses; empty: every cdn
	// address. Elsewhere the site does not exist: no certificate for its
	// names, 421 for its Host.
	EdgeIPs []netip.Prefix
	// Origins are the default route's origins.
	Origins []Origin
	// Routes send path prefixes to other origins; the longest prefix wins.
	Routes []Route
	// Balance chooses among a route's origins; empty: RoundRobin.
	Balance Balance
	// HealthCheck, when set, checks every origin of the site actively.
	HealthCheck *HealthCheck
	// Passive ejects origins that keep failing.
	Passive PassiveHealth
	// Retries bound the retries of the site's requests.
	Retries Retries
	// OriginTLS is how https origins are spoken to.
	OriginTLS OriginTLS
}

// Route sends a path prefix to origins.
type Route struct {
	Path    string
	Origins []Origin
}

// Origin is an origin of a site with its weight (default 1).
type Origin struct {
	URL    *url.URL
	Weight int
}

// Balance is how a route chooses among its origins.
type Balance string

const (
	// RoundRobin takes the origins in turn, each as often as its weight
	// (smooth weighted round-robin, as nginx does it).
	RoundRobin Balance = "round_robin"
	// LeastConnections takes the origin with the fewest requests in
	// flight relative to its weight.
	LeastConnections Balance = "least_connections"
)

// OriginTLS is how the proxy speaks TLS to https origins.
type OriginTLS struct {
	// InsecureSkipVerify accepts any certificate: for private origins only.
	InsecureSkipVerify bool
	// CAFile, when set, holds the CAs that origins' certificates must
	// chain to, in place of the system's.
	CAFile string
	// ServerName overrides the name verified and sent as SNI; empty: the
	// origin URL's host.
	ServerName string
}

// HealthCheck is an active check: GET Path every Interval; an origin is
// down after Unhealthy failed checks in a row and up again after Healthy
// good ones. A check is good when the origin answers 2xx or 3xx within
// Timeout.
type HealthCheck struct {
	Path               string
	Interval, Timeout  time.Duration
	Healthy, Unhealthy int
}

// SetDefaults gives every zero value its default.
func (h *HealthCheck) SetDefaults() {
	if h.Interval <= 0 {
		h.Interval = 5 * time.Second
	}
	if h.Timeout <= 0 {
		h.Timeout = min(2*time.Second, h.Interval)
	}
	if h.Healthy <= 0 {
		h.Healthy = 2
	}
	if h.Unhealthy <= 0 {
		h.Unhealthy = 3
	}
}

// PassiveHealth ejects an origin after MaxFailures connection failures or
// timeouts in a row, for Ejection (doubling while it keeps failing, up to
// 8×). Zero values take the defaults, 3 and 30s.
type PassiveHealth struct {
	MaxFailures int
	Ejection    time.Duration
}

// SetDefaults gives every zero value its default.
func (ph *PassiveHealth) SetDefaults() {
	if ph.MaxFailures <= 0 {
		ph.MaxFailures = 3
	}
	if ph.Ejection <= 0 {
		ph.Ejection = 30 * time.Second
	}
}

// Retries bound the retries of a site's requests: at most Max more
// attempts on other origins, and retries at most Budget of the site's
// requests (plus MinPerSecond), so that a sick origin is not hammered.
// Zero values take the defaults, 2, 0.2 and 10; Max -1 turns retries off.
type Retries struct {
	Max          int
	Budget       float64
	MinPerSecond float64
}

// SetDefaults gives every zero value its default.
func (r *Retries) SetDefaults() {
	switch {
	case r.Max < 0:
		r.Max = 0
	case r.Max == 0:
		r.Max = 2
	}
	if r.Budget <= 0 {
		r.Budget = 0.2
	}
	if r.MinPerSecond <= 0 {
		r.MinPerSecond = 10
	}
}

// LoadCAFile reads a file of PEM CAs, an origin_tls.ca_file: the proxy at
// start and reload, edgeproxy check before.
func LoadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return pool, nil
}
