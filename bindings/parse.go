package bindings

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/edgeproxy/edgeproxy/dispatch"
)

// ParseCIDR parses an IPv4 or IPv6 CIDR whose host bits are zero. An IPv4
// address written as IPv4-mapped IPv6 is refused: write it as IPv4.
func ParseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR (want e.g. 192.0.2.0/24 or 2001:db8::/48)", s)
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q has a zone, which a CIDR cannot have", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 prefix: write it as IPv4", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, m)
	}
	return p, nil
}

// ParsePort parses a port number from 1 to 65535.
func ParsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port (want 1-65535)", s)
	}
	return uint16(n), nil
}

// ParsePorts parses a port specification: one port ("22"), an inclusive
// range ("1000-2000") or any port ("*").
func ParsePorts(s string) (dispatch.PortRange, error) {
	s = strings.TrimSpace(s)
	if s == "*" {
		return dispatch.AnyPort, nil
	}
	lo, hi, isRange := strings.Cut(s, "-")
	first, err := ParsePort(lo)
	if err != nil {
		return dispatch.PortRange{}, fmt.Errorf("%q is not a port, a range like 1000-2000 or *", s)
	}
	if !isRange {
		return dispatch.PortRange{First: first, Last: first}, nil
	}
	last, err := ParsePort(hi)
	if err != nil {
		return dispatch.PortRange{}, fmt.Errorf("%q is not a port, a range like 1000-2000 or *", s)
	}
	if last < first {
		return dispatch.PortRange{}, fmt.Errorf("%q is a range that ends before it starts", s)
	}
	return dispatch.PortRange{First: first, Last: last}, nil
}

// ParseService parses a service id.
func ParseService(s string) (Service, error) {
	svc := Service(s)
	if !svc.Known() {
		return "", fmt.Errorf("%q is not a service (want cdn, spectrum or magic-transit)", s)
	}
	return svc, nil
}

// ParseProtoPort parses "tcp/443".
func ParseProtoPort(s string) (dispatch.Protocol, uint16, error) {
	ps, port, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, fmt.Errorf("%q is not PROTOCOL/PORT (e.g. tcp/443)", s)
	}
	proto, err := dispatch.ParseProtocol(ps)
	if err != nil {
		return 0, 0, err
	}
	n, err := ParsePort(port)
	if err != nil {
		return 0, 0, err
	}
	return proto, n, nil
}
