package bindings

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/dispatch"
)

// The store's contract. Every backend (the embedded database, a fleet's
// etcd) holds the API-made items under the same keys, one key per prefix
// and per binding:
//
//	prefixes/<prefix id>                 a prefix
//	bindings/<prefix id>/<binding id>    a binding inside that prefix
//
// and each value is a small JSON object carrying its format version ("v"),
// so that nodes of two releases can share a fleet: a node refuses, and
// reports, a value of a version it cannot read.

// ValueVersion is the format version of the values this binary writes and
// the newest it reads.
const ValueVersion = 1

// Key prefixes of the two kinds of items.
const (
	PrefixKeys  = "prefixes/"
	BindingKeys = "bindings/"
)

// PrefixKey is the key of the prefix with id.
func PrefixKey(id string) string { return PrefixKeys + id }

// BindingKey is the key of binding id inside prefix prefixID.
func BindingKey(prefixID, id string) string { return BindingKeys + prefixID + "/" + id }

// BindingsOf is the key prefix of every binding inside prefix prefixID.
func BindingsOf(prefixID string) string { return BindingKeys + prefixID + "/" }

// Record is one key and its encoded value.
type Record struct {
	Key   string
	Value []byte
}

// Mutation is one change of the API-made items, written in one
// transaction: the keys it creates (absent before), updates (present
// before) and deletes (present before). Depends are the key prefixes whose
// contents the change's validation read: a fleet's store commits the change
// only if nothing under them changed since the revision it was validated
// at. Audit, when set, is the change's audit entry (its Revision is filled
// in by the store).
type Mutation struct {
	Create  []Record
	Update  []Record
	Delete  []string
	Depends []string
	Audit   *AuditEntry
}

// Empty reports whether m changes no key.
func (m *Mutation) Empty() bool { return len(m.Create)+len(m.Update)+len(m.Delete) == 0 }

// Store persists the API-made items. Revisions count changes: Load returns
// the revision the items are at, and Commit writes a mutation at a given
// revision, larger than every one before. One process writes a store at a
// time.
type Store interface {
	// Load reads every item and the revision they are at (0: empty).
	Load() (*State, int64, error)
	// Commit writes m at revision rev in one transaction. When it returns
	// nil the change is durable.
	Commit(rev int64, m Mutation) error
	// Writable returns nil when Commit can write, or why not (wrapping
	// ErrReadOnly and naming the store).
	Writable() error
	// Audit returns the audit entries after revision since, oldest first,
	// at most limit of them.
	Audit(since int64, limit int) ([]AuditEntry, error)
	// Close releases the store (its file lock, its connection).
	Close() error
	// String names the store for errors and logs.
	String() string
}

// AuditEntry is one applied change: who made it, what it was, the binding
// before and after (nil where there is none), at which revision, under
// which request id.
type AuditEntry struct {
	Revision  int64      `json:"revision"`
	Time      time.Time  `json:"time"`
	Who       string     `json:"who"`
	Action    string     `json:"action"` // create, move, delete, canary, promote, rollback, batch
	PrefixID  string     `json:"prefix_id"`
	BindingID string     `json:"binding_id,omitempty"`
	Before    *AuditItem `json:"before"`
	After     *AuditItem `json:"after"`
	RequestID string     `json:"request_id,omitempty"`
	Node      string     `json:"node,omitempty"`  // the node whose API took the change
	Count     int        `json:"count,omitempty"` // items of a batch
}

// AuditItem is a binding as the audit log shows it.
type AuditItem struct {
	ID       string  `json:"id"`
	PrefixID string  `json:"prefix_id"`
	CIDR     string  `json:"cidr"`
	Protocol string  `json:"protocol,omitempty"`
	Port     uint16  `json:"port,omitempty"`
	Service  Service `json:"service_id"`
	Default  bool    `json:"default"`
}

// auditItem returns b as the audit log shows it.
func auditItem(b Binding) *AuditItem {
	it := &AuditItem{ID: b.ID, PrefixID: b.PrefixID, CIDR: b.CIDR.String(), Port: b.Port, Service: b.Service, Default: b.Default}
	if b.PortScoped() {
		it.Protocol = b.Protocol.String()
	}
	return it
}

// value is the encoded form of a prefix or binding.
type value struct {
	V        int          `json:"v"`
	CIDR     string       `json:"cidr"`
	Protocol string       `json:"protocol,omitempty"`
	Port     uint16       `json:"port,omitempty"`
	Service  Service      `json:"service_id"` // "" only for a canary create
	Canary   *valueCanary `json:"canary,omitempty"`
}

type valueCanary struct {
	Service Service           `json:"service_id"`
	Labels  map[string]string `json:"labels"`
}

// EncodePrefix returns p's record.
func EncodePrefix(p Prefix) Record {
	b, _ := json.Marshal(value{V: ValueVersion, CIDR: p.CIDR.String(), Service: p.Service})
	return Record{Key: PrefixKey(p.ID), Value: b}
}

// EncodeBinding returns b's record; b.PrefixID must be set.
func EncodeBinding(b Binding) Record { return encodeBinding(b, nil) }

// EncodeCanary returns the record of binding b (its stable form: Service
// "" for a canary create) with a pending canary change.
func EncodeCanary(b Binding, c Canary) Record { return encodeBinding(b, &c) }

func encodeBinding(b Binding, c *Canary) Record {
	v := value{V: ValueVersion, CIDR: b.CIDR.String(), Service: b.Service}
	if b.PortScoped() {
		v.Protocol, v.Port = b.Protocol.String(), b.Port
	}
	if c != nil {
		v.Canary = &valueCanary{Service: c.Service, Labels: c.Labels}
	}
	enc, _ := json.Marshal(v)
	return Record{Key: BindingKey(b.PrefixID, b.ID), Value: enc}
}

// Decoded is a record read back: a prefix or a binding, and a binding's
// pending canary change.
type Decoded struct {
	Prefix  *Prefix
	Binding *Binding // Service "" for a canary create
	Canary  *Canary
}

// DecodeRecord reads a record of either kind. A key of neither kind, a
// value of a newer version, a malformed value or one whose id does not
// match its key is an error naming the key.
func DecodeRecord(key string, val []byte) (Decoded, error) {
	var v value
	if err := json.Unmarshal(val, &v); err != nil {
		return Decoded{}, fmt.Errorf("%s: malformed value: %v", key, err)
	}
	if v.V < 1 || v.V > ValueVersion {
		return Decoded{}, fmt.Errorf("%s: value format %d, this binary reads formats 1 to %d", key, v.V, ValueVersion)
	}
	cidr, err := ParseCIDR(v.CIDR)
	if err != nil {
		return Decoded{}, fmt.Errorf("%s: cidr: %v", key, err)
	}
	if !v.Service.Known() && !(v.Service == "" && v.Canary != nil) {
		return Decoded{}, fmt.Errorf("%s: service_id: unknown service %q", key, v.Service)
	}
	var canary *Canary
	if v.Canary != nil {
		if !v.Canary.Service.Known() || len(v.Canary.Labels) == 0 {
			return Decoded{}, fmt.Errorf("%s: canary: want a known service_id and labels, have %q and %v", key, v.Canary.Service, v.Canary.Labels)
		}
		canary = &Canary{Service: v.Canary.Service, Labels: v.Canary.Labels}
	}
	switch {
	case strings.HasPrefix(key, PrefixKeys):
		if canary != nil {
			return Decoded{}, fmt.Errorf("%s: a prefix takes no canary change", key)
		}
		p := NewPrefix(cidr, v.Service, FromAPI)
		if key != PrefixKey(p.ID) {
			return Decoded{}, fmt.Errorf("%s: holds prefix %s, whose key is %s", key, cidr, PrefixKey(p.ID))
		}
		return Decoded{Prefix: &p}, nil
	case strings.HasPrefix(key, BindingKeys):
		proto, _, err := dispatch.ParseScope(v.Protocol, int(v.Port))
		if err != nil {
			return Decoded{}, fmt.Errorf("%s: protocol %q and port %d do not make a port scope (%v)", key, v.Protocol, v.Port, err)
		}
		b := NewBinding(cidr, proto, v.Port, v.Service, FromAPI)
		prefixID, _, _ := strings.Cut(strings.TrimPrefix(key, BindingKeys), "/")
		b.PrefixID = prefixID
		if key != BindingKey(prefixID, b.ID) {
			return Decoded{}, fmt.Errorf("%s: holds %s, whose id is %s", key, b, b.ID)
		}
		return Decoded{Binding: &b, Canary: canary}, nil
	}
	return Decoded{}, fmt.Errorf("%s: not a prefix's or a binding's key", key)
}

// KeyOf returns the store key of an API-made binding (a default binding's
// is its prefix's).
func KeyOf(b Binding) string {
	if b.Default {
		return PrefixKey(b.PrefixID)
	}
	return BindingKey(b.PrefixID, b.ID)
}

// diffAPI returns the mutation that turns the API-made items of old into
// those of next.
func diffAPI(old, next *State) Mutation {
	have := map[string][]byte{}
	for _, p := range old.Prefixes {
		if p.Source == FromAPI {
			r := EncodePrefix(p)
			have[r.Key] = r.Value
		}
	}
	for _, b := range old.Bindings {
		if b.Source == FromAPI {
			r := EncodeBinding(b)
			have[r.Key] = r.Value
		}
	}
	var m Mutation
	put := func(r Record) {
		v, ok := have[r.Key]
		switch {
		case !ok:
			m.Create = append(m.Create, r)
		case string(v) != string(r.Value):
			m.Update = append(m.Update, r)
		}
		delete(have, r.Key)
	}
	for _, p := range next.Prefixes {
		if p.Source == FromAPI {
			put(EncodePrefix(p))
		}
	}
	for _, b := range next.Bindings {
		if b.Source == FromAPI {
			put(EncodeBinding(b))
		}
	}
	for k := range have {
		m.Delete = append(m.Delete, k)
	}
	slices.Sort(m.Delete)
	return m
}

// Event is one key of the store changed at a revision: put with Value, or
// deleted (Value nil).
type Event struct {
	Key   string
	Value []byte
}

// eventsOf returns the events of m.
func eventsOf(m Mutation) []Event {
	evs := make([]Event, 0, len(m.Create)+len(m.Update)+len(m.Delete))
	for _, rs := range [][]Record{m.Create, m.Update} {
		for _, r := range rs {
			evs = append(evs, Event(r))
		}
	}
	for _, k := range m.Delete {
		evs = append(evs, Event{Key: k})
	}
	return evs
}

// ErrReadOnly reports a store that cannot be written (a read-only
// filesystem, no permission, no space); the error wrapping it names the
// store and the system's reason.
var ErrReadOnly = errors.New("the store cannot be written")
