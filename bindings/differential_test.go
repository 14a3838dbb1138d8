//go:build linux

package bindings_test

import (
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestDifferentialModels: the resolver against the translated table's model,
// on many random states; pure Go, so it runs many probes.
func TestDifferentialModels(t *testing.T) {
	g := newGen(t)
	counts := map[string]int{}
	n := 0
	for range *diffStates * 4 {
		st, svc := g.state()
		table := bindings.Table(st, svc)
		if err := table.Validate(); err != nil {
			t.Fatalf("translation of a valid state is invalid: %v", err)
		}
		for range *diffProbes {
			proto, dst := g.probe(st, svc)
			r := bindings.Resolve(st, svc, proto, dst.Addr(), dst.Port())
			got := outcomeOf(table.Decide(proto, dst))
			if got != string(r.Outcome) {
				t.Fatalf("%s %s: table %s, resolver %s (%s)\nstate %+v\nservices %+v", proto, dst, got, r.Outcome, r.Reason, st, svc)
			}
			counts[got]++
			n++
		}
	}
	outcomeCounts(counts, n, t)
}

// TestDifferentialDataPlane: the whole path, random states applied through
// the manager into a real dispatcher, the resolver against the BPF program
// under BPF_PROG_TEST_RUN, at least 100,000 probes.
func TestDifferentialDataPlane(t *testing.T) {
	netns.New(t)
	d, err := dispatch.Open(dispatch.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, label := range bindings.Labels {
		if label[len(label)-3:] == "tcp" {
			ln, err := echo.ListenTCP("[::]:0", false)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if err := d.Register(label, ln); err != nil {
				t.Fatal(err)
			}
		} else {
			pc, err := echo.ListenUDP("[::]:0")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			if err := d.Register(label, pc); err != nil {
				t.Fatal(err)
			}
		}
	}
	m := bindings.NewManager(d, nil)
	g := newGen(t)
	counts := map[string]int{}
	n := 0
	for range *diffStates {
		st, svc := g.state()
		if err := m.Apply(st, svc, nil); err != nil {
			t.Fatal(err)
		}
		for range *diffProbes {
			proto, dst := g.probe(st, svc)
			r := m.Resolve(proto, dst.Addr(), dst.Port())
			v, err := d.Probe(proto, dst)
			if err != nil {
				t.Fatal(err)
			}
			if got := outcomeOf(v); got != string(r.Outcome) {
				t.Fatalf("%s %s: program %s, resolver %s (%s)\nstate %+v\nservices %+v", proto, dst, got, r.Outcome, r.Reason, st, svc)
			}
			counts[string(r.Outcome)]++
			n++
		}
	}
	if n < 100_000 && !testing.Short() {
		t.Errorf("only %d probes, want at least 100,000", n)
	}
	outcomeCounts(counts, n, t)
}
