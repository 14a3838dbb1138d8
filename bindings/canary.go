package bindings

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Staged rollout. A binding may carry one pending canary change: a service
// that only the nodes whose labels match its selector steer by, while the
// others keep the binding's stable form (absent, for a canary create).
// Promote makes the canary the stable form everywhere; rollback drops it.
// Canary changes need a fleet: the store holds the pending change, and
// each node decides by its own labels.

// Canary is a pending canary change: the service, and the label selector
// of the nodes that apply it (every label must match).
type Canary struct {
	Service Service
	Labels  map[string]string
}

// Staged is a binding with a pending canary change: its stable form
// (Service "" for a canary create) and the change.
type Staged struct {
	Stable Binding
	Canary Canary
}

// Selects reports whether nodes labelled labels are in the selector's
// scope.
func Selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func (c Canary) String() string {
	ks := slices.Sorted(maps.Keys(c.Labels))
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = k + "=" + c.Labels[k]
	}
	return fmt.Sprintf("canary to %s on nodes %s", c.Service, strings.Join(s, ","))
}

// SetLabels sets this node's labels, which decide the canary changes it
// applies. Call it before the first change.
func (m *Manager) SetLabels(labels map[string]string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.labels = labels
}

// StagedOf returns the pending canary change of binding id in prefix
// prefixID, if it has one.
func (m *Manager) StagedOf(prefixID, id string) (Staged, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.canaries[BindingKey(prefixID, id)]
	if !ok {
		return Staged{}, false
	}
	return *p, true
}

// effective returns the binding this node steers by for b with pending
// canary c (nil: none), or false when it steers by none.
func (m *Manager) effective(b Binding, c *Canary) (Binding, bool) {
	if c != nil && Selects(c.Labels, m.labels) {
		b.Service = c.Service
		return b, true
	}
	return b, b.Service != ""
}

// checkCanary refuses a canary change where there is no fleet, or with no
// labels to select by.
func (m *Manager) checkCanary(c Canary) error {
	if m.fleet == nil {
		return opErr(KindInvalid, "canary", "canary changes need a fleet (store.etcd): a single node has no other nodes to keep the stable form")
	}
	if len(c.Labels) == 0 {
		return opErr(KindInvalid, "canary", "labels: give at least one label the canary nodes have")
	}
	return nil
}

// refusePending refuses a write to a binding with a pending canary change.
func (m *Manager) refusePending(prefixID, id string) error {
	if p, ok := m.canaries[BindingKey(prefixID, id)]; ok {
		return opErr(KindConflict, "binding_id", "%s has a pending %s: promote or roll it back first", describeBinding(p.Stable), p.Canary)
	}
	return nil
}

// CreateCanary creates a binding that only the nodes c selects steer by.
func (m *Manager) CreateCanary(ctx context.Context, prefixID string, b Binding, c Canary) (Staged, error) {
	b.PrefixID = prefixID
	p := Staged{Stable: b, Canary: c}
	p.Stable.Service = ""
	_, err := m.run(ctx, func() (change, error) {
		if err := m.checkCanary(c); err != nil {
			return change{}, err
		}
		if err := m.refusePending(prefixID, b.ID); err != nil {
			return change{}, err
		}
		// The binding must be valid as the canary nodes steer it.
		probe := b
		probe.Service = c.Service
		if _, err := m.planCreateBinding(probe); err != nil {
			return change{}, err
		}
		after := probe
		return change{mut: Mutation{Create: []Record{EncodeCanary(p.Stable, c)}, Depends: dependsOnPrefix(prefixID), Audit: audit("canary", nil, &after)}}, nil
	})
	return p, err
}

// MoveCanary stages a move of a binding that only the nodes c selects
// apply until it is promoted.
func (m *Manager) MoveCanary(ctx context.Context, prefixID, id string, c Canary) (Staged, error) {
	var p Staged
	_, err := m.run(ctx, func() (change, error) {
		if err := m.checkCanary(c); err != nil {
			return change{}, err
		}
		if err := m.refusePending(prefixID, id); err != nil {
			return change{}, err
		}
		if i, ok := m.prefixPos[prefixID]; ok && m.state.Prefixes[i].DefaultBinding().ID == id {
			return change{}, opErr(KindInvalid, "binding_id", "a canary change applies to a binding, not to a prefix's default binding")
		}
		moved, _, err := m.planMove(prefixID, id, c.Service)
		if err != nil {
			return change{}, err
		}
		stable := m.state.Bindings[m.bindingPos[id]]
		p = Staged{Stable: stable, Canary: c}
		return change{mut: Mutation{Update: []Record{EncodeCanary(stable, c)}, Depends: dependsOnPrefix(prefixID), Audit: audit("canary", &stable, &moved)}}, nil
	})
	return p, err
}

// Promote makes a binding's pending canary change its stable form on every
// node.
func (m *Manager) Promote(ctx context.Context, prefixID, id string) (Binding, error) {
	var b Binding
	_, err := m.run(ctx, func() (change, error) {
		p, ok := m.canaries[BindingKey(prefixID, id)]
		if !ok {
			return change{}, m.noPending(prefixID, id)
		}
		b = p.Stable
		b.Service = p.Canary.Service
		var before *Binding
		if p.Stable.Service != "" {
			before = &p.Stable
		}
		return change{mut: Mutation{Update: []Record{EncodeBinding(b)}, Depends: dependsOnPrefix(prefixID), Audit: audit("promote", before, &b)}}, nil
	})
	return b, err
}

// Rollback drops a binding's pending canary change: the canary nodes
// return to the stable form, and a canary create is gone.
func (m *Manager) Rollback(ctx context.Context, prefixID, id string) (Binding, int64, error) {
	var b Binding
	rev, err := m.run(ctx, func() (change, error) {
		p, ok := m.canaries[BindingKey(prefixID, id)]
		if !ok {
			return change{}, m.noPending(prefixID, id)
		}
		b = p.Stable
		canary := p.Stable
		canary.Service = p.Canary.Service
		if p.Stable.Service == "" {
			return change{mut: Mutation{Delete: []string{BindingKey(prefixID, id)}, Depends: dependsOnPrefix(prefixID), Audit: audit("rollback", &canary, nil)}}, nil
		}
		return change{mut: Mutation{Update: []Record{EncodeBinding(b)}, Depends: dependsOnPrefix(prefixID), Audit: audit("rollback", &canary, &b)}}, nil
	})
	return b, rev, err
}

func (m *Manager) noPending(prefixID, id string) error {
	if _, ok := m.prefixPos[prefixID]; !ok {
		return opErr(KindNotFound, "prefix_id", "no prefix has id %q", prefixID)
	}
	if _, ok := m.bindingPos[id]; !ok {
		return opErr(KindNotFound, "binding_id", "prefix %s has no binding with id %q", prefixID, id)
	}
	return opErr(KindConflict, "binding_id", "binding %s has no pending canary change", id)
}

// Batch creates many bindings as one change, all or nothing: each inside
// the prefix that contains it, the whole state validated at once. Every
// node applies it as one step. It returns the revision of the change.
func (m *Manager) Batch(ctx context.Context, bs []Binding) (int64, error) {
	if len(bs) == 0 {
		return 0, opErr(KindInvalid, "bindings", "the batch is empty")
	}
	return m.run(ctx, func() (change, error) {
		st := m.state.Clone()
		seen := make(map[string]bool, len(bs))
		mut := Mutation{Create: make([]Record, 0, len(bs)), Audit: &AuditEntry{Action: "batch", Count: len(bs)}}
		depends := map[string]bool{}
		for i, b := range bs {
			p, ok := m.idx.containing(b.CIDR, b.CIDR.Bits())
			if !ok {
				return change{}, opErr(KindInvalid, fmt.Sprintf("bindings[%d].cidr", i), "%s is inside no prefix", b.CIDR)
			}
			b.PrefixID, b.Source = p.ID, FromAPI
			switch _, dup := m.bindingPos[b.ID]; {
			case dup || seen[b.ID]:
				return change{}, opErr(KindConflict, fmt.Sprintf("bindings[%d].cidr", i), "%s exists already (id %s)", describeBinding(b), b.ID)
			case b.ID == p.DefaultBinding().ID:
				return change{}, opErr(KindConflict, fmt.Sprintf("bindings[%d].cidr", i), "%s is the prefix's default binding", b.CIDR)
			}
			if err := m.refusePending(p.ID, b.ID); err != nil {
				return change{}, err
			}
			seen[b.ID] = true
			st.Bindings = append(st.Bindings, b)
			mut.Create = append(mut.Create, EncodeBinding(b))
			depends[p.ID] = true
		}
		if err := Validate(st, m.svc, m.guards); err != nil {
			return change{}, err
		}
		for id := range depends {
			mut.Depends = append(mut.Depends, dependsOnPrefix(id)...)
		}
		slices.Sort(mut.Depends)
		return change{mut: mut}, nil
	})
}
