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
//
// On a fleet (SetFleet) the API's changes are not made here: they are
// validated here, written to the fleet's store, and applied when the fleet
// hands them back (ApplyEvents), on this node as on every other.
type Manager struct {
	apply Applier
	store Store // nil: API-made items are not persisted

	// OnApply, when set, is called after every successful change with the
	// time the data plane took. Set it before the first change.
	OnApply func(time.Duration)
	// OnAudit, when set, is called with the audit entry of every change
	// the API made through this manager, once it is applied. Set it
	// before the first change.
	OnAudit func(AuditEntry)

	fleet      Fleet  // nil: a single node
	onRevision func() // the fleet's, called under mu whenever revision grows

	mu         sync.Mutex // serializes changes; guards the fields below
	held       error      // non-nil: every change is refused with it (Hold)
	state      *State
	svc        Services
	guards     []Guard
	idx        *index             // prefixes of state by CIDR
	prefixPos  map[string]int     // prefix id -> index in state.Prefixes
	bindingPos map[string]int     // binding id -> index in state.Bindings
	revision   int64              // the store's revision the state is at
	revs       map[string]int64   // store key of an API-made item -> revision of its last change, since Adopt
	adopted    int64              // the revision Adopt took the items at: theirs, when revs has none
	applied    *sync.Cond         // broadcast when revision grows
	labels     map[string]string  // this node's, for canary changes
	canaries   map[string]*Staged // store key -> the binding's pending canary change

	// own is the ownership snapshot of the current state, replaced (never
	// changed) at the end of every successful change. Readers take no lock.
	own atomic.Pointer[Ownership]
}

// NewManager returns a manager with an empty state, applying through a and
// persisting API-made items in store (nil: not persisted).
func NewManager(a Applier, store Store) *Manager {
	m := &Manager{apply: a, store: store, revs: map[string]int64{}, canaries: map[string]*Staged{}}
	m.applied = sync.NewCond(&m.mu)
	m.setStateLocked(&State{}, Services{}, nil)
	return m
}

// Adopt makes the API-made items st, read from the store at revision rev,
// the manager's before its first change, without validating or applying
// them: the Apply that follows (with the configuration's items merged in)
// validates and applies the whole, and persists only what differs.
func (m *Manager) Adopt(st *State, rev int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setStateLocked(st.Clone(), m.svc, m.guards)
	// Items not changed since are at the store's revision: they take no
	// entry of revs (a million of them would cost a map of a million).
	m.revision, m.adopted = rev, rev
}

// Revision returns the revision of the store the state is at.
func (m *Manager) Revision() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.revision
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
	mut := diffAPI(m.state, st)
	if m.fleet != nil && !mut.Empty() {
		// The fleet's items change only through the fleet: a whole
		// state (start, reload) takes them as they are.
		return internalErr("a whole state may not change the fleet's items (%d keys differ)", len(mut.Create)+len(mut.Update)+len(mut.Delete))
	}
	return m.replaceLocked(st, svc, guards, m.revision+1, mut)
}

// replaceLocked applies a validated whole state to the data plane, then
// persists mut at revision rev (when it changes anything), and makes st
// current. The caller holds m.mu.
func (m *Manager) replaceLocked(st *State, svc Services, guards []Guard, rev int64, mut Mutation) error {
	start := time.Now()
	if err := m.apply.Replace(Table(st, svc)); err != nil {
		return refusedErr(err)
	}
	took := time.Since(start)
	if err := m.persistLocked(rev, mut); err != nil {
		// Put the data plane back: nothing was acknowledged.
		if rerr := m.apply.Replace(Table(m.state, m.svc)); rerr != nil {
			err = errors.Join(err, fmt.Errorf("and restoring the data plane failed: %w", rerr))
		}
		return internalErr("persist the change: %v", err)
	}
	m.setStateLocked(st, svc, guards)
	m.touchedLocked(rev, mut)
	if m.OnApply != nil {
		m.OnApply(took)
	}
	return nil
}

// persistLocked commits mut at rev to the store, if there is one and mut
// changes anything.
func (m *Manager) persistLocked(rev int64, mut Mutation) error {
	if m.store == nil || mut.Empty() {
		return nil
	}
	return m.store.Commit(rev, mut)
}

// touchedLocked records that the keys of mut changed at rev, and that the
// state is at rev when mut changed anything.
func (m *Manager) touchedLocked(rev int64, mut Mutation) {
	if mut.Empty() && rev <= m.revision {
		return
	}
	for _, rs := range [][]Record{mut.Create, mut.Update} {
		for _, r := range rs {
			m.revs[r.Key] = rev
		}
	}
	for _, k := range mut.Delete {
		delete(m.revs, k)
	}
	m.seenLocked(rev)
}

// SetStore replaces the store: a live upgrade that failed opens it again
// after handing it to the new process. Call it while changes are held.
func (m *Manager) SetStore(s Store) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.store = s
}

// Writable says whether a change could be persisted now: nil without a
// store, and while changes are held (they answer with the hold's reason),
// else the store's Writable.
func (m *Manager) Writable() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.store == nil || m.held != nil {
		return nil
	}
	return m.store.Writable()
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

// change is one planned change of the API: the bindings the data plane
// takes out and in, the mutation of the state (and its undo), and what the
// store writes.
type change struct {
	remove, add  []dispatch.Binding
	mutate, undo func()
	mut          Mutation
}

// refusedErr is the error of a change the data plane refused: past its
// binding capacity a conflict naming the key that sets it, else internal.
func refusedErr(err error) error {
	if errors.Is(err, dispatch.ErrCapacity) {
		return &Error{Kind: KindConflict, Field: "dispatch.binding_capacity", Reason: fmt.Sprintf("the data plane is full: %v; raise dispatch.binding_capacity in the configuration", err)}
	}
	return internalErr("the data plane refused the change: %v", err)
}

// commitLocked makes a single change at the next revision: the data plane
// takes the bindings in remove out and those in add in, mutate changes the
// state and its indexes, and the store persists it. On any error nothing
// has changed. The caller holds m.mu and has validated the change.
func (m *Manager) commitLocked(c change) error {
	return m.commitAtLocked(c, m.revision+1)
}

// commitAtLocked is commitLocked at revision rev.
func (m *Manager) commitAtLocked(c change, rev int64) error {
	if m.held != nil {
		return m.held
	}
	if c.mutate == nil {
		// A change planned as records alone (a batch): applied as a
		// fleet's change is, the whole state validated at once.
		return m.applyEventsLocked(rev, eventsOf(c.mut), c.mut.Audit)
	}
	start := time.Now()
	am, amends := m.apply.(Amender)
	if amends {
		if err := am.Amend(c.remove, c.add); err != nil {
			return refusedErr(err)
		}
		c.mutate()
	} else {
		c.mutate()
		if err := m.apply.Replace(Table(m.state, m.svc)); err != nil {
			c.undo()
			return refusedErr(err)
		}
	}
	took := time.Since(start)
	if err := m.persistLocked(rev, c.mut); err != nil {
		c.undo()
		var rerr error
		if amends {
			rerr = am.Amend(c.add, c.remove)
		} else {
			rerr = m.apply.Replace(Table(m.state, m.svc))
		}
		if rerr != nil {
			err = errors.Join(err, fmt.Errorf("and restoring the data plane failed: %w", rerr))
		}
		return internalErr("persist the change: %v", err)
	}
	// The change is made: the snapshot follows it, path by path.
	m.own.Store(m.own.Load().amended(c.remove, c.add))
	m.touchedLocked(rev, c.mut)
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
