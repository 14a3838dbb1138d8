package testutil

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// NeedTool returns the path of tool, a program a test runs. Without it the
// test skips, or fails under EDGEPROXY_REQUIRE_PRIVILEGES=1 (CI installs
// every tool), saying how to install it: pkg is the Debian package that
// has it, or the whole command that installs it when no package does.
func NeedTool(tb testing.TB, tool, pkg string) string {
	tb.Helper()
	path, err := exec.LookPath(tool)
	if err == nil {
		return path
	}
	msg := tool + " is not installed: " + InstallHint(pkg)
	if os.Getenv("EDGEPROXY_REQUIRE_PRIVILEGES") == "1" {
		tb.Fatalf("%s (EDGEPROXY_REQUIRE_PRIVILEGES=1)", msg)
	}
	tb.Skip(msg)
	return ""
}

// InstallHint says how to install pkg: a Debian package, or a command.
func InstallHint(pkg string) string {
	if strings.Contains(pkg, " ") {
		return pkg
	}
	return "apt-get install -y " + pkg
}
