package scenarios

import (
	"math"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/bench/harness"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestHTTPScenariosTiny runs every http scenario in tiny mode, each in a
// fresh network namespace, and checks that every system has a round with
// its primary metric.
func TestHTTPScenariosTiny(t *testing.T) {
	netns.Require(t)
	for _, p := range []string{"taskset", "nginx", "haproxy", "wrk", "h2load", "openssl"} {
		netns.RequireCommand(t, p)
	}
	bin := filepath.Join(t.TempDir(), "edgeproxy")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/edgeproxy").CombinedOutput(); err != nil {
		t.Fatalf("build edgeproxy: %v\n%s", err, out)
	}
	n := 0
	for _, s := range harness.Scenarios() {
		if s.Group != "http" {
			continue
		}
		n++
		t.Run(s.Name, func(t *testing.T) {
			netns.New(t)
			c := &harness.Ctx{Mode: harness.Mode{Tiny: true}, Edgeproxy: bin, Dir: t.TempDir(), Log: t.Logf}
			r := harness.NewResult(s, c.Mode)
			if err := s.Run(c, r); err != nil {
				t.Fatal(err)
			}
			r.Finish()
			checkResult(t, r)
		})
	}
	if n == 0 {
		t.Fatal("no http scenario registered")
	}
}

// checkResult checks that r has a title, unit and primary metric, that
// edgeproxy is its first system, and that every system's primary metric is
// a finite number: positive, but for memory (a small tiny-mode growth may
// round to nothing).
func checkResult(t *testing.T, r *harness.Result) {
	t.Helper()
	if r.Title == "" || r.Unit == "" || r.Primary == "" {
		t.Errorf("title %q, unit %q, primary %q: all are needed", r.Title, r.Unit, r.Primary)
	}
	if len(r.Systems) == 0 || !strings.HasPrefix(r.Systems[0], "edgeproxy") {
		t.Errorf("systems %v: edgeproxy comes first", r.Systems)
	}
	for _, sys := range r.Systems {
		v, ok := r.Summary[sys][r.Primary]
		switch {
		case !ok || math.IsNaN(v) || math.IsInf(v, 0):
			t.Errorf("%s: no %s in %v", sys, r.Primary, r.Summary[sys])
		case v <= 0 && !strings.HasPrefix(r.Primary, harness.MemPerConn):
			t.Errorf("%s: %s = %v", sys, r.Primary, v)
		}
		t.Logf("%s: %v", sys, r.Summary[sys])
	}
	if len(r.Params) > 0 {
		t.Logf("params: %v", r.Params)
	}
}
