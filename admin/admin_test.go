package admin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
)

// nopApplier accepts every table.
type nopApplier struct{}

func (nopApplier) Replace(*dispatch.Table) error { return nil }

// newAPI returns an API over a manager holding a config prefix
// 198.51.100.0/24 (cdn) with a config binding 198.51.100.0/25 (spectrum).
func newAPI(t testing.TB, token string) (http.Handler, *bindings.Manager) {
	t.Helper()
	return newAPIWith(t, Options{Token: token})
}

// newAPIWith is newAPI with opts (their Bindings set to the manager).
func newAPIWith(t testing.TB, opts Options) (http.Handler, *bindings.Manager) {
	t.Helper()
	m := bindings.NewManager(nopApplier{}, nil)
	cfgPrefix := bindings.NewPrefix(netip.MustParsePrefix("198.51.100.0/24"), bindings.CDN, bindings.FromConfig)
	cfgBinding := bindings.NewBinding(netip.MustParsePrefix("198.51.100.0/25"), 0, 0, bindings.Spectrum, bindings.FromConfig)
	svc := bindings.Services{
		CDN:  bindings.CDNPorts{HTTP: []uint16{80}, HTTPS: []uint16{443}, HTTP3: true, HTTP3Port: 443},
		Apps: []bindings.App{{Name: "ssh", Protocol: dispatch.TCP, Edge: netip.MustParsePrefix("192.0.2.0/24"), Ports: dispatch.PortRange{First: 22, Last: 22}}},
	}
	if err := m.Apply(&bindings.State{Prefixes: []bindings.Prefix{cfgPrefix}, Bindings: []bindings.Binding{cfgBinding}}, svc,
		[]bindings.Guard{{Addr: netip.MustParseAddr("203.0.113.9"), What: "the admin listen address"}}); err != nil {
		t.Fatal(err)
	}
	opts.Bindings = m
	return Handler(opts), m
}

type response struct {
	status int
	env    Envelope
	body   string
	res    *Response
}

// handlerTransport serves a client's calls with a handler, in process.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	if req.Body == nil {
		req.Body = http.NoBody
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	return rec.Result(), nil
}

// testClient is a Client of h.
func testClient(h http.Handler) *Client {
	return &Client{Base: "http://admin.test", HTTP: &http.Client{Transport: handlerTransport{h}}}
}

func call(t testing.TB, h http.Handler, method, path, body string, header ...string) response {
	t.Helper()
	c := testClient(h)
	req, err := c.NewRequest(method, path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := c.Send(req)
	if res == nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	r := response{status: res.Status, env: res.Envelope, body: string(res.Body), res: res}
	if strings.HasPrefix(path, "/v1") {
		if err != nil {
			t.Fatalf("%s %s: not the envelope: %v\n%s", method, path, err, res.Body)
		}
		if r.env.Success != (r.status == 200) || r.env.Errors == nil || r.env.Messages == nil {
			t.Fatalf("%s %s: envelope %s does not fit status %d", method, path, res.Body, r.status)
		}
	}
	return r
}

func (r response) result(t testing.TB, v any) {
	t.Helper()
	if err := r.res.Decode(v); err != nil {
		t.Fatalf("result %s: %v", r.env.Result, err)
	}
}

// want checks the status and, for an error, the code and a piece of the
// message.
func (r response) want(t testing.TB, status, code int, msg string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if status == 200 {
		return
	}
	if len(r.env.Errors) == 0 || r.env.Errors[0].Code != code || !strings.Contains(r.env.Errors[0].Message, msg) {
		t.Fatalf("errors %+v, want code %d with %q", r.env.Errors, code, msg)
	}
}

func TestServicesAndEnvelope(t *testing.T) {
	h, _ := newAPI(t, "")
	r := call(t, h, "GET", "/v1/services", "")
	r.want(t, 200, 0, "")
	var svcs []map[string]string
	r.result(t, &svcs)
	if len(svcs) != 3 || svcs[0]["id"] != "cdn" || svcs[2]["id"] != "magic-transit" || svcs[2]["name"] != "Magic Transit" {
		t.Errorf("services %v", svcs)
	}
	call(t, h, "GET", "/v1/nothing", "").want(t, 404, codeNotFound, "no route")
}

func TestPrefixLifecycle(t *testing.T) {
	h, _ := newAPI(t, "")
	r := call(t, h, "POST", "/v1/prefixes", `{"cidr":"192.0.2.0/24","service_id":"spectrum"}`)
	r.want(t, 200, 0, "")
	var p Prefix
	r.result(t, &p)
	if p.CIDR != "192.0.2.0/24" || p.ServiceID != "spectrum" || p.ServiceName != "Spectrum" || p.Source != "api" || len(p.ID) != 32 {
		t.Fatalf("prefix %+v", p)
	}
	call(t, h, "GET", "/v1/prefixes/"+p.ID, "").want(t, 200, 0, "")
	call(t, h, "POST", "/v1/prefixes", `{"cidr":"192.0.2.0/24","service_id":"cdn"}`).want(t, 409, codeConflict, "already exists")
	call(t, h, "POST", "/v1/prefixes", `{"cidr":"192.0.2.0/23","service_id":"cdn"}`).want(t, 409, codeConflict, "overlaps")
	call(t, h, "POST", "/v1/prefixes", `{"cidr":"203.0.113.0/24","service_id":"cdn"}`).want(t, 400, codeInvalidState, "admin listen address")

	// A binding inside blocks the delete, unless cascade.
	r = call(t, h, "POST", "/v1/prefixes/"+p.ID+"/bindings", `{"cidr":"192.0.2.0/25","service_id":"cdn"}`)
	r.want(t, 200, 0, "")
	var b Binding
	r.result(t, &b)
	if b.PrefixID != p.ID || b.Default || b.Provisioning.State != "active" || b.Protocol != "" {
		t.Fatalf("binding %+v", b)
	}
	call(t, h, "DELETE", "/v1/prefixes/"+p.ID, "").want(t, 409, codeHasBindings, "cascade=true")
	call(t, h, "DELETE", "/v1/prefixes/"+p.ID+"?cascade=maybe", "").want(t, 400, codeInvalidField, "cascade:")
	call(t, h, "DELETE", "/v1/prefixes/"+p.ID+"?cascade=true", "").want(t, 200, 0, "")
	call(t, h, "GET", "/v1/prefixes/"+p.ID, "").want(t, 404, codeNotFound, "prefix_id:")

	// Config-declared prefixes cannot be deleted through the API.
	cfg := bindings.PrefixID(netip.MustParsePrefix("198.51.100.0/24"))
	call(t, h, "DELETE", "/v1/prefixes/"+cfg, "").want(t, 409, codeConfigOwned, "configuration file")
}

func TestBadInputNamesTheField(t *testing.T) {
	h, _ := newAPI(t, "")
	call(t, h, "POST", "/v1/prefixes", `{"cidr":"192.0.2.0/24"`).want(t, 400, codeInvalidJSON, "not valid JSON")
	call(t, h, "POST", "/v1/prefixes", ``).want(t, 400, codeInvalidJSON, "empty")
	call(t, h, "POST", "/v1/prefixes", `{"cidr":"192.0.2.0/24","service_id":"cdn","color":"red"}`).want(t, 400, codeInvalidJSON, `unknown field "color"`)
	call(t, h, "POST", "/v1/prefixes", `{"service_id":"cdn"}`).want(t, 400, codeInvalidField, "cidr: missing")
	call(t, h, "POST", "/v1/prefixes", `{"cidr":"192.0.2.1/24","service_id":"cdn"}`).want(t, 400, codeInvalidField, "cidr: \"192.0.2.1/24\" has host bits set")
	call(t, h, "POST", "/v1/prefixes", `{"cidr":"192.0.2.0/25","service_id":"cdn"}`).want(t, 400, codeInvalidState, "cidr: ")
	call(t, h, "POST", "/v1/prefixes", `{"cidr":"192.0.2.0/24","service_id":"waf"}`).want(t, 400, codeInvalidField, "service_id: \"waf\" is not a service")
	call(t, h, "POST", "/v1/prefixes", `{"cidr":5,"service_id":"cdn"}`).want(t, 400, codeInvalidField, "cidr: must be a JSON string")

	pid := bindings.PrefixID(netip.MustParsePrefix("198.51.100.0/24"))
	path := "/v1/prefixes/" + pid + "/bindings"
	call(t, h, "POST", path, `{"cidr":"198.51.100.128/25","service_id":"cdn","port":"443","protocol":"tcp"}`).want(t, 400, codeInvalidField, "port: must be a JSON number")
	call(t, h, "POST", path, `{"cidr":"198.51.100.128/25","service_id":"cdn","port":443}`).want(t, 400, codeInvalidField, "protocol:")
	call(t, h, "POST", path, `{"cidr":"198.51.100.128/25","service_id":"cdn","protocol":"sctp","port":443}`).want(t, 400, codeInvalidField, "protocol:")
	call(t, h, "POST", path, `{"cidr":"198.51.100.128/25","service_id":"cdn","protocol":"tcp","port":70000}`).want(t, 400, codeInvalidField, "port: 70000")
	call(t, h, "POST", path, `{"cidr":"198.51.100.200/32","service_id":"cdn","protocol":"tcp","port":22}`).want(t, 400, codeInvalidState, "port: ")
	call(t, h, "POST", path, `{"cidr":"198.51.100.128/25","service_id":"magic-transit"}`).want(t, 400, codeInvalidState, "service_id: ")
	call(t, h, "POST", path, `{"cidr":"192.0.2.0/25","service_id":"cdn"}`).want(t, 400, codeInvalidField, "cidr: 192.0.2.0/25 is not inside prefix")
	call(t, h, "POST", path, `{"cidr":"198.51.100.0/25","service_id":"cdn"}`).want(t, 409, codeConflict, "already exists")
	call(t, h, "POST", path, `{"cidr":"198.51.100.0/24","service_id":"spectrum"}`).want(t, 409, codeConflict, "default binding")
	call(t, h, "POST", "/v1/prefixes/0000/bindings", `{"cidr":"198.51.100.0/25","service_id":"cdn"}`).want(t, 404, codeNotFound, "prefix_id:")

	call(t, h, "GET", "/v1/lookup", "").want(t, 400, codeInvalidField, "addr: missing")
	call(t, h, "GET", "/v1/lookup?addr=198.51.100.1", "").want(t, 400, codeInvalidField, "addr: ")
	call(t, h, "GET", "/v1/lookup?addr=198.51.100.1:443&protocol=icmp", "").want(t, 400, codeInvalidField, "protocol: ")
}

func TestMoveAndDeleteBindings(t *testing.T) {
	h, m := newAPI(t, "")
	pid := bindings.PrefixID(netip.MustParsePrefix("198.51.100.0/24"))
	r := call(t, h, "POST", "/v1/prefixes/"+pid+"/bindings", `{"cidr":"198.51.100.200/32","service_id":"spectrum","protocol":"tcp","port":443}`)
	r.want(t, 400, codeInvalidState, "no spectrum app serves tcp/443")
	r = call(t, h, "POST", "/v1/prefixes/"+pid+"/bindings", `{"cidr":"198.51.100.200/32","service_id":"cdn","protocol":"tcp","port":443}`)
	r.want(t, 200, 0, "")
	var b Binding
	r.result(t, &b)
	if b.Protocol != "tcp" || b.Port != 443 {
		t.Fatalf("binding %+v", b)
	}
	path := "/v1/prefixes/" + pid + "/bindings/" + b.ID
	call(t, h, "PATCH", path, `{"service_id":"spectrum"}`).want(t, 400, codeInvalidState, "no spectrum app")

	// A plain binding moves back and forth; the id does not change.
	r = call(t, h, "POST", "/v1/prefixes/"+pid+"/bindings", `{"cidr":"198.51.100.192/26","service_id":"spectrum"}`)
	var plain Binding
	r.result(t, &plain)
	r = call(t, h, "PATCH", "/v1/prefixes/"+pid+"/bindings/"+plain.ID, `{"service_id":"cdn"}`)
	r.want(t, 200, 0, "")
	var moved Binding
	r.result(t, &moved)
	if moved.ID != plain.ID || moved.ServiceID != "cdn" {
		t.Fatalf("moved %+v", moved)
	}
	if res := m.Resolve(dispatch.TCP, netip.MustParseAddr("198.51.100.193"), 80); res.Outcome != bindings.OutcomeCDN {
		t.Fatalf("after the move: %+v", res)
	}

	// Config-declared bindings and the default are not the API's to move.
	cfgB := bindings.BindingID(netip.MustParsePrefix("198.51.100.0/25"), 0, 0)
	call(t, h, "PATCH", "/v1/prefixes/"+pid+"/bindings/"+cfgB, `{"service_id":"cdn"}`).want(t, 409, codeConfigOwned, "configuration file")
	def := bindings.BindingID(netip.MustParsePrefix("198.51.100.0/24"), 0, 0)
	call(t, h, "PATCH", "/v1/prefixes/"+pid+"/bindings/"+def, `{"service_id":"spectrum"}`).want(t, 409, codeConfigOwned, "configuration file")
	call(t, h, "DELETE", "/v1/prefixes/"+pid+"/bindings/"+def, "").want(t, 409, codeConflict, "delete the prefix")
	call(t, h, "DELETE", "/v1/prefixes/"+pid+"/bindings/"+cfgB, "").want(t, 409, codeConfigOwned, "configuration file")

	r = call(t, h, "GET", "/v1/prefixes/"+pid+"/bindings", "")
	var list []Binding
	r.result(t, &list)
	if len(list) != 4 || !list[0].Default || list[0].Source != "config" {
		t.Fatalf("list %+v", list)
	}
	call(t, h, "DELETE", path, "").want(t, 200, 0, "")
	call(t, h, "GET", path, "").want(t, 404, codeNotFound, "binding_id:")
	call(t, h, "DELETE", path, "").want(t, 404, codeNotFound, "binding_id:")
}

func TestDefaultBindingMovesThePrefix(t *testing.T) {
	h, m := newAPI(t, "")
	r := call(t, h, "POST", "/v1/prefixes", `{"cidr":"2001:db8::/48","service_id":"cdn"}`)
	var p Prefix
	r.result(t, &p)
	def := bindings.BindingID(netip.MustParsePrefix("2001:db8::/48"), 0, 0)
	call(t, h, "PATCH", "/v1/prefixes/"+p.ID+"/bindings/"+def, `{"service_id":"magic-transit"}`).want(t, 200, 0, "")
	got, err := m.Prefix(p.ID)
	if err != nil || got.Service != bindings.MagicTransit {
		t.Fatalf("prefix after PATCH of its default: %+v %v", got, err)
	}
	if res := m.Resolve(dispatch.TCP, netip.MustParseAddr("2001:db8::1"), 22); res.Outcome != bindings.OutcomeKernel {
		t.Fatalf("lookup: %+v", res)
	}
}

func TestLookup(t *testing.T) {
	h, _ := newAPI(t, "")
	r := call(t, h, "GET", "/v1/lookup?addr=198.51.100.10:22&protocol=tcp", "")
	var l Lookup
	r.result(t, &l)
	if l.Outcome != "refuse" || l.Service == nil || *l.Service != "spectrum" || l.Binding == nil || l.Binding.CIDR != "198.51.100.0/25" || !strings.HasSuffix(l.Reason, ".") {
		t.Fatalf("lookup %+v", l)
	}
	r = call(t, h, "GET", "/v1/lookup?addr=198.51.100.200:443", "")
	r.result(t, &l)
	if l.Outcome != "cdn" || l.Binding == nil || !l.Binding.Default {
		t.Fatalf("lookup %+v", l)
	}
	r = call(t, h, "GET", "/v1/lookup?addr=[2001:db8::1]:443&protocol=udp", "")
	var outside map[string]any
	r.result(t, &outside)
	if outside["outcome"] != "kernel" || outside["binding"] != nil || outside["service"] != nil || outside["app"] != nil {
		t.Fatalf("lookup outside %v", outside)
	}
}

func TestToken(t *testing.T) {
	h, _ := newAPI(t, "s3cret")
	body := `{"cidr":"192.0.2.0/24","service_id":"cdn"}`
	r := call(t, h, "POST", "/v1/prefixes", body)
	r.want(t, 401, codeUnauthorized, "Authorization: Bearer")
	call(t, h, "POST", "/v1/prefixes", body, "Authorization", "Bearer nope").want(t, 403, codeForbidden, "wrong")
	call(t, h, "POST", "/v1/prefixes", body, "Authorization", "Basic s3cret").want(t, 403, codeForbidden, "wrong")
	call(t, h, "POST", "/v1/prefixes", body, "Authorization", "Bearer s3cret").want(t, 200, 0, "")
	call(t, h, "GET", "/v1/prefixes", "").want(t, 200, 0, "")
	if strings.Contains(r.body, "s3cret") {
		t.Error("the token appears in a response")
	}
}

func TestMetricsHealthReady(t *testing.T) {
	ready := error(nil)
	m := bindings.NewManager(nopApplier{}, nil)
	h := Handler(Options{Bindings: m, Ready: func() error { return ready }})
	call(t, h, "GET", "/v1/prefixes", "")
	r := call(t, h, "GET", "/metrics", "")
	if r.status != 200 || !strings.Contains(r.body, `edgeproxy_api_requests_total{code="200",route="GET /v1/prefixes"} 1`) {
		t.Errorf("metrics:\n%s", r.body)
	}
	if r := call(t, h, "GET", "/healthz", ""); r.status != 200 {
		t.Errorf("healthz %d", r.status)
	}
	if r := call(t, h, "GET", "/readyz", ""); r.status != 200 {
		t.Errorf("readyz %d", r.status)
	}
	ready = io.ErrUnexpectedEOF
	if r := call(t, h, "GET", "/readyz", ""); r.status != 503 || !strings.Contains(r.body, "not ready") {
		t.Errorf("readyz when not ready: %d %s", r.status, r.body)
	}
}

// FuzzAPI sends arbitrary bodies and query strings to every route: no panic,
// no 5xx, the envelope always, and every 400 names the field (or the body)
// and the reason.
func FuzzAPI(f *testing.F) {
	routes := []struct{ method, path string }{
		{"POST", "/v1/prefixes"},
		{"DELETE", "/v1/prefixes/{p}"},
		{"POST", "/v1/prefixes/{p}/bindings"},
		{"PATCH", "/v1/prefixes/{p}/bindings/{b}"},
		{"DELETE", "/v1/prefixes/{p}/bindings/{b}"},
		{"GET", "/v1/lookup"},
		{"GET", "/v1/prefixes/{p}/bindings/{b}"},
	}
	for i := range routes {
		f.Add(uint8(i), `{"cidr":"198.51.100.128/25","service_id":"cdn"}`, "addr=198.51.100.1:443&protocol=tcp&cascade=true", uint8(0))
		f.Add(uint8(i), `{"cidr":"198.51.100.200/32","service_id":"cdn","protocol":"udp","port":443}`, "cascade=1", uint8(1))
		f.Add(uint8(i), `{"service_id":"spectrum"}`, "addr=[2001:db8::1]:80", uint8(2))
		f.Add(uint8(i), `[1,2]`, "addr=%zz", uint8(3))
	}
	f.Fuzz(func(t *testing.T, route uint8, body, query string, which uint8) {
		h, m := newAPI(t, "")
		pid := bindings.PrefixID(netip.MustParsePrefix("198.51.100.0/24"))
		ids := []string{pid, "x", bindings.BindingID(netip.MustParsePrefix("198.51.100.0/25"), 0, 0)}
		rt := routes[int(route)%len(routes)]
		path := strings.NewReplacer("{p}", pid, "{b}", ids[int(which)%len(ids)]).Replace(rt.path)
		c := testClient(h)
		req, err := c.NewRequest(rt.method, "/", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Path = path
		req.URL.RawQuery = query
		res, err := c.Send(req)
		if res == nil {
			t.Fatalf("%s %s?%s %q: %v", rt.method, path, query, body, err)
		}
		if res.Status >= 500 {
			t.Fatalf("%s %s?%s %q: %d %s", rt.method, path, query, body, res.Status, res.Body)
		}
		if err != nil {
			t.Fatalf("not the envelope: %s", res.Body)
		}
		for _, e := range res.Errors {
			field, reason, ok := strings.Cut(e.Message, ": ")
			if !ok || reason == "" || !knownField(field) {
				t.Fatalf("%d without a field and a reason: %q", res.Status, e.Message)
			}
		}
		if st, _ := m.Current(); bindings.Validate(st, bindings.Services{CDN: bindings.CDNPorts{HTTP: []uint16{80}, HTTPS: []uint16{443}, HTTP3: true, HTTP3Port: 443},
			Apps: []bindings.App{{Name: "ssh", Protocol: dispatch.TCP, Edge: netip.MustParsePrefix("192.0.2.0/24"), Ports: dispatch.PortRange{First: 22, Last: 22}}}},
			nil) != nil {
			t.Fatal("the API left an invalid state")
		}
	})
}

// knownField reports whether f is a field docs/api.md names, or a path of
// them: one within a batch's binding (bindings[3].cidr, bindings.port), a
// canary's labels (canary.labels, and a label's key after it).
func knownField(f string) bool {
	for seg := range strings.SplitSeq(f, ".") {
		if i := strings.IndexByte(seg, '['); i > 0 && strings.HasSuffix(seg, "]") {
			seg = seg[:i]
		}
		switch seg {
		case "body", "cidr", "service_id", "protocol", "port", "prefix_id", "binding_id", "addr", "cascade",
			"wait", "since", "limit", "canary", "bindings", "drain", "dry_run",
			"path", "authorization", "node":
		case "labels":
			return true // what follows is a label's key
		default:
			return false
		}
	}
	return true
}

// TestRequestIDs: an answer carries the client's sane X-Request-Id, or one
// made for it; and a single node's provisioning, nodes and batch answer as
// a fleet of one.
func TestRequestIDs(t *testing.T) {
	h, _ := newAPI(t, "")
	for sent, want := range map[string]string{"abc-123": "abc-123", "has space": "", strings.Repeat("x", 65): ""} {
		req := httptest.NewRequest("GET", "/v1/services", nil)
		req.Header.Set("X-Request-Id", sent)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		got := w.Header().Get("X-Request-Id")
		if want != "" && got != want || want == "" && (got == sent || len(got) != 16) {
			t.Errorf("sent %q: answered %q", sent, got)
		}
	}
	req := httptest.NewRequest("POST", "/v1/batch", strings.NewReader(`{"bindings":[{"cidr":"198.51.100.200/32","service_id":"spectrum","protocol":"tcp","port":80},{"cidr":"198.51.100.201/32","service_id":"cdn","port":0}]}`))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 400 || !strings.Contains(w.Body.String(), "binding 198.51.100.200/32 tcp/80") {
		t.Errorf("a batch whose first binding spectrum cannot serve: %d %s, want 400 naming the binding", w.Code, w.Body)
	}
	req = httptest.NewRequest("POST", "/v1/batch?wait=1s", strings.NewReader(`{"bindings":[{"cidr":"198.51.100.200/32","service_id":"cdn"},{"cidr":"198.51.100.201/32","service_id":"cdn"}]}`))
	w = httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"count": 2`) || !strings.Contains(w.Body.String(), `"state": "active"`) {
		t.Errorf("a batch of two: %d %s", w.Code, w.Body)
	}
	req = httptest.NewRequest("GET", "/v1/nodes", nil)
	w = httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"in_sync"`) {
		t.Errorf("a single node's /v1/nodes: %d %s", w.Code, w.Body)
	}
}
