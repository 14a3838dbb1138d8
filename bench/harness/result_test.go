package harness

import (
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func TestFinishMediansAndRatios(t *testing.T) {
	r := &Result{Scenario: "x", Started: time.Now()}
	for round, v := range []float64{100, 10, 12, 11} { // round 0 is the warm-up
		r.Add("edgeproxy", round, map[string]float64{CPUPerUnit: v, Rate: 1000 / v, "bad": math.NaN()})
		r.Add("nginx", round, map[string]float64{CPUPerUnit: 2 * v, Rate: 500 / v})
	}
	r.Finish()
	if got := r.Summary["edgeproxy"][CPUPerUnit]; got != 11 {
		t.Errorf("median of the measured rounds: %v, want 11 (the warm-up left out)", got)
	}
	if _, ok := r.Summary["edgeproxy"]["bad"]; ok {
		t.Error("a NaN metric was kept")
	}
	rt := r.Ratios["nginx"][CPUPerUnit]
	if len(rt.PerRound) != 3 || rt.Median != 0.5 {
		t.Errorf("ratios %+v, want three of 0.5", rt)
	}
	p, err := r.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rs, err := ReadResults(p[:len(p)-len("/x.json")])
	if err != nil || len(rs) != 1 || rs[0].Summary["nginx"][Rate] != r.Summary["nginx"][Rate] {
		t.Fatalf("read back: %v %+v", err, rs)
	}
}

func TestTreeCPU(t *testing.T) {
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	if TreeCPU(os.Getpid()) <= 0 {
		t.Fatal("no CPU time read for this process")
	}
}

// TestReadCPU reads CPU 0's counters twice around some work: the counters
// grow, the busy share is a share, and a CPU that does not exist is an
// error naming it.
func TestReadCPU(t *testing.T) {
	before, err := ReadCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	if before.Total <= 0 || before.Busy > before.Total || before.Softirq > before.Busy {
		t.Fatalf("ReadCPU(0) = %+v: want 0 <= softirq <= busy <= total, total > 0", before)
	}
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	share, busy, softirq := before.Since()
	if share < 0 || share > 1 || busy < 0 || softirq < 0 || softirq > busy {
		t.Errorf("Since = %v, %v, %v: want a share in [0, 1] and softirq <= busy", share, busy, softirq)
	}
	if _, err := ReadCPU(1 << 20); err == nil || !strings.Contains(err.Error(), "cpu1048576") {
		t.Errorf("ReadCPU(1<<20) = %v, want an error naming cpu1048576", err)
	}
}

// TestMedianOf: the warm-up round is left out, a metric no round has is
// reported absent, and the figure is Finish's.
func TestMedianOf(t *testing.T) {
	r := &Result{Scenario: "x", Started: time.Now()}
	for round, v := range []float64{100, 3, 1, 2} {
		r.Add("edgeproxy", round, map[string]float64{Rate: v})
	}
	if v, ok := r.MedianOf("edgeproxy", Rate); !ok || v != 2 {
		t.Errorf("MedianOf = %v, %v; want 2, true", v, ok)
	}
	if _, ok := r.MedianOf("edgeproxy", CPUPerUnit); ok {
		t.Error("MedianOf a metric no round has: reported present")
	}
	r.Finish()
	if v, _ := r.MedianOf("edgeproxy", Rate); v != r.Summary["edgeproxy"][Rate] {
		t.Errorf("MedianOf %v, Summary %v", v, r.Summary["edgeproxy"][Rate])
	}
}
