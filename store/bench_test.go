package store

import (
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// benchPrefix holds the benchmarks' bindings: one /128 each.
var benchPrefix = bindings.NewPrefix(netip.MustParsePrefix("2001:db8::/32"), bindings.CDN, bindings.FromAPI)

// benchBinding is the benchmarks' binding number i.
func benchBinding(i int, svc bindings.Service) bindings.Binding {
	a := netip.MustParseAddr("2001:db8::").As16()
	a[8], a[9], a[10], a[11] = 0xbe, 0x17, byte(i>>24), byte(i>>16)
	a[12], a[13], a[14], a[15] = byte(i>>8), byte(i), 0, 1
	b := bindings.NewBinding(netip.PrefixFrom(netip.AddrFrom16(a), 128), 0, 0, svc, bindings.FromAPI)
	b.PrefixID = benchPrefix.ID
	return b
}

// filled returns a store holding benchPrefix and n bindings, at revision 1.
func filled(b *testing.B, n int) *Bolt {
	b.Helper()
	s := open(b, filepath.Join(b.TempDir(), "bindings.db"), Options{})
	m := bindings.Mutation{Create: make([]bindings.Record, 0, n+1)}
	m.Create = append(m.Create, bindings.EncodePrefix(benchPrefix))
	for i := range n {
		m.Create = append(m.Create, bindings.EncodeBinding(benchBinding(i, bindings.CDN)))
	}
	if err := s.Commit(1, m); err != nil {
		b.Fatal(err)
	}
	return s
}

// reportPercentiles reports the median and the 99th percentile of ds.
func reportPercentiles(b *testing.B, ds []time.Duration) {
	slices.Sort(ds)
	if len(ds) == 0 {
		return
	}
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkCommitAmong1M: one binding created or moved, with its audit
// entry, in a store of a million bindings (an fsync per commit).
func BenchmarkCommitAmong1M(b *testing.B) {
	const n = 1_000_000
	s := filled(b, n)
	rev := int64(1)
	var ds []time.Duration
	i := 0
	for b.Loop() {
		rev++
		var m bindings.Mutation
		if i%2 == 0 {
			m.Create = []bindings.Record{bindings.EncodeBinding(benchBinding(n+i, bindings.CDN))}
		} else {
			m.Update = []bindings.Record{bindings.EncodeBinding(benchBinding(i*7919%n, bindings.Spectrum))}
		}
		m.Audit = &bindings.AuditEntry{Who: "bench", Action: "create", PrefixID: benchPrefix.ID}
		start := time.Now()
		if err := s.Commit(rev, m); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(start))
		i++
	}
	reportPercentiles(b, ds)
}

// BenchmarkCommitBatch100k: one commit creating a hundred thousand
// bindings in an empty store.
func BenchmarkCommitBatch100k(b *testing.B) {
	const n = 100_000
	m := bindings.Mutation{Create: []bindings.Record{bindings.EncodePrefix(benchPrefix)}}
	for i := range n {
		m.Create = append(m.Create, bindings.EncodeBinding(benchBinding(i, bindings.CDN)))
	}
	m.Audit = &bindings.AuditEntry{Who: "bench", Action: "batch", Count: n}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := open(b, filepath.Join(b.TempDir(), "bindings.db"), Options{})
		b.StartTimer()
		if err := s.Commit(1, m); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
}

// BenchmarkLoad1M: Load of a million bindings.
func BenchmarkLoad1M(b *testing.B) {
	s := filled(b, 1_000_000)
	for b.Loop() {
		st, _, err := s.Load()
		if err != nil || len(st.Bindings) != 1_000_000 {
			b.Fatalf("Load: %d bindings, %v", len(st.Bindings), err)
		}
	}
}
