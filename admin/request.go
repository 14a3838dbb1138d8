package admin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// maxWait bounds ?wait=.
const maxWait = 30 * time.Second

// request returns r's context carrying who asks and the request id, for
// the change's audit entry: the token's id when the API has a token, else
// the remote address; the request id the client sent (X-Request-Id), else
// one made here.
func (a *api) request(r *http.Request) context.Context {
	return bindings.WithRequest(r.Context(), bindings.Request{Who: a.who(r), ID: requestID(r)})
}

// who names who asks: the token's id when the API has a token and the
// request carries it, else the remote address.
func (a *api) who(r *http.Request) string {
	if a.opts.Token != "" && a.authorize(r) == nil {
		return "token:" + a.tokenID
	}
	return r.RemoteAddr
}

// tokenIDOf names a token without revealing it: the start of its hash.
func tokenIDOf(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:6])
}

// requestID returns the request's id: X-Request-Id when it is a sane one
// (at most 64 printable ASCII characters), else a new random one, set on
// the request for the handler (the answer carries it too).
func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); id != "" && len(id) <= 64 && printable(id) {
		return id
	}
	var b [8]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	r.Header.Set("X-Request-Id", id)
	return id
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// waitField reads ?wait=DURATION: how long a change's answer may wait for
// the change to be active everywhere in its scope (at most maxWait).
func waitField(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		return 0, badField("wait", "%q is not a duration (such as \"5s\")", v)
	case d < 0 || d > maxWait:
		return 0, badField("wait", "%s is out of range: 0 to %s", d, maxWait)
	}
	return d, nil
}

// answerBinding writes b, the binding a create or move made, once its
// change settled (or wait passed); for a dry run, the plan.
func (a *api) answerBinding(w http.ResponseWriter, r *http.Request, wait time.Duration, b bindings.Binding) error {
	if dryRunOf(r) != nil {
		return a.answer(w, r, toBinding(b))
	}
	return writeResult(w, a.waitFor(r, wait, b))
}

// waitFor returns b as the API shows it once its change is no longer
// pending, or wait has passed, or the request ended: whatever state it
// reached.
func (a *api) waitFor(r *http.Request, wait time.Duration, b bindings.Binding) Binding {
	j := toBinding(b)
	j.Provisioning = a.waitAt(r, wait, bindings.KeyOf(b), a.m.Provisioning(b).Revision)
	return j
}

// waitPoll is how often a waiting answer looks again.
const waitPoll = 10 * time.Millisecond

// waitAt returns the provisioning of key's change at rev once it has
// settled (active, or failed and no node still pending), or wait has
// passed, or the request ended.
func (a *api) waitAt(r *http.Request, wait time.Duration, key string, rev int64) Provisioning {
	deadline := time.Now().Add(wait)
	for {
		p := a.m.ProvisioningAt(key, rev)
		// Settled: active, or failed with no node still on its way.
		settled := p.State != bindings.Pending && (p.State != bindings.Failed || p.NodesApplied+len(p.NodesFailed) >= p.NodesTotal)
		if settled || time.Now().After(deadline) || r.Context().Err() != nil {
			return p
		}
		t := time.NewTimer(min(waitPoll, time.Until(deadline)))
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
	}
}

// A single node is a fleet of one: /v1/nodes lists it, /v1/fleet sums it.

func (a *api) nodes(w http.ResponseWriter, r *http.Request) error {
	if a.opts.Fleet == nil {
		return writeResult(w, []Node{a.single()})
	}
	return writeResult(w, a.opts.Fleet.Nodes())
}

func (a *api) fleet(w http.ResponseWriter, r *http.Request) error {
	if a.opts.Fleet == nil {
		rev := a.m.Revision()
		return writeResult(w, map[string]any{"revision": rev, "applied": rev, "stale": false, "nodes": 1, "states": map[string]int{"in_sync": 1}})
	}
	return writeResult(w, a.opts.Fleet.Summary())
}

// single is this node as GET /v1/nodes lists it when it is no fleet's.
func (a *api) single() Node {
	id := ""
	if a.opts.Status != nil {
		id = a.opts.Status().Node
	}
	return Node{ID: id, Labels: map[string]string{}, Live: true, Revision: a.m.Revision(), State: "in_sync"}
}

// maxAuditLimit bounds ?limit= of GET /v1/audit.
const maxAuditLimit = 10000

func (a *api) audit(w http.ResponseWriter, r *http.Request) error {
	if a.opts.Audit == nil {
		return fieldError(http.StatusNotFound, codeNotFound, fieldPath, "this node keeps no audit log")
	}
	q := r.URL.Query()
	since, limit := int64(0), 1000
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return badField("since", "%q is not a revision (a whole number, 0 or more)", v)
		}
		since = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAuditLimit {
			return badField("limit", "%q is out of range: 1 to %d", v, maxAuditLimit)
		}
		limit = n
	}
	es, err := a.opts.Audit(r.Context(), since, limit)
	if err != nil {
		return err
	}
	if es == nil {
		es = []bindings.AuditEntry{}
	}
	return writeResult(w, es)
}

func (a *api) promote(w http.ResponseWriter, r *http.Request) error {
	wait, err := waitField(r)
	if err != nil {
		return err
	}
	b, err := a.m.Promote(a.request(r), r.PathValue("prefix_id"), r.PathValue("binding_id"))
	if err != nil {
		return err
	}
	return writeResult(w, a.waitFor(r, wait, b))
}

func (a *api) rollback(w http.ResponseWriter, r *http.Request) error {
	wait, err := waitField(r)
	if err != nil {
		return err
	}
	b, rev, err := a.m.Rollback(a.request(r), r.PathValue("prefix_id"), r.PathValue("binding_id"))
	if err != nil {
		return err
	}
	if b.Service == "" {
		// A rolled-back create is gone.
		j := toBinding(b)
		j.Provisioning = a.waitAt(r, wait, bindings.KeyOf(b), rev)
		return writeResult(w, j)
	}
	return writeResult(w, a.waitFor(r, wait, b))
}

// maxBatch bounds a batch's bindings, and maxBatchBody its body.
const (
	maxBatch     = 1 << 20
	maxBatchBody = 128 << 20
)

type batchBody struct {
	Bindings []createBindingBody `json:"bindings"`
}

// Batch is the answer of POST /v1/batch.
type Batch struct {
	Revision     int64        `json:"revision"`
	Count        int          `json:"count"`
	Provisioning Provisioning `json:"provisioning"`
}

func (a *api) batch(w http.ResponseWriter, r *http.Request) error {
	var body batchBody
	if err := decodeLimit(w, r, &body, maxBatchBody); err != nil {
		return err
	}
	if len(body.Bindings) > maxBatch {
		return badField("bindings", "%d bindings: a batch holds at most %d", len(body.Bindings), maxBatch)
	}
	wait, err := waitField(r)
	if err != nil {
		return err
	}
	bs := make([]bindings.Binding, len(body.Bindings))
	for i, b := range body.Bindings {
		nb, err := b.binding()
		if err == nil && b.Canary != nil {
			err = badField("canary", "a batch takes no canary changes")
		}
		if err != nil {
			return within(err, fmt.Sprintf("bindings[%d]", i))
		}
		bs[i] = nb
	}
	rev, err := a.m.Batch(a.request(r), bs)
	if err != nil {
		return err
	}
	if dryRunOf(r) != nil {
		return a.answer(w, r, Batch{Revision: rev, Count: len(bs)})
	}
	// The batch's first binding stands for all: one change, one revision.
	first := bs[0]
	if p, ok := a.m.PrefixOf(first.CIDR); ok {
		first.PrefixID = p.ID
	}
	return writeResult(w, Batch{Revision: rev, Count: len(bs), Provisioning: a.waitAt(r, wait, bindings.KeyOf(first), rev)})
}

// within names where in the body an error's fields are.
func within(err error, where string) error {
	e := *errorOf(err)
	e.Errors = slices.Clone(e.Errors)
	for i := range e.Errors {
		e.Errors[i].Message = where + "." + e.Errors[i].Message
	}
	return &e
}
