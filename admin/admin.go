// Package admin serves edgeproxy's admin API: services, prefixes, bindings
// and lookups under /v1 in the envelope of docs/api.md, Prometheus metrics
// on /metrics, and /healthz and /readyz.
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
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
}

// maxBody bounds request bodies.
const maxBody = 64 << 10

// Handler returns the admin API's handler.
func Handler(opts Options) http.Handler {
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a := &api{opts: opts, m: opts.Bindings}
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

	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/services", a.services)
	mux.HandleFunc("GET /v1/prefixes", a.listPrefixes)
	mux.HandleFunc("POST /v1/prefixes", a.createPrefix)
	mux.HandleFunc("GET /v1/prefixes/{prefix_id}", a.getPrefix)
	mux.HandleFunc("DELETE /v1/prefixes/{prefix_id}", a.deletePrefix)
	mux.HandleFunc("GET /v1/prefixes/{prefix_id}/bindings", a.listBindings)
	mux.HandleFunc("POST /v1/prefixes/{prefix_id}/bindings", a.createBinding)
	mux.HandleFunc("GET /v1/prefixes/{prefix_id}/bindings/{binding_id}", a.getBinding)
	mux.HandleFunc("PATCH /v1/prefixes/{prefix_id}/bindings/{binding_id}", a.moveBinding)
	mux.HandleFunc("DELETE /v1/prefixes/{prefix_id}/bindings/{binding_id}", a.deleteBinding)
	mux.HandleFunc("GET /v1/lookup", a.lookup)
	mux.HandleFunc("GET /v1/origins", a.origins)
	mux.HandleFunc("GET /v1/status", a.status)
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		a.fail(w, r, http.StatusNotFound, codeNotFound, "", fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", a.readyz)
	return a.middleware(mux)
}

type api struct {
	opts     Options
	m        *bindings.Manager
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// Error codes of the envelope; docs/api.md lists them.
const (
	codeInvalidJSON  = 1000
	codeInvalidField = 1001
	codeInvalidState = 1002
	codeConflict     = 1003
	codeConfigOwned  = 1004
	codeNotFound     = 1005
	codeHasBindings  = 1006
	codeUnauthorized = 1007
	codeForbidden    = 1008
	codeInternal     = 1009
	codeUnavailable  = 1010
)

type envelope struct {
	Success  bool        `json:"success"`
	Errors   []apiError  `json:"errors"`
	Messages []string    `json:"messages"`
	Result   interface{} `json:"result"`
}

type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// statusWriter records the status for the metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
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

func (a *api) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		if mutating(r.Method) && a.opts.Token != "" && !a.authorized(sw, r) {
			// authorized wrote the error.
		} else if mutating(r.Method) && a.opts.Writable != nil && a.changes(next, r) && a.unavailable(sw, r) {
			// unavailable wrote the error.
		} else {
			next.ServeHTTP(sw, r)
		}
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		a.requests.WithLabelValues(route, strconv.Itoa(sw.status)).Inc()
		a.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// changes reports whether r is one of the /v1 routes that change the
// binding state, and sets r.Pattern for the metrics.
func (a *api) changes(next http.Handler, r *http.Request) bool {
	mux, ok := next.(*http.ServeMux)
	if !ok {
		return strings.HasPrefix(r.URL.Path, "/v1/")
	}
	_, pattern := mux.Handler(r)
	if !strings.Contains(pattern, " /v1/") {
		return false // unknown routes answer 404, as ever
	}
	r.Pattern = pattern
	return true
}

// unavailable answers 503 when the binding state cannot change now.
func (a *api) unavailable(w http.ResponseWriter, r *http.Request) bool {
	err := a.opts.Writable()
	if err == nil {
		return false
	}
	w.Header().Set("Retry-After", "60")
	a.fail(w, r, http.StatusServiceUnavailable, codeUnavailable, "", fmt.Sprintf("changes are refused for now: %v", err))
	return true
}

func mutating(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPatch, http.MethodDelete, http.MethodPut:
		return true
	}
	return false
}

// authorized checks the bearer token in constant time. It never logs the
// token, given or expected.
func (a *api) authorized(w http.ResponseWriter, r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if h == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="edgeproxy"`)
		a.fail(w, r, http.StatusUnauthorized, codeUnauthorized, "", "this call changes state and needs \"Authorization: Bearer <token>\"")
		return false
	}
	given, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(given), []byte(a.opts.Token)) != 1 {
		a.fail(w, r, http.StatusForbidden, codeForbidden, "", "the bearer token is wrong")
		return false
	}
	return true
}

func (a *api) ok(w http.ResponseWriter, result any) {
	writeJSON(w, http.StatusOK, envelope{Success: true, Errors: []apiError{}, Messages: []string{}, Result: result})
}

func (a *api) fail(w http.ResponseWriter, r *http.Request, status, code int, field, msg string) {
	if field != "" {
		msg = field + ": " + msg
	}
	a.opts.Logger.Info("admin request failed", "method", r.Method, "path", r.URL.Path, "status", status, "error", msg)
	writeJSON(w, status, envelope{Success: false, Errors: []apiError{{Code: code, Message: msg}}, Messages: []string{}, Result: nil})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// failOp answers an error of a bindings operation with its status.
func (a *api) failOp(w http.ResponseWriter, r *http.Request, err error) {
	var be *bindings.Error
	if !errors.As(err, &be) {
		a.fail(w, r, http.StatusInternalServerError, codeInternal, "", err.Error())
		return
	}
	if len(be.Problems) > 0 {
		status, code := http.StatusBadRequest, codeInvalidState
		if be.Kind == bindings.KindConflict {
			status, code = http.StatusConflict, codeConflict
		}
		envErrs := make([]apiError, len(be.Problems))
		for i, e := range be.Problems {
			envErrs[i] = apiError{Code: code, Message: e.Field + ": " + e.Item + ": " + e.Reason}
		}
		a.opts.Logger.Info("admin request refused", "method", r.Method, "path", r.URL.Path, "status", status, "error", err)
		writeJSON(w, status, envelope{Success: false, Errors: envErrs, Messages: []string{}, Result: nil})
		return
	}
	field, msg := be.Field, be.Reason
	switch be.Kind {
	case bindings.KindInvalid:
		a.fail(w, r, http.StatusBadRequest, codeInvalidField, field, msg)
	case bindings.KindConflict:
		a.fail(w, r, http.StatusConflict, codeConflict, field, msg)
	case bindings.KindConfigOwned:
		a.fail(w, r, http.StatusConflict, codeConfigOwned, field, msg)
	case bindings.KindHasBindings:
		a.fail(w, r, http.StatusConflict, codeHasBindings, field, msg)
	case bindings.KindNotFound:
		a.fail(w, r, http.StatusNotFound, codeNotFound, field, msg)
	case bindings.KindUnavailable:
		w.Header().Set("Retry-After", "5")
		a.fail(w, r, http.StatusServiceUnavailable, codeUnavailable, field, "changes are refused for now: "+msg)
	default:
		a.fail(w, r, http.StatusInternalServerError, codeInternal, field, msg)
	}
}

// decode reads a JSON body strictly into v. On error it has answered.
func (a *api) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("data after the JSON object")
	}
	if err == nil {
		return true
	}
	var te *json.UnmarshalTypeError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &te) && te.Field == "":
		a.fail(w, r, http.StatusBadRequest, codeInvalidJSON, "body", fmt.Sprintf("must be a JSON object, not %s", te.Value))
	case errors.As(err, &te):
		a.fail(w, r, http.StatusBadRequest, codeInvalidField, te.Field, fmt.Sprintf("must be a JSON %s, not %s", jsonKind(te.Type.Kind().String()), te.Value))
	case errors.As(err, &mbe):
		a.fail(w, r, http.StatusRequestEntityTooLarge, codeInvalidJSON, "body", fmt.Sprintf("larger than %d bytes", maxBody))
	case errors.Is(err, io.EOF):
		a.fail(w, r, http.StatusBadRequest, codeInvalidJSON, "body", "empty: send a JSON object")
	default:
		a.fail(w, r, http.StatusBadRequest, codeInvalidJSON, "body", "not valid JSON: "+strings.TrimPrefix(err.Error(), "json: "))
	}
	return false
}

func jsonKind(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "uint"), strings.HasPrefix(goKind, "float"):
		return "number"
	case goKind == "string":
		return "string"
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

// Provisioning is where a change stands on the node (fleet-wide later).
type Provisioning struct {
	State string `json:"state"`
}

// Binding is a binding, a prefix's default binding included.
type Binding struct {
	ID           string       `json:"id"`
	PrefixID     string       `json:"prefix_id"`
	CIDR         string       `json:"cidr"`
	Protocol     string       `json:"protocol,omitempty"`
	Port         uint16       `json:"port,omitempty"`
	ServiceID    string       `json:"service_id"`
	ServiceName  string       `json:"service_name"`
	Default      bool         `json:"default"`
	Source       string       `json:"source"`
	Provisioning Provisioning `json:"provisioning"`
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

func toBinding(b bindings.Binding) Binding {
	j := Binding{
		ID: b.ID, PrefixID: b.PrefixID, CIDR: b.CIDR.String(),
		ServiceID: string(b.Service), ServiceName: b.Service.Name(),
		Default: b.Default, Source: string(b.Source),
		// On a single node a change returns once the data plane holds it.
		Provisioning: Provisioning{State: "active"},
	}
	if b.PortScoped() {
		j.Protocol, j.Port = b.Protocol.String(), b.Port
	}
	return j
}

// Handlers.

func (a *api) services(w http.ResponseWriter, r *http.Request) {
	out := make([]Service, len(bindings.Catalogue))
	for i, s := range bindings.Catalogue {
		out[i] = Service{ID: string(s.ID), Name: s.Name}
	}
	a.ok(w, out)
}

func (a *api) listPrefixes(w http.ResponseWriter, r *http.Request) {
	ps := a.m.Prefixes()
	out := make([]Prefix, len(ps))
	for i, p := range ps {
		out[i] = toPrefix(p)
	}
	a.ok(w, out)
}

func (a *api) getPrefix(w http.ResponseWriter, r *http.Request) {
	p, err := a.m.Prefix(r.PathValue("prefix_id"))
	if err != nil {
		a.failOp(w, r, err)
		return
	}
	a.ok(w, toPrefix(p))
}

type createPrefixBody struct {
	CIDR      *string `json:"cidr"`
	ServiceID *string `json:"service_id"`
}

func (a *api) createPrefix(w http.ResponseWriter, r *http.Request) {
	var body createPrefixBody
	if !a.decode(w, r, &body) {
		return
	}
	cidr, ok := a.cidrField(w, r, body.CIDR)
	if !ok {
		return
	}
	svc, ok := a.serviceField(w, r, body.ServiceID)
	if !ok {
		return
	}
	p, err := a.m.CreatePrefix(cidr, svc)
	if err != nil {
		a.failOp(w, r, err)
		return
	}
	a.ok(w, toPrefix(p))
}

func (a *api) deletePrefix(w http.ResponseWriter, r *http.Request) {
	cascade := false
	if v := r.URL.Query().Get("cascade"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			a.fail(w, r, http.StatusBadRequest, codeInvalidField, "cascade", fmt.Sprintf("%q is not true or false", v))
			return
		}
		cascade = b
	}
	id := r.PathValue("prefix_id")
	p, err := a.m.Prefix(id)
	if err == nil {
		err = a.m.DeletePrefix(id, cascade)
	}
	if err != nil {
		a.failOp(w, r, err)
		return
	}
	a.ok(w, toPrefix(p))
}

func (a *api) listBindings(w http.ResponseWriter, r *http.Request) {
	bs, err := a.m.Bindings(r.PathValue("prefix_id"))
	if err != nil {
		a.failOp(w, r, err)
		return
	}
	out := make([]Binding, len(bs))
	for i, b := range bs {
		out[i] = toBinding(b)
	}
	a.ok(w, out)
}

func (a *api) getBinding(w http.ResponseWriter, r *http.Request) {
	b, err := a.m.Binding(r.PathValue("prefix_id"), r.PathValue("binding_id"))
	if err != nil {
		a.failOp(w, r, err)
		return
	}
	a.ok(w, toBinding(b))
}

type createBindingBody struct {
	CIDR      *string `json:"cidr"`
	ServiceID *string `json:"service_id"`
	Protocol  *string `json:"protocol"`
	Port      *int    `json:"port"`
}

func (a *api) createBinding(w http.ResponseWriter, r *http.Request) {
	var body createBindingBody
	if !a.decode(w, r, &body) {
		return
	}
	cidr, ok := a.cidrField(w, r, body.CIDR)
	if !ok {
		return
	}
	svc, ok := a.serviceField(w, r, body.ServiceID)
	if !ok {
		return
	}
	var proto dispatch.Protocol
	var port uint16
	switch {
	case body.Protocol == nil && body.Port == nil:
	case body.Protocol == nil:
		a.fail(w, r, http.StatusBadRequest, codeInvalidField, "protocol", "a port-scoped binding needs protocol (tcp or udp) with port")
		return
	case body.Port == nil:
		a.fail(w, r, http.StatusBadRequest, codeInvalidField, "port", "a port-scoped binding needs port with protocol")
		return
	default:
		var err error
		if proto, err = dispatch.ParseProtocol(*body.Protocol); err != nil {
			a.fail(w, r, http.StatusBadRequest, codeInvalidField, "protocol", err.Error())
			return
		}
		if *body.Port < 1 || *body.Port > 65535 {
			a.fail(w, r, http.StatusBadRequest, codeInvalidField, "port", fmt.Sprintf("%d is not a port (want 1-65535)", *body.Port))
			return
		}
		port = uint16(*body.Port)
	}
	b, err := a.m.CreateBinding(r.PathValue("prefix_id"), cidr, proto, port, svc)
	if err != nil {
		a.failOp(w, r, err)
		return
	}
	a.ok(w, toBinding(b))
}

type moveBody struct {
	ServiceID *string `json:"service_id"`
	Drain     *string `json:"drain"`
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
func (a *api) drainField(w http.ResponseWriter, r *http.Request, v *string) (time.Duration, bool) {
	if v == nil {
		return 0, true
	}
	d, err := time.ParseDuration(*v)
	switch {
	case err != nil:
		a.fail(w, r, http.StatusBadRequest, codeInvalidField, "drain", fmt.Sprintf("%q is not a duration (such as \"30s\")", *v))
		return 0, false
	case d <= 0 || d > maxDrain:
		a.fail(w, r, http.StatusBadRequest, codeInvalidField, "drain", fmt.Sprintf("%s is out of range: above 0 and at most %s", d, maxDrain))
		return 0, false
	case a.opts.Drain == nil:
		a.fail(w, r, http.StatusBadRequest, codeInvalidField, "drain", "this node cannot drain connections")
		return 0, false
	}
	return d, true
}

func (a *api) moveBinding(w http.ResponseWriter, r *http.Request) {
	var body moveBody
	if !a.decode(w, r, &body) {
		return
	}
	svc, ok := a.serviceField(w, r, body.ServiceID)
	if !ok {
		return
	}
	drain, ok := a.drainField(w, r, body.Drain)
	if !ok {
		return
	}
	b, err := a.m.MoveBinding(r.PathValue("prefix_id"), r.PathValue("binding_id"), svc)
	if err != nil {
		a.failOp(w, r, err)
		return
	}
	if drain > 0 {
		a.opts.Drain(drain)
	}
	a.ok(w, toBinding(b))
}

func (a *api) deleteBinding(w http.ResponseWriter, r *http.Request) {
	var body deleteBody
	if r.ContentLength != 0 && !a.decode(w, r, &body) {
		return
	}
	drain, ok := a.drainField(w, r, body.Drain)
	if !ok {
		return
	}
	pid, id := r.PathValue("prefix_id"), r.PathValue("binding_id")
	b, err := a.m.Binding(pid, id)
	if err == nil {
		err = a.m.DeleteBinding(pid, id)
	}
	if err != nil {
		a.failOp(w, r, err)
		return
	}
	if drain > 0 {
		a.opts.Drain(drain)
	}
	a.ok(w, toBinding(b))
}

func (a *api) lookup(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	addr := q.Get("addr")
	if addr == "" {
		a.fail(w, r, http.StatusBadRequest, codeInvalidField, "addr", "missing: want ?addr=IP:PORT")
		return
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Port() == 0 || ap.Addr().Zone() != "" {
		a.fail(w, r, http.StatusBadRequest, codeInvalidField, "addr", fmt.Sprintf("%q is not IP:PORT (e.g. 192.0.2.1:443 or [2001:db8::1]:443)", addr))
		return
	}
	ps := q.Get("protocol")
	if ps == "" {
		ps = "tcp"
	}
	proto, err := dispatch.ParseProtocol(ps)
	if err != nil {
		a.fail(w, r, http.StatusBadRequest, codeInvalidField, "protocol", err.Error())
		return
	}
	res := a.m.Resolve(proto, ap.Addr(), ap.Port())
	out := Lookup{Outcome: string(res.Outcome), Reason: res.Reason}
	if res.Service != "" {
		s := string(res.Service)
		out.Service = &s
	}
	if res.Binding != nil {
		b := toBinding(*res.Binding)
		out.Binding = &b
	}
	if res.App != nil {
		out.App = &App{Name: res.App.Name, Protocol: res.App.Protocol.String(), Edge: res.App.Edge.String(), Ports: res.App.Ports.String()}
	}
	a.ok(w, out)
}

// origins lists the cdn's origin pools: state, load and reuse.
func (a *api) origins(w http.ResponseWriter, r *http.Request) {
	if a.opts.Origins == nil {
		a.fail(w, r, http.StatusNotFound, codeNotFound, "", "the cdn does not run on this node")
		return
	}
	a.ok(w, a.opts.Origins())
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

func (a *api) status(w http.ResponseWriter, r *http.Request) {
	if a.opts.Status == nil {
		a.fail(w, r, http.StatusNotFound, codeNotFound, "", "no status on this node")
		return
	}
	a.ok(w, a.opts.Status())
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

func (a *api) cidrField(w http.ResponseWriter, r *http.Request, v *string) (netip.Prefix, bool) {
	if v == nil {
		a.fail(w, r, http.StatusBadRequest, codeInvalidField, "cidr", "missing")
		return netip.Prefix{}, false
	}
	p, err := bindings.ParseCIDR(*v)
	if err != nil {
		a.fail(w, r, http.StatusBadRequest, codeInvalidField, "cidr", err.Error())
		return netip.Prefix{}, false
	}
	return p, true
}

func (a *api) serviceField(w http.ResponseWriter, r *http.Request, v *string) (bindings.Service, bool) {
	if v == nil {
		a.fail(w, r, http.StatusBadRequest, codeInvalidField, "service_id", "missing")
		return "", false
	}
	s, err := bindings.ParseService(*v)
	if err != nil {
		a.fail(w, r, http.StatusBadRequest, codeInvalidField, "service_id", err.Error())
		return "", false
	}
	return s, true
}
