package bindings_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

// sortedState puts a state in a canonical order, to compare states whose
// items were added and removed in different orders.
func sortedState(st *bindings.State) *bindings.State {
	st = st.Clone()
	slices.SortFunc(st.Prefixes, func(a, b bindings.Prefix) int {
		return a.CIDR.Addr().Compare(b.CIDR.Addr())*256 + a.CIDR.Bits() - b.CIDR.Bits()
	})
	slices.SortFunc(st.Bindings, func(a, b bindings.Binding) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return st
}

var stateCmp = []cmp.Option{cmpopts.EquateComparable(netip.Prefix{}), cmpopts.EquateEmpty()}

// TestIncrementalMatchesFull: the admin API's single changes check one item
// against the indexes; validating the whole candidate must come to the same
// decision, and an accepted change must leave exactly that candidate. Random
// sequences of every operation, valid and not, over random states.
func TestIncrementalMatchesFull(t *testing.T) {
	g := newGen(t)
	ops, accepted := 0, 0
	for range 200 {
		st, svc := g.state()
		// Half of the generated items belong to the API, the rest to
		// the configuration.
		for i := range st.Prefixes {
			if g.r.IntN(2) == 0 {
				st.Prefixes[i].Source = bindings.FromAPI
			}
		}
		for i := range st.Bindings {
			if g.r.IntN(2) == 0 {
				st.Bindings[i].Source = bindings.FromAPI
			}
		}
		guards := []bindings.Guard{{Addr: netip.MustParseAddr("192.0.3.77"), What: "a guard"}}
		if bindings.Validate(st, svc, guards) != nil {
			guards = nil
		}
		var m *bindings.Manager
		am := &amender{}
		if g.r.IntN(2) == 0 {
			m = bindings.NewManager(am, nil)
		} else {
			m = bindings.NewManager(&recorder{}, nil)
			am = nil
		}
		if err := m.Apply(st, svc, guards); err != nil {
			t.Fatal(err)
		}
		for range 40 {
			cur, _ := m.Current()
			cand := cur.Clone()
			var err error
			special := false // the operation refuses on its own terms
			op := g.r.IntN(5)
			if op == 1 && len(cur.Prefixes) < 2 {
				op = 0 // keep a prefix for the other operations
			}
			switch op {
			case 0: // create a prefix: sometimes overlapping, sometimes guarded
				base := cur.Prefixes[g.r.IntN(len(cur.Prefixes))].CIDR
				cidr := netip.PrefixFrom(base.Addr(), base.Bits()-2+g.r.IntN(5)).Masked()
				if g.r.IntN(3) == 0 {
					cidr = netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, byte(4 + g.r.IntN(4)), 0}), 22+g.r.IntN(3)).Masked()
				}
				svcID := []bindings.Service{bindings.CDN, bindings.Spectrum, bindings.MagicTransit}[g.r.IntN(3)]
				cand.Prefixes = append(cand.Prefixes, bindings.NewPrefix(cidr, svcID, bindings.FromAPI))
				_, err = m.CreatePrefix(context.Background(), cidr, svcID)
			case 1: // delete a prefix
				p := cur.Prefixes[g.r.IntN(len(cur.Prefixes))]
				cascade := g.r.IntN(2) == 0
				inside := 0
				for _, b := range cur.Bindings {
					if b.PrefixID == p.ID {
						inside++
					}
				}
				special = p.Source != bindings.FromAPI || (inside > 0 && !cascade)
				cand.Prefixes = slices.DeleteFunc(cand.Prefixes, func(q bindings.Prefix) bool { return q.ID == p.ID })
				cand.Bindings = slices.DeleteFunc(cand.Bindings, func(b bindings.Binding) bool { return b.PrefixID == p.ID })
				_, err = m.DeletePrefix(context.Background(), p.ID, cascade)
			case 2: // create a binding, sometimes outside its prefix or unserved
				p := cur.Prefixes[g.r.IntN(len(cur.Prefixes))]
				cidr := g.sub(p.CIDR, 0, 10)
				if g.r.IntN(6) == 0 {
					cidr = g.sub(cur.Prefixes[g.r.IntN(len(cur.Prefixes))].CIDR, 0, 6)
				}
				svcID := []bindings.Service{bindings.CDN, bindings.Spectrum, bindings.MagicTransit}[g.r.IntN(3)]
				var proto dispatch.Protocol
				var port uint16
				if g.r.IntN(2) == 0 {
					proto, port = g.proto(), g.pick(portPool)
				}
				b := bindings.NewBinding(cidr, proto, port, svcID, bindings.FromAPI)
				b.PrefixID = p.ID
				cand.Bindings = append(cand.Bindings, b)
				special = b.ID == p.DefaultBinding().ID
				_, err = m.CreateBinding(context.Background(), p.ID, cidr, proto, port, svcID)
			case 3: // move a binding or a prefix's default
				svcID := []bindings.Service{bindings.CDN, bindings.Spectrum, bindings.MagicTransit}[g.r.IntN(3)]
				if len(cur.Bindings) > 0 && g.r.IntN(3) > 0 {
					i := g.r.IntN(len(cur.Bindings))
					b := cur.Bindings[i]
					special = b.Source != bindings.FromAPI
					cand.Bindings[i].Service = svcID
					_, err = m.MoveBinding(context.Background(), b.PrefixID, b.ID, svcID)
				} else {
					i := g.r.IntN(len(cur.Prefixes))
					p := cur.Prefixes[i]
					special = p.Source != bindings.FromAPI
					cand.Prefixes[i].Service = svcID
					_, err = m.MoveBinding(context.Background(), p.ID, p.DefaultBinding().ID, svcID)
				}
			case 4: // delete a binding or, refused, a default
				if len(cur.Bindings) == 0 || g.r.IntN(5) == 0 {
					p := cur.Prefixes[g.r.IntN(len(cur.Prefixes))]
					special = true
					_, _, err = m.DeleteBinding(context.Background(), p.ID, p.DefaultBinding().ID)
					if err == nil {
						t.Fatal("deleted a default binding alone")
					}
					break
				}
				i := g.r.IntN(len(cur.Bindings))
				b := cur.Bindings[i]
				special = b.Source != bindings.FromAPI
				cand.Bindings = slices.Delete(cand.Bindings, i, i+1)
				_, _, err = m.DeleteBinding(context.Background(), b.PrefixID, b.ID)
			}
			ops++
			after, _ := m.Current()
			if am != nil {
				// The amended data plane holds what the state translates to.
				want := bindings.Table(after, svc).Bindings
				if !sameBindings(am.bindings, want) {
					t.Fatalf("after %v: the amended data plane differs from the state's table", err)
				}
			}
			if special {
				if err == nil && !cmp.Equal(sortedState(cand), sortedState(after), stateCmp...) {
					t.Fatalf("special operation accepted with an unexpected state")
				}
				if err != nil && !cmp.Equal(sortedState(cur), sortedState(after), stateCmp...) {
					t.Fatalf("refused operation changed the state: %v", err)
				}
				continue
			}
			cand.AssignPrefixes()
			full := bindings.Validate(cand, svc, guards)
			if (err == nil) != (full == nil) {
				t.Fatalf("operation: %v; whole candidate: %v", err, full)
			}
			if err == nil {
				accepted++
				if diff := cmp.Diff(sortedState(cand), sortedState(after), stateCmp...); diff != "" {
					t.Fatalf("accepted, but the state is not the candidate (-cand +after):\n%s", diff)
				}
			} else if !cmp.Equal(sortedState(cur), sortedState(after), stateCmp...) {
				t.Fatalf("refused (%v), but the state changed", err)
			}
		}
	}
	t.Logf("%d operations, %d accepted, all as whole validation decides", ops, accepted)
	if accepted < ops/5 || accepted > ops*4/5 {
		t.Errorf("%d of %d accepted: the operations do not exercise both outcomes well", accepted, ops)
	}
}

// amender is an Amender that keeps the bindings it is given.
type amender struct{ bindings map[dispatch.Binding]bool }

func (a *amender) Replace(t *dispatch.Table) error {
	a.bindings = map[dispatch.Binding]bool{}
	for _, b := range t.Bindings {
		a.bindings[b] = true
	}
	return nil
}

func (a *amender) Amend(remove, add []dispatch.Binding) error {
	for _, b := range remove {
		if !a.bindings[b] {
			return errors.New("removing what is not there: " + b.String())
		}
		delete(a.bindings, b)
	}
	for _, b := range add {
		a.bindings[b] = true
	}
	return nil
}

func sameBindings(have map[dispatch.Binding]bool, want []dispatch.Binding) bool {
	if len(have) != len(want) {
		return false
	}
	for _, b := range want {
		if !have[b] {
			return false
		}
	}
	return true
}
