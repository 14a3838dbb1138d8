package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// pinnedConfig is a configuration with pinned state in pin, a spectrum echo
// app on 192.0.2.0/24 tcp/7 to an origin on 127.0.0.1:7007, and the admin
// API on admin.
func pinnedConfig(t *testing.T, pin, admin string) string {
	return testutil.WriteConfig(t, fmt.Sprintf(`shutdown_grace: 1s
admin: {listen: %q}
dispatch: {pin_dir: %q}
store: {path: ""}
prefixes: [{cidr: 192.0.2.0/24, service: spectrum}]
spectrum:
  apps: [{name: echo, protocol: tcp, edge: 192.0.2.0/24, ports: "7", origins: ["127.0.0.1:7007"]}]
`, admin, pin))
}

// startPinned runs `edgeproxy run --config cfg` in the test's namespace,
// its log in a file, and waits until /readyz answers 200.
func startPinned(t *testing.T, ns *netns.NS, cfg, admin string) *exec.Cmd {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "stderr")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(binary, "run", "--config", cfg)
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	hc := ns.HTTPClient()
	if err := testutil.WaitFor(10*time.Second, func() error { return testutil.Answers(hc, "http://"+admin+"/readyz", 200) }); err != nil {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("edgeproxy did not become ready: %v\n%s", err, log)
	}
	return cmd
}

// serving checks that the instance with its admin API on admin still
// serves: a connection steered to its spectrum app answers, /readyz is 200.
func serving(t *testing.T, ns *netns.NS, admin, when string) {
	t.Helper()
	if got := askName(t, "tcp", "192.0.2.1:7"); got != "origin" {
		t.Fatalf("%s: a connection steered to the first instance got %q, want the origin", when, got)
	}
	resp, err := ns.HTTPClient().Get("http://" + admin + "/readyz")
	if err != nil {
		t.Fatalf("%s: readyz: %v", when, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: readyz %d, want 200", when, resp.StatusCode)
	}
}

// TestHostileSecondStartKeepsFirst: `edgeproxy run` started again on the
// pin dir of a running instance — with the admin port the first holds,
// and with a free one — fails at once naming the first's pid, and changes
// nothing: the first keeps its sockets (a steered connection reaches its
// app) and stays ready. `edgeproxy unload` on that pin dir is refused the
// same way while it runs, and works once it has stopped.
func TestHostileSecondStartKeepsFirst(t *testing.T) {
	ns := netns.New(t)
	echo.Start(t, "origin", "127.0.0.1:7007")
	pin := filepath.Join(netns.BPFFS(t), "edgeproxy")
	a := startPinned(t, ns, pinnedConfig(t, pin, "127.0.0.1:9180"), "127.0.0.1:9180")
	serving(t, ns, "127.0.0.1:9180", "before")
	holder := "held by edgeproxy pid " + strconv.Itoa(a.Process.Pid)

	attempts := 2
	if os.Getenv("EDGEPROXY_ATTACK") == "1" {
		attempts = 40
	}
	var took []time.Duration
	for i := range attempts {
		admin := "127.0.0.1:9180" // taken by the first
		if i%2 == 1 {
			admin = "127.0.0.1:9181" // free
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cmd := exec.CommandContext(ctx, binary, "run", "--config", pinnedConfig(t, pin, admin))
		var out strings.Builder
		cmd.Stderr = &out
		start := time.Now()
		err := cmd.Run()
		took = append(took, time.Since(start))
		timedOut := ctx.Err() != nil
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || timedOut {
			t.Fatalf("second start (admin %s): %v (still running after 5 s: it took over)\n%s", admin, err, out.String())
		}
		serving(t, ns, "127.0.0.1:9180", fmt.Sprintf("after second start %d (admin %s)", i, admin))
		if ee.ExitCode() != 1 || !strings.Contains(out.String(), holder) || !strings.Contains(out.String(), pin) {
			t.Fatalf("second start (admin %s): exit %d, %q; want 1 and an error naming %s and %q", admin, ee.ExitCode(), out.String(), pin, holder)
		}
	}
	slices.Sort(took)
	t.Logf("attack: %d second starts on a held pin dir refused, median %v, max %v; the first served after each", attempts, took[len(took)/2], took[len(took)-1])

	out, errOut, code := runBinary(t, "unload", "--pin-dir", pin)
	if code != 1 || !strings.Contains(errOut, holder) {
		t.Fatalf("unload while the first runs: exit %d, %q %q; want 1 naming the holder", code, out, errOut)
	}
	serving(t, ns, "127.0.0.1:9180", "after unload was refused")

	a.Process.Signal(syscall.SIGTERM)
	a.Wait()
	out, errOut, code = runBinary(t, "unload", "--pin-dir", pin)
	if code != 0 || !strings.Contains(out, "removed pinned state") {
		t.Fatalf("unload after the stop: exit %d, %q %q", code, out, errOut)
	}
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after unload: %v", err)
	}
}

// TestHostileUnloadOrdinaryDirectory: `edgeproxy unload --pin-dir DIR` on a
// directory that is not on a bpf filesystem removes nothing, however its
// files are named, says there is nothing to unload and exits 1; on a
// directory that does not exist it says so and exits 0.
func TestHostileUnloadOrdinaryDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	os.Mkdir(dir, 0o700)
	names := []string{"state", "labels", "meta", "sockets", "link", "bind4", "owners"}
	for _, name := range names {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("precious"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, code := runBinary(t, "unload", "--pin-dir", dir)
	if code != 1 || !strings.Contains(errOut, "nothing to unload") || !strings.Contains(errOut, "not a directory on a bpf filesystem") {
		t.Errorf("ordinary directory: exit %d, %q %q; want 1 saying there is nothing to unload", code, out, errOut)
	}
	for _, name := range names {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != "precious" {
			t.Errorf("%s after unload: %q, %v", name, b, err)
		}
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.Mkdir(empty, 0o700)
	if _, _, code := runBinary(t, "unload", "--pin-dir", empty); code != 1 {
		t.Errorf("empty ordinary directory: exit %d, want 1", code)
	}
	if _, err := os.Stat(empty); err != nil {
		t.Errorf("empty ordinary directory removed: %v", err)
	}
	out, errOut, code = runBinary(t, "unload", "--pin-dir", filepath.Join(t.TempDir(), "missing"))
	if code != 0 || !strings.Contains(out, "nothing to unload") {
		t.Errorf("missing directory: exit %d, %q %q; want 0 saying there is nothing to unload", code, out, errOut)
	}
}

// TestDemoPassesHostGuards: the embedded demo onboards 127.1.1.0/24 and
// 127.1.2.0/24, inside lo's 127.0.0.1/8 but not covering 127.0.0.1 itself:
// the host-address guards let it start, and it serves.
func TestDemoPassesHostGuards(t *testing.T) {
	ns := netns.New(t)
	cmd := exec.Command(binary, "run")
	logPath := filepath.Join(t.TempDir(), "stderr")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	hc := ns.HTTPClient()
	if err := testutil.WaitFor(10*time.Second, func() error { return testutil.Answers(hc, "http://127.1.1.7:8080/", 200) }); err != nil {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("the demo does not serve: %v\n%s", err, log)
	}
	if got := askName(t, "tcp", "127.1.2.3:7"); got == echo.Refused || got == "" {
		t.Fatalf("demo spectrum echo: %q", got)
	}
}
