//go:build linux

package dispatch

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// The owners of the counter tests beside those of basePolicies.
const (
	ownerOther  Owner = 4 // tcp/80 to the spectrum sockets
	ownerNone   Owner = 5 // serves no port
	ownerNoSock Owner = 6 // tcp/80 to a label without a socket
)

func counterPolicies() map[Owner]Policy {
	p := basePolicies()
	p[ownerOther] = Policy{Kind: PolicyPorts, Ports: map[ProtoPort]string{{TCP, 80}: "spectrum/tcp"}}
	p[ownerNone] = Policy{Kind: PolicyPorts}
	p[ownerNoSock] = Policy{Kind: PolicyPorts, Ports: map[ProtoPort]string{{TCP, 80}: "gone/tcp", {TCP, 81}: "gone/tcp"}}
	p[ownerCDN].Ports[ProtoPort{TCP, 81}] = "gone/tcp"
	return p
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// bindingCounts reads d's binding counters, failing the test on error.
func bindingCounts(t *testing.T, d *Dispatcher) map[BindingKey]BindingCount {
	t.Helper()
	got, err := d.BindingCounters()
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestBindingCountersNested: traffic to nested bindings, an address
// binding and port-scoped bindings inside it, of both families, is charged
// to the binding that owns each packet: steered (a socket, or a pass
// owner's kernel), refused, missed (a label without socket).
func TestBindingCountersNested(t *testing.T) {
	_, d := setup(t)
	for _, fam := range []struct {
		outer, inner  string
		lower, higher netip.Addr
	}{
		{"192.0.2.0/24", "192.0.2.0/25", netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.200")},
		{"2001:db8::/64", "2001:db8::/65", netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::8000:0:0:1")},
	} {
		// No subtests: the namespace is this goroutine's thread's.
		outer := Binding{Prefix: pfx(fam.outer), Owner: ownerCDN}
		steer := Binding{Prefix: pfx(fam.inner), Protocol: TCP, Port: 80, Owner: ownerOther}
		miss := Binding{Prefix: pfx(fam.inner), Protocol: TCP, Port: 81, Owner: ownerCDN}
		refuse := Binding{Prefix: pfx(fam.inner), Protocol: TCP, Port: 22, Owner: ownerNone}
		pass := Binding{Prefix: pfx(fam.inner), Protocol: TCP, Port: 9, Owner: ownerMT}
		if err := d.Replace(&Table{Owners: counterPolicies(), Bindings: []Binding{outer, steer, miss, refuse, pass}}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			dst  netip.Addr
			port uint16
			want string
		}{
			{fam.lower, 80, "spectrum"}, {fam.lower, 80, "spectrum"}, // steer
			{fam.lower, 81, "refuse"},                              // miss: gone/tcp has no socket
			{fam.lower, 22, "refuse"},                              // refuse
			{fam.lower, 9, "refuse"},                               // pass: the kernel, where nothing listens
			{fam.lower, 23, "refuse"},                              // outer refuses
			{fam.higher, 80, "cdn"},                                // outer steers
			{fam.higher, 81, "refuse"}, {fam.higher, 81, "refuse"}, // outer misses
		} {
			if got := ask(t, "tcp", netip.AddrPortFrom(c.dst, c.port)); got != c.want {
				t.Fatalf("tcp %s:%d: %s, want %s", c.dst, c.port, got, c.want)
			}
		}
		got := bindingCounts(t, d)
		for _, w := range []struct {
			b    Binding
			want BindingCount
		}{
			{outer, BindingCount{Steered: 1, Refused: 1, Missed: 2}},
			{steer, BindingCount{Steered: 2}},
			{miss, BindingCount{Missed: 1}},
			{refuse, BindingCount{Refused: 1}},
			{pass, BindingCount{Steered: 1}},
		} {
			if c, ok := got[w.b.Key()]; !ok || c != w.want {
				t.Errorf("%s: %+v (listed: %v), want %+v", w.b, c, ok, w.want)
			}
		}
		if len(got) != 5 {
			t.Errorf("%s: %d bindings counted, want the 5 of the table: %v", fam.outer, len(got), got)
		}
	}
}

// TestBindingCountersNotInherited: a binding that leaves the table frees
// its slot, and a binding that takes the slot later starts at zero, by
// Replace and by Amend in place (whose freed slots wait for a grace
// period); a table beyond the capacity is refused, naming it.
func TestBindingCountersNotInherited(t *testing.T) {
	netns.New(t)
	d := openDispatcher(t, Options{BindingCapacity: 2}) // 4 slots
	serveNamed(t, d, "cdn")
	if err := d.Attach(); err != nil {
		t.Fatal(err)
	}
	x := Binding{Prefix: pfx("192.0.2.0/24"), Owner: ownerCDN}
	y := Binding{Prefix: pfx("198.51.100.0/24"), Owner: ownerCDN}
	z := Binding{Prefix: pfx("203.0.113.0/24"), Owner: ownerCDN}
	w := Binding{Prefix: pfx("2001:db8::/48"), Owner: ownerCDN}
	table := func(bs ...Binding) *Table { return &Table{Owners: basePolicies(), Bindings: bs} }
	replace := func(bs ...Binding) {
		t.Helper()
		if err := d.Replace(table(bs...)); err != nil {
			t.Fatal(err)
		}
	}
	dial := func(n int, dst string) {
		t.Helper()
		for range n {
			if got := ask(t, "tcp", parseDst(t, dst)); got != "cdn" {
				t.Fatalf("%s: %s, want cdn", dst, got)
			}
		}
	}
	slotOf := func(b Binding) uint32 {
		t.Helper()
		u, ok := d.slots.of[bindKeyOf(b)]
		if !ok {
			t.Fatalf("%s has no slot", b)
		}
		return u.slot
	}

	replace(x)
	dial(3, "192.0.2.1:80")
	xs := slotOf(x)
	replace(y)    // x stays in the other generation
	replace(y, z) // x leaves both, the generation written first: z takes its slot
	if _, ok := d.slots.of[bindKeyOf(x)]; ok {
		t.Fatalf("x keeps its slot after leaving both generations")
	}
	if zs := slotOf(z); zs != xs {
		t.Fatalf("z has slot %d, x had %d: the test does not reuse a slot", zs, xs)
	}
	got := bindingCounts(t, d)
	if c := got[z.Key()]; c != (BindingCount{}) {
		t.Errorf("z, in x's old slot: %+v, want zero", c)
	}
	if _, ok := got[x.Key()]; ok || len(got) != 2 {
		t.Errorf("counted %v, want y and z only", got)
	}
	dial(1, "203.0.113.1:80")
	if c := bindingCounts(t, d)[z.Key()]; c != (BindingCount{Steered: 1}) {
		t.Errorf("z after one connection: %+v", c)
	}
	replace(y, w) // w takes a fresh slot, zeroed
	if c := bindingCounts(t, d)[w.Key()]; c != (BindingCount{}) {
		t.Errorf("w, new: %+v, want zero", c)
	}
	dial(1, "[2001:db8::1]:80")
	if c := bindingCounts(t, d)[w.Key()]; c != (BindingCount{Steered: 1}) {
		t.Errorf("w after one connection: %+v", c)
	}

	// In place: a slot freed by Amend waits for a grace period, and is
	// taken, zeroed, once no fresh or free slot is left.
	dial(2, "198.51.100.1:80") // y
	replace(w)                 // z leaves both generations; y stays in the other
	replace(w, y)              // y only in the generation the program reads
	amend := func(remove, add []Binding) {
		t.Helper()
		if err := d.Amend(remove, add); err != nil {
			t.Fatal(err)
		}
	}
	amend([]Binding{y}, nil) // in place: y's slot waits
	amend(nil, []Binding{z}) // takes the free slot
	replace(x, z)            // x takes the last fresh slot
	dial(2, "192.0.2.1:80")
	xs = slotOf(x)
	amend([]Binding{x}, nil) // in place: x's slot waits
	amend(nil, []Binding{y}) // nothing fresh or free: a waiting slot, x's or y's old one
	if ys := slotOf(y); ys != xs {
		t.Fatalf("y has slot %d, x had %d: the test does not reuse a slot freed in place", ys, xs)
	}
	if c := bindingCounts(t, d)[y.Key()]; c != (BindingCount{}) {
		t.Errorf("y, in x's old slot: %+v, want zero", c)
	}
	dial(1, "198.51.100.1:80")
	if c := bindingCounts(t, d)[y.Key()]; c != (BindingCount{Steered: 1}) {
		t.Errorf("y after one connection: %+v", c)
	}
	if err := d.Amend(nil, []Binding{x}); !errors.Is(err, ErrInvalidTable) || !strings.Contains(err.Error(), "binding capacity of 2") {
		t.Errorf("a third binding in place at capacity 2: %v, want ErrInvalidTable naming the capacity", err)
	}

	err := d.Replace(table(x, y, z))
	if !errors.Is(err, ErrInvalidTable) || !strings.Contains(err.Error(), "binding capacity of 2") {
		t.Errorf("3 bindings at capacity 2: %v, want ErrInvalidTable naming the capacity", err)
	}
}

// TestBindingCountersSurvive: a binding's counts survive a Replace that
// keeps it (given to another owner, among other changes), an Amend that
// moves it in place, and a restart that takes the pinned maps over; the
// pinned maps say the same to a reader from outside.
func TestBindingCountersSurvive(t *testing.T) {
	netns.New(t)
	pin := filepath.Join(netns.BPFFS(t), "edgeproxy")
	d, err := Open(Options{PinDir: pin})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { d.Close() }()
	serveNamed(t, d, "cdn")
	serveNamed(t, d, "spectrum")
	if err := d.Attach(); err != nil {
		t.Fatal(err)
	}
	a := Binding{Prefix: pfx("192.0.2.0/24"), Owner: ownerCDN}
	b := Binding{Prefix: pfx("2001:db8::/64"), Protocol: TCP, Port: 80, Owner: ownerCDN}
	c := Binding{Prefix: pfx("198.51.100.0/24"), Owner: ownerCDN}
	if err := d.Replace(&Table{Owners: counterPolicies(), Bindings: []Binding{a, b}}); err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{"192.0.2.1:80", "192.0.2.2:80", "[2001:db8::1]:80"} {
		ask(t, "tcp", parseDst(t, dst))
	}
	a.Owner, b.Owner = ownerOther, ownerNone
	if err := d.Replace(&Table{Owners: counterPolicies(), Bindings: []Binding{a, b, c}}); err != nil {
		t.Fatal(err)
	}
	ask(t, "tcp", parseDst(t, "192.0.2.1:80"))     // steered to spectrum
	ask(t, "tcp", parseDst(t, "[2001:db8::1]:80")) // refused
	want := map[BindingKey]BindingCount{a.Key(): {Steered: 3}, b.Key(): {Steered: 1, Refused: 1}, c.Key(): {}}
	check := func(when string) {
		t.Helper()
		got := bindingCounts(t, d)
		for k, w := range want {
			if got[k] != w {
				t.Errorf("%s: %s: %+v, want %+v", when, k, got[k], w)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d bindings counted, want %d", when, len(got), len(want))
		}
	}
	check("after a Replace that keeps a and b")

	moved := a
	moved.Owner = ownerNoSock
	if err := d.Amend([]Binding{a}, []Binding{moved}); err != nil {
		t.Fatal(err)
	}
	ask(t, "tcp", parseDst(t, "192.0.2.1:80")) // missed: gone/tcp
	want[a.Key()] = BindingCount{Steered: 3, Missed: 1}
	check("after a move in place")

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if d, err = Open(Options{PinDir: pin}); err != nil {
		t.Fatal(err)
	}
	check("after a restart that takes the pinned maps over")
	// Read from outside, while d holds the pin dir.
	if got, err := PinnedBindingCounters(pin); err != nil || !maps.Equal(got, want) {
		t.Errorf("PinnedBindingCounters: %v %v, want %v", got, err, want)
	}
	// The pinned maps keep their capacity; another is refused, naming both.
	d.Close()
	_, err = Open(Options{PinDir: pin, BindingCapacity: 1000})
	if !errors.Is(err, ErrForeign) || !strings.Contains(err.Error(), "binding capacity of 131072, this process asks 1000") {
		t.Errorf("another capacity on the pinned maps: %v", err)
	}
	if d, err = Open(Options{PinDir: pin}); err != nil {
		t.Fatal(err)
	}
}

// TestBindingCapacityBounds: a capacity out of bounds is refused before
// anything loads, naming it; none set is the default.
func TestBindingCapacityBounds(t *testing.T) {
	for _, c := range []int{-1, MaxBindingCapacity + 1} {
		if _, err := Open(Options{BindingCapacity: c}); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("binding capacity %d", c)) {
			t.Errorf("capacity %d: %v, want an error naming it", c, err)
		}
	}
	netns.New(t)
	if d := openDispatcher(t, Options{}); d.BindingCapacity() != DefaultBindingCapacity {
		t.Errorf("no capacity set: %d, want the default %d", d.BindingCapacity(), DefaultBindingCapacity)
	}
}

// TestFullTablesReplaced: with both generations full of different
// bindings, a third full table replaces the older: the generation written
// gives its slots back first.
func TestFullTablesReplaced(t *testing.T) {
	netns.New(t)
	const capacity = 64
	d := openDispatcher(t, Options{BindingCapacity: capacity})
	for round := range 5 {
		tb := &Table{Owners: basePolicies()}
		for i := range capacity {
			a := netip.AddrFrom4([4]byte{10, byte(round), byte(i), 0})
			tb.Bindings = append(tb.Bindings, Binding{Prefix: netip.PrefixFrom(a, 24), Owner: ownerCDN})
		}
		if err := d.Replace(tb); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		counts, err := d.BindingCounters()
		if err != nil || len(counts) != capacity {
			t.Fatalf("round %d: %d bindings counted, %v", round, len(counts), err)
		}
	}
}
