package harness

import (
	"math"
	"os"
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
