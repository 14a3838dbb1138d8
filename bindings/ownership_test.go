package bindings_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

// agree fails t unless the snapshot answers proto to dst as Resolve does on
// st: the same owner, and cdn ownership exactly when the outcome is cdn.
func agree(t *testing.T, o *bindings.Ownership, st *bindings.State, svc bindings.Services, proto dispatch.Protocol, dst netip.AddrPort) bindings.Resolution {
	t.Helper()
	r := bindings.Resolve(st, svc, proto, dst.Addr(), dst.Port())
	if got, want := o.CDN(proto, dst.Addr(), dst.Port()), r.Outcome == bindings.OutcomeCDN; got != want {
		t.Fatalf("%s %s: snapshot says cdn=%v, Resolve says %s (%s)\nstate %+v\nservices %+v", proto, dst, got, r.Outcome, r.Reason, st, svc)
	}
	if got := o.Owner(proto, dst.Addr(), dst.Port()); got != r.Service {
		t.Fatalf("%s %s: snapshot's owner %q, Resolve's %q (%s)\nstate %+v", proto, dst, got, r.Service, r.Reason, st)
	}
	return r
}

// TestOwnershipMatchesResolve: on many random states (random prefixes,
// nested address and port-scoped bindings, apps), the snapshot's answer is
// Resolve's, both built directly and published by a manager.
func TestOwnershipMatchesResolve(t *testing.T) {
	g := newGen(t)
	m := bindings.NewManager(&recorder{}, nil)
	counts := map[string]int{}
	cdn, n := 0, 0
	for range *diffStates {
		st, svc := g.state()
		if err := m.Apply(st, svc, nil); err != nil {
			t.Fatal(err)
		}
		direct := bindings.NewOwnership(st, svc)
		for range *diffProbes {
			proto, dst := g.probe(st, svc)
			r := agree(t, direct, st, svc, proto, dst)
			agree(t, m.Ownership(), st, svc, proto, dst)
			if m.OwnsCDN(proto, dst.Addr(), dst.Port()) {
				cdn++
			}
			counts[string(r.Outcome)]++
			n++
		}
	}
	outcomeCounts(counts, n, t)
	if cdn < n/20 {
		t.Errorf("only %d of %d probes owned by the cdn", cdn, n)
	}
}

// TestOwnershipSharedCases: every probe of every shared case, through the
// snapshot a manager publishes.
func TestOwnershipSharedCases(t *testing.T) {
	for _, c := range loadCases(t).Cases {
		t.Run(c.Name, func(t *testing.T) {
			st, svc := caseState(t, c)
			m := bindings.NewManager(&recorder{}, nil)
			if err := m.Apply(st, svc, nil); err != nil {
				t.Fatal(err)
			}
			for _, p := range c.Probes {
				proto, dst := parseProbe(t, p)
				if got := m.OwnsCDN(proto, dst.Addr(), dst.Port()); got != (p.Want == "cdn") {
					t.Errorf("%s %s: OwnsCDN %v, want %s", p.Protocol, dst, got, p.Want)
				}
				agree(t, m.Ownership(), st, svc, proto, dst)
			}
		})
	}
}

// TestOwnershipFollowsChanges: after each kind of change (create a prefix,
// create an address and a port-scoped binding, move them, delete them,
// delete a prefix with its bindings, reconfigure as a reload does, apply a
// whole state) the published snapshot answers for the new state at once;
// snapshots published earlier keep answering for theirs; a refused change
// publishes nothing.
func TestOwnershipFollowsChanges(t *testing.T) {
	svc := bindings.Services{
		CDN: bindings.CDNPorts{HTTP: []uint16{80}, HTTPS: []uint16{443}, HTTP3: true, HTTP3Port: 443},
		Apps: []bindings.App{
			{Name: "all", Protocol: dispatch.UDP, Edge: netip.MustParsePrefix("198.51.100.0/24"), Ports: dispatch.AnyPort},
			{Name: "api", Protocol: dispatch.UDP, Edge: netip.MustParsePrefix("203.0.113.0/24"), Ports: dispatch.AnyPort},
		},
	}
	cfgState := &bindings.State{Prefixes: []bindings.Prefix{
		bindings.NewPrefix(netip.MustParsePrefix("198.51.100.0/24"), bindings.Spectrum, bindings.FromConfig),
	}}
	am := &failAmender{}
	m := bindings.NewManager(am, nil)
	if err := m.Reconfigure(cfgState, svc, nil); err != nil {
		t.Fatal(err)
	}
	h3 := func(a string) bool { return m.OwnsCDN(dispatch.UDP, netip.MustParseAddr(a), 443) }
	type step struct {
		name string
		do   func() error
		cdn  map[string]bool // udp/443 destinations and whether the cdn owns them after
	}
	pfx := bindings.NewPrefix(netip.MustParsePrefix("203.0.113.0/24"), bindings.Spectrum, bindings.FromAPI)
	addrB := bindings.NewBinding(netip.MustParsePrefix("203.0.113.0/26"), 0, 0, bindings.CDN, bindings.FromAPI)
	portB := bindings.NewBinding(netip.MustParsePrefix("203.0.113.16/28"), dispatch.UDP, 443, bindings.Spectrum, bindings.FromAPI)
	steps := []step{
		{"create prefix", func() error { _, err := m.CreatePrefix(context.Background(), pfx.CIDR, bindings.Spectrum); return err },
			map[string]bool{"203.0.113.1": false, "198.51.100.1": false}},
		{"create binding", func() error {
			_, err := m.CreateBinding(context.Background(), pfx.ID, addrB.CIDR, 0, 0, bindings.CDN)
			return err
		}, map[string]bool{"203.0.113.1": true, "203.0.113.17": true, "203.0.113.64": false}},
		{"create port-scoped binding", func() error {
			_, err := m.CreateBinding(context.Background(), pfx.ID, portB.CIDR, dispatch.UDP, 443, bindings.Spectrum)
			return err
		}, map[string]bool{"203.0.113.1": true, "203.0.113.17": false, "203.0.113.64": false}},
		{"move port-scoped binding", func() error {
			_, err := m.MoveBinding(context.Background(), pfx.ID, portB.ID, bindings.CDN)
			return err
		},
			map[string]bool{"203.0.113.17": true, "203.0.113.64": false}},
		{"move binding", func() error {
			_, err := m.MoveBinding(context.Background(), pfx.ID, addrB.ID, bindings.Spectrum)
			return err
		},
			map[string]bool{"203.0.113.1": false, "203.0.113.17": true}},
		{"move default binding", func() error {
			_, err := m.MoveBinding(context.Background(), pfx.ID, pfx.DefaultBinding().ID, bindings.CDN)
			return err
		}, map[string]bool{"203.0.113.1": false, "203.0.113.17": true, "203.0.113.64": true}},
		{"delete port-scoped binding", func() error { _, _, err := m.DeleteBinding(context.Background(), pfx.ID, portB.ID); return err },
			map[string]bool{"203.0.113.17": false, "203.0.113.64": true}},
		{"delete binding", func() error { _, _, err := m.DeleteBinding(context.Background(), pfx.ID, addrB.ID); return err },
			map[string]bool{"203.0.113.1": true, "203.0.113.17": true}},
		{"create again", func() error {
			_, err := m.CreateBinding(context.Background(), pfx.ID, portB.CIDR, dispatch.UDP, 443, bindings.Spectrum)
			return err
		}, map[string]bool{"203.0.113.17": false, "203.0.113.1": true}},
		{"delete prefix with cascade", func() error { _, err := m.DeletePrefix(context.Background(), pfx.ID, true); return err },
			map[string]bool{"203.0.113.1": false, "203.0.113.17": false}},
		{"reload: the configuration's prefix to cdn", func() error {
			st := cfgState.Clone()
			st.Prefixes[0].Service = bindings.CDN
			return m.Reconfigure(st, bindings.Services{CDN: svc.CDN}, nil)
		}, map[string]bool{"198.51.100.1": true, "203.0.113.1": false}},
		{"reload: http3 off", func() error {
			st := cfgState.Clone()
			st.Prefixes[0].Service = bindings.CDN
			off := svc.CDN
			off.HTTP3 = false
			return m.Reconfigure(st, bindings.Services{CDN: off}, nil)
		}, map[string]bool{"198.51.100.1": false}},
		{"apply a whole state", func() error {
			return m.Apply(&bindings.State{Prefixes: []bindings.Prefix{
				bindings.NewPrefix(netip.MustParsePrefix("2001:db8:7::/48"), bindings.CDN, bindings.FromAPI),
			}}, bindings.Services{CDN: svc.CDN}, nil)
		}, map[string]bool{"198.51.100.1": false, "2001:db8:7::1": true, "::ffff:198.51.100.1": false}},
	}
	type published struct {
		o   *bindings.Ownership
		st  *bindings.State
		svc bindings.Services
	}
	var earlier []published
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		for a, want := range s.cdn {
			if got := h3(a); got != want {
				t.Errorf("after %s: udp %s:443 owned by the cdn %v, want %v", s.name, a, got, want)
			}
		}
		st, cur := m.Current()
		earlier = append(earlier, published{m.Ownership(), st, cur})
		// Every snapshot, this one and the earlier ones, answers for its
		// own state.
		for _, e := range earlier {
			for _, a := range []string{"203.0.113.1", "203.0.113.17", "203.0.113.64", "198.51.100.1", "2001:db8:7::1"} {
				for _, proto := range []dispatch.Protocol{dispatch.UDP, dispatch.TCP} {
					agree(t, e.o, e.st, e.svc, proto, netip.AddrPortFrom(netip.MustParseAddr(a), 443))
				}
			}
		}
	}
	// A refused change publishes nothing: the data plane refuses.
	before := m.Ownership()
	am.fail = errors.New("no room")
	if _, err := m.CreatePrefix(context.Background(), netip.MustParsePrefix("192.0.2.0/24"), bindings.CDN); err == nil {
		t.Fatal("created through a failing data plane")
	}
	if m.Ownership() != before || h3("192.0.2.1") {
		t.Error("a refused change published a snapshot")
	}
}

// TestOwnershipFollowsRandomOperations: random API operations (as
// TestIncrementalMatchesFull makes them) on random states; after each, the
// snapshot answers random probes as Resolve does on the manager's state.
func TestOwnershipFollowsRandomOperations(t *testing.T) {
	g := newGen(t)
	services := []bindings.Service{bindings.CDN, bindings.Spectrum, bindings.MagicTransit}
	ops, probes := 0, 0
	for range 50 {
		st, svc := g.state()
		for i := range st.Prefixes {
			st.Prefixes[i].Source = bindings.FromAPI
		}
		for i := range st.Bindings {
			st.Bindings[i].Source = bindings.FromAPI
		}
		m := bindings.NewManager(&amender{}, nil)
		if err := m.Apply(st, svc, nil); err != nil {
			t.Fatal(err)
		}
		for range 40 {
			cur, _ := m.Current()
			switch g.r.IntN(5) {
			case 0:
				base := cur.Prefixes[g.r.IntN(len(cur.Prefixes))].CIDR
				m.CreatePrefix(context.Background(), netip.PrefixFrom(base.Addr(), base.Bits()-2+g.r.IntN(5)).Masked(), services[g.r.IntN(3)])
			case 1:
				if len(cur.Prefixes) > 1 {
					m.DeletePrefix(context.Background(), cur.Prefixes[g.r.IntN(len(cur.Prefixes))].ID, g.r.IntN(2) == 0)
				}
			case 2:
				p := cur.Prefixes[g.r.IntN(len(cur.Prefixes))]
				var proto dispatch.Protocol
				var port uint16
				if g.r.IntN(2) == 0 {
					proto, port = g.proto(), g.pick(portPool)
					if g.r.IntN(2) == 0 {
						proto, port = dispatch.UDP, 443
					}
				}
				m.CreateBinding(context.Background(), p.ID, g.sub(p.CIDR, 0, 10), proto, port, services[g.r.IntN(2)])
			case 3:
				if len(cur.Bindings) > 0 && g.r.IntN(3) > 0 {
					b := cur.Bindings[g.r.IntN(len(cur.Bindings))]
					m.MoveBinding(context.Background(), b.PrefixID, b.ID, services[g.r.IntN(3)])
				} else {
					p := cur.Prefixes[g.r.IntN(len(cur.Prefixes))]
					m.MoveBinding(context.Background(), p.ID, p.DefaultBinding().ID, services[g.r.IntN(3)])
				}
			case 4:
				if len(cur.Bindings) > 0 {
					b := cur.Bindings[g.r.IntN(len(cur.Bindings))]
					m.DeleteBinding(context.Background(), b.PrefixID, b.ID)
				}
			}
			ops++
			after, svc := m.Current()
			o := m.Ownership()
			for range 50 {
				proto, dst := g.probe(after, svc)
				agree(t, o, after, svc, proto, dst)
				probes++
			}
		}
	}
	t.Logf("%d operations, %d probes agree", ops, probes)
}

// TestHostileOwnershipCheckTakesNoLock: a flood of HTTP/3 Initials makes
// the cdn ask who owns the address once per handshake. The check must not
// take the manager's lock, which the admin API's changes hold (and, before
// the snapshot, took it and scanned every binding under it: 11.4 ms and
// 11.2 MB a check at 100,000 bindings). 8 goroutines check in a loop while
// a change holds the lock: they all finish, which they could not if the
// check took it. Then API changes run while the flood goes on, and each is
// visible to the flood as soon as it returns. 10,000 bindings;
// EDGEPROXY_ATTACK=1: 100,000.
func TestHostileOwnershipCheckTakesNoLock(t *testing.T) {
	n, checks := 10_000, 20_000
	if os.Getenv("EDGEPROXY_ATTACK") == "1" {
		n, checks = 100_000, 200_000
	}
	st, svc := ownState(n)
	m := bindings.NewManager(&amender{}, nil)
	if err := m.Apply(st, svc, nil); err != nil {
		t.Fatal(err)
	}
	probes := ownProbes(st, 1024)

	// Hold the lock through a change that waits.
	held, release, changed := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		changed <- m.Change(func(*bindings.State) error {
			close(held)
			<-release
			return errors.New("abandoned")
		})
	}()
	<-held
	var wg sync.WaitGroup
	var owned atomic.Int64
	start := time.Now()
	for w := range 8 {
		wg.Go(func() {
			mine := int64(0)
			for i := range checks {
				p := probes[(w*7919+i)%len(probes)]
				if m.OwnsCDN(dispatch.UDP, p.Addr(), p.Port()) {
					mine++
				}
			}
			owned.Add(mine)
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		close(release)
		t.Fatal("ownership checks block while a change holds the manager's lock")
	}
	took := time.Since(start)
	close(release)
	if err := <-changed; err == nil {
		t.Fatal("the abandoned change was applied")
	}
	if owned.Load() == 0 {
		t.Fatal("no check found a cdn-owned address: the probes test nothing")
	}
	t.Logf("attack: %d bindings, 8 goroutines × %d ownership checks with the lock held: %.0f checks/s on %d CPUs, %d owned",
		n, checks, float64(8*checks)/took.Seconds(), runtime.GOMAXPROCS(0), owned.Load())

	// API changes during the flood complete, and the flood sees them.
	stop := make(chan struct{})
	var flood sync.WaitGroup
	var floodChecks atomic.Int64
	var running sync.WaitGroup
	running.Add(8)
	for w := range 8 {
		flood.Go(func() {
			for i := 0; ; i++ {
				if i == 1000 {
					running.Done()
				}
				if i >= 1000 {
					select {
					case <-stop:
						floodChecks.Add(int64(i))
						return
					default:
					}
				}
				p := probes[(w*7919+i)%len(probes)]
				m.OwnsCDN(dispatch.UDP, p.Addr(), p.Port())
			}
		})
	}
	running.Wait() // every goroutine is checking
	// A port-scoped spectrum binding inside the cdn's /64 of the first
	// prefix, made and deleted again.
	pfx := st.Prefixes[0]
	writes := 200
	wstart := time.Now()
	for i := range writes {
		a := pfx.CIDR.Addr().As16()
		a[15], a[14] = byte(i), 0xee
		cidr := netip.PrefixFrom(netip.AddrFrom16(a), 128)
		if !m.OwnsCDN(dispatch.UDP, cidr.Addr(), 443) {
			t.Fatalf("write %d: %s is not the cdn's to begin with", i, cidr)
		}
		if _, err := m.CreateBinding(context.Background(), pfx.ID, cidr, dispatch.UDP, 443, bindings.Spectrum); err != nil {
			t.Fatal(err)
		}
		if m.OwnsCDN(dispatch.UDP, cidr.Addr(), 443) {
			t.Fatalf("write %d: the snapshot does not hold the binding just created", i)
		}
		if _, _, err := m.DeleteBinding(context.Background(), pfx.ID, bindings.BindingID(cidr, dispatch.UDP, 443)); err != nil {
			t.Fatal(err)
		}
		if !m.OwnsCDN(dispatch.UDP, cidr.Addr(), 443) {
			t.Fatalf("write %d: the snapshot still holds the binding just deleted", i)
		}
	}
	wtook := time.Since(wstart)
	close(stop)
	flood.Wait()
	t.Logf("attack: %d API writes (create and delete) during the flood: %.2f ms a write; %d checks meanwhile",
		2*writes, float64(wtook.Microseconds())/1000/float64(2*writes), floodChecks.Load())

	// The check allocates nothing, whatever the number of bindings.
	p := probes[0]
	if a := testing.AllocsPerRun(1000, func() { m.OwnsCDN(dispatch.UDP, p.Addr(), p.Port()) }); a != 0 {
		t.Errorf("an ownership check allocates %.1f times", a)
	}
	// For the report: what the check cost before, through Resolve.
	cur, csvc := m.Current()
	rstart := time.Now()
	allocs := testing.AllocsPerRun(10, func() { bindings.Resolve(cur, csvc, dispatch.UDP, p.Addr(), p.Port()) })
	t.Logf("attack: Resolve, the check before the snapshot, at %d bindings: %.2f ms and %.0f allocations a check",
		n, float64(time.Since(rstart).Microseconds())/1000/11, allocs)
}

// failAmender is an amender that refuses every change once fail is set.
type failAmender struct {
	amender
	fail error
}

func (a *failAmender) Replace(t *dispatch.Table) error {
	if a.fail != nil {
		return a.fail
	}
	return a.amender.Replace(t)
}

func (a *failAmender) Amend(remove, add []dispatch.Binding) error {
	if a.fail != nil {
		return a.fail
	}
	return a.amender.Amend(remove, add)
}

// ownState returns n bindings in the /48s of 2001:db8::/32, 1000 to a
// prefix (spectrum, every seventh cdn): /128s to the cdn and spectrum, every
// tenth port-scoped udp/443, every hundredth a /64, with the cdn's ports and
// an app for spectrum's.
func ownState(n int) (*bindings.State, bindings.Services) {
	st := &bindings.State{}
	per := 1000
	for i := range (n + per - 1) / per {
		a := [16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i)}
		svc := bindings.Spectrum
		if i%7 == 0 {
			svc = bindings.CDN
		}
		st.Prefixes = append(st.Prefixes, bindings.NewPrefix(netip.PrefixFrom(netip.AddrFrom16(a), 48), svc, bindings.FromAPI))
	}
	for i := range n {
		p := st.Prefixes[i/per]
		a := p.CIDR.Addr().As16()
		k := i % per
		a[6], a[7], a[15] = byte(k>>8), byte(k), 1
		cidr := netip.PrefixFrom(netip.AddrFrom16(a), 128)
		var proto dispatch.Protocol
		var port uint16
		switch {
		case k%100 == 0:
			cidr = netip.PrefixFrom(netip.AddrFrom16(a), 64).Masked()
		case k%10 == 0:
			proto, port = dispatch.UDP, 443
		}
		svc := []bindings.Service{bindings.CDN, bindings.Spectrum}[k%3%2]
		b := bindings.NewBinding(cidr, proto, port, svc, bindings.FromAPI)
		b.PrefixID = p.ID
		st.Bindings = append(st.Bindings, b)
	}
	return st, bindings.Services{
		CDN:  bindings.CDNPorts{HTTP: []uint16{80}, HTTPS: []uint16{443}, HTTP3: true, HTTP3Port: 443},
		Apps: []bindings.App{{Name: "all", Protocol: dispatch.UDP, Edge: netip.MustParsePrefix("2001:db8::/32"), Ports: dispatch.AnyPort}},
	}
}

// ownProbes returns k udp/443 destinations: inside bindings, beside them,
// and outside every prefix.
func ownProbes(st *bindings.State, k int) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, k)
	for i := range k {
		b := st.Bindings[(i*104729)%len(st.Bindings)]
		a := b.CIDR.Addr().As16()
		switch i % 4 {
		case 1:
			a[15] = 2 // beside a /128: its prefix's or the /64's owner
		case 2:
			a[5] ^= 0x55 // another /48, perhaps outside every prefix
		}
		out = append(out, netip.AddrPortFrom(netip.AddrFrom16(a), 443))
	}
	return out
}

// BenchmarkOwnership: the ownership check alone (the snapshot, as the cdn
// asks it on every HTTP/3 handshake) against Resolve (what it asked before),
// at 10, 100,000 and 1,000,000 bindings; and the cost of publishing the
// snapshot after one API change.
func BenchmarkOwnership(b *testing.B) {
	for _, n := range []int{10, 100_000, 1_000_000} {
		st, svc := ownState(n)
		m := bindings.NewManager(&amender{}, nil)
		if err := m.Apply(st, svc, nil); err != nil {
			b.Fatal(err)
		}
		probes := ownProbes(st, 4096)
		b.Run(fmt.Sprintf("bindings=%d/snapshot", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				p := probes[i%len(probes)]
				m.OwnsCDN(dispatch.UDP, p.Addr(), p.Port())
				i++
			}
		})
		b.Run(fmt.Sprintf("bindings=%d/resolve", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				p := probes[i%len(probes)]
				_ = m.Resolve(dispatch.UDP, p.Addr(), p.Port()).Outcome == bindings.OutcomeCDN
				i++
			}
		})
		b.Run(fmt.Sprintf("bindings=%d/build", n), func(b *testing.B) {
			b.ReportAllocs()
			var o *bindings.Ownership
			for b.Loop() {
				o = bindings.NewOwnership(st, svc)
			}
			// What the snapshot keeps: the heap with it, less without.
			var with, without runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&with)
			runtime.KeepAlive(o)
			o = nil
			runtime.GC()
			runtime.ReadMemStats(&without)
			b.ReportMetric(float64(int64(with.HeapAlloc)-int64(without.HeapAlloc))/float64(n), "snapshot-B/binding")
		})
		b.Run(fmt.Sprintf("bindings=%d/publish-after-move", n), func(b *testing.B) {
			b.ReportAllocs()
			bd := st.Bindings[len(st.Bindings)/2]
			from := dispatch.Binding{Prefix: bd.CIDR, Protocol: bd.Protocol, Port: bd.Port, Owner: bindings.OwnerOf(bd.Service)}
			to := from
			to.Owner = bindings.OwnerOf(bindings.MagicTransit)
			o := m.Ownership()
			for b.Loop() {
				o = o.Amended([]dispatch.Binding{from}, []dispatch.Binding{to})
				from, to = to, from
			}
		})
	}
}
