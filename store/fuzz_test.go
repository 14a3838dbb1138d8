package store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// FuzzImport: a JSON store is imported as the items it holds, read back
// the same from the database, or refused with an error naming the store
// and left as it was; never a panic, never half an import.
func FuzzImport(f *testing.F) {
	f.Add([]byte(`{"version":1,"prefixes":[{"cidr":"192.0.2.0/24","service_id":"cdn"}],"bindings":[{"cidr":"192.0.2.0/25","service_id":"spectrum"},{"cidr":"192.0.2.200/32","protocol":"tcp","port":443,"service_id":"cdn"}]}`))
	f.Add([]byte(`{"version":1,"prefixes":[],"bindings":[]}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"prefixes":[{"cidr":"2001:db8::/48","service_id":"magic-transit"}]} {}`))
	f.Add([]byte(`{"version":1,"bindings":[{"cidr":"192.0.2.1/32","protocol":"udp","service_id":"cdn"}]}`))
	f.Add([]byte(`{"version":1,"prefixes":[{"cidr":"192.0.2.0/24","service_id":"cdn","extra":1}]}`))
	f.Add([]byte(oldStore))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || data[0] != '{' {
			return // not a JSON store: bbolt's to refuse
		}
		path := filepath.Join(t.TempDir(), "bindings.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		want, jerr := readJSON(path)
		s, err := Open(path, Options{Prefixes: []bindings.Prefix{cfgPrefix}})
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("the error does not name the store: %v", err)
			}
			if b, _ := os.ReadFile(path); string(b) != string(data) {
				t.Fatal("a refused import changed the JSON store")
			}
			if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
				t.Fatalf("a refused import left files: %v", entries)
			}
			return
		}
		defer s.Close()
		if jerr != nil {
			t.Fatalf("imported a store that does not read: %v", jerr)
		}
		got, rev, err := s.Load()
		if err != nil || rev != 1 {
			t.Fatalf("the imported store: revision %d, %v", rev, err)
		}
		want = dedup(want, cfgPrefix)
		if d := diffStates(want, got); d != "" {
			t.Fatalf("imported (-want +got):\n%s", d)
		}
	})
}

// dedup returns st as the database holds it: bindings outside st's
// prefixes inside cfg, and of the items of one key the last.
func dedup(st *bindings.State, cfg bindings.Prefix) *bindings.State {
	out := &bindings.State{}
	seen := map[string]int{}
	for _, p := range st.Prefixes {
		k := bindings.EncodePrefix(p).Key
		if i, ok := seen[k]; ok {
			out.Prefixes[i] = p
			continue
		}
		seen[k] = len(out.Prefixes)
		out.Prefixes = append(out.Prefixes, p)
	}
	for _, b := range st.Bindings {
		if b.PrefixID == "" {
			b.PrefixID = cfg.ID
		}
		k := bindings.EncodeBinding(b).Key
		if i, ok := seen[k]; ok {
			out.Bindings[i] = b
			continue
		}
		seen[k] = len(out.Bindings)
		out.Bindings = append(out.Bindings, b)
	}
	return out
}
