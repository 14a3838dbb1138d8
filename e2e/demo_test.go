package e2e

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// TestDemoPrintedCommands runs the embedded demo, takes the commands it
// prints to try and runs each as pasted, in order, from a directory of
// no significance: each succeeds, but those it says are refused.
func TestDemoPrintedCommands(t *testing.T) {
	testutil.NeedTool(t, "curl", "curl")
	ns := netns.New(t)
	cmd := exec.Command(binary, "run")
	var stdout, stderr testutil.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := testutil.WaitFor(20*time.Second, func() error {
		if !strings.Contains(stdout.String(), "\nstop with Ctrl-C") {
			return errors.New("no banner yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	hc := ns.HTTPClient()
	defer hc.CloseIdleConnections()
	if err := testutil.WaitFor(10*time.Second, func() error { return testutil.Answers(hc, "http://127.0.0.1:9180/readyz", 200) }); err != nil {
		t.Fatalf("the demo did not become ready: %v", err)
	}
	lines := printedTries(t, stdout.String())
	dir := t.TempDir()
	for _, line := range lines {
		run := line
		if strings.HasPrefix(run, "curl ") {
			run = "curl -sS --max-time 5 " + strings.TrimPrefix(run, "curl ")
		}
		c := exec.Command("sh", "-c", run)
		c.Dir = dir
		c.Env = append(os.Environ(), "PATH=/usr/bin:/bin") // this binary is not on it
		out, err := c.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		if want := !strings.Contains(line, "# refused"); (err == nil) != want {
			t.Errorf("the demo's %q: succeeded %v, want %v\n%s", line, err == nil, want, out)
		}
	}
}

// printedTries returns the demo banner's commands to try, whole lines
// with their comments, and checks each runs curl or this binary by its
// absolute path.
func printedTries(t *testing.T, banner string) []string {
	t.Helper()
	_, rest, ok := strings.Cut(banner, "each line pastes as it is):\n")
	if !ok {
		t.Fatalf("the banner has no commands to try:\n%s", banner)
	}
	var lines []string
	for _, l := range strings.Split(rest, "\n") {
		if !strings.HasPrefix(l, "  ") {
			break
		}
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "curl ") && !strings.HasPrefix(l, binary+" ") {
			t.Errorf("the demo's %q runs neither curl nor %s", l, binary)
		}
		lines = append(lines, l)
	}
	if len(lines) < 10 {
		t.Fatalf("the banner prints %d commands:\n%s", len(lines), banner)
	}
	return lines
}

// TestRunNeedsRoot: run as an unprivileged user says it needs root and
// which capabilities, and exits 1, before the kernel refuses in its own
// words.
func TestRunNeedsRoot(t *testing.T) {
	netns.Require(t) // root, to drop to nobody
	setpriv := testutil.NeedTool(t, "setpriv", "util-linux")
	dir, err := os.MkdirTemp("", "edgeproxy-nobody")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	exe := filepath.Join(dir, "edgeproxy")
	if err := copyFile(binary, exe); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"run"}, {"run", "--config", "/nonexistent.yaml"}} {
		cmd := exec.Command(setpriv, append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", exe}, args...)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("%v as nobody: %v, want exit 1\n%s", args, err, out)
		}
		for _, want := range []string{"run needs root", "CAP_BPF", "CAP_NET_ADMIN", "uid 65534"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("%v as nobody: %q lacks %q", args, out, want)
			}
		}
		if strings.Contains(string(out), "MEMLOCK") {
			t.Errorf("%v as nobody: the kernel's words: %q", args, out)
		}
	}
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return fmt.Errorf("copy %s: %w", from, err)
	}
	return dst.Close()
}
