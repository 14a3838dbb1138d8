package config

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseAppOrigin: an accepted spectrum origin names a host (a name or
// an IP literal, never empty, never half a bracket) that joins back with its
// port into an address the dialer parses to the same host and port.
func FuzzParseAppOrigin(f *testing.F) {
	for _, s := range []string{"127.0.0.1:2222", "[::1]:22", "[::1]", "::1", "origin.example", "origin.example:80",
		"[]", "[::1", "::1]", ":80", "a b", "a/b", "1.2.3.4:0", "1.2.3.4:65536", "[fe80::1%lo]:7", "x:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, port, err := ParseAppOrigin(s)
		if err != nil {
			return
		}
		if host == "" || strings.ContainsAny(host, "[]/ ") {
			t.Fatalf("%q accepted as host %q", s, host)
		}
		if strings.Contains(host, ":") {
			if _, err := netip.ParseAddr(host); err != nil {
				t.Fatalf("%q accepted as host %q, which has a colon but is no IPv6 address", s, host)
			}
		}
		h, p, err := net.SplitHostPort(net.JoinHostPort(host, strconv.Itoa(int(port))))
		if err != nil || h != host || p != strconv.Itoa(int(port)) {
			t.Fatalf("%q: host %q port %d do not join back: %q %q %v", s, host, port, h, p, err)
		}
	})
}
