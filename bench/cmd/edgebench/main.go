// Command edgebench is edgeproxy's benchmarking harness: it runs edgeproxy
// and its peers (nginx, HAProxy, the kernel) side by side, alternating
// rounds, the system under test pinned to CPU 0 and the load to CPU 1, in a
// network namespace of its own, and writes bench/results/.
//
//	edgebench run [-tiny] [-only NAME,...] [-out DIR] [-no-install]
//	edgebench report [-results DIR] [-readme FILE]
//	edgebench load http|tcpconn|udp ...
//
// run ends by refreshing the report: bench/results/summary.md and the
// charts beside it, and, for a full run into bench/results, the README's
// benchmark section. report does that alone, from the JSON already there.
//
// It is a program of its own, not a subcommand of edgeproxy: the edge
// binary carries no load generators, peer configurations or chart drawing,
// and the harness builds the edgeproxy it measures from this tree.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/bench/harness"
	_ "github.com/edgeproxy/edgeproxy/bench/scenarios"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "run":
		os.Exit(run(os.Args[2:]))
	case "report":
		os.Exit(reportCmd(os.Args[2:]))
	case "load":
		os.Exit(loadCmd(os.Args[2:]))
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  edgebench run [-tiny] [-only NAME,...] [-out DIR] [-no-install]   run the scenarios, then refresh the report
  edgebench report [-results DIR] [-readme FILE]                    the summary, charts and README section from the results
  edgebench load http|tcpconn|udp ...                               run a load generator by hand`)
	os.Exit(2)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func run(args []string) int {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	tiny := fs.Bool("tiny", false, "every scenario for about a second, one round (a smoke test)")
	only := fs.String("only", "", "comma-separated scenario names or groups to run (default: all)")
	out := fs.String("out", "bench/results", "where the results go")
	noInstall := fs.Bool("no-install", false, "do not install missing peers")
	profiles := fs.String("profile", "", "profile each system's first measured round with perf into this directory")
	fs.Parse(args)

	var chosen []harness.Scenario
	for _, s := range harness.Scenarios() {
		if *only == "" || slices.Contains(strings.Split(*only, ","), s.Name) || slices.Contains(strings.Split(*only, ","), s.Group) {
			chosen = append(chosen, s)
		}
	}
	if len(chosen) == 0 {
		fmt.Fprintf(os.Stderr, "edgebench: no scenario matches %q\n", *only)
		return 2
	}
	if !*noInstall {
		var needs []string
		for _, s := range chosen {
			needs = append(needs, s.Needs...)
		}
		needs = append(needs, "taskset", "unshare", "ip")
		if *profiles != "" {
			needs = append(needs, "perf")
		}
		if err := harness.Install(logf, needs...); err != nil {
			fmt.Fprintln(os.Stderr, "edgebench:", err)
			return 1
		}
	}
	outDir, err := filepath.Abs(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgebench:", err)
		return 1
	}
	if code, done := harness.InOwnNetns(); done {
		return code
	}
	dir, err := os.MkdirTemp("", "edgebench")
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgebench:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "edgeproxy")
	logf("building edgeproxy")
	version := "dev"
	if b, err := exec.Command("git", "describe", "--tags", "--always", "--dirty").Output(); err == nil {
		version = strings.TrimSpace(string(b))
	}
	if b, err := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", bin, "./cmd/edgeproxy").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "edgebench: build edgeproxy (run from the repository's top): %v\n%s", err, b)
		return 1
	}
	profDir := ""
	if *profiles != "" {
		if profDir, err = filepath.Abs(*profiles); err != nil {
			fmt.Fprintln(os.Stderr, "edgebench:", err)
			return 1
		}
	}
	code := runScenarios(chosen, harness.Mode{Tiny: *tiny}, bin, dir, outDir, profDir)
	if err := writeReport(outDir, runReadme(outDir, *tiny)); err != nil {
		logf("report: %v", err)
		code = 1
	}
	return code
}

// runReadme is the README a run refreshes: the repository's, when the
// results went to its bench/results and the run was a full one (a tiny
// run's figures mean little, and results elsewhere are not the README's).
func runReadme(outDir string, tiny bool) string {
	def, err := filepath.Abs("bench/results")
	if err != nil || outDir != def {
		return ""
	}
	if tiny {
		logf("report: a tiny run leaves README.md as it is (edgebench report updates it)")
		return ""
	}
	if _, err := os.Stat("README.md"); err != nil {
		return ""
	}
	return "README.md"
}

// runScenarios runs each scenario and writes its result; a scenario that
// fails is reported and the others still run.
func runScenarios(chosen []harness.Scenario, mode harness.Mode, bin, dir, outDir, profiles string) int {
	start := time.Now()
	failed := 0
	for i, s := range chosen {
		logf("[%d/%d] %s", i+1, len(chosen), s.Name)
		c := &harness.Ctx{Mode: mode, Edgeproxy: bin, Dir: filepath.Join(dir, s.Name), Log: logf, Profiles: profiles}
		os.MkdirAll(c.Dir, 0o755)
		r := harness.NewResult(s, mode)
		if err := s.Run(c, r); err != nil {
			logf("%s failed: %v", s.Name, err)
			failed++
			continue
		}
		r.Machine.LoadEnd = harness.ReadMachine().LoadStart
		r.Finish()
		p, err := r.Write(outDir)
		if err != nil {
			logf("%s: %v", s.Name, err)
			failed++
			continue
		}
		logf("%s: %s (%.0f s)", s.Name, p, r.Seconds)
	}
	logf("%d scenarios in %s, %d failed", len(chosen), time.Since(start).Round(time.Second), failed)
	if failed > 0 {
		return 1
	}
	return 0
}
