package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
)

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

// allOrigins lists the site's origins, its routes' included.
func (s *Site) allOrigins() []Origin {
	out := slices.Clone(s.Origins)
	for _, r := range s.Routes {
		out = append(out, r.Origins...)
	}
	return out
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
