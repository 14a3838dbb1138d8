package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteConfig writes body to edgeproxy.yaml in a directory of the test's
// own and returns its path.
func WriteConfig(tb testing.TB, body string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "edgeproxy.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}
