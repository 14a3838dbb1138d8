package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
)

// profile records where the system under test spends CPU 0 while one
// round is measured: perf samples every task on that CPU (the system under
// test runs alone there), with call graphs, and the report is written as
// text beside the results: <dir>/<scenario>-<system>.txt. It returns the
// function that stops the recording and writes the report.
func profile(dir, scenario, system string) (stop func() error, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, scenario+"-"+system+".data")
	rec := exec.Command("perf", "record", "-q", "-F", "499", "-g", "-C", strconv.Itoa(SUTCPU), "-o", data)
	if err := rec.Start(); err != nil {
		return nil, fmt.Errorf("perf record: %w", err)
	}
	return func() error {
		rec.Process.Signal(syscall.SIGINT)
		rec.Wait()
		defer os.Remove(data)
		// Where the time went by program and object (kernel, the binary,
		// libraries), then by function down to 0.3%.
		var out []byte
		for _, sort := range [][]string{{"comm,dso", "0"}, {"comm,dso,symbol", "0.3"}} {
			b, err := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children",
				"--sort", sort[0], "--percent-limit", sort[1], "-g", "none").Output()
			if err != nil {
				return fmt.Errorf("perf report: %w", err)
			}
			out = append(out, b...)
		}
		return os.WriteFile(filepath.Join(dir, scenario+"-"+system+".txt"), out, 0o644)
	}, nil
}
