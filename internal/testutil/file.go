package testutil

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// storeKey finds a file's top-level store key.
var storeKey = regexp.MustCompile(`(?m)^store:`)

// WriteConfig writes body to edgeproxy.yaml in a directory of the test's
// own and returns its path. A body without a store key gets a store in
// that directory: no test touches the default store path, the host's.
func WriteConfig(tb testing.TB, body string) string {
	tb.Helper()
	dir := tb.TempDir()
	if !storeKey.MatchString(body) {
		body = "store: {path: " + filepath.Join(dir, "bindings.db") + "}\n" + body
	}
	path := filepath.Join(dir, "edgeproxy.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}
