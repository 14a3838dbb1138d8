package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Mode is how big a run is. Tiny runs every scenario for about a second,
// one round, no warm-up: `go test ./bench/...` keeps the harness working
// with it. The full run is `make bench`.
type Mode struct {
	Tiny bool
}

// Rounds is the number of measured rounds of each system.
func (m Mode) Rounds() int {
	if m.Tiny {
		return 1
	}
	return 5
}

// Warmup reports whether a warm-up round (round 0) runs first.
func (m Mode) Warmup() bool { return !m.Tiny }

// D is a duration: full in a full run, a tenth of it (at most 300 ms) in
// a tiny one.
func (m Mode) D(full time.Duration) time.Duration {
	if m.Tiny {
		return min(full/10, 300*time.Millisecond)
	}
	return full
}

// N is a count: full in a full run, tiny in a tiny one.
func (m Mode) N(full, tiny int) int {
	if m.Tiny {
		return tiny
	}
	return full
}

// Ctx is what a scenario runs with.
type Ctx struct {
	Mode      Mode
	Edgeproxy string // the edgeproxy binary under test
	Dir       string // a scratch directory of the run
	Log       func(format string, args ...any)
	// Profiles, when set, is where the first measured round of each
	// system is profiled with perf (CPU 0 only: the system under test).
	Profiles string
}

// Scenario is one comparison: it runs its systems round after round and
// returns its result (Scenario, Title, Group, Unit and Primary set; Finish
// is called by the runner).
type Scenario struct {
	Name  string
	Group string // http, l4, dispatch, change
	// Needs are the programs it runs besides edgeproxy (nginx, haproxy,
	// wrk, h2load, iperf3): Install makes sure they are there.
	Needs []string
	Run   func(c *Ctx, r *Result) error
}

var registry []Scenario

// Register adds a scenario; a package's init calls it.
func Register(s Scenario) { registry = append(registry, s) }

// Scenarios returns the registered scenarios in order.
func Scenarios() []Scenario { return registry }

// NewResult starts the result of scenario s.
func NewResult(s Scenario, m Mode) *Result {
	return &Result{Scenario: s.Name, Group: s.Group, Started: time.Now(), Tiny: m.Tiny,
		Machine: ReadMachine(), Versions: map[string]string{}, Params: map[string]any{}}
}

// Systems is the order systems run in, alternating: A B C A B C …
// measure is called once per system per round (round 0 is the warm-up)
// and returns that round's metrics.
func Alternate(c *Ctx, r *Result, systems []string, measure func(system string, round int) (map[string]float64, error)) error {
	first := 1
	if c.Mode.Warmup() {
		first = 0
	}
	for round := first; round <= c.Mode.Rounds(); round++ {
		for _, sys := range systems {
			c.Log("%s: %s round %d/%d", r.Scenario, sys, round, c.Mode.Rounds())
			var stop func() error
			if c.Profiles != "" && round == 1 {
				var err error
				if stop, err = profile(c.Profiles, r.Scenario, sys); err != nil {
					return err
				}
			}
			m, err := measure(sys, round)
			if stop != nil {
				if perr := stop(); perr != nil {
					c.Log("%s: %s: profile: %v", r.Scenario, sys, perr)
				}
			}
			if err != nil {
				return fmt.Errorf("%s, %s, round %d: %w", r.Scenario, sys, round, err)
			}
			r.Add(sys, round, m)
		}
	}
	return nil
}

// ReadMachine describes this machine now.
func ReadMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), LoadStart: loadAvg()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.Model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return m
}

func loadAvg() [3]float64 {
	var la [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return la
	}
	f := strings.Fields(string(b))
	for i := 0; i < 3 && i < len(f); i++ {
		la[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return la
}

// peers maps a program to the Debian package that brings it.
var peers = map[string]string{
	"nginx":   "nginx", // with libnginx-mod-stream, below
	"haproxy": "haproxy",
	"wrk":     "wrk",
	"h2load":  "nghttp2-client",
	"iperf3":  "iperf3",
	"openssl": "openssl",
	"perf":    "linux-perf",
	"taskset": "util-linux",
	"unshare": "util-linux",
	"ip":      "iproute2",
}

// PackageOf returns the Debian package that brings program ("" for one
// not listed): what a test that needs it says to install.
func PackageOf(program string) string { return peers[program] }

// Install makes sure the programs are on the PATH, installing the missing
// ones from Debian's packages (nginx with its stream module). Packages
// start no services: a policy-rc.d that refuses is in place meanwhile.
func Install(log func(string, ...any), programs ...string) error {
	var pkgs []string
	for _, p := range programs {
		if _, err := exec.LookPath(p); err == nil && p != "nginx" {
			continue
		}
		if p == "nginx" {
			if _, err := exec.LookPath("nginx"); err == nil && nginxHasStream() {
				continue
			}
			pkgs = append(pkgs, "nginx", "libnginx-mod-stream")
			continue
		}
		pkg, ok := peers[p]
		if !ok {
			return fmt.Errorf("no package known for %s", p)
		}
		pkgs = append(pkgs, pkg)
	}
	if len(pkgs) == 0 {
		return nil
	}
	log("installing %s from Debian", strings.Join(pkgs, " "))
	policy := "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); os.IsNotExist(err) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err == nil {
			defer os.Remove(policy)
		}
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	upd := exec.Command("apt-get", "update", "-qq")
	upd.Env = env
	if out, err := upd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get update: %v\n%s", err, out)
	}
	inst := exec.Command("apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends"}, pkgs...)...)
	inst.Env = env
	if out, err := inst.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// nginxHasStream reports whether nginx can load its stream module.
func nginxHasStream() bool {
	m, _ := filepath.Glob("/usr/lib/nginx/modules/ngx_stream_module.so")
	return len(m) > 0
}

// NginxStreamModule is the load_module line nginx needs for stream {}.
func NginxStreamModule() string {
	if nginxHasStream() {
		return "load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
	}
	return ""
}

// Version returns the version a program reports, in one line.
func Version(program string) string {
	var args []string
	switch filepath.Base(program) {
	case "edgeproxy", "openssl":
		args = []string{"version"}
	case "nginx":
		args = []string{"-v"}
	case "haproxy":
		args = []string{"-v"}
	case "wrk":
		args = []string{"--version"}
	case "h2load", "iperf3":
		args = []string{"--version"}
	default:
		args = []string{"--version"}
	}
	out, _ := exec.Command(program, args...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}
