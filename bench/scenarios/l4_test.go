package scenarios

import (
	"math"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/edgeproxy/edgeproxy/bench/harness"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestL4Tiny runs the l4 scenarios in tiny mode in a namespace of their
// own: every system has a round with a finite, positive primary metric
// (direct, which has no proxy CPU, its secondary: its rate). One test, not
// subtests: a subtest's goroutine would not be in the namespace.
func TestL4Tiny(t *testing.T) {
	netns.New(t)
	for _, p := range []string{"nginx", "haproxy", "iperf3", "taskset"} {
		netns.RequireCommand(t, p)
	}
	if harness.NginxStreamModule() == "" {
		t.Skip("nginx has no stream module (libnginx-mod-stream)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "edgeproxy")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/edgeproxy/edgeproxy/cmd/edgeproxy").CombinedOutput(); err != nil {
		t.Fatalf("build edgeproxy: %v\n%s", err, out)
	}
	mode := harness.Mode{Tiny: true}
	n := 0
	for _, s := range harness.Scenarios() {
		if s.Group != "l4" {
			continue
		}
		n++
		c := &harness.Ctx{Mode: mode, Edgeproxy: bin, Dir: t.TempDir(), Log: t.Logf}
		r := harness.NewResult(s, mode)
		if err := s.Run(c, r); err != nil {
			t.Errorf("%s: %v", s.Name, err)
			continue
		}
		r.Finish()
		if r.Title == "" || r.Unit == "" || r.Primary == "" || len(r.Systems) == 0 || r.Systems[0] != "edgeproxy" {
			t.Errorf("%s: title %q unit %q primary %q systems %v", s.Name, r.Title, r.Unit, r.Primary, r.Systems)
		}
		for _, sys := range r.Systems {
			metric := r.Primary
			if sys == "direct" && (metric == harness.CPUPerGB || metric == harness.CPUPerUnit) {
				metric = r.Secondary
			}
			v, ok := r.Summary[sys][metric]
			if !ok || math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
				t.Errorf("%s: %s's %s = %v (%v): want a finite positive number", s.Name, sys, metric, v, r.Summary[sys])
			}
		}
		t.Logf("%s (%.1f s): %v", s.Name, r.Seconds, r.Summary)
	}
	if n != 4 {
		t.Errorf("%d l4 scenarios registered, want 4", n)
	}
}
