package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/spectrum/appconf"
)

// spectrum plans the spectrum apps and checks the L4 proxy's limits.
func (b *planner) spectrum() {
	sp := b.p.Spectrum
	for i, a := range sp.Apps {
		b.app(i, a)
	}
	b.negative("spectrum", []string{"max_connections", "max_udp_flows", "max_udp_flows_per_app"},
		sp.MaxConnections, sp.MaxUDPFlows, sp.MaxUDPFlowsPerApp)
	if d := sp.MaxDatagram; d < 0 || d > 65535 {
		b.fail("spectrum.max_datagram: %d is not a UDP payload size (0-65535)", d)
	}
}

// app plans spectrum.apps[i]: what it serves, for the binding state, and
// the app as the L4 proxy takes it; the literal addresses of its origins
// are guards.
func (b *planner) app(i int, a App) {
	at := fmt.Sprintf("spectrum.apps[%d]", i)
	proto, err := dispatch.ParseProtocol(a.Protocol)
	if err != nil {
		b.fail("%s.protocol: %v", at, err)
		return
	}
	edge, err := bindings.ParseCIDR(a.Edge)
	if err != nil {
		b.fail("%s.edge: %v", at, err)
		return
	}
	pr, err := bindings.ParsePorts(a.Ports)
	if err != nil {
		b.fail("%s.ports: %v", at, err)
		return
	}
	sa := appconf.App{
		Name: a.Name, Protocol: appconf.Protocol(a.Protocol), Edge: edge,
		Ports:          pr,
		Proxy:          appconf.ProxyProtocol(a.ProxyProtocol),
		IdleTimeout:    time.Duration(a.IdleTimeout),
		ConnectTimeout: time.Duration(a.ConnectTimeout),
		MaxConnections: a.MaxConnections,
	}
	for j, o := range a.Origins {
		host, port, err := ParseAppOrigin(o)
		if err != nil {
			b.fail("%s.origins[%d]: %v", at, j, err)
			sa.Origins = append(sa.Origins, appconf.Origin{}) // the plan fails; CheckApp still counts it
			continue
		}
		sa.Origins = append(sa.Origins, appconf.Origin{Host: host, Port: port})
		if addr, err := netip.ParseAddr(host); err == nil {
			b.guard(addr, fmt.Sprintf("origin %s of %s.origins[%d]", o, at, j))
		}
	}
	sa.Firewall.Allow = b.edgeIPs(at+".ip_firewall.allow", a.IPFirewall.Allow)
	sa.Firewall.Deny = b.edgeIPs(at+".ip_firewall.deny", a.IPFirewall.Deny)
	b.check(appconf.CheckApp(sa, at))
	b.p.Services.Apps = append(b.p.Services.Apps, bindings.App{Name: a.Name, Protocol: proto, Edge: edge, Ports: pr})
	b.p.Apps = append(b.p.Apps, sa)
}

// edgeIPs parses a list of addresses and prefixes at key.
func (b *planner) edgeIPs(key string, in []string) []netip.Prefix {
	var out []netip.Prefix
	for j, e := range in {
		p, err := parseEdgeIP(e)
		if err != nil {
			b.fail("%s[%d]: %v", key, j, err)
			continue
		}
		out = append(out, p)
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

func parseEdgeIP(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return bindings.ParseCIDR(s)
}
