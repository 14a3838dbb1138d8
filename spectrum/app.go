package spectrum

import (
	"cmp"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/spectrum/appconf"
)

// Protocol is tcp or udp (appconf.Protocol).
type Protocol = appconf.Protocol

// The protocols of apps.
const (
	TCP = appconf.TCP
	UDP = appconf.UDP
)

// Ports is an inclusive port range; {0, 65535} is any port.
type Ports = appconf.Ports

// Origin is where an app forwards to (appconf.Origin).
type Origin = appconf.Origin

// ProxyProtocol says how the client's address reaches the origin
// (appconf.ProxyProtocol).
type ProxyProtocol = appconf.ProxyProtocol

// The PROXY protocol modes.
const (
	ProxyOff    = appconf.ProxyOff
	ProxyV1     = appconf.ProxyV1
	ProxyV2     = appconf.ProxyV2
	ProxySimple = appconf.ProxySimple
)

// Firewall allows or denies clients by address (appconf.Firewall).
type Firewall = appconf.Firewall

// App is a spectrum application (appconf.App).
type App = appconf.App

// Defaults of App's zero values.
const (
	DefaultTCPIdle        = appconf.DefaultTCPIdle
	DefaultUDPIdle        = appconf.DefaultUDPIdle
	DefaultConnectTimeout = appconf.DefaultConnectTimeout
)

// originDownFor is how long an origin that failed is skipped.
const originDownFor = 10 * time.Second

// CheckApp checks the rules an app keeps (appconf.CheckApp).
func CheckApp(a App, at string) error { return appconf.CheckApp(a, at) }

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
	return &app{App: a, downTo: map[int]time.Time{}, metrics: m.forApp(a)}
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
	return appconf.JoinHostPort(o.Host, p)
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
