//go:build linux

package bindings_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// tmpfs mounts a small tmpfs on a temporary directory (root ignores
// permission bits: a read-only store needs a read-only filesystem), and
// returns a function that remounts it read-only (true) or writable.
func tmpfs(t *testing.T) (string, func(ro bool)) {
	t.Helper()
	netns.Require(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir, func(ro bool) {
		t.Helper()
		flags := uintptr(unix.MS_REMOUNT)
		if ro {
			flags |= unix.MS_RDONLY
		}
		if err := unix.Mount("", dir, "", flags, ""); err != nil {
			t.Fatalf("remount (read-only %v): %v", ro, err)
		}
	}
}

// TestHostileStoreReadOnly: a store on a read-only filesystem loads, saving
// what it holds already writes nothing and succeeds (a start or reload that
// changes nothing), saving a change fails with ErrReadOnly naming the
// store, and a directory made writable again is noticed. Temporary files a
// killed writer left are removed; a save that changes nothing does not
// rewrite the file.
func TestHostileStoreReadOnly(t *testing.T) {
	dir, remount := tmpfs(t)
	path := filepath.Join(dir, "bindings.json")
	p24 := bindings.NewPrefix(netip.MustParsePrefix("192.0.2.0/24"), bindings.Spectrum, bindings.FromAPI)
	p6 := bindings.NewPrefix(netip.MustParsePrefix("2001:db8::/48"), bindings.CDN, bindings.FromAPI)
	b25 := bindings.NewBinding(netip.MustParsePrefix("192.0.2.0/25"), 0, 0, bindings.CDN, bindings.FromAPI)
	cfgPrefix := bindings.NewPrefix(netip.MustParsePrefix("198.51.100.0/24"), bindings.CDN, bindings.FromConfig)
	st := &bindings.State{Prefixes: []bindings.Prefix{p24, p6}, Bindings: []bindings.Binding{b25}}
	s := bindings.NewStore(path)
	if _, err := s.Load(); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(st); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)

	// The same items, in another order and beside a config item: nothing
	// to write.
	same := &bindings.State{Prefixes: []bindings.Prefix{cfgPrefix, p6, p24}, Bindings: []bindings.Binding{b25}}
	if err := s.Save(same); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(path); !os.SameFile(before, after) {
		t.Error("a save that changed nothing rewrote the file")
	}

	// A kill -9 in the middle of a write leaves a temporary file.
	stale := filepath.Join(dir, ".bindings.json.tmp-12345")
	os.WriteFile(stale, []byte(`{"version":1,"prefixes":[`), 0o600)
	s = bindings.NewStore(path)
	if _, err := s.Load(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temporary file left: %v", err)
	}

	remount(true)
	s = bindings.NewStore(path)
	got, err := s.Load()
	if err != nil {
		t.Fatalf("read-only store: %v", err)
	}
	if len(got.Prefixes) != 2 || len(got.Bindings) != 1 {
		t.Fatalf("read-only store loaded %v", got)
	}
	werr := s.Writable()
	if !errors.Is(werr, bindings.ErrReadOnly) || !strings.Contains(werr.Error(), path) {
		t.Fatalf("Writable: %v, want ErrReadOnly naming %s", werr, path)
	}
	if err := s.Save(same); err != nil {
		t.Fatalf("read-only store, nothing changed: %v", err)
	}
	more := st.Clone()
	more.Bindings = append(more.Bindings, bindings.NewBinding(netip.MustParsePrefix("192.0.2.128/25"), 0, 0, bindings.CDN, bindings.FromAPI))
	if err := s.Save(more); !errors.Is(err, bindings.ErrReadOnly) || !strings.Contains(err.Error(), path) {
		t.Fatalf("read-only store, a change: %v, want ErrReadOnly naming the store", err)
	}

	remount(false)
	if err := s.Writable(); err != nil {
		t.Fatalf("writable again: %v", err)
	}
	if err := s.Save(more); err != nil {
		t.Fatal(err)
	}
	if got, err := bindings.NewStore(path).Load(); err != nil || len(got.Bindings) != 2 {
		t.Fatalf("after the remount: %v, %v", got, err)
	}

	// Remounted read-only while open: the write fails as an I/O error, and
	// the store then refuses changes up front.
	remount(true)
	if err := s.Save(st); err == nil || !strings.Contains(err.Error(), "read-only file system") {
		t.Fatalf("save after a read-only remount: %v", err)
	}
	if err := s.Writable(); !errors.Is(err, bindings.ErrReadOnly) {
		t.Fatalf("Writable after a failed write: %v", err)
	}
}

// TestStoreIOErrorsAreIOErrors: a store path that cannot be read is an I/O
// error naming the file, not a conflict.
func TestStoreIOErrorsAreIOErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bindings.json")
	os.Mkdir(path, 0o700) // a directory where the file should be
	_, err := bindings.NewStore(path).Load()
	if err == nil || !strings.Contains(err.Error(), "read") || !strings.Contains(err.Error(), path) {
		t.Fatalf("unreadable store: %v", err)
	}
}
