package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/proxy/cdnconf"
)

// cdn plans the cdn: its ports (for the binding state and the proxy),
// certificates, limits and sites.
func (b *planner) cdn() {
	c := b.p.CDN
	pc := &b.p.Proxy
	pc.HTTP3, pc.HTTP3Port, pc.LoopID = c.HTTP3, uint16(c.HTTP3Port), c.LoopID
	pc.HTTPPorts = b.ports("cdn.http_ports", c.HTTPPorts)
	pc.HTTPSPorts = b.ports("cdn.https_ports", c.HTTPSPorts)
	svc := &b.p.Services.CDN
	svc.HTTP, svc.HTTPS, svc.HTTP3 = slices.Clone(pc.HTTPPorts), slices.Clone(pc.HTTPSPorts), c.HTTP3
	if c.HTTP3 {
		if c.HTTP3Port < 1 || c.HTTP3Port > 65535 {
			b.fail("cdn.http3_port: %d is not a port (want 1-65535)", c.HTTP3Port)
		}
		svc.HTTP3Port = uint16(c.HTTP3Port)
	}
	if c.LoopID != "" && strings.ContainsAny(c.LoopID, ",; \t") {
		b.fail("cdn.loop_id: %q is not a token", c.LoopID)
	}
	if c.AccessLog == "" {
		b.fail("cdn.access_log: empty (want stderr, off or a file path)")
	}
	b.certificates()
	b.cdnLimits()
	for i, s := range c.Sites {
		pc.Sites = append(pc.Sites, b.site(i, s))
	}
	b.check(cdnconf.CheckSites(pc.Sites, siteKey))
	b.hostsOnce(pc.Sites)
}

func siteKey(i int) string { return fmt.Sprintf("cdn.sites[%d]", i) }

// certificates checks the certificates' keys; ProxyConfig loads them.
func (b *planner) certificates() {
	defaults := 0
	for i, cert := range b.p.CDN.Certificates {
		if cert.CertFile == "" || cert.KeyFile == "" {
			b.fail("cdn.certificates[%d]: cert_file and key_file are both needed", i)
		}
		if cert.Default {
			defaults++
		}
	}
	if defaults > 1 {
		b.fail("cdn.certificates: %d are marked default; at most one may be", defaults)
	}
}

// cdnLimits checks cdn.limits and cdn.timeouts and makes the proxy's Limits.
func (b *planner) cdnLimits() {
	l, t := b.p.CDN.Limits, b.p.CDN.Timeouts
	if l.MaxHeaderBytes < 0 || l.MaxBodyBytes < 0 || l.MaxConnections < 0 {
		b.fail("cdn.limits: limits are not negative")
	}
	for _, k := range []struct {
		key string
		v   int
	}{
		{"max_streams", l.MaxStreams}, {"connection_reset_budget", l.ConnectionResetBudget},
		{"client_reset_budget", l.ClientResetBudget}, {"max_quic_handshakes", l.MaxQUICHandshakes},
		{"quic_retry_threshold", l.QUICRetryThreshold},
		{"max_quic_sockets_per_address", l.MaxQUICSocketsPerAddress},
	} {
		if k.v < 0 {
			b.fail("cdn.limits.%s: %d is negative (0: the default)", k.key, k.v)
		}
	}
	if l.ResetBan < 0 {
		b.fail("cdn.limits.reset_ban: negative")
	}
	if t.QUICHandshake < 0 {
		b.fail("cdn.timeouts.quic_handshake: negative")
	}
	b.p.Limits = cdnconf.Limits{
		MaxHeaderBytes: l.MaxHeaderBytes, MaxBodyBytes: l.MaxBodyBytes, MaxConnections: l.MaxConnections,
		ReadHeaderTimeout: time.Duration(t.ReadHeader), BodyTimeout: time.Duration(t.Body), SendTimeout: time.Duration(t.Send),
		IdleTimeout: time.Duration(t.Idle), UpstreamConnectTimeout: time.Duration(t.UpstreamConnect), UpstreamTimeout: time.Duration(t.Upstream),
		TunnelIdleTimeout: time.Duration(t.TunnelIdle),
		MaxStreams:        l.MaxStreams, ConnResetBudget: l.ConnectionResetBudget,
		ClientResetBudget: l.ClientResetBudget, ResetBan: time.Duration(l.ResetBan),
		MaxQUICHandshakes: l.MaxQUICHandshakes, QUICRetryThreshold: l.QUICRetryThreshold,
		QUICHandshakeTimeout:     time.Duration(t.QUICHandshake),
		MaxQUICSocketsPerAddress: l.MaxQUICSocketsPerAddress,
	}
}

// site plans cdn.sites[i] as the proxy takes it; the literal addresses of
// its origins are guards. The rules of sites as the proxy serves them are
// cdnconf.CheckSites'.
func (b *planner) site(i int, s Site) cdnconf.Site {
	at := siteKey(i)
	for j, h := range s.Hosts {
		if err := checkHost(h); err != nil {
			b.fail("%s.hosts[%d]: %v", at, j, err)
		}
	}
	ps := cdnconf.Site{
		Hosts: s.Hosts, Balance: cdnconf.Balance(s.Balance),
		EdgeIPs: b.edgeIPs(at+".edge_ips", s.EdgeIPs),
		Origins: b.origins(at+".origins", s.Origins),
		Passive: cdnconf.PassiveHealth{MaxFailures: s.PassiveHealth.MaxFailures, Ejection: time.Duration(s.PassiveHealth.Ejection)},
		Retries: b.retries(at+".retries", s.Retries),
		OriginTLS: cdnconf.OriginTLS{
			InsecureSkipVerify: s.OriginTLS.InsecureSkipVerify, CAFile: s.OriginTLS.CAFile, ServerName: s.OriginTLS.ServerName,
		},
	}
	for j, o := range ps.Origins {
		if o.URL == nil {
			continue
		}
		if a, err := netip.ParseAddr(strings.Trim(o.URL.Hostname(), "[]")); err == nil {
			b.guard(a, fmt.Sprintf("origin %s of %s.origins[%d]", s.Origins[j].URL, at, j))
		}
	}
	for j, r := range s.Routes {
		ps.Routes = append(ps.Routes, cdnconf.Route{Path: r.Path, Origins: b.origins(fmt.Sprintf("%s.routes[%d].origins", at, j), r.Origins)})
	}
	switch ps.Balance {
	case "", cdnconf.RoundRobin, cdnconf.LeastConnections:
	default:
		b.fail("%s.balance: %q is not round_robin or least_connections", at, s.Balance)
	}
	if hc := s.HealthCheck; hc != nil {
		ps.HealthCheck = b.healthCheck(at+".health_check", *hc)
	}
	if s.PassiveHealth.MaxFailures < 0 {
		b.fail("%s.passive_health.max_failures: %d is negative", at, s.PassiveHealth.MaxFailures)
	}
	if f := s.OriginTLS.CAFile; f != "" {
		if _, err := os.Stat(f); err != nil {
			b.fail("%s.origin_tls.ca_file: %v", at, err)
		}
	}
	return ps
}

// retries checks a site's retries and makes the proxy's.
func (b *planner) retries(at string, r Retries) cdnconf.Retries {
	if (r.Max != nil && (*r.Max < 0 || *r.Max > 10)) || r.Budget < 0 || r.Budget > 1 || r.MinPerSecond < 0 {
		b.fail("%s: max is 0 to 10, budget 0 to 1, min_per_second not negative", at)
	}
	out := cdnconf.Retries{Budget: r.Budget, MinPerSecond: r.MinPerSecond}
	if r.Max != nil {
		out.Max = *r.Max
		if out.Max == 0 {
			out.Max = -1 // the proxy's "off"
		}
	}
	return out
}

// origins parses a list of origins at key. An origin whose URL does not
// parse is kept without one, so that the list keeps its length.
func (b *planner) origins(key string, in []Origin) []cdnconf.Origin {
	out := make([]cdnconf.Origin, 0, len(in))
	for k, o := range in {
		u, err := parseOriginURL(o.URL)
		if err != nil {
			b.fail("%s[%d]: %v", key, k, err)
		}
		if o.Weight < 0 {
			b.fail("%s[%d].weight: %d is negative", key, k, o.Weight)
		}
		out = append(out, cdnconf.Origin{URL: u, Weight: o.Weight})
	}
	return out
}

func (b *planner) healthCheck(at string, hc HealthCheck) *cdnconf.HealthCheck {
	if !strings.HasPrefix(hc.Path, "/") {
		b.fail("%s.path: %q does not start with /", at, hc.Path)
	}
	if hc.Healthy < 0 || hc.Unhealthy < 0 {
		b.fail("%s: healthy and unhealthy are not negative", at)
	}
	if hc.Timeout > hc.Interval && hc.Interval > 0 {
		b.fail("%s.timeout: %v is longer than the interval %v", at, time.Duration(hc.Timeout), time.Duration(hc.Interval))
	}
	return &cdnconf.HealthCheck{
		Path: hc.Path, Interval: time.Duration(hc.Interval), Timeout: time.Duration(hc.Timeout),
		Healthy: hc.Healthy, Unhealthy: hc.Unhealthy,
	}
}

// hostsOnce: a host names one site on any address.
func (b *planner) hostsOnce(sites []cdnconf.Site) {
	for i, a := range sites {
		for j := i + 1; j < len(sites); j++ {
			for _, h := range a.Hosts {
				if slices.ContainsFunc(sites[j].Hosts, func(x string) bool { return strings.EqualFold(x, h) }) && edgesOverlap(a.EdgeIPs, sites[j].EdgeIPs) {
					b.fail("%s.hosts: %q is also a host of %s on the same addresses", siteKey(j), h, siteKey(i))
				}
			}
		}
	}
}

// edgesOverlap reports whether two edge_ips lists share an address (empty
// means every address).
func edgesOverlap(a, b []netip.Prefix) bool {
	if len(a) == 0 || len(b) == 0 {
		return true
	}
	for _, x := range a {
		if slices.ContainsFunc(b, x.Overlaps) {
			return true
		}
	}
	return false
}

func parseOriginURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http:// or https:// URL", s)
	}
	return u, nil
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
