package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// binary is the edgeproxy binary the tests run, built once.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edgeproxy-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "edgeproxy")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build edgeproxy: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runBinary runs edgeproxy and returns its output and exit code.
func runBinary(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "edgeproxy.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheck(t *testing.T) {
	good := writeFile(t, "prefixes: [{cidr: 192.0.2.0/24, service: cdn}]\n")
	out, _, code := runBinary(t, "check", "--config", good)
	if code != 0 || !strings.Contains(out, "ok (1 prefixes") {
		t.Errorf("valid file: exit %d, %q", code, out)
	}
	bad := writeFile(t, "prefixes: [{cidr: 192.0.2.0/24, service: cdn}]\nbindings: [{cidr: 192.0.2.0/25, service: magic-transit}]\n")
	_, errOut, code := runBinary(t, "check", "--config", bad)
	if code != 1 || !strings.Contains(errOut, "binding 192.0.2.0/25") || !strings.Contains(errOut, "magic-transit can only be the default") {
		t.Errorf("invalid file: exit %d, %q", code, errOut)
	}
	_, _, code = runBinary(t, "check")
	if code != 2 {
		t.Errorf("no --config: exit %d, want 2", code)
	}
	_, _, code = runBinary(t, "frobnicate")
	if code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
	out, _, code = runBinary(t, "version")
	if code != 0 || !strings.HasPrefix(out, "edgeproxy ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
}

// TestRunEntersNetns: `run --config` with dispatch.netns, started from the
// original namespace, enters the configured one: its prefix is steered (and,
// without service sockets, refused) there, while other addresses reach the
// host service.
func TestRunEntersNetns(t *testing.T) {
	ns := netns.New(t)
	serveHost(t, 443)
	cfg := writeFile(t, fmt.Sprintf("dispatch: {netns: %q, pin_dir: \"\"}\nstore: {path: \"\"}\nprefixes: [{cidr: 192.0.2.0/24, service: cdn}]\n", ns.Path()))

	// Start it from a goroutine off this thread: in the original namespace.
	cmd := exec.Command(binary, "run", "--config", cfg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	started := make(chan error)
	go func() { started <- cmd.Start() }()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	dst := netip.MustParseAddrPort("192.0.2.1:443")
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := echo.Ask("tcp", dst, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got == echo.Refused {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("192.0.2.1:443 still answers %q: edgeproxy did not steer in this namespace\n%s", got, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, _ := echo.Ask("tcp", netip.MustParseAddrPort("198.51.100.1:443"), time.Second); got != "host" {
		t.Errorf("unbound address: %q, want the host service", got)
	}
}

func serveHost(t *testing.T, port int) {
	ln, err := echo.ListenTCP(fmt.Sprintf("[::]:%d", port), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go echo.ServeTCP(ln, "host")
}
