package admin

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// The Cloudflare-compatible routes: Cloudflare's service-bindings API
// (its paths, fields and envelope, as its own clients send and read them)
// over the same Manager calls, checks and audit as the /v1 routes. A
// prefix onboarded here starts as magic-transit, which passes every port to
// the kernel: edgeproxy steers none of it until a binding says so, as a
// Cloudflare prefix serves nothing before its first binding. Its
// prefix-wide binding (the CIDR of the prefix itself) is the prefix's
// default service; a magic-transit default is no binding in this view.
// docs/api.md has the mapping.

// cfBase is the root of the Cloudflare-compatible routes.
const cfBase = "/client/v4/accounts/{account_id}/addressing"

// maxAccountID bounds the account id of a path.
const maxAccountID = 64

// cloudflareRoutes are the Cloudflare-compatible routes by pattern; the
// rest of cfBase answers that edgeproxy does not have that feature, and
// the rest of /client/v4/ that there is no such route.
func (a *api) cloudflareRoutes() map[string]handlerFunc {
	const prefix = cfBase + "/prefixes/{prefix_id}"
	return map[string]handlerFunc{
		"GET " + cfBase + "/services":                 a.cfRoute(a.services),
		"GET " + cfBase + "/prefixes":                 a.cfRoute(a.cfListPrefixes),
		"POST " + cfBase + "/prefixes":                a.cfRoute(a.cfCreatePrefix),
		"GET " + prefix:                               a.cfRoute(a.cfGetPrefix),
		"DELETE " + prefix:                            a.cfRoute(a.deletePrefix),
		"GET " + prefix + "/bindings":                 a.cfRoute(a.cfListBindings),
		"POST " + prefix + "/bindings":                a.cfRoute(a.cfCreateBinding),
		"GET " + prefix + "/bindings/{binding_id}":    a.cfRoute(a.cfGetBinding),
		"DELETE " + prefix + "/bindings/{binding_id}": a.cfRoute(a.cfDeleteBinding),
		cfBase + "/":                                  a.cfRoute(a.cfUnsupported),
		"/client/v4/":                                 a.noRoute,
	}
}

// cfRoute wraps a Cloudflare-compatible route: it checks the account id
// and answers errors as Cloudflare's clients expect them.
func (a *api) cfRoute(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := accountField(r.PathValue("account_id")); err != nil {
			return err
		}
		return cfError(h(w, r))
	}
}

// cfError is err as the API answers it, told not to be retried when it is
// a conflict: Cloudflare's clients retry a 409 unless the answer says not.
func cfError(err error) error {
	if err == nil {
		return nil
	}
	e := *errorOf(err)
	if e.Status == http.StatusConflict {
		e.header = e.header.Clone()
		if e.header == nil {
			e.header = http.Header{}
		}
		e.header.Set("X-Should-Retry", "false")
	}
	return &e
}

// accountField checks the account id of a path. Any account id is taken,
// and all see the same state: a node has one binding state, and the token
// is what authorizes a change.
func accountField(id string) error {
	if id == "" || len(id) > maxAccountID {
		return badField("account_id", "%d characters: want 1 to %d", len(id), maxAccountID)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return badField("account_id", "%q: want letters, digits, '-' or '_' (such as Cloudflare's 32 hex characters)", id)
		}
	}
	return nil
}

// cfPrefix is a prefix in Cloudflare's shape: its id, account and CIDR,
// then edgeproxy's own fields (the default service and where it was
// declared), which Cloudflare's clients keep as extra fields.
type cfPrefix struct {
	AccountID string `json:"account_id"`
	Prefix
}

func toCFPrefix(r *http.Request, p bindings.Prefix) cfPrefix {
	return cfPrefix{AccountID: r.PathValue("account_id"), Prefix: toPrefix(p)}
}

// cfBinding is a binding in Cloudflare's shape. Protocol and port, which
// Cloudflare's bindings do not have, appear on a port-scoped binding made
// through /v1 or the configuration file, so that it is not read as the
// whole CIDR's.
type cfBinding struct {
	ID           string         `json:"id"`
	CIDR         string         `json:"cidr"`
	ServiceID    string         `json:"service_id"`
	ServiceName  string         `json:"service_name"`
	Provisioning cfProvisioning `json:"provisioning"`
	Protocol     string         `json:"protocol,omitempty"`
	Port         uint16         `json:"port,omitempty"`
}

// cfProvisioning is Cloudflare's provisioning: "active" once every live
// node in scope holds the change (on a single node, once answered), else
// "provisioning": pending, a canary change, or refused by some node
// (GET /v1/... says which and why).
type cfProvisioning struct {
	State string `json:"state"`
}

func toCFBinding(b Binding) cfBinding {
	state := "provisioning"
	if b.Provisioning.State == bindings.Active {
		state = "active"
	}
	return cfBinding{
		ID: b.ID, CIDR: b.CIDR, ServiceID: b.ServiceID, ServiceName: b.ServiceName,
		Provisioning: cfProvisioning{State: state}, Protocol: b.Protocol, Port: b.Port,
	}
}

// unbound reports whether b is a prefix's magic-transit default: no
// binding in Cloudflare's view, since edgeproxy steers none of it.
func unbound(b bindings.Binding) bool {
	return b.Default && b.Service == bindings.MagicTransit
}

func (a *api) cfListPrefixes(w http.ResponseWriter, r *http.Request) error {
	ps := a.m.Prefixes()
	out := make([]cfPrefix, len(ps))
	for i, p := range ps {
		out[i] = toCFPrefix(r, p)
	}
	return writeResult(w, out)
}

func (a *api) cfGetPrefix(w http.ResponseWriter, r *http.Request) error {
	p, err := a.m.Prefix(r.PathValue("prefix_id"))
	if err != nil {
		return err
	}
	return writeResult(w, toCFPrefix(r, p))
}

// cfPrefixBody is Cloudflare's prefix to onboard. Of its fields only the
// CIDR means something here: the ASN is checked and not kept (edgeproxy
// announces no routes), and an LOA or a description is refused, since
// nothing would keep it.
type cfPrefixBody struct {
	CIDR                *string `json:"cidr"`
	ASN                 *int64  `json:"asn"`
	Description         *string `json:"description"`
	LOADocumentID       *string `json:"loa_document_id"`
	DelegateLOACreation *bool   `json:"delegate_loa_creation"`
}

// check refuses the fields that have no meaning here.
func (b *cfPrefixBody) check() error {
	switch {
	case b.ASN != nil && (*b.ASN < 1 || *b.ASN > 1<<32-1):
		return badField("asn", "%d is not an AS number (1 to 4294967295)", *b.ASN)
	case b.Description != nil && *b.Description != "":
		return badField("description", "edgeproxy keeps no description of a prefix: leave it out")
	case b.LOADocumentID != nil && *b.LOADocumentID != "":
		return badField("loa_document_id", "edgeproxy announces no routes and keeps no LOA: leave it out")
	case b.DelegateLOACreation != nil && *b.DelegateLOACreation:
		return badField("delegate_loa_creation", "edgeproxy announces no routes and makes no LOA: leave it out or false")
	}
	return nil
}

func (a *api) cfCreatePrefix(w http.ResponseWriter, r *http.Request) error {
	var body cfPrefixBody
	if err := decode(w, r, &body); err != nil {
		return err
	}
	cidr, err := cidrField(body.CIDR)
	if err != nil {
		return err
	}
	if err := body.check(); err != nil {
		return err
	}
	p, err := a.m.CreatePrefix(a.request(r), cidr, bindings.MagicTransit)
	if err != nil {
		return err
	}
	return writeResult(w, toCFPrefix(r, p))
}

func (a *api) cfListBindings(w http.ResponseWriter, r *http.Request) error {
	bs, err := a.m.Bindings(r.PathValue("prefix_id"))
	if err != nil {
		return err
	}
	out := make([]cfBinding, 0, len(bs))
	for _, b := range bs {
		if !unbound(b) {
			out = append(out, toCFBinding(a.binding(b)))
		}
	}
	return writeResult(w, out)
}

// cfBindingOf returns a prefix's binding, which Cloudflare's view has: not
// its magic-transit default.
func (a *api) cfBindingOf(r *http.Request) (bindings.Binding, error) {
	prefixID, id := r.PathValue("prefix_id"), r.PathValue("binding_id")
	b, err := a.m.Binding(prefixID, id)
	if err == nil && unbound(b) {
		err = fieldError(http.StatusNotFound, codeNotFound, "binding_id",
			fmt.Sprintf("prefix %s has no binding with id %q: the prefix is not bound as a whole (magic-transit: the kernel decides)", prefixID, id))
	}
	return b, err
}

func (a *api) cfGetBinding(w http.ResponseWriter, r *http.Request) error {
	b, err := a.cfBindingOf(r)
	if err != nil {
		return err
	}
	return writeResult(w, toCFBinding(a.binding(b)))
}

// cfCreateBinding creates a binding of Cloudflare's shape, {cidr,
// service_id}. One of the prefix's own CIDR is its prefix-wide binding:
// it gives the prefix, while magic-transit, to the service; a binding of
// a part of the prefix is created as on /v1.
func (a *api) cfCreateBinding(w http.ResponseWriter, r *http.Request) error {
	var body createPrefixBody
	if err := decode(w, r, &body); err != nil {
		return err
	}
	cidr, svc, err := body.fields()
	if err != nil {
		return err
	}
	wait, err := waitField(r)
	if err != nil {
		return err
	}
	prefixID := r.PathValue("prefix_id")
	p, err := a.m.Prefix(prefixID)
	if err != nil {
		return err
	}
	var b bindings.Binding
	if cidr == p.CIDR {
		b, err = a.bindPrefix(r, p, svc)
	} else {
		b, err = a.m.CreateBinding(a.request(r), prefixID, cidr, 0, 0, svc)
	}
	if err != nil {
		return err
	}
	return writeResult(w, toCFBinding(a.waitFor(r, wait, b)))
}

// bindPrefix makes prefix p's prefix-wide binding: it moves the prefix's
// default from magic-transit to svc.
func (a *api) bindPrefix(r *http.Request, p bindings.Prefix, svc bindings.Service) (bindings.Binding, error) {
	def := p.DefaultBinding()
	switch {
	case !unbound(def):
		return bindings.Binding{}, fieldError(http.StatusConflict, codeConflict, "cidr",
			fmt.Sprintf("%s is bound as a whole already, to %s (id %s): delete that binding first", p.CIDR, p.Service, def.ID))
	case svc == bindings.MagicTransit:
		return bindings.Binding{}, badField("service_id", "magic-transit is what an unbound prefix is here (the kernel decides): there is no binding to create")
	}
	return a.m.MoveBinding(a.request(r), p.ID, def.ID, svc)
}

// cfDeleteBinding deletes a binding; deleting the prefix-wide one gives
// the prefix back to magic-transit (the prefix stays onboarded, as a
// Cloudflare prefix does without bindings).
func (a *api) cfDeleteBinding(w http.ResponseWriter, r *http.Request) error {
	wait, err := waitField(r)
	if err != nil {
		return err
	}
	b, err := a.cfBindingOf(r)
	if err != nil {
		return err
	}
	if b.Default {
		moved, err := a.m.MoveBinding(a.request(r), b.PrefixID, b.ID, bindings.MagicTransit)
		if err != nil {
			return err
		}
		// The binding as it was, at the revision that took it away.
		gone := a.waitFor(r, wait, moved)
		gone.ServiceID, gone.ServiceName = string(b.Service), b.Service.Name()
		return writeResult(w, toCFBinding(gone))
	}
	gone, rev, err := a.m.DeleteBinding(a.request(r), b.PrefixID, b.ID)
	if err != nil {
		return err
	}
	j := toBinding(gone)
	j.Provisioning = a.waitAt(r, wait, bindings.KeyOf(gone), rev)
	return writeResult(w, toCFBinding(j))
}

// cfUnsupported answers a path of Cloudflare's addressing API that
// edgeproxy does not have: BGP prefixes, advertisement, delegations, LOA
// documents, address maps, regional hostnames, editing a prefix.
func (a *api) cfUnsupported(w http.ResponseWriter, r *http.Request) error {
	_, rest, _ := strings.Cut(r.URL.Path, "/addressing/")
	return fieldError(http.StatusNotImplemented, codeNotFound, fieldPath,
		fmt.Sprintf("%s addressing/%s: not supported by edgeproxy, which serves services, prefixes (list, create, get, delete) and their bindings (list, create, get, delete); it announces no routes and keeps no LOA, address map or regional hostname", r.Method, rest))
}
