package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cloudflare/cloudflare-go/v6"
	"github.com/cloudflare/cloudflare-go/v6/addressing"
	"github.com/cloudflare/cloudflare-go/v6/option"

	"github.com/edgeproxy/edgeproxy/bindings"
)

const account = "023e105f4ecef8ad9ca31a8372d0c353"

// cfClient is Cloudflare's own client of h, in process, with token (none
// when empty) and no retries.
func cfClient(h http.Handler, token string, opts ...option.RequestOption) *cloudflare.Client {
	opts = append([]option.RequestOption{
		option.WithBaseURL("http://admin.test/client/v4/"),
		option.WithHTTPClient(&http.Client{Transport: handlerTransport{h}}),
		option.WithMaxRetries(0),
		option.WithHeaderDel("X-Auth-Key"), option.WithHeaderDel("X-Auth-Email"),
	}, opts...)
	if token != "" {
		opts = append(opts, option.WithAPIToken(token))
	}
	return cloudflare.NewClient(opts...)
}

// cfStatus is the HTTP status of an error of Cloudflare's client, and its
// first error.
func cfStatus(t *testing.T, err error) (int, int64, string) {
	t.Helper()
	var ce *cloudflare.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want an answer of the API, got %v", err)
	}
	if len(ce.Errors) == 0 {
		return ce.StatusCode, 0, ""
	}
	return ce.StatusCode, ce.Errors[0].Code, ce.Errors[0].Message
}

// TestCloudflareClient: Cloudflare's Go client lists services and
// prefixes, onboards a prefix, binds it as a whole and a part of it,
// lists, gets and deletes the bindings, and reads their provisioning.
func TestCloudflareClient(t *testing.T) {
	h, m := newAPI(t, "")
	cf := cfClient(h, "")
	ctx := context.Background()
	acct := cloudflare.F(account)

	svcs, err := cf.Addressing.Services.List(ctx, addressing.ServiceListParams{AccountID: acct})
	if err != nil || len(svcs.Result) != 3 || svcs.Result[0].ID != "cdn" || svcs.Result[2].Name != "Magic Transit" {
		t.Fatalf("services: %+v %v", svcs, err)
	}
	p, err := cf.Addressing.Prefixes.New(ctx, addressing.PrefixNewParams{AccountID: acct, CIDR: cloudflare.F("192.0.2.0/24"), ASN: cloudflare.F(int64(64500))})
	if err != nil || p.ID != bindings.PrefixID(netip.MustParsePrefix("192.0.2.0/24")) || p.CIDR != "192.0.2.0/24" || p.AccountID != account {
		t.Fatalf("onboard: %+v %v", p, err)
	}
	if got, _ := m.Prefix(p.ID); got.Service != bindings.MagicTransit || got.Source != bindings.FromAPI {
		t.Fatalf("a prefix onboarded by Cloudflare's client: %+v, want magic-transit from the API", got)
	}
	ps, err := cf.Addressing.Prefixes.List(ctx, addressing.PrefixListParams{AccountID: acct})
	if err != nil || len(ps.Result) != 2 || ps.Result[0].CIDR != "192.0.2.0/24" || ps.Result[1].CIDR != "198.51.100.0/24" {
		t.Fatalf("prefixes: %+v %v", ps, err)
	}
	if got, err := cf.Addressing.Prefixes.Get(ctx, p.ID, addressing.PrefixGetParams{AccountID: acct}); err != nil || got.CIDR != p.CIDR {
		t.Fatalf("get the prefix: %+v %v", got, err)
	}

	sb := cf.Addressing.Prefixes.ServiceBindings
	list := func() []addressing.ServiceBinding {
		t.Helper()
		bs, err := sb.List(ctx, p.ID, addressing.PrefixServiceBindingListParams{AccountID: acct})
		if err != nil {
			t.Fatal(err)
		}
		return bs.Result
	}
	if bs := list(); len(bs) != 0 {
		t.Fatalf("a new prefix's bindings: %+v, want none", bs)
	}
	whole, err := sb.New(ctx, p.ID, addressing.PrefixServiceBindingNewParams{AccountID: acct, CIDR: cloudflare.F("192.0.2.0/24"), ServiceID: cloudflare.F("spectrum")})
	if err != nil || whole.ServiceID != "spectrum" || whole.ServiceName != "Spectrum" || whole.Provisioning.State != addressing.ServiceBindingProvisioningStateActive {
		t.Fatalf("bind the prefix as a whole: %+v %v", whole, err)
	}
	if got, _ := m.Prefix(p.ID); got.Service != bindings.Spectrum {
		t.Fatalf("after the prefix-wide binding the prefix is %s", got.Service)
	}
	part, err := sb.New(ctx, p.ID, addressing.PrefixServiceBindingNewParams{AccountID: acct, CIDR: cloudflare.F("192.0.2.128/25"), ServiceID: cloudflare.F("cdn")})
	if err != nil || part.CIDR != "192.0.2.128/25" || part.Provisioning.State != "active" || !part.Provisioning.State.IsKnown() {
		t.Fatalf("bind a part: %+v %v", part, err)
	}
	if bs := list(); len(bs) != 2 || bs[0].ID != whole.ID || bs[1].ID != part.ID {
		t.Fatalf("bindings: %+v", bs)
	}
	got, err := sb.Get(ctx, p.ID, part.ID, addressing.PrefixServiceBindingGetParams{AccountID: acct})
	if err != nil || got.ServiceID != "cdn" || got.Provisioning.State != "active" || got.JSON.RawJSON() == "" {
		t.Fatalf("get: %+v %v", got, err)
	}
	if res := m.Resolve(1, netip.MustParseAddr("192.0.2.200"), 80); res.Service != bindings.CDN {
		t.Fatalf("192.0.2.200:80 resolves to %s, want cdn", res.Service)
	}

	_, err = sb.New(ctx, p.ID, addressing.PrefixServiceBindingNewParams{AccountID: acct, CIDR: cloudflare.F("192.0.2.0/24"), ServiceID: cloudflare.F("cdn")})
	if st, code, msg := cfStatus(t, err); st != 409 || code != codeConflict || !strings.HasPrefix(msg, "cidr: 192.0.2.0/24 is bound as a whole already, to spectrum") {
		t.Errorf("a second prefix-wide binding: %d %d %q", st, code, msg)
	}
	if _, err := sb.Delete(ctx, p.ID, part.ID, addressing.PrefixServiceBindingDeleteParams{AccountID: acct}); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Delete(ctx, p.ID, whole.ID, addressing.PrefixServiceBindingDeleteParams{AccountID: acct}); err != nil {
		t.Fatal(err)
	}
	if bs := list(); len(bs) != 0 {
		t.Fatalf("bindings after both deletes: %+v", bs)
	}
	if got, _ := m.Prefix(p.ID); got.Service != bindings.MagicTransit {
		t.Fatalf("after its prefix-wide binding went the prefix is %s, want magic-transit", got.Service)
	}
	_, err = sb.Get(ctx, p.ID, whole.ID, addressing.PrefixServiceBindingGetParams{AccountID: acct})
	if st, code, msg := cfStatus(t, err); st != 404 || code != codeNotFound || !strings.HasPrefix(msg, "binding_id: ") {
		t.Errorf("the deleted prefix-wide binding: %d %d %q", st, code, msg)
	}
	if _, err := cf.Addressing.Prefixes.Delete(ctx, p.ID, addressing.PrefixDeleteParams{AccountID: acct}); err != nil {
		t.Fatal(err)
	}
	_, err = cf.Addressing.Prefixes.Get(ctx, p.ID, addressing.PrefixGetParams{AccountID: acct})
	if st, _, msg := cfStatus(t, err); st != 404 || !strings.HasPrefix(msg, "prefix_id: ") {
		t.Errorf("the deleted prefix: %d %q", st, msg)
	}
}

// TestCloudflareShapes: the answers carry Cloudflare's envelope and field
// names, and a port-scoped binding shows its protocol and port.
func TestCloudflareShapes(t *testing.T) {
	h, _ := newAPI(t, "")
	base := "/client/v4/accounts/" + account + "/addressing"
	call(t, h, "POST", "/v1/prefixes/"+bindings.PrefixID(netip.MustParsePrefix("198.51.100.0/24"))+"/bindings",
		`{"cidr":"198.51.100.200/32","service_id":"cdn","protocol":"tcp","port":443}`).want(t, 200, 0, "")
	r := call(t, h, "GET", base+"/prefixes/"+bindings.PrefixID(netip.MustParsePrefix("198.51.100.0/24"))+"/bindings", "")
	if r.status != 200 || !r.env.Success || r.env.Errors == nil || r.env.Messages == nil {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	var bs []map[string]any
	r.result(t, &bs)
	if len(bs) != 3 {
		t.Fatalf("bindings of the config prefix: %s", r.env.Result)
	}
	for _, k := range []string{"id", "cidr", "service_id", "service_name", "provisioning"} {
		if _, ok := bs[0][k]; !ok {
			t.Errorf("a binding lacks %q: %v", k, bs[0])
		}
	}
	if bs[0]["cidr"] != "198.51.100.0/24" || bs[0]["provisioning"].(map[string]any)["state"] != "active" || bs[0]["protocol"] != nil {
		t.Errorf("the prefix-wide binding: %v", bs[0])
	}
	if bs[2]["protocol"] != "tcp" || bs[2]["port"] != float64(443) {
		t.Errorf("the port-scoped binding: %v", bs[2])
	}
	r = call(t, h, "GET", base+"/prefixes", "")
	var ps []map[string]any
	r.result(t, &ps)
	if len(ps) != 1 || ps[0]["account_id"] != account || ps[0]["cidr"] != "198.51.100.0/24" || ps[0]["id"] == "" {
		t.Errorf("prefixes: %s", r.env.Result)
	}
}

// TestCloudflareToken: a change without the token is 401, with a wrong one
// 403, in the envelope; reads need none, as on /v1; Cloudflare's client
// with the token changes.
func TestCloudflareToken(t *testing.T) {
	h, _ := newAPI(t, "s3cret")
	path := "/client/v4/accounts/" + account + "/addressing/prefixes"
	body := `{"cidr":"192.0.2.0/24"}`
	r := call(t, h, "POST", path, body)
	r.want(t, 401, codeUnauthorized, "Authorization: Bearer")
	if r.env.Success || r.env.Errors == nil || r.env.Messages == nil || string(r.env.Result) != "null" || r.res.Header.Get("Www-Authenticate") == "" {
		t.Errorf("401: %s %v", r.body, r.res.Header)
	}
	call(t, h, "POST", path, body, "Authorization", "Bearer nope").want(t, 403, codeForbidden, "wrong")
	call(t, h, "POST", path, body, "X-Auth-Key", "s3cret", "X-Auth-Email", "a@example.com").want(t, 401, codeUnauthorized, "Authorization")
	call(t, h, "GET", path, "").want(t, 200, 0, "")

	ctx := context.Background()
	_, err := cfClient(h, "nope").Addressing.Prefixes.New(ctx, addressing.PrefixNewParams{AccountID: cloudflare.F(account), CIDR: cloudflare.F("192.0.2.0/24")})
	if st, code, _ := cfStatus(t, err); st != 403 || code != codeForbidden {
		t.Errorf("Cloudflare's client with a wrong token: %d %d", st, code)
	}
	if _, err := cfClient(h, "s3cret").Addressing.Prefixes.New(ctx, addressing.PrefixNewParams{AccountID: cloudflare.F(account), CIDR: cloudflare.F("192.0.2.0/24")}); err != nil {
		t.Errorf("Cloudflare's client with the token: %v", err)
	}
	if strings.Contains(r.body, "s3cret") {
		t.Error("the token appears in an answer")
	}
}

// TestHostileCloudflareInput: malformed bodies, unknown and meaningless
// fields, oversized bodies, bad ids and unsupported features are refused
// by name in the envelope, and change nothing.
func TestHostileCloudflareInput(t *testing.T) {
	h, m := newAPI(t, "")
	base := "/client/v4/accounts/" + account + "/addressing"
	cfgPrefix := bindings.PrefixID(netip.MustParsePrefix("198.51.100.0/24"))
	before, _ := m.Current()
	for _, tc := range []struct {
		method, path, body string
		status, code       int
		msg                string
	}{
		{"POST", "/prefixes", `{"cidr":`, 400, codeInvalidJSON, "body: not valid JSON"},
		{"POST", "/prefixes", `[1]`, 400, codeInvalidJSON, "body: must be a JSON object"},
		{"POST", "/prefixes", ``, 400, codeInvalidJSON, "body: empty"},
		{"POST", "/prefixes", `{"cidr":"192.0.2.0/24","service_id":"cdn"}`, 400, codeInvalidJSON, `unknown field "service_id"`},
		{"POST", "/prefixes", `{"cidr":"192.0.2.0/24"} {}`, 400, codeInvalidJSON, "data after"},
		{"POST", "/prefixes", `{"cidr":"192.0.2.1/24"}`, 400, codeInvalidField, "cidr: "},
		{"POST", "/prefixes", `{"asn":13335}`, 400, codeInvalidField, "cidr: missing"},
		{"POST", "/prefixes", `{"cidr":"192.0.2.0/24","asn":0}`, 400, codeInvalidField, "asn: 0 is not an AS number"},
		{"POST", "/prefixes", `{"cidr":"192.0.2.0/24","asn":"x"}`, 400, codeInvalidField, "asn: must be a JSON number"},
		{"POST", "/prefixes", `{"cidr":"192.0.2.0/24","description":"mine"}`, 400, codeInvalidField, "description: edgeproxy keeps no description"},
		{"POST", "/prefixes", `{"cidr":"192.0.2.0/24","loa_document_id":"d6ad"}`, 400, codeInvalidField, "loa_document_id: "},
		{"POST", "/prefixes", `{"cidr":"192.0.2.0/24","delegate_loa_creation":true}`, 400, codeInvalidField, "delegate_loa_creation: "},
		{"POST", "/prefixes", `{"cidr":"192.0.2.0/24","x":"` + strings.Repeat("a", maxBody) + `"}`, 413, codeInvalidJSON, "body: larger than 65536 bytes"},
		{"POST", "/prefixes", `{"cidr":"203.0.113.0/24"}`, 400, codeInvalidState, "cidr: prefix 203.0.113.0/24"},
		{"POST", "/prefixes", `{"cidr":"198.51.100.0/24"}`, 409, codeConflict, "cidr: prefix 198.51.100.0/24 already exists"},
		{"POST", "/prefixes/" + cfgPrefix + "/bindings", `{"cidr":"198.51.100.200/32"}`, 400, codeInvalidField, "service_id: missing"},
		{"POST", "/prefixes/" + cfgPrefix + "/bindings", `{"cidr":"198.51.100.200/32","service_id":"cdn","protocol":"tcp"}`, 400, codeInvalidJSON, `unknown field "protocol"`},
		{"POST", "/prefixes/" + cfgPrefix + "/bindings", `{"cidr":"198.51.100.200/32","service_id":"cloudflare"}`, 400, codeInvalidField, "service_id: "},
		{"POST", "/prefixes/" + cfgPrefix + "/bindings", `{"cidr":"192.0.2.0/32","service_id":"cdn"}`, 400, codeInvalidField, "cidr: 192.0.2.0/32 is not inside prefix 198.51.100.0/24"},
		{"POST", "/prefixes/" + cfgPrefix + "/bindings", `{"cidr":"198.51.100.0/25","service_id":"cdn"}`, 409, codeConflict, "cidr: "},
		{"POST", "/prefixes/" + cfgPrefix + "/bindings", `{"cidr":"198.51.100.0/24","service_id":"spectrum"}`, 409, codeConflict, "cidr: 198.51.100.0/24 is bound as a whole already, to cdn"},
		{"POST", "/prefixes/" + cfgPrefix + "/bindings?wait=forever", `{"cidr":"198.51.100.200/32","service_id":"cdn"}`, 400, codeInvalidField, "wait: "},
		{"POST", "/prefixes/" + cfgPrefix + "/bindings?dry_run=true", `{"cidr":"198.51.100.200/32","service_id":"cdn"}`, 400, codeInvalidField, "dry_run: the Cloudflare routes take no dry run"},
		{"POST", "/prefixes/nope/bindings", `{"cidr":"198.51.100.200/32","service_id":"cdn"}`, 404, codeNotFound, `prefix_id: no prefix has id "nope"`},
		{"DELETE", "/prefixes/" + cfgPrefix, ``, 409, codeConfigOwned, "prefix_id: "},
		{"DELETE", "/prefixes/" + cfgPrefix + "/bindings/" + bindings.BindingID(netip.MustParsePrefix("198.51.100.0/25"), 0, 0), ``, 409, codeConfigOwned, "binding_id: "},
		{"DELETE", "/prefixes/" + cfgPrefix + "/bindings/" + bindings.BindingID(netip.MustParsePrefix("198.51.100.0/24"), 0, 0), ``, 409, codeConfigOwned, "binding_id: "},
		{"GET", "/prefixes/" + cfgPrefix + "/bindings/nope", ``, 404, codeNotFound, `binding_id: prefix ` + cfgPrefix + ` has no binding with id "nope"`},
		{"PATCH", "/prefixes/" + cfgPrefix, `{"description":"x"}`, 501, codeNotFound, "path: PATCH addressing/prefixes/" + cfgPrefix + ": not supported by edgeproxy"},
		{"GET", "/prefixes/" + cfgPrefix + "/bgp/prefixes", ``, 501, codeNotFound, "not supported by edgeproxy"},
		{"GET", "/address_maps", ``, 501, codeNotFound, "path: GET addressing/address_maps: not supported"},
		{"GET", "/loa_documents/x/download", ``, 501, codeNotFound, "not supported"},
	} {
		r := call(t, h, tc.method, base+tc.path, tc.body)
		if r.status != tc.status || len(r.env.Errors) == 0 || r.env.Errors[0].Code != tc.code || !strings.Contains(r.env.Errors[0].Message, tc.msg) || r.env.Success || r.env.Messages == nil {
			t.Errorf("%s %s %.80q: %d %s, want %d %d %q", tc.method, tc.path, tc.body, r.status, r.body, tc.status, tc.code, tc.msg)
		}
		if want := tc.status == 409; (r.res.Header.Get("X-Should-Retry") == "false") != want {
			t.Errorf("%s %s: X-Should-Retry %q, want \"false\" only on a conflict", tc.method, tc.path, r.res.Header.Get("X-Should-Retry"))
		}
	}
	for _, tc := range []struct{ path, msg string }{
		{"/client/v4/accounts/" + strings.Repeat("a", 65) + "/addressing/prefixes", "account_id: 65 characters"},
		{"/client/v4/accounts/a.b/addressing/prefixes", `account_id: "a.b"`},
		{"/client/v4/accounts/a%20b/addressing/services", `account_id: "a b"`},
	} {
		call(t, h, "GET", tc.path, "").want(t, 400, codeInvalidField, tc.msg)
	}
	call(t, h, "GET", "/client/v4/zones", "").want(t, 404, codeNotFound, "path: no route GET /client/v4/zones")
	if after, _ := m.Current(); len(after.Prefixes) != len(before.Prefixes) || len(after.Bindings) != len(before.Bindings) {
		t.Errorf("refused calls changed the state: %+v", after)
	}
}

// TestCloudflareChangesShareTheRules: a change through the Cloudflare
// routes is refused while the state may not change, as on /v1, and its
// audit entry names who and which request.
func TestCloudflareChangesShareTheRules(t *testing.T) {
	m := bindings.NewManager(nopApplier{}, nil)
	if err := m.Apply(&bindings.State{}, bindings.Services{CDN: bindings.CDNPorts{HTTP: []uint16{80}}}, nil); err != nil {
		t.Fatal(err)
	}
	st := &auditStore{}
	m.SetStore(st)
	var refuse error
	h := Handler(Options{Bindings: m, Token: "s3cret", Writable: func() error { return refuse }})
	base := "/client/v4/accounts/" + account + "/addressing"
	auth := []string{"Authorization", "Bearer s3cret", "X-Request-Id", "cf-req-1"}
	call(t, h, "POST", base+"/prefixes", `{"cidr":"192.0.2.0/24","asn":64500}`, auth...).want(t, 200, 0, "")
	pid := bindings.PrefixID(netip.MustParsePrefix("192.0.2.0/24"))
	call(t, h, "POST", base+"/prefixes/"+pid+"/bindings", `{"cidr":"192.0.2.0/24","service_id":"cdn"}`, auth...).want(t, 200, 0, "")
	es := st.entries()
	if len(es) != 2 || es[0].Action != "create" || es[1].Action != "move" || es[1].After.Service != "cdn" {
		t.Fatalf("audit: %+v", es)
	}
	for _, e := range es {
		if e.Who != "token:"+tokenIDOf("s3cret") || e.RequestID != "cf-req-1" {
			t.Errorf("audit entry %+v: want who token:%s and request cf-req-1", e, tokenIDOf("s3cret"))
		}
	}

	refuse = errors.New("the store is read-only")
	r := call(t, h, "POST", base+"/prefixes/"+pid+"/bindings", `{"cidr":"192.0.2.128/25","service_id":"cdn"}`, auth...)
	r.want(t, 503, codeUnavailable, "changes are refused for now: the store is read-only")
	if r.res.Header.Get("Retry-After") != "60" {
		t.Errorf("503 without Retry-After: %v", r.res.Header)
	}
	call(t, h, "GET", base+"/prefixes/"+pid+"/bindings", "").want(t, 200, 0, "")
	if len(st.entries()) != 2 {
		t.Errorf("a refused change reached the store")
	}
}

// auditStore is a bindings.Store that keeps the audit entries of its
// commits.
type auditStore struct {
	mu    sync.Mutex
	audit []bindings.AuditEntry
}

func (s *auditStore) Load() (*bindings.State, int64, error) { return &bindings.State{}, 0, nil }
func (s *auditStore) Commit(rev int64, m bindings.Mutation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.Audit != nil {
		s.audit = append(s.audit, *m.Audit)
	}
	return nil
}
func (s *auditStore) Writable() error                                 { return nil }
func (s *auditStore) Audit(int64, int) ([]bindings.AuditEntry, error) { return nil, nil }
func (s *auditStore) Close() error                                    { return nil }
func (s *auditStore) String() string                                  { return "audit store" }

func (s *auditStore) entries() []bindings.AuditEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bindings.AuditEntry(nil), s.audit...)
}

// FuzzCloudflareAPI sends arbitrary bodies to the Cloudflare routes that
// change state: no panic, no 5xx, the envelope always, every 400 names
// its field, and the state stays valid.
func FuzzCloudflareAPI(f *testing.F) {
	paths := []struct{ method, path string }{
		{"POST", "/prefixes"},
		{"POST", "/prefixes/{p}/bindings"},
		{"DELETE", "/prefixes/{p}/bindings/{b}"},
		{"DELETE", "/prefixes/{p}"},
	}
	for i := range paths {
		f.Add(uint8(i), `{"cidr":"198.51.100.128/25","service_id":"cdn"}`, uint8(0))
		f.Add(uint8(i), `{"cidr":"192.0.2.0/24","asn":1}`, uint8(1))
		f.Add(uint8(i), `{"cidr":"198.51.100.0/24","service_id":"magic-transit"}`, uint8(2))
	}
	f.Fuzz(func(t *testing.T, route uint8, body string, which uint8) {
		h, m := newAPI(t, "")
		pid := bindings.PrefixID(netip.MustParsePrefix("198.51.100.0/24"))
		ids := []string{bindings.BindingID(netip.MustParsePrefix("198.51.100.0/24"), 0, 0), "x", bindings.BindingID(netip.MustParsePrefix("198.51.100.128/25"), 0, 0)}
		rt := paths[int(route)%len(paths)]
		path := "/client/v4/accounts/" + account + "/addressing" + strings.NewReplacer("{p}", pid, "{b}", ids[int(which)%len(ids)]).Replace(rt.path)
		req := httptest.NewRequest(rt.method, path, strings.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", rt.method, path, body, w.Code, w.Body)
		}
		var env Envelope
		if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil || env.Errors == nil || env.Messages == nil || env.Success != (w.Code == 200) {
			t.Fatalf("not the envelope: %d %s", w.Code, w.Body)
		}
		if w.Code == 400 {
			for _, e := range env.Errors {
				field, reason, ok := strings.Cut(e.Message, ": ")
				if !ok || reason == "" || !knownField(field) && !slices.Contains([]string{"asn", "description", "loa_document_id", "delegate_loa_creation"}, field) {
					t.Fatalf("400 without a field and a reason: %q", e.Message)
				}
			}
		}
		if st, svc := m.Current(); bindings.Validate(st, svc, nil) != nil {
			t.Fatal("the API left an invalid state")
		}
	})
}

// TestCloudflareProvisioning: Cloudflare's two words for edgeproxy's four
// states: active only once every live node in scope holds the change.
func TestCloudflareProvisioning(t *testing.T) {
	for state, want := range map[string]string{
		bindings.Active:       "active",
		bindings.Pending:      "provisioning",
		bindings.Failed:       "provisioning",
		bindings.CanaryActive: "provisioning",
	} {
		b := Binding{ID: "x", CIDR: "192.0.2.0/24", ServiceID: "cdn", ServiceName: "CDN", Provisioning: Provisioning{State: state}}
		if got := toCFBinding(b).Provisioning.State; got != want {
			t.Errorf("%s: %q, want %q", state, got, want)
		}
	}
}
