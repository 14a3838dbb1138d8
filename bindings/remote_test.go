package bindings_test

import (
	"net/netip"
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

// counting counts how the manager writes the data plane.
type counting struct{ replaces, amends int }

func (c *counting) Replace(*dispatch.Table) error              { c.replaces++; return nil }
func (c *counting) Amend(remove, add []dispatch.Binding) error { c.amends++; return nil }

// TestApplyEventsIncremental: a fleet's single change is applied as the
// API's are, by an amend of the data plane, not a whole table; a change
// this node cannot take is refused, and nothing changes.
func TestApplyEventsIncremental(t *testing.T) {
	dp := &counting{}
	m := bindings.NewManager(dp, nil)
	pfx := bindings.NewPrefix(netip.MustParsePrefix("192.0.2.0/24"), bindings.Spectrum, bindings.FromConfig)
	svc := bindings.Services{CDN: bindings.CDNPorts{HTTP: []uint16{80}}}
	if err := m.Apply(&bindings.State{Prefixes: []bindings.Prefix{pfx}}, svc, nil); err != nil {
		t.Fatal(err)
	}
	b := bindings.NewBinding(netip.MustParsePrefix("192.0.2.8/29"), 0, 0, bindings.CDN, bindings.FromAPI)
	b.PrefixID = pfx.ID
	moved := b
	moved.Service = bindings.Spectrum
	bad := bindings.NewBinding(netip.MustParsePrefix("192.0.2.16/29"), dispatch.TCP, 22, bindings.CDN, bindings.FromAPI)
	bad.PrefixID = pfx.ID
	replaces := dp.replaces
	for i, ev := range []bindings.Event{
		{Key: bindings.KeyOf(b), Value: bindings.EncodeBinding(b).Value},
		{Key: bindings.KeyOf(b), Value: bindings.EncodeBinding(moved).Value},
		{Key: bindings.KeyOf(b)},
	} {
		if err := m.ApplyEvents(int64(10+i), []bindings.Event{ev}); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	if dp.replaces != replaces || dp.amends != 3 {
		t.Errorf("three single changes: %d whole tables, %d amends; want none and 3", dp.replaces-replaces, dp.amends)
	}
	if m.Revision() != 12 {
		t.Errorf("revision %d, want 12", m.Revision())
	}
	if err := m.ApplyEvents(13, []bindings.Event{{Key: bindings.KeyOf(bad), Value: bindings.EncodeBinding(bad).Value}}); err == nil {
		t.Error("a binding of a port the cdn does not serve was taken")
	}
	if _, err := m.Binding(pfx.ID, bad.ID); err == nil || m.Revision() != 13 {
		t.Errorf("the refused change: %v at %d, want absent, the revision seen", err, m.Revision())
	}
}
