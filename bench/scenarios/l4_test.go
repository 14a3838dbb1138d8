package scenarios

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/bench/harness"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// TestL4Tiny runs the l4 scenarios in tiny mode in a namespace of their
// own: every system has a round with a finite, positive primary metric
// (direct, which has no proxy CPU, its secondary: its rate). One test, not
// subtests: a subtest's goroutine would not be in the namespace.
func TestL4Tiny(t *testing.T) {
	netns.New(t)
	testutil.NeedTool(t, "taskset", "util-linux")
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
		if missing := l4Missing(s.Needs); missing != "" {
			if os.Getenv("EDGEPROXY_REQUIRE_PRIVILEGES") == "1" {
				t.Errorf("%s: %s (EDGEPROXY_REQUIRE_PRIVILEGES=1)", s.Name, missing)
			} else {
				t.Logf("%s skipped: %s", s.Name, missing)
			}
			continue
		}
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

// l4Missing names what of needs is not installed (nginx: with its stream
// module), or is empty.
func l4Missing(needs []string) string {
	var out []string
	for _, p := range needs {
		if _, err := exec.LookPath(p); err != nil {
			out = append(out, p+" ("+testutil.InstallHint(harness.PackageOf(p))+")")
		} else if p == "nginx" && harness.NginxStreamModule() == "" {
			out = append(out, "nginx's stream module ("+testutil.InstallHint("libnginx-mod-stream")+")")
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "not installed: " + strings.Join(out, ", ")
}
