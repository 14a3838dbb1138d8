package cdnconf

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
)

// CheckSites checks the rules every set of sites the proxy serves keeps,
// without side effects: a site has hosts and origins, a route a path
// starting with / and origins, and an origin several sites share has one
// health check. name says how an error names the i-th site
// ("cdn.sites[0]" in the configuration file). Origins without a URL are
// skipped (their error is the caller's).
func CheckSites(sites []Site, name func(i int) string) error {
	var errs []error
	for i, s := range sites {
		errs = append(errs, checkSite(s, name(i))...)
	}
	errs = append(errs, checkSharedHealth(sites, name)...)
	return errors.Join(errs...)
}

func checkSite(s Site, at string) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(at+format, args...)) }
	if len(s.Hosts) == 0 {
		fail(".hosts: a site needs at least one host")
	}
	if len(s.Origins) == 0 {
		fail(".origins: a site needs at least one origin")
	}
	for j, r := range s.Routes {
		if !strings.HasPrefix(r.Path, "/") {
			fail(".routes[%d].path: %q does not start with /", j, r.Path)
		}
		if len(r.Origins) == 0 {
			fail(".routes[%d].origins: a route needs at least one origin", j)
		}
	}
	return errs
}

// checkSharedHealth: an origin shared by sites has one health check.
func checkSharedHealth(sites []Site, name func(int) string) []error {
	var errs []error
	type first struct {
		site  int
		check HealthCheck
	}
	checkOf := map[string]first{}
	for i, s := range sites {
		if s.HealthCheck == nil {
			continue
		}
		hc := *s.HealthCheck
		hc.SetDefaults()
		for _, o := range s.allOrigins() {
			if o.URL == nil {
				continue
			}
			k := OriginKey(o.URL) // the origin's pool
			if f, ok := checkOf[k]; !ok {
				checkOf[k] = first{i, hc}
			} else if f.check != hc {
				errs = append(errs, fmt.Errorf("%s.health_check: origin %s is also an origin of %s, whose health check differs", name(i), o.URL, name(f.site)))
			}
		}
	}
	return errs
}

// allOrigins lists the site's origins, its routes' included.
func (s Site) allOrigins() []Origin {
	out := slices.Clone(s.Origins)
	for _, r := range s.Routes {
		out = append(out, r.Origins...)
	}
	return out
}

// OriginKey names the pool an origin URL shares with every site that
// forwards to it: scheme://host:port.
func OriginKey(u *url.URL) string { return u.Scheme + "://" + HostPort(u) }

// HostPort is the host:port an origin URL dials: its port, or the
// scheme's.
func HostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}
