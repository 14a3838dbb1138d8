package admin

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

// TestDryRun: every change the API plans answers its plan, checked as the
// change would be, and changes nothing.
func TestDryRun(t *testing.T) {
	h, m := newAPI(t, "")
	pid := bindings.PrefixID(netip.MustParsePrefix("198.51.100.0/24"))
	before, _ := m.Current()
	rev := m.Revision()

	// A move of the prefix's default binding: every cdn port of the
	// addresses the spectrum binding does not hold is refused after it.
	def := bindings.BindingID(netip.MustParsePrefix("198.51.100.0/24"), 0, 0)
	r := call(t, h, "PATCH", "/v1/prefixes/"+pid+"/bindings/"+def+"?dry_run=true", `{"service_id":"magic-transit"}`)
	r.want(t, 409, codeConfigOwned, "configuration file") // checked as the change would be

	// A new binding, moved to spectrum, with nothing of spectrum's there.
	r = call(t, h, "POST", "/v1/prefixes/"+pid+"/bindings?dry_run=true", `{"cidr":"198.51.100.128/25","service_id":"spectrum"}`)
	r.want(t, 200, 0, "")
	var p Plan
	r.result(t, &p)
	if !p.DryRun || p.Revision != rev || len(p.Rows) != 1 {
		t.Fatalf("plan %+v", p)
	}
	row := p.Rows[0]
	if row.Summary != "198.51.100.128/25 tcp/80, tcp/443, udp/443: cdn → refuse (no spectrum app)" ||
		row.Before.BindingID != def || row.After.BindingID != bindings.BindingID(netip.MustParsePrefix("198.51.100.128/25"), 0, 0) {
		t.Fatalf("row %+v", row)
	}
	if !strings.Contains(r.body, `udp/443: cdn → refuse (no spectrum app)"`) {
		t.Errorf("the answer escapes or garbles the summary: %s", r.body)
	}

	// A binding that does not fit is refused, as the change would be.
	call(t, h, "POST", "/v1/prefixes/"+pid+"/bindings?dry_run=true", `{"cidr":"198.51.100.200/32","service_id":"spectrum","protocol":"tcp","port":443}`).
		want(t, 400, codeInvalidState, "no spectrum app serves tcp/443")
	call(t, h, "POST", "/v1/prefixes?dry_run=maybe", `{"cidr":"192.0.2.0/24","service_id":"cdn"}`).want(t, 400, codeInvalidField, "dry_run")
	call(t, h, "POST", "/v1/prefixes?dry_run=true", `{"cidr":"192.0.2.0/24","service_id":"spectrum"}`).want(t, 200, 0, "")
	call(t, h, "POST", "/v1/batch?dry_run=true", `{"bindings":[{"cidr":"198.51.100.128/26","service_id":"spectrum"}]}`).want(t, 200, 0, "")
	call(t, h, "POST", "/v1/prefixes/"+pid+"/bindings?dry_run=true", `{"cidr":"198.51.100.128/26","service_id":"cdn","canary":{"labels":{"a":"b"}}}`).
		want(t, 400, codeInvalidField, "dry_run")

	// Nothing changed.
	after, _ := m.Current()
	if len(after.Prefixes) != len(before.Prefixes) || len(after.Bindings) != len(before.Bindings) || m.Revision() != rev {
		t.Fatalf("a dry run changed the state: %+v", after)
	}

	// Made, then planned away: the plan of a delete, with the traffic
	// the binding carried.
	r = call(t, h, "POST", "/v1/prefixes/"+pid+"/bindings", `{"cidr":"198.51.100.128/25","service_id":"spectrum"}`)
	var b Binding
	r.result(t, &b)
	r = call(t, h, "DELETE", "/v1/prefixes/"+pid+"/bindings/"+b.ID+"?dry_run=true", "")
	r.want(t, 200, 0, "")
	r.result(t, &p)
	if len(p.Rows) != 1 || p.Rows[0].Before.Outcome != "refuse" || p.Rows[0].After.Outcome != "cdn" || p.Rows[0].Traffic != nil {
		t.Fatalf("plan of the delete %+v", p)
	}
	if res := m.Resolve(dispatch.TCP, netip.MustParseAddr("198.51.100.200"), 80); res.Outcome != bindings.OutcomeRefuse {
		t.Fatalf("the dry run deleted the binding: %+v", res)
	}
	// Moving nothing: an empty plan.
	r = call(t, h, "PATCH", "/v1/prefixes/"+pid+"/bindings/"+b.ID+"?dry_run=true", `{"service_id":"spectrum"}`)
	r.want(t, 200, 0, "")
	r.result(t, &p)
	if p.Rows == nil || len(p.Rows) != 0 {
		t.Fatalf("plan of no change %+v", p)
	}
}

// TestDryRunTraffic: a plan and a binding carry the traffic the node counts.
func TestDryRunTraffic(t *testing.T) {
	_, m := newAPI(t, "")
	h := Handler(Options{Bindings: m, Traffic: func(bindings.Binding) (Traffic, Traffic, time.Duration, bool) {
		return Traffic{Steered: 10, Refused: 2}, Traffic{Steered: 3}, 5 * time.Minute, true
	}})
	pid := bindings.PrefixID(netip.MustParsePrefix("198.51.100.0/24"))
	r := call(t, h, "POST", "/v1/prefixes/"+pid+"/bindings?dry_run=true", `{"cidr":"198.51.100.128/25","service_id":"spectrum"}`)
	var p Plan
	r.result(t, &p)
	if len(p.Rows) != 1 || p.Rows[0].Traffic == nil || p.Rows[0].Traffic.Recent.Steered != 3 || p.Rows[0].Traffic.Window != "5m0s" {
		t.Fatalf("plan %+v", p)
	}
	def := bindings.BindingID(netip.MustParsePrefix("198.51.100.0/24"), 0, 0)
	var b Binding
	call(t, h, "GET", "/v1/prefixes/"+pid+"/bindings/"+def, "").result(t, &b)
	if b.Traffic == nil || b.Traffic.Total.Steered != 10 || b.Traffic.Total.Refused != 2 {
		t.Fatalf("binding %+v", b)
	}
}

// TestPlanRangesBounded: a row lists at most maxRowRanges ranges and
// says how many it has.
func TestPlanRangesBounded(t *testing.T) {
	m := bindings.NewManager(nopApplier{}, nil)
	p := bindings.NewPrefix(netip.MustParsePrefix("10.0.0.0/16"), bindings.CDN, bindings.FromAPI)
	st := &bindings.State{Prefixes: []bindings.Prefix{p}}
	for i := range 600 { // every other /32: the rest is 600 ranges of one row
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 7), byte(i<<1) | 1})
		st.Bindings = append(st.Bindings, bindings.NewBinding(netip.PrefixFrom(a, 32), 0, 0, bindings.CDN, bindings.FromAPI))
	}
	st.AssignPrefixes()
	svc := bindings.Services{CDN: bindings.CDNPorts{HTTP: []uint16{80}}}
	if err := m.Apply(st, svc, nil); err != nil {
		t.Fatal(err)
	}
	h := Handler(Options{Bindings: m})
	r := call(t, h, "PATCH", "/v1/prefixes/"+p.ID+"/bindings/"+p.DefaultBinding().ID+"?dry_run=true", `{"service_id":"magic-transit"}`)
	var plan Plan
	r.result(t, &plan)
	// Two rows (tcp/80: cdn → kernel; the other ports: refuse → kernel),
	// each of the same ranges.
	if len(plan.Rows) != 2 {
		t.Fatalf("%d rows", len(plan.Rows))
	}
	for _, row := range plan.Rows {
		if len(row.Ranges) != maxRowRanges || row.RangesTotal <= maxRowRanges {
			t.Errorf("row %s: ranges %d of %d", row.Summary, len(row.Ranges), row.RangesTotal)
		}
	}
}
