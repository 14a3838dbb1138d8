package scenarios

import (
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bench/harness"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// TestHTTPScenariosTiny runs every http scenario in tiny mode, each in a
// fresh network namespace, and checks that every system has a round with
// its primary metric.
func TestHTTPScenariosTiny(t *testing.T) {
	netns.Require(t)
	for _, p := range []string{"taskset", "nginx", "haproxy", "wrk", "h2load", "openssl"} {
		testutil.NeedTool(t, p, harness.PackageOf(p))
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

// TestRunLoadHung: a load generator that runs past its duration and the
// slack is killed, and the error says it hung (the harness goes on to the
// next scenario rather than waiting for it); a Go system under test then
// leaves its goroutines' stacks in a file.
func TestRunLoadHung(t *testing.T) {
	testutil.NeedTool(t, "taskset", "util-linux")
	defer func(s time.Duration) { loadSlack = s }(loadSlack)
	loadSlack = 200 * time.Millisecond
	start := time.Now()
	_, err := runLoad(100*time.Millisecond, "sleep", "30")
	if !errors.Is(err, errLoadHung) {
		t.Fatalf("runLoad of a program that runs on: %v, want errLoadHung", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("killed after %v", took)
	}
	if _, err := runLoad(time.Second, "true"); err != nil {
		t.Errorf("runLoad of a program that ends: %v", err)
	}

	bin := filepath.Join(t.TempDir(), "sleeper")
	src := filepath.Join(t.TempDir(), "main.go")
	os.WriteFile(src, []byte("package main\n\nimport \"time\"\n\nfunc main() { for { time.Sleep(time.Hour) } }\n"), 0o644)
	if out, err := exec.Command("go", "build", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	p, err := harness.Start("sleeper", harness.SUTCPU, nil, bin)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	time.Sleep(200 * time.Millisecond) // its signal handlers in place
	file := filepath.Join(t.TempDir(), "hung.txt")
	if msg := dumpGoroutines(p, file); !strings.Contains(msg, file) {
		t.Fatalf("dumpGoroutines: %s", msg)
	}
	if b, _ := os.ReadFile(file); !strings.Contains(string(b), "goroutine 1 ") || !strings.Contains(string(b), "main.main") {
		t.Errorf("the dump has no goroutine stacks:\n%s", b)
	}
}
