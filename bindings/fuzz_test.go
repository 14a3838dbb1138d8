package bindings_test

import (
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
)

func FuzzParseCIDR(f *testing.F) {
	for _, s := range []string{"192.0.2.0/24", "192.0.2.1/24", "2001:db8::/48", "::ffff:192.0.2.0/120", "fe80::%eth0/64", "", "/", "1.2.3.4/33", " 10.0.0.0/8 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := bindings.ParseCIDR(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if !p.IsValid() || p.Masked() != p || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("ParseCIDR(%q) = %v: not a clean prefix", s, p)
		}
		if q, err := bindings.ParseCIDR(p.String()); err != nil || q != p {
			t.Fatalf("round trip of %v: %v, %v", p, q, err)
		}
	})
}

func FuzzParsePorts(f *testing.F) {
	for _, s := range []string{"22", "1000-2000", "*", "0", "65535", "65536", "2-1", "-", "1-", "-5", " 80 ", "+1", "1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := bindings.ParsePorts(s)
		if err != nil {
			return
		}
		if r.First > r.Last || (r.First == 0 && !r.Any()) {
			t.Fatalf("ParsePorts(%q) = %+v: not a port range", s, r)
		}
		if q, err := bindings.ParsePorts(r.String()); err != nil || q != r {
			t.Fatalf("round trip of %+v: %+v, %v", r, q, err)
		}
	})
}

func FuzzParseProtoPort(f *testing.F) {
	for _, s := range []string{"tcp/443", "udp/53", "tcp/0", "sctp/1", "tcp", "/", "udp/65536"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		proto, port, err := bindings.ParseProtoPort(s)
		if err != nil {
			return
		}
		if port == 0 || (proto.String() != "tcp" && proto.String() != "udp") {
			t.Fatalf("ParseProtoPort(%q) = %v, %d", s, proto, port)
		}
	})
}
