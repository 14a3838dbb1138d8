package e2e

import (
	"os"
	"strings"
	"testing"
)

// TestSystemdUnit: the unit docs/operations.md ships runs the binary as a
// Type=notify service (what TestSystemdNotify proves it speaks), reloads
// by SIGHUP, and gives the drain more time than shutdown_grace's default,
// with commands this binary has.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("../docs/edgeproxy.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			unit[k] = v
		}
	}
	for k, want := range map[string]string{
		"Type":           "notify",
		"NotifyAccess":   "all",
		"ExecReload":     "/bin/kill -HUP $MAINPID",
		"KillSignal":     "SIGTERM",
		"ExecStart":      "/usr/local/bin/edgeproxy run --config /etc/edgeproxy/edgeproxy.yaml",
		"ExecStartPre":   "/usr/local/bin/edgeproxy check --config /etc/edgeproxy/edgeproxy.yaml",
		"TimeoutStopSec": "45s",
	} {
		if unit[k] != want {
			t.Errorf("%s=%q, want %q", k, unit[k], want)
		}
	}
	// The commands it runs exist, with those flags.
	for _, args := range [][]string{{"run", "--help"}, {"check", "--help"}} {
		if out, _, code := runBinary(t, args...); !strings.Contains(out, "-config") || code != 0 {
			t.Errorf("edgeproxy %s: exit %d, %q: no --config flag", strings.Join(args, " "), code, out)
		}
	}
}
