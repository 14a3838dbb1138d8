package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/proxy/cdnconf"
	"github.com/edgeproxy/edgeproxy/spectrum/appconf"
)

// Plan is a configuration file and what it declares, every string of it
// parsed once: the binding state, what the services serve, the guards, the
// cdn's configuration and limits, the spectrum apps. Start, reload and
// check take a plan; nothing parses the file's strings again.
type Plan struct {
	// Config is the file as decoded, defaults set.
	*Config
	// State is the binding state the file declares.
	State *bindings.State
	// Services is what the services serve: the cdn's ports and the apps.
	Services bindings.Services
	// Guards are the addresses no prefix may contain: the admin listen
	// address and the literal addresses of origins.
	Guards []bindings.Guard
	// Proxy is the cdn's configuration as the proxy takes it, without its
	// certificates, which ProxyConfig loads.
	Proxy cdnconf.Config
	// Limits are the cdn's limits and timeouts.
	Limits cdnconf.Limits
	// Apps are the spectrum apps as the L4 proxy takes them.
	Apps []appconf.App

	empty bool // the file declares nothing: a warning
}

// Plan checks every key of c and builds its plan, in one pass. The error
// names every item that is wrong by its key path.
func (c *Config) Plan() (*Plan, error) {
	b := &planner{p: &Plan{Config: c, State: &bindings.State{}}}
	b.admin()
	b.prefixes()
	b.bindings()
	b.cdn()
	b.spectrum()
	b.fdBudget()
	b.store()
	if c := b.p.Dispatch.BindingCapacity; c < 0 || c > dispatch.MaxBindingCapacity {
		b.fail("dispatch.binding_capacity: %d is out of range: 1 to %d (0 or absent: %d)", c, dispatch.MaxBindingCapacity, dispatch.DefaultBindingCapacity)
	}
	if err := errors.Join(b.errs...); err != nil {
		return nil, err
	}
	if err := b.p.Validate(); err != nil {
		return nil, err
	}
	return b.p, nil
}

// Validate checks the plan as a whole: the binding state with what the
// services serve, against the guards (bindings.Validate).
func (p *Plan) Validate() error {
	return bindings.Validate(p.State, p.Services, p.Guards)
}

// ProxyConfig returns the cdn's configuration as the proxy takes it,
// loading the certificates.
func (p *Plan) ProxyConfig() (cdnconf.Config, error) {
	pc := p.Proxy
	pc.Certificates = nil
	for i, cf := range p.CDN.Certificates {
		cert, err := tls.LoadX509KeyPair(cf.CertFile, cf.KeyFile)
		if err != nil {
			return pc, fmt.Errorf("cdn.certificates[%d]: %w", i, err)
		}
		pc.Certificates = append(pc.Certificates, cdnconf.Certificate{Certificate: cert, Default: cf.Default, Source: cf.CertFile})
	}
	return pc, nil
}

// planner builds a plan and gathers the errors of every section.
type planner struct {
	p    *Plan
	errs []error
}

func (b *planner) fail(format string, args ...any) {
	b.errs = append(b.errs, fmt.Errorf(format, args...))
}

// check adds err, a service's check of its part of the plan.
func (b *planner) check(err error) {
	if err != nil {
		b.errs = append(b.errs, err)
	}
}

// guard adds an address no prefix may contain.
func (b *planner) guard(a netip.Addr, what string) {
	b.p.Guards = append(b.p.Guards, bindings.Guard{Addr: a.Unmap(), What: what})
}

// ports checks a list of ports at key.
func (b *planner) ports(key string, in []int) []uint16 {
	out := make([]uint16, 0, len(in))
	for i, p := range in {
		if p < 1 || p > 65535 {
			b.fail("%s[%d]: %d is not a port (want 1-65535)", key, i, p)
			continue
		}
		out = append(out, uint16(p))
	}
	return out
}

// negative refuses negative numbers, by key under section.
func (b *planner) negative(section string, keys []string, values ...int) {
	for i, n := range values {
		if n < 0 {
			b.fail("%s.%s: %d is negative", section, keys[i], n)
		}
	}
}

func (b *planner) fdBudget() {
	f := b.p.FDBudget
	b.negative("fd_budget", []string{"limit", "reserve_accept", "reserve_admin", "reserve_dial", "reserve_cdn", "reserve_other"},
		f.Limit, f.ReserveAccept, f.ReserveAdmin, f.ReserveDial, f.ReserveCDN, f.ReserveOther)
}

// store checks the store's keys: the fleet's needs a node name, endpoints
// that are URLs, and sane durations.
func (b *planner) store() {
	c := b.p.Config
	e := &c.Store.Etcd
	if c.Store.AuditRetention < 0 {
		b.fail("store.audit_retention: %d is negative", c.Store.AuditRetention)
	}
	for k, v := range c.Labels {
		if k == "" || len(k) > 63 || len(v) > 63 {
			b.fail("labels: %q: %q: keys of 1 to 63 characters, values of at most 63", k, v)
		}
	}
	if !e.Enabled() {
		if e.Prefix != "" || e.DialTimeout != 0 || e.NodeTTL != 0 || e.CAFile != "" || e.Username != "" {
			b.fail("store.etcd: set without endpoints: give store.etcd.endpoints, or remove store.etcd")
		}
		return
	}
	if c.Node == "" {
		b.fail("node: required with store.etcd: every node of a fleet needs a name of its own")
	}
	for i, ep := range e.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			b.fail("store.etcd.endpoints[%d]: %q is not an http:// or https:// URL", i, ep)
		}
	}
	if e.Prefix == "" {
		e.Prefix = "/edgeproxy/"
	}
	if !strings.HasSuffix(e.Prefix, "/") {
		b.fail("store.etcd.prefix: %q must end with /", e.Prefix)
	}
	if e.DialTimeout == 0 {
		e.DialTimeout = Duration(2 * time.Second)
	}
	if e.NodeTTL == 0 {
		e.NodeTTL = Duration(5 * time.Second)
	}
	if d := time.Duration(e.DialTimeout); d < 100*time.Millisecond || d > time.Minute {
		b.fail("store.etcd.dial_timeout: %s is out of range: 100ms to 1m", d)
	}
	if d := time.Duration(e.NodeTTL); d < 2*time.Second || d > 10*time.Minute {
		b.fail("store.etcd.node_ttl: %s is out of range: 2s to 10m (etcd grants leases in whole seconds)", d)
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		b.fail("store.etcd: cert_file and key_file go together")
	}
	if (e.Username == "") != (e.PasswordFile == "") {
		b.fail("store.etcd: username and password_file go together")
	}
}
