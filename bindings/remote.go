package bindings

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// A fleet's changes reach every node here: the events of one revision
// (ApplyEvents) or the whole state at a revision (Resync), applied through
// the same validation as the API's changes, to the data plane and to the
// node's own store (the copy it serves from when the fleet's store cannot
// be reached, across restarts too).

// ApplyEvents applies the events of one revision as one step. A revision
// at or below the state's was applied before: nothing happens. A change
// this node cannot take (its own configuration conflicts, a value it
// cannot read) is refused: the state stays, the revision still counts as
// seen, and the error says why. While changes are held (Hold) it returns
// the hold's error and sees nothing: call it again later.
func (m *Manager) ApplyEvents(rev int64, evs []Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.held != nil {
		return m.held
	}
	if rev <= m.revision {
		return nil
	}
	err := m.applyEventsLocked(rev, evs, nil)
	if err != nil {
		m.seenLocked(rev)
	}
	return err
}

// applyEventsLocked applies the events of revision rev as one step, or
// nothing.
func (m *Manager) applyEventsLocked(rev int64, evs []Event, audit *AuditEntry) error {
	if audit == nil && m.holdsLocked(evs) {
		// Nothing changes (a batch's records reaching their own keys):
		// no need to validate the whole state again.
		m.seenLocked(rev)
		return nil
	}
	if audit == nil && len(evs) == 1 {
		if c, ok := m.planEventLocked(evs[0]); ok && m.commitAtLocked(c, rev) == nil {
			return nil
		}
	}
	st := m.state.Clone()
	u, err := m.applyEvents(st, evs)
	if err == nil {
		err = m.takeLocked(st, rev, audit)
	}
	if err == nil {
		m.keepCanaries(u)
	}
	return err
}

// Resync makes the fleet's items those of items (every key under the
// state, at revision rev), keeping the configuration's. When the whole
// does not fit this node, it takes what fits, item by item, and returns
// why the others were refused.
func (m *Manager) Resync(rev int64, items []Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.held != nil {
		return m.held
	}
	fromConfig, _ := Split(m.state)
	st := fromConfig.Clone()
	if u, err := m.applyEvents(st, items); err == nil {
		if err := m.takeLocked(st, rev, nil); err == nil {
			clear(m.canaries)
			m.keepCanaries(u)
			return nil
		}
	}
	// Item by item: prefixes first, then the bindings inside them.
	slices.SortStableFunc(items, func(a, b Event) int {
		return boolInt(strings.HasPrefix(b.Key, PrefixKeys)) - boolInt(strings.HasPrefix(a.Key, PrefixKeys))
	})
	st = fromConfig.Clone()
	var refused []error
	kept := canaryUpdate{}
	for _, ev := range items {
		next := st.Clone()
		u, err := m.applyEvents(next, []Event{ev})
		if err != nil {
			refused = append(refused, err)
			continue
		}
		next.AssignPrefixes()
		if err := Validate(next, m.svc, m.guards); err != nil {
			refused = append(refused, fmt.Errorf("%s: %w", ev.Key, err))
			continue
		}
		st = next
		maps.Copy(kept, u)
	}
	if err := m.takeLocked(st, rev, nil); err != nil {
		m.seenLocked(rev)
		return err
	}
	clear(m.canaries)
	m.keepCanaries(kept)
	return errors.Join(refused...)
}

// Seen records that the state holds everything up to revision rev: the
// fleet's store said nothing under the state changed until then.
func (m *Manager) Seen(rev int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seenLocked(rev)
}

func (m *Manager) seenLocked(rev int64) {
	if rev > m.revision {
		m.revision = rev
		m.applied.Broadcast()
		if m.onRevision != nil {
			m.onRevision()
		}
	}
}

// takeLocked validates st and makes it current at rev, persisting what
// differs in the node's store (with audit, when it is the change's).
func (m *Manager) takeLocked(st *State, rev int64, audit *AuditEntry) error {
	st.AssignPrefixes()
	if err := Validate(st, m.svc, m.guards); err != nil {
		return err
	}
	mut := diffAPI(m.state, st)
	mut.Audit = audit
	return m.replaceLocked(st, m.svc, m.guards, rev, mut)
}

// canaryUpdate is a key's pending canary change after some events: nil
// when it has none.
type canaryUpdate map[string]*Staged

// applyEvents puts and deletes the events' items in st: a put replaces the
// item of its key or adds it, a delete removes it if it is there. A binding
// with a pending canary change goes into st as this node steers it. The
// canary changes are returned, for the caller to keep once st is taken.
func (m *Manager) applyEvents(st *State, evs []Event) (canaryUpdate, error) {
	drop := map[string]bool{}
	canaries := canaryUpdate{}
	var puts []Decoded
	for _, ev := range evs {
		drop[ev.Key] = true
		canaries[ev.Key] = nil
		if ev.Value == nil {
			continue
		}
		d, err := DecodeRecord(ev.Key, ev.Value)
		if err != nil {
			return nil, err
		}
		puts = append(puts, d)
	}
	st.Prefixes = slices.DeleteFunc(st.Prefixes, func(p Prefix) bool { return p.Source == FromAPI && drop[PrefixKey(p.ID)] })
	st.Bindings = slices.DeleteFunc(st.Bindings, func(b Binding) bool { return b.Source == FromAPI && drop[KeyOf(b)] })
	for _, d := range puts {
		if d.Prefix != nil {
			st.Prefixes = append(st.Prefixes, *d.Prefix)
			continue
		}
		if d.Canary != nil {
			canaries[KeyOf(*d.Binding)] = &Staged{Stable: *d.Binding, Canary: *d.Canary}
		}
		if b, ok := m.effective(*d.Binding, d.Canary); ok {
			st.Bindings = append(st.Bindings, b)
		}
	}
	return canaries, nil
}

// keepCanaries records the canary changes of a state just taken.
func (m *Manager) keepCanaries(u canaryUpdate) {
	for k, c := range u {
		if c == nil {
			delete(m.canaries, k)
		} else {
			m.canaries[k] = c
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// holdsLocked reports whether the state holds every event already: each
// put's value is the item's encoding now, each deleted key is absent.
func (m *Manager) holdsLocked(evs []Event) bool {
	for _, ev := range evs {
		if _, ok := m.canaries[ev.Key]; ok {
			return false
		}
		cur, ok := m.recordLocked(ev.Key)
		if ev.Value == nil {
			if ok {
				return false
			}
			continue
		}
		if !ok || string(cur) != string(ev.Value) {
			return false
		}
	}
	return true
}

// recordLocked returns the encoding of the API-made item at key, if the
// state has one.
func (m *Manager) recordLocked(key string) ([]byte, bool) {
	if id, ok := strings.CutPrefix(key, PrefixKeys); ok {
		i, ok := m.prefixPos[id]
		if !ok || m.state.Prefixes[i].Source != FromAPI {
			return nil, false
		}
		return EncodePrefix(m.state.Prefixes[i]).Value, true
	}
	_, id, _ := strings.Cut(strings.TrimPrefix(key, BindingKeys), "/")
	i, ok := m.bindingPos[id]
	if !ok || m.state.Bindings[i].Source != FromAPI || KeyOf(m.state.Bindings[i]) != key {
		return nil, false
	}
	return EncodeBinding(m.state.Bindings[i]).Value, true
}

// planEventLocked plans one event as the API's single changes are
// planned, so that it costs a few map writes instead of the whole state.
// It reports false where the event is not one of those plain changes (a
// canary, or an item this node does not hold as the event expects) or the
// plan refuses it: the whole state then decides.
func (m *Manager) planEventLocked(ev Event) (change, bool) {
	if _, ok := m.canaries[ev.Key]; ok {
		return change{}, false
	}
	var d Decoded
	if ev.Value != nil {
		var err error
		if d, err = DecodeRecord(ev.Key, ev.Value); err != nil || d.Canary != nil {
			return change{}, false
		}
	}
	var c change
	var err error
	switch id, isPrefix := strings.CutPrefix(ev.Key, PrefixKeys); {
	case isPrefix && d.Prefix == nil:
		c, err = m.planDeletePrefix(id, false)
	case isPrefix:
		if i, ok := m.prefixPos[id]; ok {
			_, c, err = m.planMoveDefault(m.state.Prefixes[i], d.Prefix.Service)
		} else {
			c, err = m.planCreatePrefix(*d.Prefix)
		}
	default:
		pid, bid, _ := strings.Cut(strings.TrimPrefix(ev.Key, BindingKeys), "/")
		_, held := m.bindingPos[bid]
		switch {
		case d.Binding == nil:
			_, c, err = m.planDeleteBinding(pid, bid)
		case held:
			_, c, err = m.planMove(pid, bid, d.Binding.Service)
		default:
			c, err = m.planCreateBinding(*d.Binding)
		}
	}
	if err != nil || c.mutate == nil {
		return change{}, false
	}
	c.mut.Audit = nil // the writer's node keeps the fleet's audit log
	return c, true
}
