package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

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
		var proto dispatch.Protocol
		switch {
		case b.Protocol == "" && b.Port == 0:
		case b.Protocol == "" || b.Port == 0:
			errs = append(errs, fmt.Errorf("bindings[%d] %s: protocol and port go together (a port-scoped binding needs both)", i, b.CIDR))
			continue
		default:
			if proto, err = dispatch.ParseProtocol(b.Protocol); err != nil {
				errs = append(errs, fmt.Errorf("bindings[%d] %s: protocol: %v", i, b.CIDR, err))
				continue
			}
			if b.Port < 1 || b.Port > 65535 {
				errs = append(errs, fmt.Errorf("bindings[%d] %s: port: %d is not a port (want 1-65535)", i, b.CIDR, b.Port))
				continue
			}
		}
		st.Bindings = append(st.Bindings, bindings.NewBinding(cidr, proto, uint16(b.Port), svc, bindings.FromConfig))
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
