package bindings

import (
	"cmp"
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

// CreatePrefix onboards a prefix through the API.
func (m *Manager) CreatePrefix(cidr netip.Prefix, svc Service) (Prefix, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := NewPrefix(cidr, svc, FromAPI)
	if i, ok := m.prefixPos[p.ID]; ok {
		return Prefix{}, opErr(KindConflict, "cidr", "prefix %s already exists (from %s)", cidr, m.state.Prefixes[i].Source)
	}
	var e errList
	checkPrefix(&e, p, m.idx, m.guards)
	for _, q := range m.state.Prefixes {
		if q.CIDR.Addr().Is4() == cidr.Addr().Is4() && q.CIDR.Bits() > cidr.Bits() && cidr.Contains(q.CIDR.Addr()) {
			e.conflict(prefixItem(p), "cidr", "overlaps %s, which it contains", describePrefix(q))
		}
	}
	if err := e.err(); err != nil {
		return Prefix{}, err
	}
	return p, m.commitLocked(nil, []dispatch.Binding{dispatchBinding(p.DefaultBinding())},
		func() { m.addPrefixLocked(p) },
		func() { m.removePrefixLocked(p.ID) })
}

// DeletePrefix deletes an API-made prefix. With bindings inside, it refuses
// unless cascade is set, which deletes them too.
func (m *Manager) DeletePrefix(id string, cascade bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.prefixPos[id]
	if !ok {
		return opErr(KindNotFound, "prefix_id", "no prefix has id %q", id)
	}
	p := m.state.Prefixes[i]
	if p.Source != FromAPI {
		return opErr(KindConfigOwned, "prefix_id", "prefix %s is declared by the configuration file; remove it there", p.CIDR)
	}
	var inside []Binding
	for _, b := range m.state.Bindings {
		if b.PrefixID == id {
			if b.Source != FromAPI {
				return opErr(KindConfigOwned, "prefix_id", "%s inside prefix %s is declared by the configuration file", describeBinding(b), p.CIDR)
			}
			inside = append(inside, b)
		}
	}
	if len(inside) > 0 && !cascade {
		return opErr(KindHasBindings, "", "prefix %s has %d bindings: delete them first, or delete with ?cascade=true", p.CIDR, len(inside))
	}
	remove := []dispatch.Binding{dispatchBinding(p.DefaultBinding())}
	for _, b := range inside {
		remove = append(remove, dispatchBinding(b))
	}
	return m.commitLocked(remove, nil,
		func() {
			for _, b := range inside {
				m.removeBindingLocked(b.ID)
			}
			m.removePrefixLocked(id)
		},
		func() {
			m.addPrefixLocked(p)
			for _, b := range inside {
				m.addBindingLocked(b)
			}
		})
}

// CreateBinding adds a binding inside a prefix through the API.
func (m *Manager) CreateBinding(prefixID string, cidr netip.Prefix, proto dispatch.Protocol, port uint16, svc Service) (Binding, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.prefixPos[prefixID]
	if !ok {
		return Binding{}, opErr(KindNotFound, "prefix_id", "no prefix has id %q", prefixID)
	}
	p := m.state.Prefixes[i]
	if cidr.Addr().Is4() != p.CIDR.Addr().Is4() || cidr.Bits() < p.CIDR.Bits() || !p.CIDR.Contains(cidr.Addr()) {
		return Binding{}, opErr(KindInvalid, "cidr", "%s is not inside prefix %s", cidr, p.CIDR)
	}
	b := NewBinding(cidr, proto, port, svc, FromAPI)
	b.PrefixID = prefixID
	if b.ID == p.DefaultBinding().ID {
		return Binding{}, opErr(KindConflict, "cidr", "%s is the prefix's default binding (id %s): PATCH it to change the prefix's service", cidr, b.ID)
	}
	if j, ok := m.bindingPos[b.ID]; ok {
		o := m.state.Bindings[j]
		return Binding{}, opErr(KindConflict, "cidr", "%s already exists (id %s, from %s)", describeBinding(o), o.ID, o.Source)
	}
	var e errList
	checkBinding(&e, b, m.idx, m.svc)
	if err := e.err(); err != nil {
		return Binding{}, err
	}
	return b, m.commitLocked(nil, []dispatch.Binding{dispatchBinding(b)},
		func() { m.addBindingLocked(b) },
		func() { m.removeBindingLocked(b.ID) })
}

// MoveBinding gives a binding to another service in one atomic step. Moving
// a prefix's default binding changes the prefix's default service.
func (m *Manager) MoveBinding(prefixID, id string, svc Service) (Binding, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.prefixPos[prefixID]
	if !ok {
		return Binding{}, opErr(KindNotFound, "prefix_id", "no prefix has id %q", prefixID)
	}
	if p := m.state.Prefixes[i]; p.DefaultBinding().ID == id {
		return m.moveDefaultLocked(p, svc)
	}
	j, ok := m.bindingPos[id]
	if !ok || m.state.Bindings[j].PrefixID != prefixID {
		return Binding{}, opErr(KindNotFound, "binding_id", "prefix %s has no binding with id %q", prefixID, id)
	}
	return m.moveBindingLocked(m.state.Bindings[j], svc)
}

// moveDefaultLocked gives prefix p's default binding, so the prefix, to svc.
func (m *Manager) moveDefaultLocked(p Prefix, svc Service) (Binding, error) {
	if p.Source != FromAPI {
		return Binding{}, opErr(KindConfigOwned, "binding_id", "the default binding of %s is declared by the configuration file; change it there", p.CIDR)
	}
	moved := p
	moved.Service = svc
	var e errList
	checkPrefix(&e, moved, m.idx, m.guards)
	if err := e.err(); err != nil {
		return Binding{}, err
	}
	if svc == p.Service {
		return p.DefaultBinding(), nil
	}
	return moved.DefaultBinding(), m.commitLocked(
		[]dispatch.Binding{dispatchBinding(p.DefaultBinding())}, []dispatch.Binding{dispatchBinding(moved.DefaultBinding())},
		func() { m.setPrefixServiceLocked(p.ID, svc) },
		func() { m.setPrefixServiceLocked(p.ID, p.Service) })
}

// moveBindingLocked gives binding b, not a prefix's default, to svc.
func (m *Manager) moveBindingLocked(b Binding, svc Service) (Binding, error) {
	if b.Source != FromAPI {
		return Binding{}, opErr(KindConfigOwned, "binding_id", "%s is declared by the configuration file; change it there", describeBinding(b))
	}
	moved := b
	moved.Service = svc
	var e errList
	checkBinding(&e, moved, m.idx, m.svc)
	if err := e.err(); err != nil {
		return Binding{}, err
	}
	if svc == b.Service {
		return b, nil
	}
	return moved, m.commitLocked(
		[]dispatch.Binding{dispatchBinding(b)}, []dispatch.Binding{dispatchBinding(moved)},
		func() { m.state.Bindings[m.bindingPos[b.ID]].Service = svc },
		func() { m.state.Bindings[m.bindingPos[b.ID]].Service = b.Service })
}

// DeleteBinding deletes an API-made binding. A prefix's default binding
// cannot be deleted alone: delete the prefix.
func (m *Manager) DeleteBinding(prefixID, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	i, ok := m.prefixPos[prefixID]
	if !ok {
		return opErr(KindNotFound, "prefix_id", "no prefix has id %q", prefixID)
	}
	if p := m.state.Prefixes[i]; p.DefaultBinding().ID == id {
		return opErr(KindConflict, "binding_id", "the default binding of %s cannot be deleted alone: delete the prefix", p.CIDR)
	}
	j, ok := m.bindingPos[id]
	if !ok || m.state.Bindings[j].PrefixID != prefixID {
		return opErr(KindNotFound, "binding_id", "prefix %s has no binding with id %q", prefixID, id)
	}
	b := m.state.Bindings[j]
	if b.Source != FromAPI {
		return opErr(KindConfigOwned, "binding_id", "%s is declared by the configuration file; remove it there", describeBinding(b))
	}
	return m.commitLocked([]dispatch.Binding{dispatchBinding(b)}, nil,
		func() { m.removeBindingLocked(id) },
		func() { m.addBindingLocked(b) })
}
