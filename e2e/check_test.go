package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
	"github.com/edgeproxy/edgeproxy/store"
)

// TestCheckStore: check validates the store's items together with the
// file's; a store a running node holds is not waited for: check says who
// holds it, that its items were not checked, and exits 0.
func TestCheckStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bindings.db")
	cfg := testutil.WriteConfig(t, fmt.Sprintf("prefixes: [{cidr: 192.0.2.0/24, service: spectrum}]\nstore: {path: %s}\n", path))
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := bindings.NewPrefix(netip.MustParsePrefix("198.51.100.0/24"), bindings.CDN, bindings.FromAPI)
	b := bindings.NewBinding(netip.MustParsePrefix("192.0.2.0/25"), 0, 0, bindings.CDN, bindings.FromAPI)
	b.PrefixID = bindings.PrefixID(netip.MustParsePrefix("192.0.2.0/24"))
	if err := s.Commit(1, bindings.Mutation{Create: []bindings.Record{bindings.EncodePrefix(p), bindings.EncodeBinding(b)}}); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	out, errOut, code := runBinary(t, "check", "--config", cfg)
	want := fmt.Sprintf("store %s is in use by pid %d: its items were not checked", path, os.Getpid())
	if code != 0 || !strings.Contains(out, want) {
		t.Errorf("a held store: exit %d, %q %q; want %q", code, out, errOut, want)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("check waited %v for a held store", d)
	}

	s.Close()
	out, errOut, code = runBinary(t, "check", "--config", cfg)
	if code != 0 || !strings.Contains(out, "store "+path+": ok (1 prefixes, 1 bindings made through the API, at revision 1)") {
		t.Errorf("a free store: exit %d, %q %q", code, out, errOut)
	}

	// The store's items break the file's rules together with it.
	bad := testutil.WriteConfig(t, fmt.Sprintf("prefixes: [{cidr: 192.0.2.0/24, service: spectrum}, {cidr: 198.51.100.0/23, service: cdn}]\nstore: {path: %s}\n", path))
	_, errOut, code = runBinary(t, "check", "--config", bad)
	if code != 1 || !strings.Contains(errOut, path) || !strings.Contains(errOut, "198.51.100.0/24") {
		t.Errorf("items that break the rules: exit %d, %q", code, errOut)
	}
}
