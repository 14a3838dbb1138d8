package store

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
)

const oldStore = `{"version":1,"prefixes":[
{"cidr":"192.0.2.0/24","service_id":"spectrum"},{"cidr":"2001:db8::/48","service_id":"magic-transit"}
],"bindings":[
{"cidr":"192.0.2.0/25","service_id":"cdn"},{"cidr":"192.0.2.200/32","protocol":"tcp","port":443,"service_id":"cdn"},{"cidr":"198.51.100.0/25","service_id":"spectrum"}
]}
`

// cfgPrefix is a configuration's prefix, holding one of oldStore's bindings.
var cfgPrefix = bindings.NewPrefix(netip.MustParsePrefix("198.51.100.0/24"), bindings.CDN, bindings.FromConfig)

var imported = &bindings.State{
	Prefixes: []bindings.Prefix{p24, p6},
	Bindings: []bindings.Binding{b25, b443, inside(cfgPrefix, bindings.NewBinding(netip.MustParsePrefix("198.51.100.0/25"), 0, 0, bindings.Spectrum, bindings.FromAPI))},
}

// checkImported checks that path holds oldStore imported, and the JSON
// file aside.
func checkImported(t *testing.T, path string) {
	t.Helper()
	s := open(t, path, Options{Prefixes: []bindings.Prefix{cfgPrefix}})
	defer s.Close()
	got, rev, err := s.Load()
	if err != nil || rev != 1 {
		t.Fatalf("imported: revision %d, %v; want 1", rev, err)
	}
	if d := diffStates(imported, got); d != "" {
		t.Errorf("imported (-want +got):\n%s", d)
	}
	audit, err := s.Audit(0, 0)
	if err != nil || len(audit) != 1 || audit[0].Action != "import" || audit[0].Revision != 1 || audit[0].Count != 5 {
		t.Errorf("the import's audit: %+v, %v", audit, err)
	}
	if b, err := os.ReadFile(path + importedSuffix); err != nil || string(b) != oldStore {
		t.Errorf("the JSON store aside: %q, %v", b, err)
	}
	if _, err := os.Stat(path + importSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the import's database left: %v", err)
	}
}

func TestImport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bindings.json")
	os.WriteFile(path, []byte(oldStore), 0o600)
	var log bytes.Buffer
	s, err := Open(path, Options{Prefixes: []bindings.Prefix{cfgPrefix}, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if !strings.Contains(log.String(), "imported the JSON store") || !strings.Contains(log.String(), "bindings=3") {
		t.Errorf("the import's log: %s", log.String())
	}
	checkImported(t, path)
	// A second start imports nothing again.
	checkImported(t, path)
}

// TestImportCrash: a restart after a crash at any step of an import ends
// with the store imported once.
func TestImportCrash(t *testing.T) {
	opts := Options{Prefixes: []bindings.Prefix{cfgPrefix}}
	t.Run("building", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "bindings.json")
		os.WriteFile(path, []byte(oldStore), 0o600)
		os.WriteFile(path+importSuffix, []byte("half a database"), 0o600)
		open(t, path, opts).Close()
		checkImported(t, path)
	})
	t.Run("between the renames", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "bindings.json")
		os.WriteFile(path, []byte(oldStore), 0o600)
		open(t, path, opts).Close() // imported: replay the crash from here
		os.Rename(path, path+importSuffix)
		ro, err := OpenReadOnly(path, 0)
		if err != nil {
			t.Fatal(err)
		}
		if st, rev, err := ro.Load(); err != nil || rev != 1 || len(st.Bindings) != 3 {
			t.Errorf("OpenReadOnly between the renames: %v at %d, %v", st, rev, err)
		}
		ro.Close()
		open(t, path, opts).Close()
		checkImported(t, path)
	})
}

// TestImportRefused: a binding inside no prefix cannot be keyed: the
// import is refused, naming it, and the JSON store stays as it was.
func TestImportRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bindings.json")
	os.WriteFile(path, []byte(oldStore), 0o600)
	_, err := Open(path, Options{})
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "198.51.100.0/25") {
		t.Fatalf("import of an orphan binding: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != oldStore {
		t.Errorf("the JSON store changed: %q", b)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("files left beside the store: %v", entries)
	}
}

func TestImportCorrupt(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{`{"version":1,"prefixes":[`, "corrupt"},
		{`{"version":9,"prefixes":[],"bindings":[]}`, "version 9"},
		{`{"version":1,"prefixes":[{"cidr":"192.0.2.1/24","service_id":"cdn"}],"bindings":[]}`, "prefixes[0]: cidr"},
		{`{"version":1,"prefixes":[],"bindings":[{"cidr":"192.0.2.0/25","service_id":"waf"}]}`, "bindings[0] 192.0.2.0/25: service_id"},
		{`{"version":1,"prefixes":[],"bindings":[],"extra":1}`, "unknown field"},
		{`{"version":1,"prefixes":[],"bindings":[{"cidr":"192.0.2.0/25","port":443,"service_id":"cdn"}]}`, "do not make a port scope"},
	} {
		path := filepath.Join(t.TempDir(), "bindings.json")
		os.WriteFile(path, []byte(tc.body), 0o600)
		_, err := Open(path, Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v, want an error naming the file and %q", tc.body, err, tc.want)
		}
		if b, _ := os.ReadFile(path); string(b) != tc.body {
			t.Errorf("%s: the JSON store changed: %q", tc.body, b)
		}
	}
}

// TestOpenReadOnlyJSON: a JSON store is read as it is, not imported.
func TestOpenReadOnlyJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bindings.json")
	os.WriteFile(path, []byte(oldStore), 0o600)
	s, err := OpenReadOnly(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, rev, err := s.Load()
	if err != nil || rev != 0 || len(st.Prefixes) != 2 || len(st.Bindings) != 3 {
		t.Fatalf("read-only JSON: %v %d %v", st, rev, err)
	}
	if b, _ := os.ReadFile(path); string(b) != oldStore {
		t.Error("OpenReadOnly changed the JSON store")
	}
}
