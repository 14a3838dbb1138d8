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
			if (sys == "direct" || sys == "ceiling") && (metric == harness.CPUPerGB || metric == harness.CPUPerUnit) {
				metric = r.Secondary
			}
			v, ok := r.Summary[sys][metric]
			if !ok || math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
				t.Errorf("%s: %s's %s = %v (%v): want a finite positive number", s.Name, sys, metric, v, r.Summary[sys])
			}
		}
		if s.Name == "l4-tcp-bulk" {
			checkBulkAccount(t, r)
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

// checkBulkAccount holds the bulk scenario's account of the CPUs: every
// system's load CPU busy share in (0, 100], every proxy's CPU-0 time per
// GB at least its own process's, and the note that says what bound it.
func checkBulkAccount(t *testing.T, r *harness.Result) {
	t.Helper()
	for _, sys := range r.Systems {
		m := r.Summary[sys]
		if sys == "ceiling" {
			if !(m[l4SendPerGB] > 0 && m[l4RecvPerGB] > 0 && m[harness.Throughput] > 0) {
				t.Errorf("l4-tcp-bulk: ceiling %v: want its parts and throughput positive", m)
			}
			continue
		}
		if b := m[l4LoadBusy]; !(b > 0 && b <= 100) {
			t.Errorf("l4-tcp-bulk: %s's %s = %v, want (0, 100]", sys, l4LoadBusy, b)
		}
		if sys == "direct" {
			continue
		}
		// Both count 10 ms ticks: a tiny round's 256 MB allows some slack.
		if sut, own := m[l4SUTPerGB], m[harness.CPUPerGB]; !(sut > 0) || sut+0.1 < own {
			t.Errorf("l4-tcp-bulk: %s's %s = %v below its process's %v", sys, l4SUTPerGB, sut, own)
		}
	}
	found := false
	for _, n := range r.Notes {
		if strings.HasPrefix(n, "load CPU busy, medians of the rounds: edgeproxy ") && strings.Contains(n, "; ceiling ") {
			found = true
		}
	}
	if !found {
		t.Errorf("l4-tcp-bulk: no load CPU note in %q", r.Notes)
	}
}
