package e2e

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestCIStopsNothingByName: CI shares its machine, so .ci/run may stop only
// what it started itself, never a process by name (pkill, killall, pidof,
// pgrep), and keeps the packages it installs from starting their services
// at all (a policy-rc.d that refuses, removed again afterwards).
func TestCIStopsNothingByName(t *testing.T) {
	b, err := os.ReadFile("../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	byName := regexp.MustCompile(`(^|[^a-z_-])(pkill|killall|pidof|pgrep)([^a-z_-]|$)`)
	for i, line := range strings.Split(string(b), "\n") {
		code, _, _ := strings.Cut(line, "#")
		if byName.MatchString(code) {
			t.Errorf(".ci/run:%d stops processes by name: %s", i+1, strings.TrimSpace(line))
		}
	}
	s := string(b)
	install := strings.Index(s, "apt-get install")
	guard := strings.Index(s, "policy-rc.d")
	if install < 0 || guard < 0 || guard > install {
		t.Errorf(".ci/run installs packages without a policy-rc.d in place first: their services would start")
	}
	if !strings.Contains(s, "exit 101") {
		t.Errorf(".ci/run's policy-rc.d does not refuse (exit 101)")
	}
}
