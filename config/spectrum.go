package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/spectrum"
)

// SpectrumApps returns the spectrum apps as the L4 proxy takes them. Call it
// on a validated configuration.
func (c *Config) SpectrumApps() []spectrum.App {
	var out []spectrum.App
	for _, a := range c.Spectrum.Apps {
		edge, _ := bindings.ParseCIDR(a.Edge)
		pr, _ := bindings.ParsePorts(a.Ports)
		sa := spectrum.App{
			Name: a.Name, Protocol: spectrum.Protocol(a.Protocol), Edge: edge,
			Ports:          spectrum.Ports{First: pr.First, Last: pr.Last},
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

func parseEdgeIP(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return bindings.ParseCIDR(s)
}
