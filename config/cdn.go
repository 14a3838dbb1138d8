package config

import (
	"crypto/tls"
	"fmt"
	"net/url"
	"time"

	"github.com/edgeproxy/edgeproxy/proxy"
)

func parseOriginURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http:// or https:// URL", s)
	}
	return u, nil
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
