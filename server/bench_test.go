package server

import (
	"bytes"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/store"
)

// storeWith writes a store of n API-made /32 bindings to cdn in the /24s of
// 10.0.0.0/8 (400 prefixes), and returns its path and one binding.
func storeWith(b *testing.B, n int) (string, bindings.Binding) {
	st := &bindings.State{}
	for i := range 400 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i / 256), byte(i % 256), 0}), 24)
		st.Prefixes = append(st.Prefixes, bindings.NewPrefix(p, bindings.Spectrum, bindings.FromAPI))
	}
	for i := range n {
		pfx := st.Prefixes[i%400]
		a := pfx.CIDR.Addr().As4()
		a[3] = byte(i / 400 % 256)
		var proto dispatch.Protocol
		var port uint16
		if k := i / 400 / 256; k > 0 { // more than 256 per /24: port-scoped
			proto, port = dispatch.TCP, []uint16{80, 443}[k%2]
		}
		bd := bindings.NewBinding(netip.PrefixFrom(netip.AddrFrom4(a), 32), proto, port, bindings.CDN, bindings.FromAPI)
		bd.PrefixID = pfx.ID
		st.Bindings = append(st.Bindings, bd)
	}
	path := filepath.Join(b.TempDir(), "bindings.json")
	if err := store.Seed(path, st); err != nil {
		b.Fatal(err)
	}
	return path, st.Bindings[len(st.Bindings)/2]
}

// BenchmarkAPIChange measures the time from sending a PATCH (move one
// binding to another service) or a POST (add a binding) to its response,
// when the response means the data plane holds the change and the store is
// on disk, with 10, 10,000 and 100,000 bindings present. It reports the
// median and the 90th percentile.
func BenchmarkAPIChange(b *testing.B) {
	for _, n := range []int{10, 10_000, 100_000} {
		b.Run(fmt.Sprintf("bindings=%d", n), func(b *testing.B) {
			ns := netns.New(b)
			path, bd := storeWith(b, n)
			cfg := writeConfigB(b, fmt.Sprintf("admin: {listen: \"127.0.0.1:0\"}\ndispatch: {pin_dir: \"\"}\nstore: {path: %q}\ncdn: {http_ports: [80], https_ports: [443], http3: true, http3_port: 443}\n", path))
			s, err := Start(Options{Config: cfg, Dial: ns.Dial, Socket: ns.Socket})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			base := "http://" + s.AdminAddr().String()
			hc := ns.HTTPClient()
			call := func(method, url, body string) time.Duration {
				req, _ := http.NewRequest(method, url, bytes.NewBufferString(body))
				start := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				took := time.Since(start)
				if resp.StatusCode != 200 {
					b.Fatalf("%s %s: %s", method, url, resp.Status)
				}
				return took
			}
			var patch, post []time.Duration
			b.ResetTimer()
			for i := range b.N {
				svc := []string{"spectrum", "cdn"}[i%2]
				patch = append(patch, call("PATCH", base+"/v1/prefixes/"+bd.PrefixID+"/bindings/"+bd.ID, `{"service_id":"`+svc+`"}`))
				cidr := fmt.Sprintf("10.%d.%d.0/28", 200+i%50, i/50%256)
				p := netip.MustParsePrefix(cidr)
				pid := bindings.PrefixID(netip.PrefixFrom(p.Addr(), 24).Masked())
				post = append(post, call("POST", base+"/v1/prefixes", `{"cidr":"`+netip.PrefixFrom(p.Addr(), 24).Masked().String()+`","service_id":"cdn"}`))
				call("DELETE", base+"/v1/prefixes/"+pid, "")
			}
			b.StopTimer()
			b.ReportMetric(pct(patch, 50), "patch-ms-p50")
			b.ReportMetric(pct(patch, 90), "patch-ms-p90")
			b.ReportMetric(pct(post, 50), "post-ms-p50")
			b.ReportMetric(pct(post, 90), "post-ms-p90")
		})
	}
}

func pct(ds []time.Duration, p int) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[(len(s)-1)*p/100].Microseconds()) / 1000
}

func writeConfigB(b *testing.B, yaml string) *config.Plan {
	return writeConfig(b, yaml)
}
