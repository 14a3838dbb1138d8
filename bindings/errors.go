package bindings

import (
	"fmt"
	"strings"
)

// ErrorKind classifies an error of the binding state, for the admin API's
// status codes.
type ErrorKind int

// The kinds of errors.
const (
	KindInvalid     ErrorKind = iota + 1 // a field or the resulting state breaks a rule
	KindConflict                         // duplicate or overlapping
	KindConfigOwned                      // the item is declared by the configuration file
	KindNotFound                         // no such id
	KindHasBindings                      // a prefix with bindings, deleted without cascade
	KindInternal                         // the data plane or the store failed
	KindUnavailable                      // changes are held for now (a live upgrade hands the writer role on)
)

// Error is every error of the binding state: an operation refused (Field
// and Reason), or the rules a candidate state breaks (Problems, each naming
// the item, its field and the reason). errors.As finds it.
type Error struct {
	Kind   ErrorKind
	Item   string // the item that is wrong, e.g. "binding 192.0.2.0/25 -> cdn (from config)"
	Field  string // the offending field, if one is: "cidr", "service_id", "port"
	Reason string

	// Problems are the rules a candidate state breaks, one Error each (of
	// KindInvalid or KindConflict), when the error is the state's: from
	// Validate, or an operation's item checked against the state's rules.
	// Kind is then KindConflict if one of them is, else KindInvalid.
	Problems []*Error
}

func (e *Error) Error() string {
	if len(e.Problems) > 0 {
		s := make([]string, len(e.Problems))
		for i, p := range e.Problems {
			s[i] = p.Error()
		}
		return strings.Join(s, "; ")
	}
	s := e.Reason
	if e.Field != "" {
		s = e.Field + ": " + s
	}
	if e.Item != "" {
		s = e.Item + ": " + s
	}
	return s
}

// opErr is an operation's error about one field.
func opErr(kind ErrorKind, field, format string, args ...any) error {
	return &Error{Kind: kind, Field: field, Reason: fmt.Sprintf(format, args...)}
}

// internalErr is the data plane's or the store's failure to take a change.
func internalErr(format string, args ...any) error {
	return &Error{Kind: KindInternal, Reason: fmt.Sprintf(format, args...)}
}

// errList collects the rules a candidate state breaks. Items are described
// only when they are wrong: describing costs more than checking.
type errList struct{ list []*Error }

func (e *errList) add(item fmt.Stringer, field, format string, args ...any) {
	e.addKind(KindInvalid, item.String(), field, format, args...)
}

func (e *errList) conflict(item fmt.Stringer, field, format string, args ...any) {
	e.addKind(KindConflict, item.String(), field, format, args...)
}

func (e *errList) addKind(kind ErrorKind, item, field, format string, args ...any) {
	e.list = append(e.list, &Error{Kind: kind, Item: item, Field: field, Reason: fmt.Sprintf(format, args...)})
}

// err returns the list as one Error, or nil when it is empty.
func (e *errList) err() error {
	if len(e.list) == 0 {
		return nil
	}
	kind := KindInvalid
	for _, p := range e.list {
		if p.Kind == KindConflict {
			kind = KindConflict
		}
	}
	return &Error{Kind: kind, Problems: e.list}
}
