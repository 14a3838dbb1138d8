package dispatch

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Protocol is an IP protocol number that the dispatcher steers.
type Protocol uint8

// The protocols the dispatcher knows.
const (
	TCP Protocol = 6
	UDP Protocol = 17
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case 0:
		return "any"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// ParseProtocol parses "tcp" or "udp".
func ParseProtocol(s string) (Protocol, error) {
	switch s {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	}
	return 0, fmt.Errorf("%q is not a protocol (want tcp or udp)", s)
}

// Owner identifies whoever owns a binding. The dispatcher knows no service
// names: the bindings layer gives each service an owner number and a Policy.
// Owner 0 is not valid.
type Owner uint8

// PolicyKind says how an owner decides about the ports of its addresses.
type PolicyKind uint8

// The kinds of policy.
const (
	// PolicyPass hands every port to the kernel's normal socket lookup.
	PolicyPass PolicyKind = 1
	// PolicyPorts steers the (protocol, port) pairs of Policy.Ports to their
	// labels and refuses every other port.
	PolicyPorts PolicyKind = 2
	// PolicyApps steers what the owner's Apps serve and refuses the rest.
	PolicyApps PolicyKind = 3
)

func (k PolicyKind) String() string {
	switch k {
	case PolicyPass:
		return "pass"
	case PolicyPorts:
		return "ports"
	case PolicyApps:
		return "apps"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ProtoPort is a protocol and a port.
type ProtoPort struct {
	Protocol Protocol
	Port     uint16
}

func (pp ProtoPort) String() string { return fmt.Sprintf("%s/%d", pp.Protocol, pp.Port) }

// Policy is what an owner does with the traffic it owns.
type Policy struct {
	Kind PolicyKind
	// Ports maps each served (protocol, port) to a label. Only for PolicyPorts;
	// nil or empty refuses every port.
	Ports map[ProtoPort]string
}

// Binding gives an address range, or one protocol and port of it, to an owner.
type Binding struct {
	Prefix netip.Prefix
	// Protocol and Port are both zero for an address binding, or both set
	// for a port-scoped one.
	Protocol Protocol
	Port     uint16
	Owner    Owner
}

// PortScoped reports whether b takes only one protocol and port.
func (b Binding) PortScoped() bool { return b.Protocol != 0 }

func (b Binding) String() string {
	if b.PortScoped() {
		return fmt.Sprintf("%s %s/%d -> owner %d", b.Prefix, b.Protocol, b.Port, b.Owner)
	}
	return fmt.Sprintf("%s -> owner %d", b.Prefix, b.Owner)
}

// PortRange is an inclusive range of ports. {0, 65535} means any port.
type PortRange struct {
	First, Last uint16
}

// AnyPort is the PortRange of an application that serves every port.
var AnyPort = PortRange{0, 65535}

// Any reports whether r stands for every port.
func (r PortRange) Any() bool { return r == AnyPort }

// Single reports whether r is one port.
func (r PortRange) Single() bool { return r.First == r.Last && r.First != 0 }

// Contains reports whether r covers port.
func (r PortRange) Contains(port uint16) bool { return port >= r.First && port <= r.Last }

// Valid reports whether r is a port range: First no later than Last, and
// port 0 only in AnyPort.
func (r PortRange) Valid() bool { return r.First <= r.Last && (r.First != 0 || r.Any()) }

// Overlaps reports whether r and o share a port.
func (r PortRange) Overlaps(o PortRange) bool { return r.First <= o.Last && o.First <= r.Last }

func (r PortRange) String() string {
	switch {
	case r.Any():
		return "*"
	case r.First == r.Last:
		return fmt.Sprint(r.First)
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// The specificities of port ranges, least specific first.
const (
	specAny = iota
	specRange
	specSingle
)

// Specificity orders port specifications where an address's apps meet: a
// single port beats a range beats any port.
func (r PortRange) Specificity() int {
	switch {
	case r.Single():
		return specSingle
	case r.Any():
		return specAny
	}
	return specRange
}

// App is an application of a PolicyApps owner: a protocol and ports on an edge
// range, steered to a label.
type App struct {
	Owner    Owner
	Protocol Protocol
	Edge     netip.Prefix
	Ports    PortRange
	Label    string
}

func (a App) String() string {
	return fmt.Sprintf("app %s %s:%s (owner %d) -> %s", a.Protocol, a.Edge, a.Ports, a.Owner, a.Label)
}

// Table is the whole steering state of the data plane. The dispatcher
// replaces it as one unit (see Dispatcher.Replace).
type Table struct {
	Owners   map[Owner]Policy
	Bindings []Binding
	Apps     []App
}

// MaxLabels is the number of distinct labels the data plane can hold.
const MaxLabels = 64

// maxLabelLen is the longest label name; the pinned label map stores 32 bytes
// with a terminating zero.
const maxLabelLen = 31

// ErrInvalidTable wraps every validation error of a Table.
var ErrInvalidTable = errors.New("invalid dispatch table")

// ErrCapacity wraps the error of a table with more bindings than the
// dispatcher's binding capacity (Options.BindingCapacity).
var ErrCapacity = errors.New("over the binding capacity")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidTable, fmt.Sprintf(format, args...))
}

// CheckLabel reports whether name is a usable label: at most 31 printable
// ASCII bytes ending in "/tcp" or "/udp", which says the protocol of the
// socket it stands for.
func CheckLabel(name string) error {
	if _, err := labelProtocol(name); err != nil {
		return err
	}
	if len(name) > maxLabelLen {
		return fmt.Errorf("label %q is longer than %d bytes", name, maxLabelLen)
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c > '~' {
			return fmt.Errorf("label %q has a byte that is not printable ASCII", name)
		}
	}
	return nil
}

func labelProtocol(name string) (Protocol, error) {
	switch {
	case strings.HasSuffix(name, "/tcp") && len(name) > 4:
		return TCP, nil
	case strings.HasSuffix(name, "/udp") && len(name) > 4:
		return UDP, nil
	}
	return 0, fmt.Errorf("label %q does not end in /tcp or /udp", name)
}

func checkLabelFor(name string, p Protocol) error {
	if err := CheckLabel(name); err != nil {
		return err
	}
	if lp, _ := labelProtocol(name); lp != p {
		return fmt.Errorf("label %q is for %s, not %s", name, lp, p)
	}
	return nil
}

func checkProtocol(p Protocol) error {
	if p != TCP && p != UDP {
		return fmt.Errorf("protocol %s is neither tcp nor udp", p)
	}
	return nil
}

// ScopeError is a port scope that does not hold.
type ScopeError struct {
	Field  string // the half at fault: "protocol" or "port"
	Reason string
}

func (e *ScopeError) Error() string { return e.Field + ": " + e.Reason }

// CheckScope checks the port scope of a binding: protocol and port both
// zero (the binding takes every port of its prefix), or both set, tcp or
// udp and a port from 1 to 65535. The error is a *ScopeError.
func CheckScope(p Protocol, port int) error {
	switch {
	case p == 0 && port == 0:
		return nil
	case p == 0:
		return &ScopeError{"protocol", "protocol and port go together: a port-scoped binding needs tcp or udp with its port"}
	case p != TCP && p != UDP:
		return &ScopeError{"protocol", fmt.Sprintf("%s is neither tcp nor udp", p)}
	case port == 0:
		return &ScopeError{"port", "protocol and port go together: a port-scoped binding needs a port from 1 to 65535 with its protocol"}
	case port < 1 || port > 65535:
		return &ScopeError{"port", fmt.Sprintf("%d is not a port (want 1-65535)", port)}
	}
	return nil
}

// ParseScope parses the port scope of a binding as written: protocol ""
// and port 0 for none, as CheckScope has it. The error is a *ScopeError.
func ParseScope(protocol string, port int) (Protocol, uint16, error) {
	var p Protocol
	if protocol != "" {
		var err error
		if p, err = ParseProtocol(protocol); err != nil {
			return 0, 0, &ScopeError{"protocol", err.Error()}
		}
	}
	if err := CheckScope(p, port); err != nil {
		return 0, 0, err
	}
	return p, uint16(port), nil
}

// checkBinding checks one binding on its own: its prefix and its scope.
func checkBinding(b Binding) error {
	switch {
	case !b.Prefix.IsValid():
		return errors.New("no prefix")
	case b.Prefix != b.Prefix.Masked():
		return fmt.Errorf("host bits set (want %s)", b.Prefix.Masked())
	case b.Prefix.Addr().Is4In6():
		return errors.New("IPv4-mapped IPv6 prefix; write it as IPv4")
	}
	return CheckScope(b.Protocol, int(b.Port))
}

// Validate checks t and returns an error naming the first offending item.
func (t *Table) Validate() error {
	if err := t.validateOwners(); err != nil {
		return err
	}
	if err := t.validateBindings(); err != nil {
		return err
	}
	return t.validateApps()
}

func (t *Table) validateOwners() error {
	for o, pol := range t.Owners {
		if o == 0 {
			return invalid("owner 0 is reserved")
		}
		switch pol.Kind {
		case PolicyPass, PolicyApps:
			if len(pol.Ports) > 0 {
				return invalid("owner %d: ports are only for kind %s, not %s", o, PolicyPorts, pol.Kind)
			}
		case PolicyPorts:
			for pp, label := range pol.Ports {
				if err := checkProtocol(pp.Protocol); err != nil {
					return invalid("owner %d port %s: %v", o, pp, err)
				}
				if pp.Port == 0 {
					return invalid("owner %d port %s: port 0 is not a port", o, pp)
				}
				if err := checkLabelFor(label, pp.Protocol); err != nil {
					return invalid("owner %d port %s: %v", o, pp, err)
				}
			}
		default:
			return invalid("owner %d: unknown kind %d", o, pol.Kind)
		}
	}
	return nil
}

func (t *Table) validateBindings() error {
	type bkey struct {
		p        netip.Prefix
		protocol Protocol
		port     uint16
	}
	seen := make(map[bkey]int, len(t.Bindings))
	for i, b := range t.Bindings {
		if err := checkBinding(b); err != nil {
			return invalid("bindings[%d] %s: %v", i, b, err)
		}
		if _, ok := t.Owners[b.Owner]; !ok {
			return invalid("bindings[%d] %s: owner %d has no policy", i, b, b.Owner)
		}
		k := bkey{b.Prefix, b.Protocol, b.Port}
		if j, dup := seen[k]; dup {
			return invalid("bindings[%d] %s: duplicate of bindings[%d]", i, b, j)
		}
		seen[k] = i
	}
	return nil
}

func (t *Table) validateApps() error {
	type akey struct {
		owner    Owner
		protocol Protocol
		edge     netip.Prefix
		class    int
	}
	groups := make(map[akey][]int)
	for i, a := range t.Apps {
		if err := t.checkApp(a); err != nil {
			return invalid("apps[%d] %s: %v", i, a, err)
		}
		k := akey{a.Owner, a.Protocol, a.Edge, a.Ports.Specificity()}
		for _, j := range groups[k] {
			if t.Apps[j].Ports.Overlaps(a.Ports) {
				return invalid("apps[%d] %s: ports overlap apps[%d] %s on the same edge", i, a, j, t.Apps[j])
			}
		}
		groups[k] = append(groups[k], i)
	}
	return nil
}

// checkApp checks one app on its own.
func (t *Table) checkApp(a App) error {
	if pol, ok := t.Owners[a.Owner]; !ok || pol.Kind != PolicyApps {
		return fmt.Errorf("owner %d is not of kind %s", a.Owner, PolicyApps)
	}
	if err := checkProtocol(a.Protocol); err != nil {
		return err
	}
	if !a.Edge.IsValid() || a.Edge != a.Edge.Masked() || a.Edge.Addr().Is4In6() {
		return errors.New("edge is not a masked IPv4 or IPv6 prefix")
	}
	if !a.Ports.Valid() {
		return fmt.Errorf("%d-%d is not a port range", a.Ports.First, a.Ports.Last)
	}
	return checkLabelFor(a.Label, a.Protocol)
}

// Action is what the data plane does with a packet.
type Action uint8

// The actions of a Verdict.
const (
	// Kernel: not steered; the kernel's normal socket lookup decides.
	Kernel Action = iota
	// Refuse: dropped by the program; TCP answers with a reset and UDP with
	// ICMP port unreachable.
	Refuse
	// Steer: assigned to the socket registered under the verdict's label (or
	// refused, counting a miss, when none is registered).
	Steer
)

func (a Action) String() string {
	switch a {
	case Kernel:
		return "kernel"
	case Refuse:
		return "refuse"
	case Steer:
		return "steer"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Verdict is the data plane's decision about one destination.
type Verdict struct {
	Action Action
	Label  string // for Steer
}

func (v Verdict) String() string {
	if v.Action == Steer {
		return "steer " + v.Label
	}
	return v.Action.String()
}

// Decide is the reference model of the BPF program: it returns the verdict
// for a packet of protocol p to dst by scanning t directly. It is slow and
// obvious on purpose; the differential tests hold the program to it.
func (t *Table) Decide(p Protocol, dst netip.AddrPort) Verdict {
	addr := dst.Addr().Unmap()
	port := dst.Port()

	// 1. The owner: the longest matching binding, port-scoped on a tie.
	var owner *Binding
	for i := range t.Bindings {
		b := &t.Bindings[i]
		if !b.Prefix.Contains(addr) {
			continue
		}
		if b.PortScoped() && (b.Protocol != p || b.Port != port) {
			continue
		}
		if owner == nil || b.Prefix.Bits() > owner.Prefix.Bits() ||
			(b.Prefix.Bits() == owner.Prefix.Bits() && b.PortScoped()) {
			owner = b
		}
	}
	if owner == nil {
		return Verdict{Action: Kernel}
	}

	// 2. The owner's verdict.
	pol := t.Owners[owner.Owner]
	switch pol.Kind {
	case PolicyPass:
		return Verdict{Action: Kernel}
	case PolicyPorts:
		if label, ok := pol.Ports[ProtoPort{p, port}]; ok {
			return Verdict{Action: Steer, Label: label}
		}
	case PolicyApps:
		if a := t.app(owner.Owner, p, addr, port); a != nil {
			return Verdict{Action: Steer, Label: a.Label}
		}
	}
	return Verdict{Action: Refuse}
}

// app returns the app of owner that serves p, addr and port: the most
// specific edge, then a single port over a range over any port.
func (t *Table) app(owner Owner, p Protocol, addr netip.Addr, port uint16) *App {
	var best *App
	for i := range t.Apps {
		a := &t.Apps[i]
		if a.Owner != owner || a.Protocol != p || !a.Edge.Contains(addr) || !a.Ports.Contains(port) {
			continue
		}
		if best == nil || cmp.Or(
			cmp.Compare(a.Edge.Bits(), best.Edge.Bits()),
			cmp.Compare(a.Ports.Specificity(), best.Ports.Specificity())) > 0 {
			best = a
		}
	}
	return best
}

// Labels returns the labels t refers to, sorted.
func (t *Table) Labels() []string {
	set := make(map[string]bool)
	for _, pol := range t.Owners {
		for _, l := range pol.Ports {
			set[l] = true
		}
	}
	for _, a := range t.Apps {
		set[a.Label] = true
	}
	out := make([]string, 0, len(set))
	for l := range set {
		out = append(out, l)
	}
	slices.Sort(out)
	return out
}
