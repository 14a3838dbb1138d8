// Package appconf is the spectrum apps' configuration as the L4 proxy
// takes it: App and its parts, their defaults, and CheckApp, the rules an
// app keeps. It imports nothing of the kernel, so that config builds on
// any OS; package spectrum serves it and names its types as its own.
package appconf

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/edgeproxy/edgeproxy/dispatch"
)

// Protocol is tcp or udp.
type Protocol string

// The protocols of apps.
const (
	TCP Protocol = "tcp"
	UDP Protocol = "udp"
)

// Ports is an inclusive port range; {0, 65535} is any port.
type Ports = dispatch.PortRange

// Origin is where an app forwards to: a host (name or address) and a port,
// 0 to keep the port the client dialled.
type Origin struct {
	Host string
	Port uint16
}

// String is host:port, or the bare host for port 0.
func (o Origin) String() string {
	if o.Port == 0 {
		return o.Host
	}
	return JoinHostPort(o.Host, o.Port)
}

// ProxyProtocol says how the client's address reaches the origin.
type ProxyProtocol string

// The PROXY protocol modes.
const (
	ProxyOff    ProxyProtocol = "off"
	ProxyV1     ProxyProtocol = "v1"     // tcp: a text header
	ProxyV2     ProxyProtocol = "v2"     // tcp, or the first datagram of a udp flow
	ProxySimple ProxyProtocol = "simple" // udp: Simple Proxy Protocol on every datagram
)

// Firewall allows or denies clients by address before the origin is dialled:
// a client in Deny is refused; with Allow set, a client must be in it.
type Firewall struct {
	Allow, Deny []netip.Prefix
}

// Allows reports whether a client at a may reach the app.
func (f Firewall) Allows(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range f.Deny {
		if p.Contains(a) {
			return false
		}
	}
	if len(f.Allow) == 0 {
		return true
	}
	for _, p := range f.Allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// App is a spectrum application.
type App struct {
	Name     string
	Protocol Protocol
	Edge     netip.Prefix
	Ports    Ports
	Origins  []Origin
	Proxy    ProxyProtocol
	Firewall Firewall
	// IdleTimeout closes a connection or flow without traffic either way
	// for this long. Zero: DefaultTCPIdle or DefaultUDPIdle.
	IdleTimeout time.Duration
	// ConnectTimeout bounds a TCP dial to an origin. Zero:
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// MaxConnections bounds the app's concurrent TCP connections or UDP
	// flows. Zero: no limit of its own (the proxy's limits still hold).
	MaxConnections int
}

// Defaults of App's zero values.
const (
	DefaultTCPIdle        = 10 * time.Minute
	DefaultUDPIdle        = 60 * time.Second
	DefaultConnectTimeout = 5 * time.Second
)

// JoinHostPort joins a host and a port as net.JoinHostPort does.
func JoinHostPort(host string, port uint16) string {
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		return "[" + host + "]:" + strconv.Itoa(int(port))
	}
	return host + ":" + strconv.Itoa(int(port))
}

// CheckApp checks the rules an app keeps, without side effects: it has
// origins; an origin with a port maps the app's whole port range to ports
// that exist; its PROXY protocol mode is one its protocol can carry; its
// limit is not negative. at names the app in errors
// ("spectrum.apps[0]" in the configuration file).
func CheckApp(a App, at string) error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(at+format, args...)) }
	if len(a.Origins) == 0 {
		fail(".origins: an app needs at least one origin")
	}
	for j, o := range a.Origins {
		if o.Port != 0 && !a.Ports.Any() && int(o.Port)+int(a.Ports.Last-a.Ports.First) > 65535 {
			fail(".origins[%d]: %q: the range %s maps past port 65535 from there", j, o, a.Ports)
		}
	}
	if a.MaxConnections < 0 {
		fail(".max_connections: %d is negative", a.MaxConnections)
	}
	switch a.Proxy {
	case "", ProxyOff, ProxyV1, ProxyV2:
		if a.Proxy == ProxyV1 && a.Protocol == UDP {
			fail(".proxy_protocol: v1 is for tcp; udp takes v2 or simple")
		}
	case ProxySimple:
		if a.Protocol != UDP {
			fail(".proxy_protocol: simple (Simple Proxy Protocol) is for udp apps")
		}
	default:
		fail(".proxy_protocol: %q is not one of off, v1, v2, simple", a.Proxy)
	}
	return errors.Join(errs...)
}
