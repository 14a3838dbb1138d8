//go:build linux

package dispatch

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestPinnedRestartKeepsPrefixesClosed: with pinned state, stopping the
// process keeps bound prefixes closed (their sockets are gone, so lookups
// drop instead of reaching a host listener), and the next process takes the
// state over and serves them again.
func TestPinnedRestartKeepsPrefixesClosed(t *testing.T) {
	netns.New(t)
	pin := filepath.Join(netns.BPFFS(t), "edgeproxy")
	serveHost(t, "tcp", 443)
	table := &Table{Owners: basePolicies(), Bindings: []Binding{{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Owner: ownerCDN}}}
	dst := parseDst(t, "192.0.2.1:443")

	// The first process.
	d1, err := Open(Options{PinDir: pin})
	if err != nil {
		t.Fatal(err)
	}
	ln1, pc1 := serveNamedSockets(t, d1, "first", "cdn")
	if err := d1.Replace(table); err != nil {
		t.Fatal(err)
	}
	if err := d1.Attach(); err != nil {
		t.Fatal(err)
	}
	if got := ask(t, "tcp", dst); got != "first" {
		t.Fatalf("first process: got %s", got)
	}
	// It stops: dispatcher closed, sockets closed.
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	ln1.Close()
	pc1.Close()
	if got := ask(t, "tcp", dst); got != "refuse" {
		t.Fatalf("between processes: got %s, want refuse (the prefix stays closed)", got)
	}
	if got := ask(t, "tcp", parseDst(t, "198.51.100.1:443")); got != "kernel" {
		t.Fatalf("between processes, unbound address: got %s, want the host listener", got)
	}

	// The second process takes over: the table holds before it writes one.
	d2 := openDispatcher(t, Options{PinDir: pin})
	serveNamedSockets(t, d2, "second", "cdn")
	if err := d2.Attach(); err != nil {
		t.Fatal(err)
	}
	if got := ask(t, "tcp", dst); got != "second" {
		t.Fatalf("second process before its first Replace: got %s", got)
	}
	table2 := &Table{Owners: basePolicies(), Bindings: []Binding{{Prefix: netip.MustParsePrefix("192.0.2.0/25"), Owner: ownerCDN}}}
	if err := d2.Replace(table2); err != nil {
		t.Fatal(err)
	}
	if got := ask(t, "tcp", parseDst(t, "192.0.2.200:443")); got != "kernel" {
		t.Fatalf("second process after Replace: 192.0.2.200 got %s, want kernel", got)
	}
	if got := ask(t, "tcp", dst); got != "second" {
		t.Fatalf("second process after Replace: got %s", got)
	}

	// Unload opens everything to the kernel again.
	d2.Close()
	if err := Unload(pin); err != nil {
		t.Fatal(err)
	}
	if got := ask(t, "tcp", dst); got != "kernel" {
		t.Fatalf("after unload: got %s, want kernel", got)
	}
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after unload, pin dir: %v", err)
	}
}

// serveNamedSockets is serveNamed with the sockets returned, registered under
// label+"/tcp" and label+"/udp" but answering as name.
func serveNamedSockets(t *testing.T, d *Dispatcher, name, label string) (interface{ Close() error }, interface{ Close() error }) {
	t.Helper()
	ln, pc := listenNamed(t, name)
	if err := d.Register(label+"/tcp", ln); err != nil {
		t.Fatal(err)
	}
	if err := d.Register(label+"/udp", pc); err != nil {
		t.Fatal(err)
	}
	return ln, pc
}

// TestPinnedStaleAndForeign: pinned state of another schema, or objects that
// are not ours, stop Open with an error that says so.
func TestPinnedStaleAndForeign(t *testing.T) {
	netns.New(t)
	root := netns.BPFFS(t)

	stale := filepath.Join(root, "stale")
	d, err := Open(Options{PinDir: stale})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Attach(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	meta, err := ebpf.LoadPinnedMap(filepath.Join(stale, "meta"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := meta.Put(uint32(0), &bpf.DispatchMeta{Magic: metaMagic, Schema: 9999}); err != nil {
		t.Fatal(err)
	}
	meta.Close()
	if _, err := Open(Options{PinDir: stale}); !errors.Is(err, ErrStale) {
		t.Fatalf("stale schema: got %v, want ErrStale", err)
	}
	if err := Unload(stale); err != nil {
		t.Fatal(err)
	}

	foreign := filepath.Join(root, "foreign")
	os.MkdirAll(foreign, 0o700)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Pin(filepath.Join(foreign, "bind4")); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if _, err := Open(Options{PinDir: foreign}); !errors.Is(err, ErrForeign) {
		t.Fatalf("foreign map: got %v, want ErrForeign", err)
	}

	notBPF := t.TempDir()
	if _, err := Open(Options{PinDir: notBPF}); err == nil {
		t.Fatal("pin dir outside bpffs: no error")
	}
}

// TestAttachRefusesSecondProgram: two dispatchers in one namespace would
// fight over every lookup; the second is refused.
func TestAttachRefusesSecondProgram(t *testing.T) {
	netns.New(t)
	d1 := openDispatcher(t, Options{})
	if err := d1.Attach(); err != nil {
		t.Fatal(err)
	}
	d2 := openDispatcher(t, Options{})
	if err := d2.Attach(); !errors.Is(err, ErrForeign) {
		t.Fatalf("second attach: got %v, want ErrForeign", err)
	}
}

// TestReplaceIsAtomic flips an address between two owners while probes run
// on another thread: every probe must see one table or the other, never a
// refusal or the kernel in between. Moving to spectrum needs its app entry
// and the binding's new owner at once, so a write-in-place would show
// refusals.
func TestReplaceIsAtomic(t *testing.T) {
	_, d := setup(t)
	p24 := netip.MustParsePrefix("192.0.2.0/24")
	toCDN := &Table{Owners: basePolicies(), Bindings: []Binding{{Prefix: p24, Owner: ownerCDN}}}
	toSpectrum := &Table{Owners: basePolicies(),
		Bindings: []Binding{{Prefix: p24, Owner: ownerSpectrum}},
		Apps:     []App{{Owner: ownerSpectrum, Protocol: TCP, Edge: p24, Ports: PortRange{443, 443}, Label: "spectrum/tcp"}},
	}
	dst := parseDst(t, "192.0.2.9:443")
	// A table before the probes start: with none, the kernel decides.
	if err := d.Replace(toCDN); err != nil {
		t.Fatal(err)
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	var probes, bad atomic.Int64
	var firstBad atomic.Value
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				v, err := d.Probe(TCP, dst)
				probes.Add(1)
				if err != nil || v.Action != Steer {
					bad.Add(1)
					firstBad.CompareAndSwap(nil, fmt.Sprint(v, err))
				}
			}
		}()
	}
	for i := range 200 {
		tb := toSpectrum
		if i%2 == 1 {
			tb = toCDN
		}
		if err := d.Replace(tb); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d probes during 200 replaces", probes.Load())
	if bad.Load() > 0 {
		t.Fatalf("%d of %d probes saw neither table (first: %v)", bad.Load(), probes.Load(), firstBad.Load())
	}
}
