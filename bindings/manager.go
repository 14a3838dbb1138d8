package bindings

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/edgeproxy/edgeproxy/dispatch"
)

// Applier writes a table into the data plane; *dispatch.Dispatcher is one.
type Applier interface {
	Replace(*dispatch.Table) error
}

// Manager holds the binding state the data plane steers by and changes it
// all or nothing: a candidate is validated as a whole, translated, and
// applied; only then does it become the current state. On any error the
// current state and the data plane stay exactly as they were.
type Manager struct {
	apply Applier

	mu     sync.Mutex // serializes changes; guards the fields below
	state  *State
	svc    Services
	guards []Guard
}

// NewManager returns a manager with an empty state, applying through a.
func NewManager(a Applier) *Manager {
	return &Manager{apply: a, state: &State{}}
}

// Apply makes st, with what the services serve and the guarded addresses,
// the current state: validated, then written to the data plane. When Apply
// returns nil the data plane holds the change.
func (m *Manager) Apply(st *State, svc Services, guards []Guard) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applyLocked(st.Clone(), svc, guards)
}

// Change applies fn to a copy of the current state and applies the result
// like Apply. fn's error aborts the change.
func (m *Manager) Change(fn func(*State) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.state.Clone()
	if err := fn(st); err != nil {
		return err
	}
	return m.applyLocked(st, m.svc, m.guards)
}

func (m *Manager) applyLocked(st *State, svc Services, guards []Guard) error {
	st.AssignPrefixes()
	if err := Validate(st, svc, guards); err != nil {
		return err
	}
	if err := m.apply.Replace(Table(st, svc)); err != nil {
		return fmt.Errorf("apply to the data plane: %w", err)
	}
	m.state, m.svc, m.guards = st, svc, guards
	return nil
}

// Current returns a copy of the current state and what the services serve.
func (m *Manager) Current() (*State, Services) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.Clone(), m.svc
}

// Resolve resolves a destination against the current state.
func (m *Manager) Resolve(proto dispatch.Protocol, addr netip.Addr, port uint16) Resolution {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Resolve(m.state, m.svc, proto, addr, port)
}
