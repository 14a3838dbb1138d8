package bindings_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

func TestStoreRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "bindings.json")
	s := bindings.NewStore(path)
	empty, err := s.Load()
	if err != nil || len(empty.Prefixes)+len(empty.Bindings) != 0 {
		t.Fatalf("missing file: %v, %v", empty, err)
	}
	st := &bindings.State{
		Prefixes: []bindings.Prefix{
			bindings.NewPrefix(netip.MustParsePrefix("192.0.2.0/24"), bindings.Spectrum, bindings.FromAPI),
			bindings.NewPrefix(netip.MustParsePrefix("2001:db8::/48"), bindings.MagicTransit, bindings.FromAPI),
			bindings.NewPrefix(netip.MustParsePrefix("198.51.100.0/24"), bindings.CDN, bindings.FromConfig),
		},
		Bindings: []bindings.Binding{
			bindings.NewBinding(netip.MustParsePrefix("192.0.2.0/25"), 0, 0, bindings.CDN, bindings.FromAPI),
			bindings.NewBinding(netip.MustParsePrefix("192.0.2.200/32"), dispatch.TCP, 443, bindings.CDN, bindings.FromAPI),
			bindings.NewBinding(netip.MustParsePrefix("198.51.100.0/25"), 0, 0, bindings.Spectrum, bindings.FromConfig),
		},
	}
	if err := s.Save(st); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	_, want := bindings.Split(st)
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Prefix{}), cmpopts.IgnoreFields(bindings.Binding{}, "PrefixID")); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
}

func TestStoreCorrupt(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"version":1,"prefixes":[`, "corrupt"},
		{`{"version":9,"prefixes":[],"bindings":[]}`, "version 9"},
		{`{"version":1,"prefixes":[{"cidr":"192.0.2.1/24","service_id":"cdn"}],"bindings":[]}`, "prefixes[0]: cidr"},
		{`{"version":1,"prefixes":[],"bindings":[{"cidr":"192.0.2.0/25","service_id":"waf"}]}`, "bindings[0] 192.0.2.0/25: service_id"},
		{`{"version":1,"prefixes":[],"bindings":[],"extra":1}`, "unknown field"},
		{`{"version":1,"prefixes":[],"bindings":[{"cidr":"192.0.2.0/25","port":443,"service_id":"cdn"}]}`, "do not make a port scope"},
	} {
		path := filepath.Join(t.TempDir(), "bindings.json")
		os.WriteFile(path, []byte(tc.body), 0o600)
		_, err := bindings.NewStore(path).Load()
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v, want an error naming the file and %q", tc.body, err, tc.want)
		}
	}
}
