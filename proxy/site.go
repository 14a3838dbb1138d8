package proxy

import (
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/proxy/cdnconf"
)

// Site is a customer's site (cdnconf.Site).
type Site = cdnconf.Site

// Route sends a path prefix to origins (cdnconf.Route).
type Route = cdnconf.Route

// site is a Site ready to route.
type site struct {
	name    string // the first host, for logs and metrics
	edges   []netip.Prefix
	routes  []*route // longest path first; the last is "/"
	passive PassiveHealth
	retries Retries
	budget  *retryBudget
	retried prometheus.Counter
}

// route is a Route with its origin pools.
type route struct {
	path         string
	origins      []weighted
	balance      Balance
	equalWeights bool
	next         atomic.Uint32 // rotation for round-robin and ties
	mu           sync.Mutex    // guards the weighted round-robin state
}

// router finds the site of a host on an edge address.
type router struct {
	exact    map[string][]*site // host -> sites (different edge_ips)
	wild     []wildSite         // longest suffix first
	catchAll []*site            // hosts: ["*"], tried last
	sites    []*site
}

// sitesOf returns, for each origin pool, the names of the sites whose
// routes forward to it, sorted and each once.
func (r *router) sitesOf() map[*origin][]string {
	out := map[*origin][]string{}
	for _, s := range r.sites {
		for _, rt := range s.routes {
			for _, w := range rt.origins {
				if !slices.Contains(out[w.o], s.name) {
					out[w.o] = append(out[w.o], s.name)
				}
			}
		}
	}
	for _, names := range out {
		slices.Sort(names)
	}
	return out
}

type wildSite struct {
	suffix string // ".example.com"
	site   *site
}

// normalizeHost lowercases a Host or SNI name and strips a port and a
// trailing dot.
func normalizeHost(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	h = strings.TrimSuffix(strings.Trim(h, "[]"), ".")
	return strings.ToLower(h)
}

func (s *site) servesEdge(edge netip.Addr) bool {
	if len(s.edges) == 0 {
		return true
	}
	for _, p := range s.edges {
		if p.Contains(edge) {
			return true
		}
	}
	return false
}

// lookup returns the site that serves host on edge, or nil.
func (r *router) lookup(host string, edge netip.Addr) *site {
	host = normalizeHost(host)
	for _, s := range r.exact[host] {
		if s.servesEdge(edge) {
			return s
		}
	}
	for _, w := range r.wild {
		if strings.HasSuffix(host, w.suffix) && w.site.servesEdge(edge) {
			return w.site
		}
	}
	for _, s := range r.catchAll {
		if s.servesEdge(edge) {
			return s
		}
	}
	return nil
}

// cleanPath is the path routes match: decoded (as net/http gives it) and
// with dot segments and repeated slashes resolved, so that "/pub/../api/"
// takes the /api/ route, as the origin will read it. A trailing slash
// stays. The origin gets the path as the client sent it, so a path the
// two could read apart (dot segments, encoded slashes) is refused before
// routing (checkPath): what is routed is what the origin reads.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	if !strings.HasPrefix(c, "/") {
		c = "/" + c
	}
	return c
}

// route returns the route of a path, decoded and cleaned.
func (s *site) route(path string) *route {
	for _, rt := range s.routes {
		if strings.HasPrefix(path, rt.path) {
			return rt
		}
	}
	return s.routes[len(s.routes)-1]
}

// newRouter builds the router of sites that pass CheckSites; pools gives
// the shared pool of an origin, retried the retry counter of a site.
func newRouter(sites []Site, pools func(*url.URL, OriginTLS) (*origin, error), retried func(site string) prometheus.Counter) (*router, error) {
	r := &router{exact: map[string][]*site{}}
	for i, in := range sites {
		in.Passive.SetDefaults()
		in.Retries.SetDefaults()
		s := &site{name: normalizeHost(in.Hosts[0]), edges: in.EdgeIPs, passive: in.Passive, retries: in.Retries, budget: newRetryBudget(in.Retries)}
		s.retried = retried(s.name)
		mk := func(path string, os []Origin) (*route, error) {
			rt := &route{path: path, balance: in.Balance, equalWeights: true}
			for _, o := range os {
				pool, err := pools(o.URL, in.OriginTLS)
				if err != nil {
					return nil, fmt.Errorf("sites[%d]: %w", i, err)
				}
				w := max(o.Weight, 1)
				rt.origins = append(rt.origins, weighted{o: pool, weight: w})
				if w != rt.origins[0].weight {
					rt.equalWeights = false
				}
			}
			return rt, nil
		}
		for _, in := range in.Routes {
			rt, err := mk(in.Path, in.Origins)
			if err != nil {
				return nil, err
			}
			s.routes = append(s.routes, rt)
		}
		slices.SortStableFunc(s.routes, func(a, b *route) int { return len(b.path) - len(a.path) })
		rt, err := mk("/", in.Origins)
		if err != nil {
			return nil, err
		}
		s.routes = append(s.routes, rt)
		for _, h := range in.Hosts {
			if h == "*" {
				r.catchAll = append(r.catchAll, s)
				continue
			}
			if w, ok := strings.CutPrefix(h, "*."); ok {
				r.wild = append(r.wild, wildSite{suffix: "." + normalizeHost(w), site: s})
			} else {
				h = normalizeHost(h)
				r.exact[h] = append(r.exact[h], s)
			}
		}
		r.sites = append(r.sites, s)
	}
	slices.SortStableFunc(r.wild, func(a, b wildSite) int { return len(b.suffix) - len(a.suffix) })
	return r, nil
}

// CheckSites checks the rules every set of sites the proxy serves keeps
// (cdnconf.CheckSites).
func CheckSites(sites []Site, name func(i int) string) error {
	return cdnconf.CheckSites(sites, name)
}
