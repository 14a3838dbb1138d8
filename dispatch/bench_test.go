//go:build linux

package dispatch

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// hostTable returns a table of n bindings to the cdn owner: distinct random
// /32s of 10.0.0.0/8 (one /8 for n = 1), and the addresses bound.
func hostTable(n int, seed uint64) (*Table, []netip.Addr) {
	t := &Table{Owners: basePolicies()}
	if n == 1 {
		t.Bindings = []Binding{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Owner: ownerCDN}}
		return t, []netip.Addr{netip.MustParseAddr("10.1.2.3")}
	}
	r := rand.New(rand.NewPCG(seed, 1))
	seen := make(map[uint32]bool, n)
	addrs := make([]netip.Addr, 0, n)
	t.Bindings = make([]Binding, 0, n)
	for len(addrs) < n {
		v := r.Uint32() & 0x00ffffff
		if seen[v] {
			continue
		}
		seen[v] = true
		a := netip.AddrFrom4([4]byte{10, byte(v >> 16), byte(v >> 8), byte(v)})
		addrs = append(addrs, a)
		t.Bindings = append(t.Bindings, Binding{Prefix: netip.PrefixFrom(a, 32), Owner: ownerCDN})
	}
	return t, addrs
}

// benchCapacity is the binding capacity of the benchmarks' dispatchers:
// their largest table.
const benchCapacity = 1 << 20

var benchSizes = []struct {
	name string
	n    int
}{{"1", 1}, {"10k", 10_000}, {"1M", 1_000_000}}

// BenchmarkLookup reports the program's own run time per lookup, from the
// kernel's BPF statistics, with 1, 10k and 1M bindings: for repeated probes
// to one destination (caches warm) and for probes spread uniformly over the
// bound addresses. Every lookup takes the full path: owner, port set, socket
// assignment.
func BenchmarkLookup(b *testing.B) {
	netns.New(b)
	d := openDispatcher(b, Options{BindingCapacity: benchCapacity})
	ln, err := echo.ListenTCP("[::]:0", false)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	if err := d.Register("cdn/tcp", ln); err != nil {
		b.Fatal(err)
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable BPF stats: %v", err)
	}
	defer stats.Close()
	prog := d.objs.EdgeproxyDispatch

	for _, size := range benchSizes {
		table, addrs := hostTable(size.n, 7)
		if err := d.Replace(table); err != nil {
			b.Fatal(err)
		}
		probes := make([]skLookup, min(len(addrs), 1<<16))
		r := rand.New(rand.NewPCG(3, 4))
		for i := range probes {
			probes[i] = lookupCtx(TCP, netip.AddrPortFrom(addrs[r.IntN(len(addrs))], 443))
		}
		if v, err := d.Probe(TCP, netip.AddrPortFrom(addrs[0], 443)); err != nil || v.Label != "cdn/tcp" {
			b.Fatalf("probe: %v %v", v, err)
		}

		b.Run("bindings="+size.name+"/repeated", func(b *testing.B) {
			runStats(b, prog, func() {
				var out skLookup
				if _, err := prog.Run(&ebpf.RunOptions{Context: probes[0], ContextOut: &out, Repeat: uint32(b.N)}); err != nil {
					b.Fatal(err)
				}
			})
		})
		b.Run("bindings="+size.name+"/spread", func(b *testing.B) {
			runStats(b, prog, func() {
				var out skLookup
				for i := range b.N {
					if _, err := prog.Run(&ebpf.RunOptions{Context: probes[i%len(probes)], ContextOut: &out}); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkLookupApps is BenchmarkLookup's repeated probe with 10k bindings
// owned by spectrum, whose verdict takes the apps tables: a single-port app,
// a range app and an any-port app all cover the destination, so the program
// makes all three app lookups.
func BenchmarkLookupApps(b *testing.B) {
	netns.New(b)
	d := openDispatcher(b, Options{})
	ln, err := echo.ListenTCP("[::]:0", false)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	if err := d.Register("spectrum/tcp", ln); err != nil {
		b.Fatal(err)
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable BPF stats: %v", err)
	}
	defer stats.Close()
	table, addrs := hostTable(10_000, 7)
	for i := range table.Bindings {
		table.Bindings[i].Owner = ownerSpectrum
	}
	edge := netip.MustParsePrefix("10.0.0.0/8")
	table.Apps = []App{
		{Owner: ownerSpectrum, Protocol: TCP, Edge: edge, Ports: PortRange{443, 443}, Label: "spectrum/tcp"},
		{Owner: ownerSpectrum, Protocol: TCP, Edge: edge, Ports: PortRange{400, 500}, Label: "spectrum/tcp"},
		{Owner: ownerSpectrum, Protocol: TCP, Edge: edge, Ports: AnyPort, Label: "spectrum/tcp"},
	}
	if err := d.Replace(table); err != nil {
		b.Fatal(err)
	}
	probe := lookupCtx(TCP, netip.AddrPortFrom(addrs[0], 443))
	if v, err := d.Probe(TCP, netip.AddrPortFrom(addrs[0], 443)); err != nil || v.Label != "spectrum/tcp" {
		b.Fatalf("probe: %v %v", v, err)
	}
	prog := d.objs.EdgeproxyDispatch
	runStats(b, prog, func() {
		var out skLookup
		if _, err := prog.Run(&ebpf.RunOptions{Context: probe, ContextOut: &out, Repeat: uint32(b.N)}); err != nil {
			b.Fatal(err)
		}
	})
}

// runStats runs fn and reports the program's run time per run from the
// kernel's statistics.
func runStats(b *testing.B, prog *ebpf.Program, fn func()) {
	before, err := prog.Stats()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	fn()
	b.StopTimer()
	after, err := prog.Stats()
	if err != nil {
		b.Fatal(err)
	}
	runs := after.RunCount - before.RunCount
	if runs == 0 {
		b.Fatal("no runs counted: are BPF stats enabled?")
	}
	b.ReportMetric(float64(after.Runtime-before.Runtime)/float64(runs), "bpf-ns/lookup")
}

func lookupCtx(p Protocol, dst netip.AddrPort) skLookup {
	ctx := skLookup{Protocol: uint32(p), LocalPort: uint32(dst.Port()), RemotePort: 0x3930}
	if a := dst.Addr().Unmap(); a.Is4() {
		ctx.Family = unix.AF_INET
		ctx.LocalIP4 = ip4(a)
		ctx.RemoteIP4 = ip4(netip.AddrFrom4([4]byte{127, 0, 0, 2}))
	} else {
		ctx.Family = unix.AF_INET6
		ctx.LocalIP6 = ip6(a)
		ctx.RemoteIP6 = ip6(netip.IPv6Loopback())
	}
	return ctx
}

// BenchmarkReplace reports the time to write a table of 10k, 100k and 1M
// bindings: "first" into an empty generation, "change" over a generation that
// holds as many other bindings (every entry deleted and another inserted).
func BenchmarkReplace(b *testing.B) {
	netns.New(b)
	for _, size := range []struct {
		name string
		n    int
	}{{"10k", 10_000}, {"100k", 100_000}, {"1M", 1_000_000}} {
		tables := make([]*Table, 3)
		for i := range tables {
			tables[i], _ = hostTable(size.n, uint64(i+1))
		}
		b.Run("bindings="+size.name+"/first", func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				d, err := Open(Options{BindingCapacity: benchCapacity})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := d.Replace(tables[0]); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				d.Close()
				b.StartTimer()
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/replace")
		})
		b.Run("bindings="+size.name+"/change", func(b *testing.B) {
			d := openDispatcher(b, Options{BindingCapacity: benchCapacity})
			// Fill both generations, so that every measured Replace
			// turns n bindings into n others.
			for _, t := range tables[:2] {
				if err := d.Replace(t); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := range b.N {
				if err := d.Replace(tables[(i+2)%3]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/replace")
		})
	}
}

// BenchmarkConnRate compares new TCP connections per second to a steered
// address (sk_lookup assigns the registered listener) against a plain
// listener bound to its own address in a namespace without any program,
// interleaved connection by connection in the same run.
func BenchmarkConnRate(b *testing.B) {
	netns.New(b)
	d := openDispatcher(b, Options{})
	steeredLn, err := echo.ListenTCP("[::]:0", false)
	if err != nil {
		b.Fatal(err)
	}
	defer steeredLn.Close()
	if err := d.Register("cdn/tcp", steeredLn); err != nil {
		b.Fatal(err)
	}
	if err := d.Attach(); err != nil {
		b.Fatal(err)
	}
	if err := d.Replace(&Table{Owners: basePolicies(), Bindings: []Binding{{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Owner: ownerCDN}}}); err != nil {
		b.Fatal(err)
	}

	// The plain namespace: a second fresh namespace, on a worker thread
	// of its own, with a listener on 192.0.2.1:443 and no program.
	dst := "192.0.2.1:443"
	dial := func() time.Duration {
		start := time.Now()
		c, err := net.Dial("tcp", dst)
		if err != nil {
			panic(err)
		}
		buf := make([]byte, 1)
		c.Read(buf) // wait for the server's close: a full exchange
		c.Close()
		return time.Since(start)
	}
	requests, results := make(chan struct{}), make(chan time.Duration)
	ready := make(chan net.Listener)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with us
		netns.New(&nsTB{B: b})
		ln, err := echo.ListenTCP(dst, false)
		if err != nil {
			panic(err)
		}
		go acceptAndClose(ln)
		ready <- ln
		for range requests {
			results <- dial()
		}
		ln.Close()
	}()
	plainLn := <-ready
	defer close(requests)
	_ = plainLn
	go acceptAndClose(steeredLn)

	const chunk = 200
	var steeredRates, plainRates []float64
	b.ResetTimer()
	for n := 0; n < b.N; n += chunk {
		var st, pt time.Duration
		for range chunk {
			st += dial() // on this thread: the steered namespace
			requests <- struct{}{}
			pt += <-results
		}
		steeredRates = append(steeredRates, chunk/st.Seconds())
		plainRates = append(plainRates, chunk/pt.Seconds())
	}
	b.StopTimer()
	s, p := median(steeredRates), median(plainRates)
	b.ReportMetric(s, "steered-conn/s")
	b.ReportMetric(p, "plain-conn/s")
	b.ReportMetric(s/p, "steered/plain")
	c, _ := d.Counters()
	if c["cdn/tcp"].Lookups == 0 {
		b.Fatal("no steered lookups counted")
	}
}

func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// nsTB lets netns.New run on a goroutine other than the benchmark's: its
// cleanups are dropped, as the thread ends with the goroutine.
type nsTB struct{ *testing.B }

func (n *nsTB) Cleanup(func()) {}
