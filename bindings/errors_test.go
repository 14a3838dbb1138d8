package bindings_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// TestOneErrorType: a refused operation and a state that breaks rules are
// both a *bindings.Error, with the kind, the field and the reason; a state's
// error lists every problem, and is a conflict if one of them is.
func TestOneErrorType(t *testing.T) {
	m := bindings.NewManager(nil, nil)
	_, err := m.Prefix("x")
	var be *bindings.Error
	if !errors.As(err, &be) || be.Kind != bindings.KindNotFound || be.Field != "prefix_id" || len(be.Problems) != 0 ||
		err.Error() != `prefix_id: no prefix has id "x"` {
		t.Fatalf("Prefix of no id: %#v", err)
	}

	p := bindings.NewPrefix(netip.MustParsePrefix("192.0.2.0/24"), bindings.CDN, bindings.FromConfig)
	q := bindings.NewPrefix(netip.MustParsePrefix("198.51.100.0/25"), "waf", bindings.FromConfig)
	err = bindings.Validate(&bindings.State{Prefixes: []bindings.Prefix{p, p, q}}, bindings.Services{}, nil)
	if !errors.As(err, &be) || be.Kind != bindings.KindConflict || len(be.Problems) < 2 {
		t.Fatalf("Validate: %#v", err)
	}
	first := be.Problems[0]
	if first.Kind != bindings.KindConflict || first.Item != "prefix 192.0.2.0/24 (cdn, from config)" || first.Field != "cidr" ||
		first.Error() != "prefix 192.0.2.0/24 (cdn, from config): cidr: duplicate of prefix 192.0.2.0/24 (cdn, from config)" {
		t.Fatalf("the duplicate: %#v", first)
	}
	if err.Error()[:len(first.Error())+2] != first.Error()+"; " {
		t.Fatalf("Validate's text does not list its problems: %q", err)
	}
	err = bindings.Validate(&bindings.State{Prefixes: []bindings.Prefix{q}}, bindings.Services{}, nil)
	if !errors.As(err, &be) || be.Kind != bindings.KindInvalid || len(be.Problems) == 0 {
		t.Fatalf("Validate without a conflict: %#v", err)
	}
}
