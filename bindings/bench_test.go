//go:build linux

package bindings_test

import (
	"net/netip"
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// bigState returns 400 /24 prefixes of 10.0.0.0/8 (default spectrum) with
// n bindings inside them: /32s to cdn, every tenth port-scoped tcp/443.
func bigState(n int) (*bindings.State, bindings.Services) {
	st := &bindings.State{}
	for i := range 400 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i / 256), byte(i % 256), 0}), 24)
		st.Prefixes = append(st.Prefixes, bindings.NewPrefix(p, bindings.Spectrum, bindings.FromConfig))
	}
	for i := range n {
		pfx := st.Prefixes[i%400].CIDR.Addr().As4()
		host := i / 400
		a := netip.AddrFrom4([4]byte{pfx[0], pfx[1], pfx[2], byte(host)})
		var proto dispatch.Protocol
		var port uint16
		if i%10 == 0 {
			proto, port = dispatch.TCP, 443
		}
		if host > 255 { // more than 256 per /24: use port-scoped variety
			a = netip.AddrFrom4([4]byte{pfx[0], pfx[1], pfx[2], byte(host % 256)})
			proto, port = dispatch.TCP, []uint16{80, 443}[host/256%2]
		}
		st.Bindings = append(st.Bindings, bindings.NewBinding(netip.PrefixFrom(a, 32), proto, port, bindings.CDN, bindings.FromAPI))
	}
	svc := bindings.Services{
		CDN:  bindings.CDNPorts{HTTP: []uint16{80}, HTTPS: []uint16{443}, HTTP3: true, HTTP3Port: 443},
		Apps: []bindings.App{{Name: "all", Protocol: dispatch.TCP, Edge: netip.MustParsePrefix("10.0.0.0/8"), Ports: dispatch.AnyPort}},
	}
	return st, svc
}

// BenchmarkApply100k: 100,000 bindings validated, translated and applied to
// a real dispatcher: "first" into empty maps, "move" with one binding moved
// to another service (the API's case).
func BenchmarkApply100k(b *testing.B) {
	netns.New(b)
	st, svc := bigState(100_000)
	if err := bindings.Validate(st, svc, nil); err != nil {
		b.Fatal(err)
	}
	b.Run("first", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			d, err := dispatch.Open(dispatch.Options{})
			if err != nil {
				b.Fatal(err)
			}
			m := bindings.NewManager(d, nil)
			b.StartTimer()
			if err := m.Apply(st, svc, nil); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			d.Close()
			b.StartTimer()
		}
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/apply")
	})
	b.Run("move", func(b *testing.B) {
		d, err := dispatch.Open(dispatch.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		m := bindings.NewManager(d, nil)
		if err := m.Apply(st, svc, nil); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := range b.N {
			err := m.Change(func(s *bindings.State) error {
				s.Bindings[7].Service = []bindings.Service{bindings.Spectrum, bindings.CDN}[i%2]
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/apply")
	})
	b.Run("validate", func(b *testing.B) {
		for range b.N {
			if err := bindings.Validate(st, svc, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("translate", func(b *testing.B) {
		for range b.N {
			bindings.Table(st, svc)
		}
	})
}
