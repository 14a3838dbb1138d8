package bindings

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/edgeproxy/edgeproxy/dispatch"
)

// Fleet is the store a fleet of nodes shares. The manager validates the
// API's changes against the state it holds and writes them there; the fleet
// hands every change back to every node, this one included, through
// ApplyEvents and Resync. Only then is a change applied here.
type Fleet interface {
	// Write commits m, validated against the state at revision basedOn,
	// and returns the revision it committed at. When a key the
	// validation depended on (m.Depends) changed after basedOn, nothing
	// is written and the error is a *StaleError.
	Write(ctx context.Context, basedOn int64, m Mutation) (int64, error)
	// Provisioning says how far the fleet holds the change of key made at
	// revision rev, among the nodes scope selects (nil: every node).
	Provisioning(key string, rev int64, scope map[string]string) Provisioning
	// Latest returns the revision of the fleet state's last change.
	Latest(ctx context.Context) (int64, error)
}

// StaleError is a fleet write refused because what its validation read
// changed: the manager catches up to Revision, validates again and retries.
type StaleError struct{ Revision int64 }

func (e *StaleError) Error() string {
	return fmt.Sprintf("the state changed at revision %d since the change was validated", e.Revision)
}

// The states of a change's provisioning.
const (
	Active  = "active"  // every live node in scope holds it
	Pending = "pending" // the store holds it; some live node in scope does not yet
	Failed  = "failed"  // a live node in scope refused it
	// CanaryActive: every live node in a pending canary change's scope
	// holds it.
	CanaryActive = "canary"
)

// Provisioning says how far a change has reached: its revision, and how
// many of the live nodes in its scope hold it.
type Provisioning struct {
	State        string            `json:"state"`
	Revision     int64             `json:"revision"`
	NodesTotal   int               `json:"nodes_total"`
	NodesApplied int               `json:"nodes_applied"`
	NodesFailed  []string          `json:"nodes_failed"`
	Errors       map[string]string `json:"errors,omitempty"`
}

// SetFleet makes the manager a node of a fleet: the API's changes go to f,
// and onRevision (nil: none) is called whenever the state's revision grows,
// under the manager's lock: it must not block or call back. Call it before
// the first change through the API.
func (m *Manager) SetFleet(f Fleet, onRevision func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fleet, m.onRevision = f, onRevision
}

// Request is who asks for a change, for its audit entry.
type Request struct {
	Who string // the token's id, or the remote address
	ID  string // the request id
}

type requestKey struct{}

// WithRequest returns ctx carrying r.
func WithRequest(ctx context.Context, r Request) context.Context {
	return context.WithValue(ctx, requestKey{}, r)
}

func requestOf(ctx context.Context) Request {
	r, _ := ctx.Value(requestKey{}).(Request)
	return r
}

// maxAttempts bounds how often a fleet write is validated again after the
// state it was validated against changed.
const maxAttempts = 8

// How long a fleet write waits for this node to catch up before it
// validates again, and for this node to apply it once written.
const (
	catchUp  = 2 * time.Second
	ownApply = 5 * time.Second
)

// run plans a change under the lock and makes it: here (a single node), or
// through the fleet, retried against the newer state while what it read
// changes. It returns the revision the change is at; a plan that changes
// nothing returns the current one.
func (m *Manager) run(ctx context.Context, plan func() (change, error)) (int64, error) {
	if d := DryRunOf(ctx); d != nil {
		return m.dryRun(ctx, plan, d)
	}
	if m.fleet == nil {
		m.mu.Lock()
		defer m.mu.Unlock()
		c, err := plan()
		if err != nil || c.mut.Empty() {
			return m.revision, err
		}
		m.stamp(ctx, &c.mut)
		if err := m.commitLocked(c); err != nil {
			return 0, err
		}
		m.audited(c.mut.Audit, m.revision)
		return m.revision, nil
	}
	caughtUp := false
	for attempt := 1; ; attempt++ {
		m.mu.Lock()
		c, err := plan()
		base, held := m.revision, m.held
		m.mu.Unlock()
		if err != nil && held == nil && !caughtUp {
			// Refused against what this node holds: it may be behind
			// a change made through another node. Refuse only once it
			// holds the fleet's latest state.
			caughtUp = true
			moved, cerr := m.catchUp(ctx, base)
			if cerr != nil {
				return 0, cerr
			}
			if moved {
				attempt--
				continue
			}
		}
		switch {
		case held != nil:
			return 0, held
		case err != nil || c.mut.Empty():
			return base, err
		}
		m.stamp(ctx, &c.mut)
		rev, err := m.fleet.Write(ctx, base, c.mut)
		var stale *StaleError
		if errors.As(err, &stale) {
			if attempt == maxAttempts {
				return 0, &Error{Kind: KindConflict, Reason: fmt.Sprintf("the state kept changing under the change (%d attempts): try again", attempt)}
			}
			// Catch up (bounded: the retry validates against whatever
			// this node holds by then).
			wctx, cancel := context.WithTimeout(ctx, catchUp)
			m.WaitRevision(wctx, stale.Revision)
			cancel()
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			continue
		}
		if err != nil {
			return 0, err
		}
		// Answer once this node's data plane holds it too.
		wctx, cancel := context.WithTimeout(ctx, ownApply)
		err = m.WaitRevision(wctx, rev)
		cancel()
		if err != nil {
			return rev, err
		}
		m.audited(c.mut.Audit, rev)
		return rev, nil
	}
}

// DryRun receives what a change would do instead of its being made: the
// views before and after it, at the revision it was planned against.
type DryRun struct {
	Before, After View
	Revision      int64
}

type dryRunKey struct{}

// WithDryRun returns ctx with which an operation plans its change, checks
// it as it would be checked when made, and describes it in d instead of
// making it. The operation answers as it would (its result, or its error);
// nothing changes.
func WithDryRun(ctx context.Context, d *DryRun) context.Context {
	return context.WithValue(ctx, dryRunKey{}, d)
}

// DryRunOf returns the dry run ctx carries, or nil.
func DryRunOf(ctx context.Context) *DryRun {
	d, _ := ctx.Value(dryRunKey{}).(*DryRun)
	return d
}

// dryRun plans a change and describes it in d. On a fleet, a change this
// node refuses is planned again once the node holds the fleet's latest
// state, as a real change would be.
func (m *Manager) dryRun(ctx context.Context, plan func() (change, error), d *DryRun) (int64, error) {
	for caughtUp := m.fleet == nil; ; caughtUp = true {
		m.mu.Lock()
		c, err := plan()
		if err == nil {
			err = m.describeLocked(c, d)
		}
		rev := m.revision
		m.mu.Unlock()
		if err == nil || caughtUp {
			return rev, err
		}
		moved, cerr := m.catchUp(ctx, rev)
		if cerr != nil {
			return 0, cerr
		}
		if !moved {
			return rev, err
		}
	}
}

// describeLocked fills d with the state before and after c, checked as
// the commit would check it.
func (m *Manager) describeLocked(c change, d *DryRun) error {
	before := m.state.Clone()
	after := m.state.Clone()
	if !c.mut.Empty() {
		if _, err := m.applyEvents(after, eventsOf(c.mut)); err != nil {
			return err
		}
		after.AssignPrefixes()
		if err := Validate(after, m.svc, m.guards); err != nil {
			return err
		}
		// The data plane's capacity, as its write would refuse it.
		if c, ok := m.apply.(interface{ BindingCapacity() int }); ok {
			if n := len(after.Prefixes) + len(after.Bindings); n > c.BindingCapacity() {
				return refusedErr(fmt.Errorf("%w: %d bindings exceed the binding capacity of %d", dispatch.ErrCapacity, n, c.BindingCapacity()))
			}
		}
	}
	d.Before = View{State: before, Services: m.svc}
	d.After = View{State: after, Services: m.svc}
	d.Revision = m.revision
	return nil
}

// catchUp waits (bounded) until the state is at the fleet's latest
// revision. It reports whether the state moved on since the revision a
// change was planned at, or an error
// when this node could not catch up in time: a refusal against a state
// that old would not be the fleet's answer.
func (m *Manager) catchUp(ctx context.Context, planned int64) (bool, error) {
	wctx, cancel := context.WithTimeout(ctx, catchUp)
	defer cancel()
	latest, err := m.fleet.Latest(wctx)
	if err != nil {
		return false, nil // etcd unreachable: the write would say so
	}
	if err := m.WaitRevision(wctx, latest); err != nil {
		return false, &Error{Kind: KindUnavailable, Reason: fmt.Sprintf("this node is behind the fleet (at revision %d, the fleet at %d): try again, or through another node", m.Revision(), latest)}
	}
	return m.Revision() > planned, nil
}

// stamp fills in the audit entry's who, request id and time.
func (m *Manager) stamp(ctx context.Context, mut *Mutation) {
	if mut.Audit == nil {
		return
	}
	r := requestOf(ctx)
	mut.Audit.Who, mut.Audit.RequestID, mut.Audit.Time = r.Who, r.ID, time.Now().UTC()
}

func (m *Manager) audited(e *AuditEntry, rev int64) {
	if e == nil || m.OnAudit == nil {
		return
	}
	a := *e
	a.Revision = rev
	m.OnAudit(a)
}

// WaitRevision returns once the state is at revision rev or later, or
// ctx's error when it ends first.
func (m *Manager) WaitRevision(ctx context.Context, rev int64) error {
	stop := context.AfterFunc(ctx, func() {
		m.mu.Lock()
		m.applied.Broadcast()
		m.mu.Unlock()
	})
	defer stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.revision < rev {
		if err := ctx.Err(); err != nil {
			return &Error{Kind: KindUnavailable, Reason: fmt.Sprintf("the change is in the store at revision %d, but this node holds only revision %d: %v", rev, m.revision, err)}
		}
		m.applied.Wait()
	}
	return nil
}

// Provisioning says how far b's last change has reached. An item of the
// configuration file is this node's own: active.
func (m *Manager) Provisioning(b Binding) Provisioning {
	if b.Source != FromAPI {
		return Provisioning{State: Active, NodesTotal: 1, NodesApplied: 1, NodesFailed: []string{}}
	}
	key := KeyOf(b)
	m.mu.Lock()
	rev, ok := m.revs[key]
	if !ok {
		rev = m.adopted
	}
	c := m.canaries[key]
	m.mu.Unlock()
	if c == nil || m.fleet == nil {
		return m.ProvisioningAt(key, rev)
	}
	p := m.fleet.Provisioning(key, rev, c.Canary.Labels)
	if p.State == Active {
		p.State = CanaryActive
	}
	return p
}

// ProvisioningAt says how far the change of key at revision rev has
// reached: a deleted item's, for one.
func (m *Manager) ProvisioningAt(key string, rev int64) Provisioning {
	if m.fleet == nil {
		return Provisioning{State: Active, Revision: rev, NodesTotal: 1, NodesApplied: 1, NodesFailed: []string{}}
	}
	return m.fleet.Provisioning(key, rev, nil)
}
