package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/fleettest"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// TestDemoFleet runs make demo-fleet's script as an operator would: it
// waits for what the demo prints, runs the printed probe from node 3 (the
// range refuses), the printed move on node 1 and the probe again (node 3
// now steers it to spectrum, whose origin names the node), docs/fleet.md's
// sessions on node 1, then stops the demo with SIGINT and finds nothing left: no namespace, no process.
func TestDemoFleet(t *testing.T) {
	netns.Require(t)
	testutil.NeedTool(t, fleettest.EtcdPath, "etcd-server")
	for _, n := range demoNamespaces() {
		t.Fatalf("namespace %s exists before the demo: another demo runs", n)
	}
	out := new(testutil.Buffer)
	cmd := exec.Command("bash", "../scripts/demo-fleet.sh", binary)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGTERM)
			<-done
		}
		if t.Failed() {
			t.Logf("the demo printed:\n%s", out.String())
		}
	})
	if err := testutil.WaitFor(15*time.Second, func() error {
		if !strings.Contains(out.String(), "Ctrl-C stops the demo") {
			return errors.New("the demo has not said what to try")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	printed := out.String()
	probe := printedCommand(t, printed, "edgeproxy-demo-3", "dial 192.0.2.130:7000")
	move := printedCommand(t, printed, "edgeproxy-demo-1", "bindings move --wait")
	dir := printedAfter(t, printed, "Logs in ")

	if got, err := runLine(probe); err == nil || !strings.Contains(got, "refused") {
		t.Fatalf("node 3's probe before the move: %q %v, want refused", got, err)
	}
	if got, err := runLine(move); err != nil || !strings.Contains(got, "to spectrum") || !strings.Contains(got, "; active)") {
		t.Fatalf("the move on node 1: %q %v", got, err)
	}
	if got, err := runLine(probe); err != nil || got != "edge-3: hi\n" {
		t.Fatalf("node 3's probe after the move: %q %v, want its origin's answer", got, err)
	}
	fields := strings.Fields(move)
	runFleetExamples(t, fields[len(fields)-2])

	cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("the demo did not stop within 15 s of SIGINT")
	}
	if !strings.Contains(out.String(), "namespaces deleted") {
		t.Errorf("the demo did not say it cleaned up")
	}
	if left := demoNamespaces(); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	if left := demoProcesses(dir); len(left) > 0 {
		t.Errorf("processes left: %v", left)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the demo's directory %s is left: %v", dir, err)
	}
}

// runFleetExamples runs docs/fleet.md's sessions marked as this test runs
// them on node 1 of the demo, in order, id the binding the demo made (5e7c…
// in the doc): each command succeeds, and prints what the doc shows for
// the lines that name the binding.
func runFleetExamples(t *testing.T, id string) {
	t.Helper()
	for _, b := range examplesOf(t, "../docs/fleet.md", "TestDemoFleet") {
		for i := 0; i < len(b.lines); i++ {
			line, ok := strings.CutPrefix(b.lines[i], "$ edgeproxy ")
			if !ok {
				continue
			}
			cmdLine, _, _ := strings.Cut(strings.ReplaceAll(line, "5e7c…", id), "#")
			got, err := runLine("ip netns exec edgeproxy-demo-1 " + binary + " " + cmdLine)
			if err != nil {
				t.Fatalf("%s: %q: %v\n%s", b, line, err, got)
			}
			for ; i+1 < len(b.lines) && !strings.HasPrefix(b.lines[i+1], "$ "); i++ {
				if want := strings.ReplaceAll(b.lines[i+1], "5e7c…", id); strings.Contains(b.lines[i+1], "5e7c…") && !strings.Contains(got, want) {
					t.Errorf("%s: %q printed %q, want %q", b, line, got, want)
				}
			}
		}
	}
}

// printedCommand is the command the demo printed for namespace ns that
// contains what, its comment cut.
func printedCommand(t *testing.T, printed, ns, what string) string {
	t.Helper()
	for _, line := range strings.Split(printed, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "ip netns exec "+ns+" ") && strings.Contains(line, what) {
			cmd, _, _ := strings.Cut(line, "#")
			return strings.TrimSpace(cmd)
		}
	}
	t.Fatalf("the demo printed no command in %s with %q", ns, what)
	return ""
}

// printedAfter is the rest of the printed line after prefix, up to a
// full stop.
func printedAfter(t *testing.T, printed, prefix string) string {
	t.Helper()
	_, rest, ok := strings.Cut(printed, prefix)
	if !ok {
		t.Fatalf("the demo printed no %q", prefix)
	}
	v, _, _ := strings.Cut(rest, "\n")
	return strings.TrimSuffix(strings.Fields(v)[0], ".")
}

// runLine runs a printed command line, returning what it printed.
func runLine(line string) (string, error) {
	b, err := exec.Command("sh", "-c", line).CombinedOutput()
	return string(b), err
}

func demoNamespaces() []string {
	ms, _ := filepath.Glob("/run/netns/edgeproxy-demo-*")
	return ms
}

// demoProcesses lists the processes of the demo: those whose command line
// names its directory or the test binary's demo origin.
func demoProcesses(dir string) []string {
	var left []string
	ps, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range ps {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		cl := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cl, dir) || strings.Contains(cl, binary+" demo-origin") {
			left = append(left, strings.TrimSpace(cl))
		}
	}
	return left
}
