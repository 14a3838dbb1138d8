//go:build linux

package store

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
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=4m,mode=0700"); err != nil {
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

// TestHostileStoreReadOnly: a store on a read-only filesystem opens
// read-only and loads; a commit that changes nothing succeeds, a change
// fails with ErrReadOnly naming the store, and a directory made writable
// again is noticed (the database reopened read-write) without a restart.
func TestHostileStoreReadOnly(t *testing.T) {
	dir, remount := tmpfs(t)
	path := filepath.Join(dir, "bindings.db")
	s := open(t, path, Options{})
	if err := s.Commit(1, create(p24, p6, b25)); err != nil {
		t.Fatal(err)
	}
	s.Close()

	remount(true)
	s = open(t, path, Options{})
	got, rev, err := s.Load()
	if err != nil || rev != 1 || len(got.Prefixes) != 2 || len(got.Bindings) != 1 {
		t.Fatalf("read-only store: %v at %d, %v", got, rev, err)
	}
	werr := s.Writable()
	if !errors.Is(werr, bindings.ErrReadOnly) || !strings.Contains(werr.Error(), path) || !strings.Contains(werr.Error(), "read-only file system") {
		t.Fatalf("Writable: %v, want ErrReadOnly naming %s and the reason", werr, path)
	}
	if err := s.Commit(2, bindings.Mutation{}); err != nil {
		t.Fatalf("read-only store, nothing changed: %v", err)
	}
	b128 := inside(p24, bindings.NewBinding(netip.MustParsePrefix("192.0.2.128/25"), 0, 0, bindings.CDN, bindings.FromAPI))
	if err := s.Commit(2, create(b128)); !errors.Is(err, bindings.ErrReadOnly) || !strings.Contains(err.Error(), path) {
		t.Fatalf("read-only store, a change: %v, want ErrReadOnly naming the store", err)
	}

	remount(false)
	if err := s.Writable(); err != nil {
		t.Fatalf("writable again: %v", err)
	}
	if err := s.Commit(2, create(b128)); err != nil {
		t.Fatal(err)
	}
	if got, rev, err := s.Load(); err != nil || rev != 2 || len(got.Bindings) != 2 {
		t.Fatalf("after the remount: %v at %d, %v", got, rev, err)
	}

	// The kernel refuses to remount read-only a filesystem where a file is
	// open for writing (the read-write database); a filesystem that goes
	// read-only under it on an error (ext4's errors=remount-ro) makes
	// Commit fail with the system's error, and the store then refuses
	// changes up front until Writable finds it writable again.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got, rev, err := open(t, path, Options{}).Load(); err != nil || rev != 2 || len(got.Bindings) != 2 {
		t.Fatalf("reopened: %v at %d, %v", got, rev, err)
	}
}

// TestHostileStoreReadOnlyMissing: a missing store on a read-only
// filesystem is an empty read-only store, created once it can be written.
func TestHostileStoreReadOnlyMissing(t *testing.T) {
	dir, remount := tmpfs(t)
	path := filepath.Join(dir, "bindings.db")
	remount(true)
	s := open(t, path, Options{})
	if st, rev, err := s.Load(); err != nil || rev != 0 || len(st.Prefixes) != 0 {
		t.Fatalf("missing read-only store: %v at %d, %v", st, rev, err)
	}
	if err := s.Commit(1, create(p24)); !errors.Is(err, bindings.ErrReadOnly) {
		t.Fatalf("commit: %v, want ErrReadOnly", err)
	}
	remount(false)
	if err := s.Commit(1, create(p24)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}

// TestStoreIOErrorsAreIOErrors: a store path that cannot be read is an I/O
// error naming the file.
func TestStoreIOErrorsAreIOErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bindings.db")
	os.Mkdir(path, 0o700) // a directory where the file should be
	_, err := Open(path, Options{})
	if err == nil || !strings.Contains(err.Error(), "read") || !strings.Contains(err.Error(), path) {
		t.Fatalf("unreadable store: %v", err)
	}
}
