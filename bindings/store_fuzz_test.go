package bindings

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzStoreLoad: a store file is read back either as a state that writes
// out and reads back the same, or refused with an error naming the store;
// never a panic, never half a state.
func FuzzStoreLoad(f *testing.F) {
	f.Add([]byte(`{"version":1,"prefixes":[{"cidr":"192.0.2.0/24","service_id":"cdn"}],"bindings":[{"cidr":"192.0.2.0/25","service_id":"spectrum"},{"cidr":"192.0.2.200/32","protocol":"tcp","port":443,"service_id":"cdn"}]}`))
	f.Add([]byte(`{"version":1,"prefixes":[],"bindings":[]}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"prefixes":[{"cidr":"2001:db8::/48","service_id":"magic-transit"}]} {}`))
	f.Add([]byte(`{"version":1,"bindings":[{"cidr":"192.0.2.1/32","protocol":"udp","service_id":"cdn"}]}`))
	f.Add([]byte(`{"version":1,"prefixes":[{"cidr":"192.0.2.0/24","service_id":"cdn","extra":1}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "bindings.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := NewStore(path).Load()
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("the error does not name the store: %v", err)
			}
			return
		}
		again := filepath.Join(t.TempDir(), "again.json")
		if err := os.WriteFile(again, encodeState(st), 0o600); err != nil {
			t.Fatal(err)
		}
		st2, err := NewStore(again).Load()
		if err != nil {
			t.Fatalf("a state read from the store does not read back once written: %v\n%s", err, encodeState(st))
		}
		if !reflect.DeepEqual(st, st2) {
			t.Fatalf("read back differs:\n%+v\n%+v", st, st2)
		}
	})
}
