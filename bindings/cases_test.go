package bindings_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/internal/cases"
)

func loadCases(t testing.TB) *cases.File {
	t.Helper()
	f, err := cases.Load()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// caseState decodes a case through a configuration file, as the binary does.
func caseState(t testing.TB, c cases.Case) (*bindings.State, bindings.Services) {
	t.Helper()
	cfg, err := config.Parse([]byte(c.ConfigYAML("")))
	if err != nil {
		t.Fatalf("case %s: %v", c.Name, err)
	}
	return cfg.State, cfg.Services
}

func parseProbe(t testing.TB, p cases.Probe) (dispatch.Protocol, netip.AddrPort) {
	t.Helper()
	proto, err := dispatch.ParseProtocol(p.Protocol)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := netip.ParseAddrPort(p.Dst)
	if err != nil {
		t.Fatal(err)
	}
	return proto, dst
}

// outcomeOf names a dispatch verdict in the words of the shared cases.
func outcomeOf(v dispatch.Verdict) string {
	switch v.Action {
	case dispatch.Kernel:
		return "kernel"
	case dispatch.Refuse:
		return "refuse"
	}
	svc, _, _ := strings.Cut(v.Label, "/")
	return svc
}

// TestCasesResolveAndTranslate: every probe of every shared case, through
// the resolver and through the translated table's model.
func TestCasesResolveAndTranslate(t *testing.T) {
	for _, c := range loadCases(t).Cases {
		t.Run(c.Name, func(t *testing.T) {
			st, svc := caseState(t, c)
			table := bindings.Table(st, svc)
			if err := table.Validate(); err != nil {
				t.Fatalf("translated table: %v", err)
			}
			for _, p := range c.Probes {
				proto, dst := parseProbe(t, p)
				r := bindings.Resolve(st, svc, proto, dst.Addr(), dst.Port())
				if string(r.Outcome) != p.Want {
					t.Errorf("resolver: %s %s = %s (%s), want %s", p.Protocol, dst, r.Outcome, r.Reason, p.Want)
				}
				if got := outcomeOf(table.Decide(proto, dst)); got != p.Want {
					t.Errorf("table: %s %s = %s, want %s", p.Protocol, dst, got, p.Want)
				}
				if r.Reason == "" || !strings.HasSuffix(r.Reason, ".") {
					t.Errorf("resolver: %s %s: reason %q is not a sentence", p.Protocol, dst, r.Reason)
				}
			}
		})
	}
}

// The rule each invalid case must be refused with.
var invalidRule = map[string]string{
	"IPv4 prefix longer than /24":                              "at most /24",
	"IPv6 prefix longer than /48":                              "at most /48",
	"host bits set":                                            "host bits set",
	"overlapping prefixes":                                     "overlaps",
	"binding outside its prefix":                               "not inside any onboarded prefix",
	"unknown service":                                          "is not a service",
	"magic-transit only as a default binding":                  "magic-transit can only be the default service",
	"port-scoped binding to a port its service does not serve": "does not serve tcp/22",
	"duplicate binding":                                        "duplicate",
}

// TestInvalidCases: each invalid state is refused with an error naming the
// offending item and the rule; applied over a valid state through the
// manager, it changes nothing.
func TestInvalidCases(t *testing.T) {
	f := loadCases(t)
	base, baseSvc := caseState(t, f.Cases[0])
	for _, v := range f.Invalid {
		t.Run(v.Why, func(t *testing.T) {
			rule, ok := invalidRule[v.Why]
			if !ok {
				t.Fatalf("no rule text for %q: add one", v.Why)
			}
			_, err := config.Parse([]byte(v.ConfigYAML()))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), rule) {
				t.Errorf("error %q does not state the rule (%q)", err, rule)
			}
			// The offending item is named by its CIDR.
			items := append(append([]cases.Item{}, v.Prefixes...), v.Bindings...)
			named := false
			for _, it := range items {
				named = named || strings.Contains(err.Error(), it.CIDR)
			}
			if !named {
				t.Errorf("error %q names no item", err)
			}

			// Through the manager, over a valid state: nothing changes.
			app := &recorder{}
			m := bindings.NewManager(app, nil)
			if err := m.Apply(base, baseSvc, nil); err != nil {
				t.Fatal(err)
			}
			before, _ := m.Current()
			cand := candidate(t, base, v)
			if err := m.Apply(cand, baseSvc, nil); err == nil {
				t.Fatal("manager accepted the invalid state")
			}
			after, _ := m.Current()
			if diff := cmp.Diff(before, after, cmpopts.EquateComparable(netip.Prefix{})); diff != "" {
				t.Errorf("state changed (-before +after):\n%s", diff)
			}
			if len(app.tables) != 1 {
				t.Errorf("the data plane saw %d tables, want only the valid one", len(app.tables))
			}
		})
	}
}

// candidate adds the invalid items to a copy of base, without validation
// (the parse step may refuse them: those are added raw).
func candidate(t *testing.T, base *bindings.State, v cases.Invalid) *bindings.State {
	st := base.Clone()
	st.Prefixes, st.Bindings = nil, nil
	for _, it := range v.Prefixes {
		p, err := netip.ParsePrefix(it.CIDR)
		if err != nil {
			t.Fatal(err)
		}
		st.Prefixes = append(st.Prefixes, bindings.NewPrefix(p, bindings.Service(it.Service), bindings.FromAPI))
	}
	for _, it := range v.Bindings {
		p, err := netip.ParsePrefix(it.CIDR)
		if err != nil {
			t.Fatal(err)
		}
		var proto dispatch.Protocol
		if it.Protocol != "" {
			proto, _ = dispatch.ParseProtocol(it.Protocol)
		}
		st.Bindings = append(st.Bindings, bindings.NewBinding(p, proto, uint16(it.Port), bindings.Service(it.Service), bindings.FromAPI))
	}
	return st
}

// recorder is an Applier that keeps what it is given.
type recorder struct{ tables []*dispatch.Table }

func (r *recorder) Replace(t *dispatch.Table) error {
	r.tables = append(r.tables, t)
	return nil
}

// TestApplyFailureChangesNothing: when the data plane refuses a table, the
// manager keeps its state.
func TestApplyFailureChangesNothing(t *testing.T) {
	f := loadCases(t)
	st, svc := caseState(t, f.Cases[0])
	fail := failing{}
	m := bindings.NewManager(fail, nil)
	if err := m.Apply(st, svc, nil); err == nil {
		t.Fatal("applied through a failing data plane")
	}
	cur, _ := m.Current()
	if len(cur.Prefixes) != 0 {
		t.Fatalf("state changed to %v", cur.Prefixes)
	}
}

type failing struct{}

func (failing) Replace(*dispatch.Table) error { return errors.New("no room") }

// TestGuards: a prefix containing the admin address or an origin's literal
// address is refused, naming what it would cut off.
func TestGuards(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"admin: {listen: \"192.0.2.9:9180\"}\nprefixes: [{cidr: 192.0.2.0/24, service: cdn}]\n", "admin listen address"},
		{"prefixes: [{cidr: 198.51.100.0/24, service: cdn}]\ncdn: {sites: [{hosts: [a.example], origins: [\"http://198.51.100.7:8080\"]}]}\n", "origin http://198.51.100.7:8080"},
		{"prefixes: [{cidr: \"2001:db8::/48\", service: spectrum}]\nspectrum: {apps: [{name: x, protocol: tcp, edge: \"2001:db8::/64\", ports: \"22\", origins: [\"[2001:db8::5]:22\"]}]}\n", "origin [2001:db8::5]:22"},
	} {
		_, err := config.Parse([]byte("dispatch: {pin_dir: \"\"}\n" + tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "cut edgeproxy off") {
			t.Errorf("config %q: error %v, want one naming %q", tc.yaml, err, tc.want)
		}
	}
}

// TestIDsStable: ids are 32 lowercase hex characters, derived from the CIDR
// (and protocol and port), never from the service.
func TestIDsStable(t *testing.T) {
	p := netip.MustParsePrefix("192.0.2.0/25")
	a := bindings.NewBinding(p, 0, 0, bindings.CDN, bindings.FromAPI)
	b := bindings.NewBinding(p, 0, 0, bindings.Spectrum, bindings.FromConfig)
	c := bindings.NewBinding(p, dispatch.TCP, 443, bindings.CDN, bindings.FromAPI)
	pr := bindings.NewPrefix(netip.MustParsePrefix("192.0.2.0/24"), bindings.CDN, bindings.FromAPI)
	if a.ID != b.ID {
		t.Errorf("moving a binding changes its id: %s vs %s", a.ID, b.ID)
	}
	if a.ID == c.ID || pr.ID == pr.DefaultBinding().ID {
		t.Error("distinct items share an id")
	}
	for _, id := range []string{a.ID, c.ID, pr.ID} {
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Errorf("id %q is not 32 lowercase hex characters", id)
		}
	}
	// Golden: ids persist in stores and scripts; they must never change.
	if a.ID != "928c8de8e20f44212b19bf341294a6a7" || pr.ID != "637da178d0035cc90d49b59a47c6a626" {
		t.Errorf("ids changed: binding %s, prefix %s", a.ID, pr.ID)
	}
}
