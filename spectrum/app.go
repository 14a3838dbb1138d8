package spectrum

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
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

func (o Origin) String() string {
	if o.Port == 0 {
		return o.Host
	}
	return netJoin(o.Host, o.Port)
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

func (f Firewall) allows(a netip.Addr) bool {
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
	// originDownFor is how long an origin that failed is skipped.
	originDownFor = 10 * time.Second
)

// app is an App in service: its counters and the health of its origins.
type app struct {
	App
	active  atomic.Int64 // connections or flows
	next    atomic.Uint64
	mu      sync.Mutex        // guards downTo
	downTo  map[int]time.Time // origin index -> until when it is skipped
	metrics *appMetrics
}

func newApp(a App, m *metrics) *app {
	if a.IdleTimeout == 0 {
		a.IdleTimeout = DefaultTCPIdle
		if a.Protocol == UDP {
			a.IdleTimeout = DefaultUDPIdle
		}
	}
	if a.ConnectTimeout == 0 {
		a.ConnectTimeout = DefaultConnectTimeout
	}
	if a.Proxy == "" {
		a.Proxy = ProxyOff
	}
	return &app{App: a, downTo: map[int]time.Time{}, metrics: m.forApp(a.Name, a.Protocol)}
}

// acquire takes a connection slot of the app, or reports why it cannot:
// "limit" (the app's max_connections) or "share" (more than share flows,
// the app's part of the proxy's flows; 0: no share).
func (a *app) acquire(share int) string {
	n := a.active.Add(1)
	reason := ""
	switch {
	case a.MaxConnections > 0 && n > int64(a.MaxConnections):
		reason = "limit"
	case share > 0 && n > int64(share):
		reason = "share"
	}
	if reason != "" {
		a.active.Add(-1)
		return reason
	}
	a.metrics.active.Inc()
	return ""
}

func (a *app) release() {
	a.active.Add(-1)
	a.metrics.active.Dec()
}

// originOrder returns the origins to try, round-robin, healthy ones first.
func (a *app) originOrder() []int {
	n := len(a.Origins)
	start := int(a.next.Add(1)-1) % n
	now := time.Now()
	order := make([]int, 0, n)
	var down []int
	a.mu.Lock()
	for i := range n {
		j := (start + i) % n
		if until, ok := a.downTo[j]; ok && now.Before(until) {
			down = append(down, j)
			continue
		}
		order = append(order, j)
	}
	a.mu.Unlock()
	return append(order, down...) // all down: try them anyway
}

// markDown skips origin i for a while.
func (a *app) markDown(i int) {
	a.mu.Lock()
	a.downTo[i] = time.Now().Add(originDownFor)
	a.mu.Unlock()
	a.metrics.originDown.Inc()
}

func (a *app) markUp(i int) {
	a.mu.Lock()
	delete(a.downTo, i)
	a.mu.Unlock()
}

// originAddr returns where origin i takes a connection that dialled port:
// the origin's port, moved by the offset into a range, or the dialled port
// for a bare host.
func (a *app) originAddr(i int, port uint16) string {
	o := a.Origins[i]
	p := o.Port
	switch {
	case p == 0:
		p = port
	case !a.Ports.Any() && a.Ports.First != a.Ports.Last:
		p += port - a.Ports.First
	}
	return netJoin(o.Host, p)
}

func netJoin(host string, port uint16) string {
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		return "[" + host + "]:" + strconv.Itoa(int(port))
	}
	return host + ":" + strconv.Itoa(int(port))
}

// table finds the app of a destination.
type table struct {
	apps []*app
	src  []App // as given to SetApps
}

// match returns the app for a packet of proto to addr and port: the most
// specific edge, then a single port over a range over any port. It must
// agree with the data plane's choice (bindings.Resolve).
func (t *table) match(proto Protocol, addr netip.Addr, port uint16) *app {
	addr = addr.Unmap()
	var best *app
	for _, a := range t.apps {
		if a.Protocol != proto || !a.Edge.Contains(addr) || !a.Ports.Contains(port) {
			continue
		}
		if best == nil || cmp.Or(cmp.Compare(a.Edge.Bits(), best.Edge.Bits()), cmp.Compare(a.Ports.Specificity(), best.Ports.Specificity())) > 0 {
			best = a
		}
	}
	return best
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
