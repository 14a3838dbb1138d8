//go:build linux

package dispatch

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestHostileSecondWriterLocked: a second dispatcher on the same pin dir
// fails at once, naming the holder's pid, and leaves the pinned state as it
// was; once the first closes, the next one takes it.
func TestHostileSecondWriterLocked(t *testing.T) {
	netns.New(t)
	pin := filepath.Join(netns.BPFFS(t), "edgeproxy")
	d1, err := Open(Options{PinDir: pin})
	if err != nil {
		t.Fatal(err)
	}
	defer d1.Close()
	before, _ := os.ReadDir(pin)

	_, err = Open(Options{PinDir: pin})
	var le *LockedError
	if !errors.Is(err, ErrLocked) || !errors.As(err, &le) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if le.PID != os.Getpid() || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second Open names pid %d (%v), want the holder %d", le.PID, err, os.Getpid())
	}
	if _, err := LockPinDir(pin); !errors.Is(err, ErrLocked) {
		t.Fatalf("LockPinDir while held: %v", err)
	}
	if err := Unload(pin); !errors.Is(err, ErrLocked) {
		t.Fatalf("Unload while held: %v, want ErrLocked", err)
	}
	after, _ := os.ReadDir(pin)
	if len(after) != len(before) || len(after) == 0 {
		t.Fatalf("pins before %v, after the refused writers %v", before, after)
	}

	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	d2, err := Open(Options{PinDir: pin})
	if err != nil {
		t.Fatalf("after the holder closed: %v", err)
	}
	d2.Close()
}

// TestLockHandsOver: the lock is a descriptor; a copy of it handed on (as a
// live upgrade hands it to its child) keeps the hold without a gap, and a
// dispatcher opened with a lock the caller holds does not release it.
func TestLockHandsOver(t *testing.T) {
	netns.New(t)
	pin := filepath.Join(netns.BPFFS(t), "edgeproxy")
	l, err := LockPinDir(pin)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(Options{PinDir: pin, Lock: l})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if _, err := LockPinDir(pin); !errors.Is(err, ErrLocked) {
		t.Fatalf("after Close of a dispatcher with the caller's lock: %v, want still locked", err)
	}
	if _, err := Open(Options{PinDir: filepath.Join(filepath.Dir(pin), "other"), Lock: l}); err == nil {
		t.Fatal("Open with a lock on another directory: no error")
	}

	fd, err := unix.Dup(int(l.File().Fd()))
	if err != nil {
		t.Fatal(err)
	}
	child, err := AdoptLock(os.NewFile(uintptr(fd), "lock"), pin)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := LockPinDir(pin); !errors.Is(err, ErrLocked) {
		t.Fatalf("after the parent closed its copy: %v, want held by the child's", err)
	}
	child.Close()
	l2, err := LockPinDir(pin)
	if err != nil {
		t.Fatalf("after both closed: %v", err)
	}
	l2.Close()
	if _, err := AdoptLock(os.Stdin, pin); err == nil {
		t.Fatal("AdoptLock of a descriptor that is not the pin dir: no error")
	}
}

// TestHostileUnloadOrdinaryDirectory: unload on a directory that is not a
// bpffs directory of edgeproxy's pins removes nothing, however its files are
// named; a bpffs directory with pins of other layouts under edgeproxy's
// names is refused too.
func TestHostileUnloadOrdinaryDirectory(t *testing.T) {
	netns.New(t)
	dir := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(dir, 0o700)
	for _, name := range pinnedMaps() {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("precious"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	err := Unload(dir)
	if !errors.Is(err, ErrForeign) || !strings.Contains(err.Error(), "nothing to unload") {
		t.Fatalf("ordinary directory: %v, want a refusal saying there is nothing to unload", err)
	}
	if des, _ := os.ReadDir(dir); len(des) != len(pinnedMaps()) {
		t.Fatalf("ordinary directory: %d of %d files left", len(des), len(pinnedMaps()))
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.MkdirAll(empty, 0o700)
	if err := Unload(empty); !errors.Is(err, ErrForeign) {
		t.Fatalf("empty ordinary directory: %v", err)
	}
	if _, err := os.Stat(empty); err != nil {
		t.Fatalf("empty ordinary directory removed: %v", err)
	}
	if err := Unload(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, ErrNothingPinned) {
		t.Fatalf("missing directory: %v, want ErrNothingPinned", err)
	}

	root := netns.BPFFS(t)
	os.Mkdir(filepath.Join(root, "empty"), 0o700)
	if err := Unload(filepath.Join(root, "empty")); !errors.Is(err, ErrNothingPinned) {
		t.Fatalf("empty bpffs directory: %v, want ErrNothingPinned", err)
	}
	foreign := filepath.Join(root, "foreign")
	os.MkdirAll(foreign, 0o700)
	for _, name := range []string{"state", "labels"} {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 8, MaxEntries: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Pin(filepath.Join(foreign, name)); err != nil {
			t.Fatal(err)
		}
		m.Close()
	}
	if err := Unload(foreign); !errors.Is(err, ErrForeign) {
		t.Fatalf("foreign pins under edgeproxy's names: %v, want ErrForeign", err)
	}
	if des, _ := os.ReadDir(foreign); len(des) != 2 {
		t.Fatalf("foreign pins: %d of 2 left", len(des))
	}
	os.Mkdir(filepath.Join(root, "mixed"), 0o700)
	os.Mkdir(filepath.Join(root, "mixed", "sub"), 0o700)
	if err := Unload(filepath.Join(root, "mixed")); !errors.Is(err, ErrForeign) {
		t.Fatalf("a directory holding a directory: %v, want ErrForeign", err)
	}

	// edgeproxy's own pins are removed, half-way through a first start
	// (meta not yet written) and attached.
	for _, attach := range []bool{false, true} {
		pin := filepath.Join(root, "edgeproxy"+strconv.FormatBool(attach))
		d, err := Open(Options{PinDir: pin})
		if err != nil {
			t.Fatal(err)
		}
		if attach {
			if err := d.Attach(); err != nil {
				t.Fatal(err)
			}
		}
		d.Close()
		if !attach {
			meta, err := ebpf.LoadPinnedMap(filepath.Join(pin, "meta"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := meta.Put(uint32(0), &bpf.DispatchMeta{}); err != nil {
				t.Fatal(err)
			}
			meta.Close()
		}
		if err := Unload(pin); err != nil {
			t.Fatalf("edgeproxy's pins (attached %v): %v", attach, err)
		}
		if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("after unload: %v", err)
		}
	}
}
