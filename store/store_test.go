package store

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	bolt "go.etcd.io/bbolt"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

var (
	p24  = bindings.NewPrefix(netip.MustParsePrefix("192.0.2.0/24"), bindings.Spectrum, bindings.FromAPI)
	p6   = bindings.NewPrefix(netip.MustParsePrefix("2001:db8::/48"), bindings.MagicTransit, bindings.FromAPI)
	b25  = inside(p24, bindings.NewBinding(netip.MustParsePrefix("192.0.2.0/25"), 0, 0, bindings.CDN, bindings.FromAPI))
	b443 = inside(p24, bindings.NewBinding(netip.MustParsePrefix("192.0.2.200/32"), dispatch.TCP, 443, bindings.CDN, bindings.FromAPI))
)

func inside(p bindings.Prefix, b bindings.Binding) bindings.Binding {
	b.PrefixID = p.ID
	return b
}

// sorted returns st's items in key order, for comparisons.
func sorted(st *bindings.State) *bindings.State {
	st = st.Clone()
	slices.SortFunc(st.Prefixes, func(a, b bindings.Prefix) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(st.Bindings, func(a, b bindings.Binding) int {
		return cmp.Compare(bindings.EncodeBinding(a).Key, bindings.EncodeBinding(b).Key)
	})
	return st
}

func diffStates(want, got *bindings.State) string {
	return gocmp.Diff(sorted(want), sorted(got), cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Prefix{}))
}

func open(t testing.TB, path string, opts Options) *Bolt {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func create(items ...any) bindings.Mutation {
	var m bindings.Mutation
	for _, it := range items {
		switch it := it.(type) {
		case bindings.Prefix:
			m.Create = append(m.Create, bindings.EncodePrefix(it))
		case bindings.Binding:
			m.Create = append(m.Create, bindings.EncodeBinding(it))
		}
	}
	return m
}

func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sub")
	path := filepath.Join(dir, "bindings.db")
	s := open(t, path, Options{})
	st, rev, err := s.Load()
	if err != nil || rev != 0 || len(st.Prefixes)+len(st.Bindings) != 0 {
		t.Fatalf("new store: %v at %d, %v", st, rev, err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("the store's directory: %v, %v; want mode 0700", fi, err)
	}
	if err := s.Writable(); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(1, create(p24, p6, b25)); err != nil {
		t.Fatal(err)
	}
	moved := b443
	moved.Service = bindings.Spectrum
	m := create(b443)
	m.Delete = []string{bindings.EncodeBinding(b25).Key}
	if err := s.Commit(3, m); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(4, bindings.Mutation{Update: []bindings.Record{bindings.EncodeBinding(moved)}}); err != nil {
		t.Fatal(err)
	}
	want := &bindings.State{Prefixes: []bindings.Prefix{p24, p6}, Bindings: []bindings.Binding{moved}}
	check := func(s *Bolt) {
		t.Helper()
		got, rev, err := s.Load()
		if err != nil || rev != 4 {
			t.Fatalf("Load: revision %d, %v; want 4", rev, err)
		}
		if d := diffStates(want, got); d != "" {
			t.Errorf("Load (-want +got):\n%s", d)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Close then Open in the same process: a live upgrade's hand-over.
	check(open(t, path, Options{}))
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("files beside the store: %v", entries)
	}
}

// TestCommitMismatch: a mutation that does not fit the store (a key to
// create present, one to update or delete absent, an old revision) is
// refused naming the key, and writes nothing.
func TestCommitMismatch(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "bindings.db"), Options{})
	if err := s.Commit(5, create(p24, b25)); err != nil {
		t.Fatal(err)
	}
	absent := bindings.EncodeBinding(b443)
	for _, tc := range []struct {
		rev  int64
		m    bindings.Mutation
		want string
	}{
		{6, create(p6, b25), "create " + bindings.EncodeBinding(b25).Key},
		{6, bindings.Mutation{Update: []bindings.Record{absent}}, "update " + absent.Key},
		{6, bindings.Mutation{Delete: []string{absent.Key}}, "delete " + absent.Key},
		{5, create(p6), "revision 5 is not after the stored revision 5"},
	} {
		err := s.Commit(tc.rev, tc.m)
		if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), s.Path()) {
			t.Errorf("Commit(%d): %v, want ErrMismatch naming the store and %q", tc.rev, err, tc.want)
		}
	}
	got, rev, err := s.Load()
	if err != nil || rev != 5 {
		t.Fatalf("after the refusals: revision %d, %v", rev, err)
	}
	if d := diffStates(&bindings.State{Prefixes: []bindings.Prefix{p24}, Bindings: []bindings.Binding{b25}}, got); d != "" {
		t.Errorf("a refused commit wrote (-want +got):\n%s", d)
	}
}

func TestAudit(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := open(t, filepath.Join(t.TempDir(), "bindings.db"), Options{
		AuditRetention: 5, AuditMaxAge: time.Hour, now: func() time.Time { return now },
	})
	commit := func(rev int64) {
		t.Helper()
		b := inside(p24, bindings.NewBinding(netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(rev)}), 32), 0, 0, bindings.CDN, bindings.FromAPI))
		m := create(b)
		m.Audit = &bindings.AuditEntry{Who: "test", Action: "create", PrefixID: p24.ID, BindingID: b.ID}
		if err := s.Commit(rev, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Commit(1, create(p24)); err != nil { // no audit entry
		t.Fatal(err)
	}
	for rev := int64(2); rev <= 4; rev++ {
		commit(rev)
	}
	all, err := s.Audit(0, 0)
	if err != nil || len(all) != 3 || all[0].Revision != 2 || all[2].Revision != 4 || !all[0].Time.Equal(now) || all[0].Who != "test" {
		t.Fatalf("Audit(0, 0): %+v, %v", all, err)
	}
	if got, _ := s.Audit(2, 1); len(got) != 1 || got[0].Revision != 3 {
		t.Fatalf("Audit(2, 1): %+v", got)
	}

	// The count: never more than the retention after a commit.
	for rev := int64(5); rev <= 60; rev++ {
		commit(rev)
		if got, _ := s.Audit(0, 0); len(got) > 5 || got[len(got)-1].Revision != rev {
			t.Fatalf("after revision %d: %d entries, the last %d", rev, len(got), got[len(got)-1].Revision)
		}
	}
	// The age: entries older than the maximum go, a bounded number per commit.
	now = now.Add(2 * time.Hour)
	commit(61)
	if got, _ := s.Audit(0, 0); len(got) != 1 || got[0].Revision != 61 {
		t.Fatalf("after the entries aged: %+v", got)
	}
}

// TestAuditTrimIsBounded: a commit removes at most auditTrimBatch entries,
// however many are due.
func TestAuditTrimIsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bindings.db")
	s := open(t, path, Options{})
	for rev := int64(1); rev <= 3*auditTrimBatch; rev++ {
		m := bindings.Mutation{Create: []bindings.Record{{Key: bindings.PrefixKey(fmt.Sprint(rev)), Value: []byte("{}")}}, Audit: &bindings.AuditEntry{Action: "create"}}
		if err := s.Commit(rev, m); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = open(t, path, Options{AuditRetention: 1})
	if err := s.Commit(100, create(p24)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Audit(0, 0); len(got) != 2*auditTrimBatch {
		t.Fatalf("one commit left %d of %d entries, want %d", len(got), 3*auditTrimBatch, 2*auditTrimBatch)
	}
}

// TestInUse: a store another Open holds is refused within the timeout,
// naming the pid holding it; read-only too. After Close it opens.
func TestInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bindings.db")
	s := open(t, path, Options{})
	want := fmt.Sprintf("store %s is in use by pid %d", path, os.Getpid())
	for name, openIt := range map[string]func() error{
		"Open": func() error { _, err := Open(path, Options{Timeout: 100 * time.Millisecond}); return err },
		"OpenReadOnly": func() error {
			_, err := OpenReadOnly(path, 100*time.Millisecond)
			return err
		},
	} {
		start := time.Now()
		err := openIt()
		var inUse *InUseError
		if !errors.As(err, &inUse) || err.Error() != want {
			t.Errorf("%s of a held store: %v, want %q", name, err, want)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s waited %v", name, d)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	open(t, path, Options{Timeout: 100 * time.Millisecond})
}

func TestLockHolderMissing(t *testing.T) {
	if pid := dispatch.LockHolder(t.TempDir()); pid != 0 {
		t.Fatalf("LockHolder of an unlocked directory: %d, want 0", pid)
	}
	if err := (&InUseError{Path: "P"}).Error(); err != "store P is in use by another process" {
		t.Fatal(err)
	}
}

// TestCorrupt: a file that is not a database, a database of another
// format or a value that cannot be decoded is an error naming the store
// (and the key).
func TestCorrupt(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	os.WriteFile(garbage, []byte("not a database, and long enough to hold a page header or two ....."), 0o600)
	if _, err := Open(garbage, Options{}); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Errorf("garbage: %v, want an error naming the store", err)
	}

	for _, tc := range []struct {
		name string
		edit func(tx *bolt.Tx) error
		want string
	}{
		{"value", func(tx *bolt.Tx) error {
			return tx.Bucket(itemsBucket).Put([]byte(bindings.PrefixKey(p24.ID)), []byte(`{"v":1,"cidr":"192.0.2.1/24","service_id":"cdn"}`))
		}, bindings.PrefixKey(p24.ID) + ": cidr"},
		{"version", func(tx *bolt.Tx) error {
			return tx.Bucket(itemsBucket).Put([]byte(bindings.PrefixKey(p24.ID)), []byte(`{"v":9}`))
		}, "value format 9"},
		{"key", func(tx *bolt.Tx) error {
			return tx.Bucket(itemsBucket).Put([]byte("other/x"), bindings.EncodePrefix(p24).Value)
		}, "other/x: not a prefix's or a binding's key"},
		{"format", func(tx *bolt.Tx) error { return tx.Bucket(metaBucket).Put(formatKey, u64(7)) }, "format 7"},
		{"revision", func(tx *bolt.Tx) error { return tx.Bucket(metaBucket).Put(revisionKey, []byte("x")) }, "meta/revision"},
	} {
		path := filepath.Join(dir, tc.name+".db")
		s, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(tc.edit); err != nil {
			t.Fatal(err)
		}
		db.Close()
		s, err = Open(path, Options{})
		if err == nil {
			_, _, err = s.Load()
			s.Close()
		}
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming the store and %q", tc.name, err, tc.want)
		}
	}
}

// TestOpenReadOnly: nothing is created for a missing store; a database is
// read; Commit refuses.
func TestOpenReadOnly(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "sub", "bindings.db")
	s, err := OpenReadOnly(missing, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st, rev, err := s.Load(); err != nil || rev != 0 || len(st.Prefixes) != 0 {
		t.Fatalf("missing: %v %d %v", st, rev, err)
	}
	s.Close()
	if _, err := os.Stat(filepath.Dir(missing)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenReadOnly made the directory: %v", err)
	}

	path := filepath.Join(dir, "bindings.db")
	w := open(t, path, Options{})
	if err := w.Commit(1, create(p24, b25)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	s, err = OpenReadOnly(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, rev, err := s.Load()
	if err != nil || rev != 1 || len(st.Prefixes) != 1 || len(st.Bindings) != 1 {
		t.Fatalf("read-only: %v %d %v", st, rev, err)
	}
	for _, err := range []error{s.Writable(), s.Commit(2, create(p6))} {
		if !errors.Is(err, bindings.ErrReadOnly) || !strings.Contains(err.Error(), path) {
			t.Errorf("%v, want ErrReadOnly naming the store", err)
		}
	}
}
