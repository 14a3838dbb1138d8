package scenarios

import (
	"math"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/edgeproxy/edgeproxy/bench/harness"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// dispRunTiny runs the named scenario in tiny mode in a fresh namespace and
// checks that every system has a round with a finite, positive primary
// metric (or, for a primary that must be zero, a zero one).
func dispRunTiny(t *testing.T, name string, edgeproxy bool) *harness.Result {
	t.Helper()
	ns := netns.New(t)
	testutil.NeedTool(t, "taskset", "util-linux")
	prev := nsSpawn
	nsSpawn = ns.Go
	t.Cleanup(func() { nsSpawn = prev })
	c := &harness.Ctx{Mode: harness.Mode{Tiny: true}, Dir: t.TempDir(), Log: t.Logf}
	if edgeproxy {
		c.Edgeproxy = filepath.Join(c.Dir, "edgeproxy")
		if out, err := exec.Command("go", "build", "-o", c.Edgeproxy, "github.com/edgeproxy/edgeproxy/cmd/edgeproxy").CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	var s *harness.Scenario
	for _, sc := range harness.Scenarios() {
		if sc.Name == name {
			s = &sc
		}
	}
	if s == nil {
		t.Fatalf("no scenario %s", name)
	}
	r := harness.NewResult(*s, c.Mode)
	if err := s.Run(c, r); err != nil {
		t.Fatal(err)
	}
	r.Finish()
	if r.Primary == "" || r.Title == "" || r.Unit == "" {
		t.Fatalf("primary %q, title %q, unit %q", r.Primary, r.Title, r.Unit)
	}
	for _, sys := range r.Systems {
		v, ok := r.Summary[sys][r.Primary]
		switch {
		case !ok || math.IsNaN(v) || math.IsInf(v, 0):
			t.Errorf("%s: no %s (%v)", sys, r.Primary, r.Summary[sys])
		case r.Primary == harness.Failed && v != 0:
			t.Errorf("%s: %s = %v, want 0 (%v)", sys, r.Primary, v, r.Summary[sys])
		case r.Primary != harness.Failed && v <= 0:
			t.Errorf("%s: %s = %v, want > 0", sys, r.Primary, v)
		}
	}
	t.Logf("%s: %v", name, r.Summary)
	return r
}

func TestDispatchLookupTiny(t *testing.T) {
	r := dispRunTiny(t, "dispatch-lookup", false)
	if len(r.Systems) != 2 || r.Systems[0] != "repeated" {
		t.Errorf("systems %v", r.Systems)
	}
}

func TestDispatchWritesTiny(t *testing.T) { dispRunTiny(t, "dispatch-writes", false) }

func TestDispatchConnRateTiny(t *testing.T) {
	r := dispRunTiny(t, "dispatch-connrate", false)
	if len(r.Systems) != 3 {
		t.Errorf("systems %v", r.Systems)
	}
}
