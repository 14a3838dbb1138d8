package bindings

import (
	"cmp"
	"context"
	"net/netip"
	"slices"

	"github.com/edgeproxy/edgeproxy/dispatch"
)

// Merge returns the configuration's items followed by the API's.
func Merge(fromConfig, fromAPI *State) *State {
	return &State{
		Prefixes: append(slices.Clone(fromConfig.Prefixes), fromAPI.Prefixes...),
		Bindings: append(slices.Clone(fromConfig.Bindings), fromAPI.Bindings...),
	}
}

// Split returns the items of st declared by the configuration and those
// made through the API.
func Split(st *State) (fromConfig, fromAPI *State) {
	fromConfig, fromAPI = &State{}, &State{}
	for _, p := range st.Prefixes {
		if p.Source == FromAPI {
			fromAPI.Prefixes = append(fromAPI.Prefixes, p)
		} else {
			fromConfig.Prefixes = append(fromConfig.Prefixes, p)
		}
	}
	for _, b := range st.Bindings {
		if b.Source == FromAPI {
			fromAPI.Bindings = append(fromAPI.Bindings, b)
		} else {
			fromConfig.Bindings = append(fromConfig.Bindings, b)
		}
	}
	return fromConfig, fromAPI
}

// Reconfigure replaces the configuration's items, services and guards and
// keeps the API's items: at start and on reload. A configuration that would
// orphan or invalidate API-made items is refused, naming them; nothing
// changes then.
func (m *Manager) Reconfigure(fromConfig *State, svc Services, guards []Guard) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, api := Split(m.state)
	return m.changeLocked(Merge(fromConfig, api), svc, guards)
}

// Prefixes returns every prefix, in address order.
func (m *Manager) Prefixes() []Prefix {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := slices.Clone(m.state.Prefixes)
	slices.SortFunc(out, func(a, b Prefix) int { return comparePrefix(a.CIDR, b.CIDR) })
	return out
}

// PrefixOf returns the prefix that contains cidr, if one does.
func (m *Manager) PrefixOf(cidr netip.Prefix) (Prefix, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.idx.containing(cidr, cidr.Bits())
}

// Prefix returns the prefix with id.
func (m *Manager) Prefix(id string) (Prefix, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.prefixPos[id]
	if !ok {
		return Prefix{}, opErr(KindNotFound, "prefix_id", "no prefix has id %q", id)
	}
	return m.state.Prefixes[i], nil
}

// Bindings returns the bindings of a prefix, its default binding first, the
// others in address order.
func (m *Manager) Bindings(prefixID string) ([]Binding, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.prefixPos[prefixID]
	if !ok {
		return nil, opErr(KindNotFound, "prefix_id", "no prefix has id %q", prefixID)
	}
	var out []Binding
	for _, b := range m.state.Bindings {
		if b.PrefixID == prefixID {
			out = append(out, b)
		}
	}
	// A canary create is listed on every node, in its stable form (no
	// service), also where it does not steer.
	for _, c := range m.canaries {
		if c.Stable.PrefixID == prefixID && c.Stable.Service == "" {
			if _, ok := m.bindingPos[c.Stable.ID]; !ok {
				out = append(out, c.Stable)
			}
		}
	}
	slices.SortFunc(out, func(a, b Binding) int {
		return cmp.Or(comparePrefix(a.CIDR, b.CIDR), cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port))
	})
	return append([]Binding{m.state.Prefixes[i].DefaultBinding()}, out...), nil
}

// comparePrefix orders prefixes by family, address, then length.
func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// Binding returns one binding of a prefix, which may be its default binding.
func (m *Manager) Binding(prefixID, id string) (Binding, error) {
	bs, err := m.Bindings(prefixID)
	if err != nil {
		return Binding{}, err
	}
	for _, b := range bs {
		if b.ID == id {
			return b, nil
		}
	}
	return Binding{}, opErr(KindNotFound, "binding_id", "prefix %s has no binding with id %q", prefixID, id)
}

// audit returns the audit entry of an action on b, before and after (nil
// where there is none).
func audit(action string, before, after *Binding) *AuditEntry {
	e := &AuditEntry{Action: action}
	for _, b := range []*Binding{before, after} {
		if b != nil {
			e.PrefixID, e.BindingID = b.PrefixID, b.ID
		}
	}
	if before != nil {
		e.Before = auditItem(*before)
	}
	if after != nil {
		e.After = auditItem(*after)
	}
	return e
}

// dependsOnPrefix is what a change inside prefix id reads: the prefix and
// its bindings.
func dependsOnPrefix(id string) []string { return []string{PrefixKey(id), BindingsOf(id)} }

// CreatePrefix onboards a prefix through the API.
func (m *Manager) CreatePrefix(ctx context.Context, cidr netip.Prefix, svc Service) (Prefix, error) {
	p := NewPrefix(cidr, svc, FromAPI)
	_, err := m.run(ctx, func() (change, error) { return m.planCreatePrefix(p) })
	return p, err
}

func (m *Manager) planCreatePrefix(p Prefix) (change, error) {
	if i, ok := m.prefixPos[p.ID]; ok {
		return change{}, opErr(KindConflict, "cidr", "prefix %s already exists (from %s)", p.CIDR, m.state.Prefixes[i].Source)
	}
	var e errList
	checkPrefix(&e, p, m.idx, m.guards)
	cidr := p.CIDR
	for _, q := range m.state.Prefixes {
		if q.CIDR.Addr().Is4() == cidr.Addr().Is4() && q.CIDR.Bits() > cidr.Bits() && cidr.Contains(q.CIDR.Addr()) {
			e.conflict(prefixItem(p), "cidr", "overlaps %s, which it contains", describePrefix(q))
		}
	}
	if err := e.err(); err != nil {
		return change{}, err
	}
	def := p.DefaultBinding()
	return change{
		add:    []dispatch.Binding{dispatchBinding(def)},
		mutate: func() { m.addPrefixLocked(p) },
		undo:   func() { m.removePrefixLocked(p.ID) },
		// A new prefix depends on every prefix: none may overlap it.
		mut: Mutation{Create: []Record{EncodePrefix(p)}, Depends: []string{PrefixKeys}, Audit: audit("create", nil, &def)},
	}, nil
}

// DeletePrefix deletes an API-made prefix. With bindings inside, it refuses
// unless cascade is set, which deletes them too. It returns the revision
// of the deletion.
func (m *Manager) DeletePrefix(ctx context.Context, id string, cascade bool) (int64, error) {
	return m.run(ctx, func() (change, error) { return m.planDeletePrefix(id, cascade) })
}

func (m *Manager) planDeletePrefix(id string, cascade bool) (change, error) {
	i, ok := m.prefixPos[id]
	if !ok {
		return change{}, opErr(KindNotFound, "prefix_id", "no prefix has id %q", id)
	}
	p := m.state.Prefixes[i]
	if p.Source != FromAPI {
		return change{}, opErr(KindConfigOwned, "prefix_id", "prefix %s is declared by the configuration file; remove it there", p.CIDR)
	}
	var inside []Binding
	for _, b := range m.state.Bindings {
		if b.PrefixID == id {
			if b.Source != FromAPI {
				return change{}, opErr(KindConfigOwned, "prefix_id", "%s inside prefix %s is declared by the configuration file", describeBinding(b), p.CIDR)
			}
			inside = append(inside, b)
		}
	}
	if len(inside) > 0 && !cascade {
		return change{}, opErr(KindHasBindings, "cascade", "prefix %s has %d bindings: delete them first, or delete with ?cascade=true", p.CIDR, len(inside))
	}
	def := p.DefaultBinding()
	remove := []dispatch.Binding{dispatchBinding(def)}
	mut := Mutation{Delete: []string{PrefixKey(id)}, Depends: dependsOnPrefix(id), Audit: audit("delete", &def, nil)}
	for _, b := range inside {
		remove = append(remove, dispatchBinding(b))
		mut.Delete = append(mut.Delete, KeyOf(b))
	}
	return change{
		remove: remove,
		mutate: func() {
			for _, b := range inside {
				m.removeBindingLocked(b.ID)
			}
			m.removePrefixLocked(id)
		},
		undo: func() {
			m.addPrefixLocked(p)
			for _, b := range inside {
				m.addBindingLocked(b)
			}
		},
		mut: mut,
	}, nil
}

// CreateBinding adds a binding inside a prefix through the API.
func (m *Manager) CreateBinding(ctx context.Context, prefixID string, cidr netip.Prefix, proto dispatch.Protocol, port uint16, svc Service) (Binding, error) {
	b := NewBinding(cidr, proto, port, svc, FromAPI)
	b.PrefixID = prefixID
	_, err := m.run(ctx, func() (change, error) { return m.planCreateBinding(b) })
	return b, err
}

func (m *Manager) planCreateBinding(b Binding) (change, error) {
	i, ok := m.prefixPos[b.PrefixID]
	if !ok {
		return change{}, opErr(KindNotFound, "prefix_id", "no prefix has id %q", b.PrefixID)
	}
	p, cidr := m.state.Prefixes[i], b.CIDR
	if cidr.Addr().Is4() != p.CIDR.Addr().Is4() || cidr.Bits() < p.CIDR.Bits() || !p.CIDR.Contains(cidr.Addr()) {
		return change{}, opErr(KindInvalid, "cidr", "%s is not inside prefix %s", cidr, p.CIDR)
	}
	if b.ID == p.DefaultBinding().ID {
		return change{}, opErr(KindConflict, "cidr", "%s is the prefix's default binding (id %s): PATCH it to change the prefix's service", cidr, b.ID)
	}
	if j, ok := m.bindingPos[b.ID]; ok {
		o := m.state.Bindings[j]
		return change{}, opErr(KindConflict, "cidr", "%s already exists (id %s, from %s)", describeBinding(o), o.ID, o.Source)
	}
	if err := m.refusePending(b.PrefixID, b.ID); err != nil {
		return change{}, err
	}
	var e errList
	checkBinding(&e, b, m.idx, m.svc)
	if err := e.err(); err != nil {
		return change{}, err
	}
	return change{
		add:    []dispatch.Binding{dispatchBinding(b)},
		mutate: func() { m.addBindingLocked(b) },
		undo:   func() { m.removeBindingLocked(b.ID) },
		mut:    Mutation{Create: []Record{EncodeBinding(b)}, Depends: dependsOnPrefix(b.PrefixID), Audit: audit("create", nil, &b)},
	}, nil
}

// MoveBinding gives a binding to another service in one atomic step. Moving
// a prefix's default binding changes the prefix's default service.
func (m *Manager) MoveBinding(ctx context.Context, prefixID, id string, svc Service) (Binding, error) {
	var moved Binding
	_, err := m.run(ctx, func() (c change, err error) {
		moved, c, err = m.planMove(prefixID, id, svc)
		return c, err
	})
	return moved, err
}

func (m *Manager) planMove(prefixID, id string, svc Service) (Binding, change, error) {
	i, ok := m.prefixPos[prefixID]
	if !ok {
		return Binding{}, change{}, opErr(KindNotFound, "prefix_id", "no prefix has id %q", prefixID)
	}
	if p := m.state.Prefixes[i]; p.DefaultBinding().ID == id {
		return m.planMoveDefault(p, svc)
	}
	if err := m.refusePending(prefixID, id); err != nil {
		return Binding{}, change{}, err
	}
	j, ok := m.bindingPos[id]
	if !ok || m.state.Bindings[j].PrefixID != prefixID {
		return Binding{}, change{}, opErr(KindNotFound, "binding_id", "prefix %s has no binding with id %q", prefixID, id)
	}
	return m.planMoveBinding(m.state.Bindings[j], svc)
}

// planMoveDefault gives prefix p's default binding, so the prefix, to svc.
func (m *Manager) planMoveDefault(p Prefix, svc Service) (Binding, change, error) {
	if p.Source != FromAPI {
		return Binding{}, change{}, opErr(KindConfigOwned, "binding_id", "the default binding of %s is declared by the configuration file; change it there", p.CIDR)
	}
	moved := p
	moved.Service = svc
	var e errList
	checkPrefix(&e, moved, m.idx, m.guards)
	if err := e.err(); err != nil {
		return Binding{}, change{}, err
	}
	if svc == p.Service {
		return p.DefaultBinding(), change{}, nil
	}
	before, after := p.DefaultBinding(), moved.DefaultBinding()
	return after, change{
		remove: []dispatch.Binding{dispatchBinding(before)},
		add:    []dispatch.Binding{dispatchBinding(after)},
		mutate: func() { m.setPrefixServiceLocked(p.ID, svc) },
		undo:   func() { m.setPrefixServiceLocked(p.ID, p.Service) },
		mut:    Mutation{Update: []Record{EncodePrefix(moved)}, Depends: dependsOnPrefix(p.ID), Audit: audit("move", &before, &after)},
	}, nil
}

// planMoveBinding gives binding b, not a prefix's default, to svc.
func (m *Manager) planMoveBinding(b Binding, svc Service) (Binding, change, error) {
	if b.Source != FromAPI {
		return Binding{}, change{}, opErr(KindConfigOwned, "binding_id", "%s is declared by the configuration file; change it there", describeBinding(b))
	}
	moved := b
	moved.Service = svc
	var e errList
	checkBinding(&e, moved, m.idx, m.svc)
	if err := e.err(); err != nil {
		return Binding{}, change{}, err
	}
	if svc == b.Service {
		return b, change{}, nil
	}
	return moved, change{
		remove: []dispatch.Binding{dispatchBinding(b)},
		add:    []dispatch.Binding{dispatchBinding(moved)},
		mutate: func() { m.state.Bindings[m.bindingPos[b.ID]].Service = svc },
		undo:   func() { m.state.Bindings[m.bindingPos[b.ID]].Service = b.Service },
		mut:    Mutation{Update: []Record{EncodeBinding(moved)}, Depends: dependsOnPrefix(b.PrefixID), Audit: audit("move", &b, &moved)},
	}, nil
}

// DeleteBinding deletes an API-made binding and returns it with the
// revision of the deletion. A prefix's default binding cannot be deleted
// alone: delete the prefix.
func (m *Manager) DeleteBinding(ctx context.Context, prefixID, id string) (Binding, int64, error) {
	var gone Binding
	rev, err := m.run(ctx, func() (c change, err error) {
		gone, c, err = m.planDeleteBinding(prefixID, id)
		return c, err
	})
	return gone, rev, err
}

func (m *Manager) planDeleteBinding(prefixID, id string) (Binding, change, error) {
	i, ok := m.prefixPos[prefixID]
	if !ok {
		return Binding{}, change{}, opErr(KindNotFound, "prefix_id", "no prefix has id %q", prefixID)
	}
	if p := m.state.Prefixes[i]; p.DefaultBinding().ID == id {
		return Binding{}, change{}, opErr(KindConflict, "binding_id", "the default binding of %s cannot be deleted alone: delete the prefix", p.CIDR)
	}
	if err := m.refusePending(prefixID, id); err != nil {
		return Binding{}, change{}, err
	}
	j, ok := m.bindingPos[id]
	if !ok || m.state.Bindings[j].PrefixID != prefixID {
		return Binding{}, change{}, opErr(KindNotFound, "binding_id", "prefix %s has no binding with id %q", prefixID, id)
	}
	b := m.state.Bindings[j]
	if b.Source != FromAPI {
		return Binding{}, change{}, opErr(KindConfigOwned, "binding_id", "%s is declared by the configuration file; remove it there", describeBinding(b))
	}
	return b, change{
		remove: []dispatch.Binding{dispatchBinding(b)},
		mutate: func() { m.removeBindingLocked(id) },
		undo:   func() { m.addBindingLocked(b) },
		mut:    Mutation{Delete: []string{KeyOf(b)}, Depends: dependsOnPrefix(prefixID), Audit: audit("delete", &b, nil)},
	}, nil
}
