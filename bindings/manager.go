package bindings

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/dispatch"
)

// Applier writes a table into the data plane; *dispatch.Dispatcher is one.
type Applier interface {
	Replace(*dispatch.Table) error
}

// Amender is an Applier that can also change bindings alone, leaving the
// rest of the table as it is; *dispatch.Dispatcher is one. The manager uses
// it for the admin API's single changes, which then cost a few map writes
// instead of a whole table.
type Amender interface {
	Applier
	Amend(remove, add []dispatch.Binding) error
}

// Manager holds the binding state the data plane steers by and changes it
// all or nothing: a candidate is validated, applied to the data plane, and
// persisted (API-made items, when there is a store); only then does it
// become the current state. On any error the current state, the data plane
// and the store stay as they were.
//
// Whole states (start, reload) are validated as a whole with Validate. The
// admin API's single changes check the one item against the same rules
// (checkPrefix, checkBinding) and the indexes, which TestIncrementalMatchesFull
// holds equal to validating the whole candidate.
type Manager struct {
	apply Applier
	store *FileStore // nil: API-made items are not persisted

	// OnApply, when set, is called after every successful change with the
	// time the data plane took. Set it before the first change.
	OnApply func(time.Duration)

	mu         sync.Mutex // serializes changes; guards the fields below
	held       error      // non-nil: every change is refused with it (Hold)
	state      *State
	svc        Services
	guards     []Guard
	idx        *index         // prefixes of state by CIDR
	prefixPos  map[string]int // prefix id -> index in state.Prefixes
	bindingPos map[string]int // binding id -> index in state.Bindings

	// own is the ownership snapshot of the current state, replaced (never
	// changed) at the end of every successful change. Readers take no lock.
	own atomic.Pointer[Ownership]
}

// NewManager returns a manager with an empty state, applying through a and
// persisting API-made items in store (nil: not persisted).
func NewManager(a Applier, store *FileStore) *Manager {
	m := &Manager{apply: a, store: store}
	m.setStateLocked(&State{}, Services{}, nil)
	return m
}

// Apply makes st, with what the services serve and the guarded addresses,
// the current state: validated, then written to the data plane and the
// store. When Apply returns nil the data plane holds the change.
func (m *Manager) Apply(st *State, svc Services, guards []Guard) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changeLocked(st.Clone(), svc, guards)
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
	return m.changeLocked(st, m.svc, m.guards)
}

// changeLocked validates, applies and persists a whole candidate that the
// caller owns. The caller holds m.mu.
func (m *Manager) changeLocked(st *State, svc Services, guards []Guard) error {
	if m.held != nil {
		return m.held
	}
	st.AssignPrefixes()
	if err := Validate(st, svc, guards); err != nil {
		return err
	}
	start := time.Now()
	if err := m.apply.Replace(Table(st, svc)); err != nil {
		return internalErr("the data plane refused the change: %v", err)
	}
	took := time.Since(start)
	if m.store != nil {
		if err := m.store.Save(st); err != nil {
			// Put the data plane back: nothing was acknowledged.
			if rerr := m.apply.Replace(Table(m.state, m.svc)); rerr != nil {
				err = errors.Join(err, fmt.Errorf("and restoring the data plane failed: %w", rerr))
			}
			return internalErr("persist the change: %v", err)
		}
	}
	m.setStateLocked(st, svc, guards)
	if m.OnApply != nil {
		m.OnApply(took)
	}
	return nil
}

// Hold refuses every change from now on, with an error of KindUnavailable
// saying why, until Release. It returns once no change is in progress: a
// change either completed before it or is refused, none is lost. A live
// upgrade holds the parent's changes while the child takes the writer role.
func (m *Manager) Hold(why string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.held = &Error{Kind: KindUnavailable, Reason: why}
}

// Release lets changes through again after Hold.
func (m *Manager) Release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.held = nil
}

// setStateLocked makes st current and rebuilds the indexes and the
// ownership snapshot.
func (m *Manager) setStateLocked(st *State, svc Services, guards []Guard) {
	m.state, m.svc, m.guards = st, svc, guards
	m.own.Store(NewOwnership(st, svc))
	m.idx = newIndex(st)
	m.prefixPos = make(map[string]int, len(st.Prefixes))
	for i, p := range st.Prefixes {
		m.prefixPos[p.ID] = i
	}
	m.bindingPos = make(map[string]int, len(st.Bindings))
	for i, b := range st.Bindings {
		m.bindingPos[b.ID] = i
	}
}

// commitLocked makes a single change: the data plane takes the bindings in
// remove out and those in add in, mutate changes the state and its indexes,
// and the store persists it. undo reverts mutate. On any error nothing has
// changed. The caller holds m.mu and has validated the change.
func (m *Manager) commitLocked(remove, add []dispatch.Binding, mutate, undo func()) error {
	if m.held != nil {
		return m.held
	}
	start := time.Now()
	am, amends := m.apply.(Amender)
	if amends {
		if err := am.Amend(remove, add); err != nil {
			return internalErr("the data plane refused the change: %v", err)
		}
		mutate()
	} else {
		mutate()
		if err := m.apply.Replace(Table(m.state, m.svc)); err != nil {
			undo()
			return internalErr("the data plane refused the change: %v", err)
		}
	}
	took := time.Since(start)
	if m.store != nil {
		if err := m.store.Save(m.state); err != nil {
			undo()
			var rerr error
			if amends {
				rerr = am.Amend(add, remove)
			} else {
				rerr = m.apply.Replace(Table(m.state, m.svc))
			}
			if rerr != nil {
				err = errors.Join(err, fmt.Errorf("and restoring the data plane failed: %w", rerr))
			}
			return internalErr("persist the change: %v", err)
		}
	}
	// The change is made: the snapshot follows it, path by path.
	m.own.Store(m.own.Load().amended(remove, add))
	if m.OnApply != nil {
		m.OnApply(took)
	}
	return nil
}

// The state's mutations, keeping the indexes. Deletions swap the last item
// into the hole: order is not meaningful (listings sort).

func (m *Manager) addPrefixLocked(p Prefix) {
	m.prefixPos[p.ID] = len(m.state.Prefixes)
	m.state.Prefixes = append(m.state.Prefixes, p)
	m.idx.add(p, m.prefixPos[p.ID])
}

func (m *Manager) removePrefixLocked(id string) Prefix {
	i := m.prefixPos[id]
	p := m.state.Prefixes[i]
	last := len(m.state.Prefixes) - 1
	if i != last {
		moved := m.state.Prefixes[last]
		m.state.Prefixes[i] = moved
		m.prefixPos[moved.ID] = i
		m.idx.prefixAt[moved.CIDR] = i
	}
	m.state.Prefixes = m.state.Prefixes[:last]
	delete(m.prefixPos, id)
	m.idx.remove(p)
	return p
}

func (m *Manager) setPrefixServiceLocked(id string, svc Service) {
	p := &m.state.Prefixes[m.prefixPos[id]]
	p.Service = svc
	m.idx.byCIDR[p.CIDR] = *p
}

func (m *Manager) addBindingLocked(b Binding) {
	m.bindingPos[b.ID] = len(m.state.Bindings)
	m.state.Bindings = append(m.state.Bindings, b)
}

func (m *Manager) removeBindingLocked(id string) Binding {
	i := m.bindingPos[id]
	b := m.state.Bindings[i]
	last := len(m.state.Bindings) - 1
	if i != last {
		moved := m.state.Bindings[last]
		m.state.Bindings[i] = moved
		m.bindingPos[moved.ID] = i
	}
	m.state.Bindings = m.state.Bindings[:last]
	delete(m.bindingPos, id)
	return b
}

// Current returns a copy of the current state and what the services serve.
func (m *Manager) Current() (*State, Services) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.Clone(), m.svc
}

// Ownership returns the ownership snapshot of the current state. It takes no
// lock and never blocks: the data plane's hot paths ask it, not Resolve.
func (m *Manager) Ownership() *Ownership { return m.own.Load() }

// OwnsCDN reports whether the cdn's socket receives proto to addr and port
// under the current state: Resolve(...).Outcome == OutcomeCDN, answered
// from the ownership snapshot without a lock or an allocation. The cdn asks
// it on every HTTP/3 handshake.
func (m *Manager) OwnsCDN(proto dispatch.Protocol, addr netip.Addr, port uint16) bool {
	return m.own.Load().CDN(proto, addr, port)
}

// Resolve resolves a destination against the current state, with the
// reason: the explainer for the API and the CLI. It scans every binding
// under the lock that changes take; hot paths ask OwnsCDN or Ownership.
func (m *Manager) Resolve(proto dispatch.Protocol, addr netip.Addr, port uint16) Resolution {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Resolve(m.state, m.svc, proto, addr, port)
}
