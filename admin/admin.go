// Package admin serves edgeproxy's admin API: services, prefixes, bindings
// and lookups under /v1 in the envelope of docs/api.md, Prometheus metrics
// on /metrics, and /healthz and /readyz.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

// Options configure the admin API.
type Options struct {
	Bindings *bindings.Manager
	// Token, when not empty, is the bearer token that mutating calls
	// (POST, PATCH, DELETE) need.
	Token string
	// Ready says whether the node is ready to serve; nil means it is.
	Ready func() error
	// Registry holds the metrics /metrics serves; the API's own metrics
	// are registered in it. Nil: a new registry.
	Registry *prometheus.Registry
	// Logger receives a line per failed request; nil discards.
	Logger *slog.Logger
	// Origins returns the cdn's origin pools and their health for
	// GET /v1/origins; nil: the cdn does not run here.
	Origins func() any
	// Drain, when set, is called after a change that asked for a drain
	// deadline ("drain" in a PATCH or DELETE of a binding): when it has
	// passed, the connections still held on addresses that left their
	// service are closed. Nil: a change asking for one is refused.
	Drain func(time.Duration)
	// Status describes the process serving the node for GET /v1/status;
	// nil: that route answers 404.
	Status func() Status
	// Writable, when set, says whether the binding state may change now:
	// a non-nil error (such as a read-only store) answers every /v1
	// change with 503 and that error, before the change is tried.
	Writable func() error
	// Fleet shows the fleet (GET /v1/nodes, GET /v1/fleet); nil on a
	// single node.
	Fleet *FleetView
	// Audit lists the audit log after a revision (GET /v1/audit); nil:
	// there is none.
	Audit func(ctx context.Context, since int64, limit int) ([]bindings.AuditEntry, error)
	// Traffic returns what binding b's addresses saw since the node
	// began counting them, and over the recent window (its span given);
	// ok false where nothing counts it. Nil: no traffic is shown.
	Traffic func(b bindings.Binding) (total, recent Traffic, window time.Duration, ok bool)
}

// FleetView is what the API shows of the fleet.
type FleetView struct {
	Nodes   func() any // GET /v1/nodes
	Summary func() any // GET /v1/fleet
}

// maxBody bounds request bodies.
const maxBody = 64 << 10

// Handler returns the admin API's handler.
func Handler(opts Options) http.Handler {
	a := makeAPI(opts)
	mux := http.NewServeMux()
	for pattern, h := range a.routes() {
		mux.HandleFunc(pattern, a.serve(h))
	}
	for pattern, h := range a.cloudflareRoutes() {
		mux.HandleFunc(pattern, a.serve(h))
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.opts.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", a.readyz)
	return a.middleware(mux)
}

// makeAPI fills in the options' defaults and registers the API's metrics.
func makeAPI(opts Options) *api {
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a := &api{opts: opts, m: opts.Bindings, tokenID: tokenIDOf(opts.Token)}
	a.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edgeproxy_api_requests_total",
		Help: "Admin API requests by route and status code.",
	}, []string{"route", "code"})
	a.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "edgeproxy_api_request_duration_seconds",
		Help:    "Admin API request durations by route; a mutation's includes the data plane and the store.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5},
	}, []string{"route"})
	opts.Registry.MustRegister(a.requests, a.latency)
	return a
}

// routes are the /v1 routes by pattern; "/v1/" answers every other path.
func (a *api) routes() map[string]handlerFunc {
	return map[string]handlerFunc{
		"GET /v1/services":                                             a.services,
		"GET /v1/prefixes":                                             a.listPrefixes,
		"POST /v1/prefixes":                                            a.createPrefix,
		"GET /v1/prefixes/{prefix_id}":                                 a.getPrefix,
		"DELETE /v1/prefixes/{prefix_id}":                              a.deletePrefix,
		"GET /v1/prefixes/{prefix_id}/bindings":                        a.listBindings,
		"POST /v1/prefixes/{prefix_id}/bindings":                       a.createBinding,
		"GET /v1/prefixes/{prefix_id}/bindings/{binding_id}":           a.getBinding,
		"PATCH /v1/prefixes/{prefix_id}/bindings/{binding_id}":         a.moveBinding,
		"DELETE /v1/prefixes/{prefix_id}/bindings/{binding_id}":        a.deleteBinding,
		"GET /v1/lookup":                                               a.lookup,
		"GET /v1/origins":                                              a.origins,
		"GET /v1/status":                                               a.status,
		"POST /v1/prefixes/{prefix_id}/bindings/{binding_id}/promote":  a.promote,
		"POST /v1/prefixes/{prefix_id}/bindings/{binding_id}/rollback": a.rollback,
		"POST /v1/batch":                                               a.batch,
		"GET /v1/nodes":                                                a.nodes,
		"GET /v1/fleet":                                                a.fleet,
		"GET /v1/audit":                                                a.audit,
		"/v1/":                                                         a.noRoute,
	}
}

// handlerFunc is a /v1 route: it writes its result, or returns the error
// that serve answers with.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// serve adapts a route to net/http: an error it returns is answered, once,
// in the envelope with its status and code.
func (a *api) serve(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			a.fail(w, r, err)
		}
	}
}

// fail answers err; the middleware logs it.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	writeError(w, errorOf(err))
}

// logError writes the one log line of a request answered with an error
// status: a refusal (4xx) at Info, a failure (5xx) at Warn, both as
// "admin request failed" with the same attributes. An answer the API made
// has its envelope's code and messages; one net/http made (a path outside
// /v1 that no route serves) has code 0 and its status text.
func (a *api) logError(r *http.Request, id string, sw *statusWriter) {
	level := slog.LevelInfo
	if sw.status >= 500 {
		level = slog.LevelWarn
	}
	code, msg := 0, http.StatusText(sw.status)
	if sw.err != nil {
		code, msg = sw.err.Code(), sw.err.Message()
	}
	a.opts.Logger.LogAttrs(r.Context(), level, "admin request failed",
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", sw.status), slog.Int("code", code),
		slog.String("who", a.who(r)), slog.String("request_id", id), slog.String("error", msg))
}

type api struct {
	opts     Options
	m        *bindings.Manager
	tokenID  string // names the token in audit entries
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// statusWriter records the status for the metrics and the log, and the
// API's error if it answered one.
type statusWriter struct {
	http.ResponseWriter
	status int
	err    *Error
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (a *api) middleware(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := requestID(r)
		w.Header().Set("X-Request-Id", id)
		sw := &statusWriter{ResponseWriter: w}
		if r2, err := a.admit(mux, r); err != nil {
			a.fail(sw, r, err)
		} else {
			mux.ServeHTTP(sw, r2)
		}
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		// /readyz's 503 is its answer, not a refusal.
		if sw.status >= 400 && route != "GET /readyz" {
			a.logError(r, id, sw)
		}
		a.requests.WithLabelValues(route, strconv.Itoa(sw.status)).Inc()
		a.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// admit checks a mutating call before its route sees it: the bearer token,
// then whether it is a dry run, else whether the binding state may change
// now. It returns the request the route is to see.
func (a *api) admit(mux *http.ServeMux, r *http.Request) (*http.Request, error) {
	if !mutating(r.Method) {
		return r, nil
	}
	if a.opts.Token != "" {
		if err := a.authorize(r); err != nil {
			return nil, err
		}
	}
	if !changes(mux, r) {
		return r, nil
	}
	switch dry, err := dryRunField(r, r.Pattern); {
	case err != nil:
		return nil, err
	case dry:
		return withDryRun(r), nil
	}
	if a.opts.Writable != nil {
		if err := a.opts.Writable(); err != nil {
			return nil, unavailable(err.Error(), "60")
		}
	}
	return r, nil
}

// changes reports whether r is one of the routes that change the binding
// state (of /v1, or the Cloudflare-compatible ones), and sets r.Pattern
// for the metrics.
func changes(mux *http.ServeMux, r *http.Request) bool {
	_, pattern := mux.Handler(r)
	if !strings.Contains(pattern, " /v1/") && !strings.Contains(pattern, " "+cfBase+"/") {
		return false // unknown and unsupported routes answer 404 or 501, as ever
	}
	r.Pattern = pattern
	return true
}

func mutating(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPatch, http.MethodDelete, http.MethodPut:
		return true
	}
	return false
}

// authorize checks the bearer token in constant time. It never logs the
// token, given or expected.
func (a *api) authorize(r *http.Request) error {
	h := r.Header.Get("Authorization")
	if h == "" {
		e := fieldError(http.StatusUnauthorized, codeUnauthorized, fieldAuthorization, "missing: this call changes state and needs \"Authorization: Bearer <token>\"")
		e.header = http.Header{"Www-Authenticate": {`Bearer realm="edgeproxy"`}}
		return e
	}
	given, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(given), []byte(a.opts.Token)) != 1 {
		return fieldError(http.StatusForbidden, codeForbidden, fieldAuthorization, "the bearer token is wrong")
	}
	return nil
}

// decode reads a JSON body strictly into v.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeLimit(w, r, v, maxBody)
}

// decodeLimit reads a JSON body of at most limit bytes strictly into v.
func decodeLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("data after the JSON object")
	}
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &te) && te.Field == "":
		return badBody(http.StatusBadRequest, "must be a JSON object, not %s", jsonValue(te.Value))
	case errors.As(err, &te):
		return badField(te.Field, "must be a JSON %s, not %s", jsonKind(te.Type.Kind().String()), jsonValue(te.Value))
	case errors.As(err, &mbe):
		return badBody(http.StatusRequestEntityTooLarge, "larger than %d bytes", limit)
	case errors.Is(err, io.EOF):
		return badBody(http.StatusBadRequest, "empty: send a JSON object")
	}
	return badBody(http.StatusBadRequest, "not valid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

// jsonValue names a JSON value as jsonKind does: encoding/json says
// "bool".
func jsonValue(v string) string {
	if v == "bool" {
		return "boolean"
	}
	return v
}

// jsonKind names in JSON's words what a Go kind decodes from.
func jsonKind(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "uint"), strings.HasPrefix(goKind, "float"):
		return "number"
	case goKind == "string":
		return "string"
	case goKind == "bool":
		return "boolean"
	case goKind == "slice", goKind == "array":
		return "array"
	case goKind == "struct", goKind == "map":
		return "object"
	}
	return goKind
}

// The JSON shapes of the API's results, shared with its CLI
// (cmd/edgeproxy), which decodes them.

// Service is a service of the catalogue.
type Service struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Prefix is an onboarded prefix.
type Prefix struct {
	ID          string `json:"id"`
	CIDR        string `json:"cidr"`
	ServiceID   string `json:"service_id"`
	ServiceName string `json:"service_name"`
	Source      string `json:"source"`
}

// Provisioning is how far a change has reached: on a single node it is
// active once answered; on a fleet, pending until every live node in its
// scope holds it.
type Provisioning = bindings.Provisioning

// Binding is a binding, a prefix's default binding included.
type Binding struct {
	ID           string       `json:"id"`
	PrefixID     string       `json:"prefix_id"`
	CIDR         string       `json:"cidr"`
	Protocol     string       `json:"protocol,omitempty"`
	Port         uint16       `json:"port,omitempty"`
	ServiceID    string       `json:"service_id,omitempty"` // absent for a canary create
	ServiceName  string       `json:"service_name,omitempty"`
	Default      bool         `json:"default"`
	Source       string       `json:"source"`
	Provisioning Provisioning `json:"provisioning"`
	// Canary is the binding's pending canary change, if it has one.
	Canary *Canary `json:"canary,omitempty"`
	// Traffic is what the binding's addresses saw on this node, where
	// the data plane counts it.
	Traffic *BindingTraffic `json:"traffic,omitempty"`
}

// Canary is a pending canary change: the service the nodes its labels
// select steer the binding to, and its revision.
type Canary struct {
	ServiceID string            `json:"service_id"`
	Labels    map[string]string `json:"labels"`
	Revision  int64             `json:"revision"`
}

// App is the spectrum app a lookup found.
type App struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	Edge     string `json:"edge"`
	Ports    string `json:"ports"`
}

// Lookup is the outcome of GET /v1/lookup and why.
type Lookup struct {
	Outcome string   `json:"outcome"`
	Service *string  `json:"service"`
	Binding *Binding `json:"binding"`
	App     *App     `json:"app"`
	Reason  string   `json:"reason"`
}

func toPrefix(p bindings.Prefix) Prefix {
	return Prefix{ID: p.ID, CIDR: p.CIDR.String(), ServiceID: string(p.Service), ServiceName: p.Service.Name(), Source: string(p.Source)}
}

// binding returns b as the API shows it, with its provisioning and its
// pending canary change: then in its stable form.
func (a *api) binding(b bindings.Binding) Binding {
	j := toBinding(b)
	if c, ok := a.m.StagedOf(b.PrefixID, b.ID); ok && !b.Default {
		j = toBinding(c.Stable)
		j.Canary = &Canary{ServiceID: string(c.Canary.Service), Labels: c.Canary.Labels, Revision: a.m.Provisioning(b).Revision}
	}
	j.Provisioning = a.m.Provisioning(b)
	j.Traffic = a.traffic(b)
	return j
}

// toBinding returns b as the API shows it, without its provisioning.
func toBinding(b bindings.Binding) Binding {
	j := Binding{
		ID: b.ID, PrefixID: b.PrefixID, CIDR: b.CIDR.String(),
		ServiceID: string(b.Service), Default: b.Default, Source: string(b.Source),
	}
	if b.Service != "" {
		j.ServiceName = b.Service.Name()
	}
	if b.PortScoped() {
		j.Protocol, j.Port = b.Protocol.String(), b.Port
	}
	return j
}

// Handlers.

func (a *api) noRoute(w http.ResponseWriter, r *http.Request) error {
	return fieldError(http.StatusNotFound, codeNotFound, fieldPath, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
}

func (a *api) services(w http.ResponseWriter, r *http.Request) error {
	out := make([]Service, len(bindings.Catalogue))
	for i, s := range bindings.Catalogue {
		out[i] = Service{ID: string(s.ID), Name: s.Name}
	}
	return writeResult(w, out)
}

func (a *api) listPrefixes(w http.ResponseWriter, r *http.Request) error {
	ps := a.m.Prefixes()
	out := make([]Prefix, len(ps))
	for i, p := range ps {
		out[i] = toPrefix(p)
	}
	return writeResult(w, out)
}

func (a *api) getPrefix(w http.ResponseWriter, r *http.Request) error {
	p, err := a.m.Prefix(r.PathValue("prefix_id"))
	if err != nil {
		return err
	}
	return writeResult(w, toPrefix(p))
}

type createPrefixBody struct {
	CIDR      *string `json:"cidr"`
	ServiceID *string `json:"service_id"`
}

// fields checks a new prefix's or binding's cidr and service_id.
func (b *createPrefixBody) fields() (netip.Prefix, bindings.Service, error) {
	cidr, err := cidrField(b.CIDR)
	if err != nil {
		return netip.Prefix{}, "", err
	}
	svc, err := serviceField(b.ServiceID)
	return cidr, svc, err
}

func (a *api) createPrefix(w http.ResponseWriter, r *http.Request) error {
	var body createPrefixBody
	if err := decode(w, r, &body); err != nil {
		return err
	}
	cidr, svc, err := body.fields()
	if err != nil {
		return err
	}
	p, err := a.m.CreatePrefix(a.request(r), cidr, svc)
	if err != nil {
		return err
	}
	return a.answer(w, r, toPrefix(p))
}

func (a *api) deletePrefix(w http.ResponseWriter, r *http.Request) error {
	cascade := false
	if v := r.URL.Query().Get("cascade"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return badField("cascade", "%q is not true or false", v)
		}
		cascade = b
	}
	id := r.PathValue("prefix_id")
	p, err := a.m.Prefix(id)
	if err == nil {
		_, err = a.m.DeletePrefix(a.request(r), id, cascade)
	}
	if err != nil {
		return err
	}
	return a.answer(w, r, toPrefix(p))
}

func (a *api) listBindings(w http.ResponseWriter, r *http.Request) error {
	bs, err := a.m.Bindings(r.PathValue("prefix_id"))
	if err != nil {
		return err
	}
	out := make([]Binding, len(bs))
	for i, b := range bs {
		out[i] = a.binding(b)
	}
	return writeResult(w, out)
}

func (a *api) getBinding(w http.ResponseWriter, r *http.Request) error {
	b, err := a.m.Binding(r.PathValue("prefix_id"), r.PathValue("binding_id"))
	if err != nil {
		return err
	}
	return writeResult(w, a.binding(b))
}

type createBindingBody struct {
	createPrefixBody
	Protocol *string     `json:"protocol"`
	Port     *int        `json:"port"`
	Canary   *canaryBody `json:"canary"`
}

// binding checks a new binding's fields: cidr, service_id, and protocol
// and port together.
func (b *createBindingBody) binding() (bindings.Binding, error) {
	cidr, svc, err := b.fields()
	if err != nil {
		return bindings.Binding{}, err
	}
	proto, port, err := dispatch.ParseScope(value(b.Protocol), value(b.Port))
	if serr, ok := errors.AsType[*dispatch.ScopeError](err); ok {
		return bindings.Binding{}, badField(serr.Field, "%s", serr.Reason)
	} else if err != nil {
		return bindings.Binding{}, err
	}
	return bindings.NewBinding(cidr, proto, port, svc, bindings.FromAPI), nil
}

// canaryBody scopes a change to the nodes whose labels match.
type canaryBody struct {
	Labels map[string]string `json:"labels"`
}

// changeFields reads what a create and a move share: ?wait= and the
// canary change to svc (nil: none).
func changeFields(r *http.Request, c *canaryBody, svc bindings.Service) (time.Duration, *bindings.Canary, error) {
	wait, err := waitField(r)
	if err != nil {
		return 0, nil, err
	}
	canary, err := c.canary(svc)
	if canary != nil && dryRunOf(r) != nil {
		return 0, nil, badField("dry_run", "a canary change cannot be planned: plan the change without canary, as every node makes it once promoted")
	}
	return wait, canary, err
}

// canary returns the body's canary change to svc, or nil.
func (c *canaryBody) canary(svc bindings.Service) (*bindings.Canary, error) {
	if c == nil {
		return nil, nil
	}
	if len(c.Labels) == 0 {
		return nil, badField("canary.labels", "give at least one label of the canary nodes")
	}
	for k, v := range c.Labels {
		if k == "" || len(k) > 63 || len(v) > 63 {
			return nil, badField("canary.labels", "%q: %q: keys of 1 to 63 characters, values of at most 63", k, v)
		}
	}
	return &bindings.Canary{Service: svc, Labels: c.Labels}, nil
}

func (a *api) createBinding(w http.ResponseWriter, r *http.Request) error {
	var body createBindingBody
	if err := decode(w, r, &body); err != nil {
		return err
	}
	nb, err := body.binding()
	if err != nil {
		return err
	}
	wait, canary, err := changeFields(r, body.Canary, nb.Service)
	if err != nil {
		return err
	}
	var b bindings.Binding
	if canary != nil {
		var st bindings.Staged
		st, err = a.m.CreateCanary(a.request(r), r.PathValue("prefix_id"), nb, *canary)
		b = st.Stable
	} else {
		b, err = a.m.CreateBinding(a.request(r), r.PathValue("prefix_id"), nb.CIDR, nb.Protocol, nb.Port, nb.Service)
	}
	if err != nil {
		return err
	}
	return a.answerBinding(w, r, wait, b)
}

// value is what p points to, or the zero value when p is nil.
func value[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

type moveBody struct {
	ServiceID *string     `json:"service_id"`
	Drain     *string     `json:"drain"`
	Canary    *canaryBody `json:"canary"`
}

// deleteBody is a DELETE's optional body.
type deleteBody struct {
	Drain *string `json:"drain"`
}

// maxDrain bounds a drain deadline.
const maxDrain = 24 * time.Hour

// drainField checks a change's "drain": a duration above zero and at most
// a day, after which the connections still held on the addresses that left
// their service are closed. Absent: 0, nothing is closed.
func (a *api) drainField(v *string) (time.Duration, error) {
	if v == nil {
		return 0, nil
	}
	d, err := time.ParseDuration(*v)
	switch {
	case err != nil:
		return 0, badField("drain", "%q is not a duration (such as \"30s\")", *v)
	case d <= 0 || d > maxDrain:
		return 0, badField("drain", "%s is out of range: above 0 and at most %s", d, maxDrain)
	case a.opts.Drain == nil:
		return 0, badField("drain", "this node cannot drain connections")
	}
	return d, nil
}

func (a *api) moveBinding(w http.ResponseWriter, r *http.Request) error {
	var body moveBody
	if err := decode(w, r, &body); err != nil {
		return err
	}
	svc, err := serviceField(body.ServiceID)
	if err != nil {
		return err
	}
	drain, err := a.drainField(body.Drain)
	if err != nil {
		return err
	}
	wait, canary, err := changeFields(r, body.Canary, svc)
	if err != nil {
		return err
	}
	var b bindings.Binding
	if canary != nil {
		var st bindings.Staged
		st, err = a.m.MoveCanary(a.request(r), r.PathValue("prefix_id"), r.PathValue("binding_id"), *canary)
		b = st.Stable
	} else {
		b, err = a.m.MoveBinding(a.request(r), r.PathValue("prefix_id"), r.PathValue("binding_id"), svc)
	}
	if err != nil {
		return err
	}
	a.drain(r, drain)
	return a.answerBinding(w, r, wait, b)
}

func (a *api) deleteBinding(w http.ResponseWriter, r *http.Request) error {
	var body deleteBody
	if r.ContentLength != 0 {
		if err := decode(w, r, &body); err != nil {
			return err
		}
	}
	drain, err := a.drainField(body.Drain)
	if err != nil {
		return err
	}
	wait, err := waitField(r)
	if err != nil {
		return err
	}
	b, rev, err := a.m.DeleteBinding(a.request(r), r.PathValue("prefix_id"), r.PathValue("binding_id"))
	if err != nil {
		return err
	}
	if dryRunOf(r) != nil {
		return a.answer(w, r, toBinding(b))
	}
	a.drain(r, drain)
	j := toBinding(b)
	j.Provisioning = a.waitAt(r, wait, bindings.KeyOf(b), rev)
	return writeResult(w, j)
}

// drain starts the drain deadline a change asked for, if it asked and the
// change was made.
func (a *api) drain(r *http.Request, d time.Duration) {
	if d > 0 && dryRunOf(r) == nil {
		a.opts.Drain(d)
	}
}

func (a *api) lookup(w http.ResponseWriter, r *http.Request) error {
	proto, ap, err := lookupQuery(r.URL.Query())
	if err != nil {
		return err
	}
	res := a.m.Resolve(proto, ap.Addr(), ap.Port())
	out := Lookup{Outcome: string(res.Outcome), Reason: res.Reason}
	if res.Service != "" {
		s := string(res.Service)
		out.Service = &s
	}
	if res.Binding != nil {
		b := a.binding(*res.Binding)
		out.Binding = &b
	}
	if res.App != nil {
		out.App = &App{Name: res.App.Name, Protocol: res.App.Protocol.String(), Edge: res.App.Edge.String(), Ports: res.App.Ports.String()}
	}
	return writeResult(w, out)
}

// lookupQuery checks a lookup's ?addr=IP:PORT&protocol=tcp (default tcp).
func lookupQuery(q url.Values) (dispatch.Protocol, netip.AddrPort, error) {
	addr := q.Get("addr")
	if addr == "" {
		return 0, netip.AddrPort{}, badField("addr", "missing: want ?addr=IP:PORT")
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
		return 0, netip.AddrPort{}, badField("addr", "%q is not IP:PORT (e.g. 192.0.2.1:443 or [2001:db8::1]:443)", addr)
	}
	ps := q.Get("protocol")
	if ps == "" {
		ps = "tcp"
	}
	proto, err := dispatch.ParseProtocol(ps)
	if err != nil {
		return 0, netip.AddrPort{}, badField("protocol", "%v", err)
	}
	return proto, ap, nil
}

// origins lists the cdn's origin pools: state, load and reuse.
func (a *api) origins(w http.ResponseWriter, r *http.Request) error {
	if a.opts.Origins == nil {
		return fieldError(http.StatusNotFound, codeNotFound, fieldPath, "the cdn does not run on this node")
	}
	return writeResult(w, a.opts.Origins())
}

// Status is GET /v1/status: the process that serves the node, and how it
// stands.
type Status struct {
	Node      string    `json:"node"`
	PID       int       `json:"pid"`
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	// State is "serving"; "handing_over" during a live upgrade, until
	// the new process is ready or failed; "draining" once a stop began or
	// the new process took over.
	State    string   `json:"state"`
	Upgrades Upgrades `json:"upgrades"`
}

// Upgrades describes the live upgrades of a process.
type Upgrades struct {
	// Generation counts the upgrades that led to this process: 0 for one
	// started by hand.
	Generation int `json:"generation"`
	// OK and Failed count the upgrades this process started.
	OK     int `json:"ok"`
	Failed int `json:"failed"`
	// LastError says why the last failed upgrade failed.
	LastError string `json:"last_error,omitempty"`
}

func (a *api) status(w http.ResponseWriter, r *http.Request) error {
	if a.opts.Status == nil {
		return fieldError(http.StatusNotFound, codeNotFound, fieldPath, "no status on this node")
	}
	return writeResult(w, a.opts.Status())
}

func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	if a.opts.Ready != nil {
		if err := a.opts.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
	}
	io.WriteString(w, "ready\n")
}

func cidrField(v *string) (netip.Prefix, error) {
	if v == nil {
		return netip.Prefix{}, badField("cidr", "missing")
	}
	p, err := bindings.ParseCIDR(*v)
	if err != nil {
		return netip.Prefix{}, badField("cidr", "%v", err)
	}
	return p, nil
}

func serviceField(v *string) (bindings.Service, error) {
	if v == nil {
		return "", badField("service_id", "missing")
	}
	s, err := bindings.ParseService(*v)
	if err != nil {
		return "", badField("service_id", "%v", err)
	}
	return s, nil
}
