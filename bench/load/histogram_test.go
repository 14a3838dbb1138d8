package load

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistogramPercentiles(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	h := NewHistogram()
	var ref []time.Duration
	for range 200000 {
		// log-uniform from 1 µs to 10 s
		d := time.Duration(math.Exp(r.Float64()*math.Log(1e7)) * 1e3)
		h.Record(d)
		ref = append(ref, d)
	}
	slices.Sort(ref)
	for _, q := range []float64{0, 1, 10, 50, 90, 99, 99.9, 99.99, 100} {
		rank := max(int(math.Ceil(q/100*float64(len(ref)))), 1)
		want := ref[rank-1]
		got := h.Percentile(q)
		if rel := math.Abs(float64(got-want)) / float64(want); rel > 0.01 {
			t.Errorf("p%v = %v, want %v (off by %.2f%%)", q, got, want, rel*100)
		}
	}
	if h.Count() != int64(len(ref)) || h.Min() != ref[0] || h.Max() != ref[len(ref)-1] {
		t.Errorf("count %d min %v max %v, want %d %v %v", h.Count(), h.Min(), h.Max(), len(ref), ref[0], ref[len(ref)-1])
	}
}

func TestHistogramSmallAndClamped(t *testing.T) {
	var h Histogram // the zero value works
	for _, d := range []time.Duration{0, 1, 2, 255, 256, 257, time.Hour, -5} {
		h.Record(d)
	}
	if h.Count() != 8 || h.Min() != 0 || h.Max() != time.Duration(maxValue) {
		t.Fatalf("count %d min %v max %v", h.Count(), h.Min(), h.Max())
	}
	for i := range numCounts {
		low, width := bounds(i)
		if index(low) != i || index(low+width-1) != i || (i+1 < numCounts && index(low+width) != i+1) {
			t.Fatalf("bucket %d: low %d width %d, index(low)=%d", i, low, width, index(low))
		}
	}
}

func TestHistogramMerge(t *testing.T) {
	a, b, all := NewHistogram(), NewHistogram(), NewHistogram()
	for i := range 1000 {
		d := time.Duration(i) * time.Microsecond
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
		all.Record(d)
	}
	a.Merge(b)
	for _, q := range []float64{1, 50, 99, 100} {
		if a.Percentile(q) != all.Percentile(q) {
			t.Errorf("merged p%v = %v, want %v", q, a.Percentile(q), all.Percentile(q))
		}
	}
	if a.Count() != 1000 || a.Min() != 0 || a.Max() != 999*time.Microsecond {
		t.Errorf("merged count %d min %v max %v", a.Count(), a.Min(), a.Max())
	}
}

func TestRecordCorrected(t *testing.T) {
	// 100 requests at 10 ms intervals, one of them stalled for 200 ms: a
	// closed loop sees one slow value; corrected, the 19 requests that would
	// have been sent during the stall appear too.
	h := NewHistogram()
	for range 99 {
		h.RecordCorrected(time.Millisecond, 10*time.Millisecond)
	}
	h.RecordCorrected(200*time.Millisecond, 10*time.Millisecond)
	if h.Count() != 99+20 {
		t.Fatalf("count %d, want 119", h.Count())
	}
	if p := h.Percentile(90); p < 50*time.Millisecond {
		t.Errorf("corrected p90 %v, want ≥ 50ms", p)
	}
}
