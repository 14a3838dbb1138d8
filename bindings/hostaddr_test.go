package bindings_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/config"
)

// TestHostilePrefixCoversHost: a prefix that covers the host's own
// addresses (loopback, unspecified, link-local, multicast, an interface's
// address passed in as a guard) or is shorter than the minimum is refused,
// naming the field and why, by the one Validate the configuration, reload
// and the API share; prefixes merely near them are accepted.
func TestHostilePrefixCoversHost(t *testing.T) {
	iface := []bindings.Guard{{Addr: netip.MustParseAddr("198.51.100.7"), What: "address 198.51.100.7 of interface eth0"}}
	for _, tc := range []struct{ cidr, want string }{
		{"::/48", "contains ::1 (the loopback address)"},
		{"::/48", "contains :: (the unspecified address)"},
		{"127.0.0.0/8", "contains 127.0.0.1 (the loopback address)"},
		{"127.0.0.0/24", "contains 127.0.0.1"},
		{"0.0.0.0/8", "contains 0.0.0.0 (the unspecified address)"},
		{"169.254.0.0/16", "overlaps 169.254.0.0/16 (link-local addresses)"},
		{"169.254.1.0/24", "link-local"},
		{"fe80::/16", "overlaps fe80::/10 (link-local addresses)"},
		{"fe80::/48", "link-local"},
		{"224.0.0.0/8", "multicast"},
		{"ff02::/16", "multicast"},
		{"255.255.255.0/24", "broadcast"},
		{"198.51.100.0/24", "contains 198.51.100.7 (address 198.51.100.7 of interface eth0)"},
		{"10.0.0.0/7", "an IPv4 prefix must be at least /8 long"},
		{"2000::/3", "an IPv6 prefix must be at least /19 long"},
		{"2001::/16", "an IPv6 prefix must be at least /19 long"},
	} {
		st := &bindings.State{Prefixes: []bindings.Prefix{bindings.NewPrefix(netip.MustParsePrefix(tc.cidr), bindings.CDN, bindings.FromAPI)}}
		err := bindings.Validate(st, bindings.Services{}, iface)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "cidr: ") {
			t.Errorf("Validate %s: %v, want the cidr field refused: %q", tc.cidr, err, tc.want)
		}
		// The admin API's single change: the same rule.
		m := bindings.NewManager(&recorder{}, nil)
		if err := m.Apply(&bindings.State{}, bindings.Services{}, iface); err != nil {
			t.Fatal(err)
		}
		if _, err := m.CreatePrefix(context.Background(), netip.MustParsePrefix(tc.cidr), bindings.CDN); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CreatePrefix %s: %v, want %q", tc.cidr, err, tc.want)
		}
	}
	// Near the host's addresses, but not covering them: the demo's
	// loopback prefixes, addresses covered only by a local route, the
	// shortest prefixes allowed.
	for _, cidr := range []string{"127.1.1.0/24", "127.1.2.0/24", "203.0.113.0/24", "10.0.0.0/8", "2001:db8::/32", "2a06:98c0::/29", "2003::/19"} {
		st := &bindings.State{Prefixes: []bindings.Prefix{bindings.NewPrefix(netip.MustParsePrefix(cidr), bindings.CDN, bindings.FromAPI)}}
		if err := bindings.Validate(st, bindings.Services{}, iface); err != nil {
			t.Errorf("Validate %s: %v, want accepted", cidr, err)
		}
	}
	// The configuration file goes through the same rule.
	_, err := config.Parse([]byte("dispatch: {pin_dir: \"\"}\nprefixes: [{cidr: \"::/48\", service: cdn}]\n"))
	if err == nil || !strings.Contains(err.Error(), "contains ::1 (the loopback address)") {
		t.Errorf("config with ::/48: %v", err)
	}
}
