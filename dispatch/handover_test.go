//go:build linux

package dispatch

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestHandover: a dispatcher opened on the running one's link loads maps of
// its own; until its Attach the running program steers every packet by the
// running table; Attach switches table and sockets in one step and moves
// the pins to its maps; the running one can take the link back (Reclaim)
// and give it again; once the old one closes, the new one steers alone.
func TestHandover(t *testing.T) {
	for _, pinned := range []bool{true, false} {
		name := "unpinned"
		if pinned {
			name = "pinned"
		}
		t.Run(name, func(t *testing.T) { testHandover(t, pinned) })
	}
}

func testHandover(t *testing.T, pinned bool) {
	netns.New(t)
	serveHost(t, "tcp", 443)
	var pin string
	var lock *Lock
	if pinned {
		pin = filepath.Join(netns.BPFFS(t), "edgeproxy")
		var err error
		if lock, err = LockPinDir(pin); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lock.Close() })
	}
	all := parseDst(t, "192.0.2.1:443")
	upper := parseDst(t, "192.0.2.200:443")
	tableA := &Table{Owners: basePolicies(), Bindings: []Binding{{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Owner: ownerCDN}}}
	tableB := &Table{Owners: basePolicies(), Bindings: []Binding{{Prefix: netip.MustParsePrefix("192.0.2.0/25"), Owner: ownerCDN}}}

	old := openDispatcher(t, Options{PinDir: pin, Lock: lock})
	serveNamedSockets(t, old, "old", "cdn")
	if err := old.Replace(tableA); err != nil {
		t.Fatal(err)
	}
	if err := old.Attach(); err != nil {
		t.Fatal(err)
	}
	f, err := old.LinkFile()
	if err != nil {
		t.Fatal(err)
	}
	next := openDispatcher(t, Options{PinDir: pin, Lock: lock, Link: f})
	f.Close()
	if err := next.Replace(tableB); err != nil {
		t.Fatal(err)
	}
	ln, pc := serveNamedSockets(t, next, "new", "cdn")
	expect := func(when, a, b string) {
		t.Helper()
		if got := ask(t, "tcp", all); got != a {
			t.Fatalf("%s: %s got %s, want %s", when, all, got, a)
		}
		if got := ask(t, "tcp", upper); got != b {
			t.Fatalf("%s: %s got %s, want %s", when, upper, got, b)
		}
	}
	expect("before the new one's Attach", "old", "old")
	if pinned {
		expectPins(t, pin, old)
	}

	if err := next.Attach(); err != nil {
		t.Fatal(err)
	}
	expect("after the new one's Attach", "new", "kernel")
	if pinned {
		expectPins(t, pin, next)
	}

	if err := old.Reclaim(); err != nil {
		t.Fatal(err)
	}
	expect("after the old one's Reclaim", "old", "old")
	if pinned {
		expectPins(t, pin, old)
	}

	if err := next.Attach(); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	expect("after the old one closed", "new", "kernel")
	if pinned {
		expectPins(t, pin, next)
	}
	if err := next.Close(); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	pc.Close()
	if pinned {
		expect("after both closed, pinned", "refuse", "kernel")
	} else {
		expect("after both closed, unpinned", "kernel", "kernel")
	}
}

// expectPins checks that every pin in dir names d's map of that name.
func expectPins(t *testing.T, dir string, d *Dispatcher) {
	t.Helper()
	objs, done, err := d.use()
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	for name, m := range objectMaps(objs) {
		pm, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err != nil {
			t.Fatalf("pin %s: %v", name, err)
		}
		want, _ := m.Info()
		have, _ := pm.Info()
		pm.Close()
		wid, _ := want.ID()
		hid, _ := have.ID()
		if wid != hid {
			t.Fatalf("pin %s names map %d, want %d", name, hid, wid)
		}
	}
}

// TestHandoverRemovesPinsOfAnotherLayout: a map pinned by another layout
// (a newer binary's, rolled back from) is removed when the pins move.
func TestHandoverRemovesPinsOfAnotherLayout(t *testing.T) {
	netns.New(t)
	pin := filepath.Join(netns.BPFFS(t), "edgeproxy")
	lock, err := LockPinDir(pin)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	old := openDispatcher(t, Options{PinDir: pin, Lock: lock})
	serveNamedSockets(t, old, "old", "cdn")
	if err := old.Attach(); err != nil {
		t.Fatal(err)
	}
	extra, err := ebpf.NewMap(&ebpf.MapSpec{Name: "binding_stats", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if err := extra.Pin(filepath.Join(pin, "binding_stats")); err != nil {
		t.Fatal(err)
	}
	f, err := old.LinkFile()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	next := openDispatcher(t, Options{PinDir: pin, Lock: lock, Link: f})
	if err := next.Attach(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pin, "binding_stats")); !os.IsNotExist(err) {
		t.Fatalf("the other layout's pin is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(pin, bpf.DispatchMapMeta)); err != nil {
		t.Fatalf("meta pin: %v", err)
	}
}
