package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// syncBuffer is a log's buffer the handler writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	s.b.Reset()
	return out
}

// TestErrorLogLine: every answer with an error status, whoever made it
// (a handler, the token check, the writable check, net/http's mux), is
// one log line of one wording and one set of attributes: a refusal at
// INFO, a failure at WARN.
func TestErrorLogLine(t *testing.T) {
	var logs syncBuffer
	writable := error(nil)
	h, _ := newAPIWith(t, Options{
		Token:    "s3cret",
		Logger:   slog.New(slog.NewJSONHandler(&logs, nil)),
		Writable: func() error { return writable },
		Audit: func(context.Context, int64, int) ([]bindings.AuditEntry, error) {
			return nil, errors.New("the audit log cannot be read")
		},
	})
	auth := []string{"Authorization", "Bearer s3cret"}
	cases := []struct {
		method, path, body string
		header             []string
		status, code       int
		who                string
	}{
		{"POST", "/v1/prefixes", `{"cidr":`, auth, 400, codeInvalidJSON, "token:"},
		{"POST", "/v1/prefixes", `{}`, nil, 401, codeUnauthorized, "192.0.2.1:1234"},
		{"POST", "/v1/prefixes", `{}`, []string{"Authorization", "Bearer nope"}, 403, codeForbidden, "192.0.2.1:1234"},
		{"GET", "/v1/nothing", "", nil, 404, codeNotFound, "192.0.2.1:1234"},
		{"GET", "/nothing", "", nil, 404, 0, "192.0.2.1:1234"},
		{"GET", "/v1/audit", "", nil, 500, codeInternal, "192.0.2.1:1234"},
		{"POST", "/v1/prefixes", `{}`, auth, 503, codeUnavailable, "token:"},
	}
	for _, c := range cases {
		writable = nil
		if c.status == 503 {
			writable = errors.New("the store is read-only")
		}
		req := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
		req.RemoteAddr = "192.0.2.1:1234"
		for i := 0; i+1 < len(c.header); i += 2 {
			req.Header.Set(c.header[i], c.header[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		what := c.method + " " + c.path
		if w.Code != c.status {
			t.Fatalf("%s: status %d, want %d: %s", what, w.Code, c.status, w.Body)
		}
		ls := logs.lines(t)
		if len(ls) != 1 {
			t.Fatalf("%s: %d log lines, want 1: %v", what, len(ls), ls)
		}
		l := ls[0]
		keys := slices.Sorted(maps.Keys(l))
		want := []string{"code", "error", "level", "method", "msg", "path", "request_id", "status", "time", "who"}
		if !slices.Equal(keys, want) {
			t.Errorf("%s: attributes %v, want %v", what, keys, want)
		}
		level := "INFO"
		if c.status >= 500 {
			level = "WARN"
		}
		if l["msg"] != "admin request failed" || l["level"] != level || l["method"] != c.method || l["path"] != c.path ||
			l["status"] != float64(c.status) || l["code"] != float64(c.code) || l["request_id"] != w.Header().Get("X-Request-Id") ||
			!strings.HasPrefix(l["who"].(string), c.who) || l["error"] == "" {
			t.Errorf("%s: log line %v", what, l)
		}
		if c.code != 0 {
			var env Envelope
			if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil || len(env.Errors) == 0 || l["error"] != env.Errors[0].Message {
				t.Errorf("%s: log error %q, envelope %s", what, l["error"], w.Body)
			}
		}
	}
	// Successes and /readyz's answer log nothing.
	for _, path := range []string{"/v1/services", "/readyz", "/healthz"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
	}
	if ls := logs.lines(t); len(ls) != 0 {
		t.Errorf("successes logged: %v", ls)
	}
}

// TestMessagesStartWithField: every error the API answers, of every
// status, starts with a field docs/api.md names and ": ", then a reason.
func TestMessagesStartWithField(t *testing.T) {
	h, m := newAPIWith(t, Options{
		Audit: func(context.Context, int64, int) ([]bindings.AuditEntry, error) {
			return nil, errors.New("the audit log cannot be read")
		},
	})
	pid := bindings.PrefixID(netip.MustParsePrefix("198.51.100.0/24"))
	def := bindings.BindingID(netip.MustParsePrefix("198.51.100.0/24"), 0, 0)
	cfgB := bindings.BindingID(netip.MustParsePrefix("198.51.100.0/25"), 0, 0)
	api := call(t, h, "POST", "/v1/prefixes", `{"cidr":"192.0.2.0/24","service_id":"cdn"}`)
	api.want(t, 200, 0, "")
	var p Prefix
	api.result(t, &p)
	call(t, h, "POST", "/v1/prefixes/"+p.ID+"/bindings", `{"cidr":"192.0.2.0/25","service_id":"spectrum"}`).want(t, 200, 0, "")
	bad := []struct{ method, path, body string }{
		{"POST", "/v1/prefixes", `[`},
		{"POST", "/v1/prefixes", `[]`},
		{"POST", "/v1/prefixes", ``},
		{"POST", "/v1/prefixes", `{"cidr":"192.0.2.0/24","service_id":"cdn"} {}`},
		{"POST", "/v1/prefixes", `{"x":1}`},
		{"POST", "/v1/prefixes", `{"cidr":1}`},
		{"POST", "/v1/prefixes", `{"cidr":true}`},
		{"POST", "/v1/prefixes", `true`},
		{"POST", "/v1/prefixes", `{"cidr":"x","service_id":"cdn"}`},
		{"POST", "/v1/prefixes", `{"cidr":"0.0.0.0/4","service_id":"cdn"}`},
		{"POST", "/v1/prefixes", `{"cidr":"192.0.2.0/23","service_id":"cdn"}`},
		{"POST", "/v1/prefixes", `{"cidr":"203.0.113.0/24","service_id":"cdn"}`},
		{"POST", "/v1/prefixes", `{"cidr":"198.18.0.0/24","service_id":"waf"}`},
		{"POST", "/v1/prefixes", `{"cidr":"198.18.0.0/24"}`},
		{"DELETE", "/v1/prefixes/" + p.ID, ""},
		{"DELETE", "/v1/prefixes/" + p.ID + "?cascade=maybe", ""},
		{"DELETE", "/v1/prefixes/" + pid, ""},
		{"DELETE", "/v1/prefixes/nope", ""},
		{"GET", "/v1/prefixes/nope", ""},
		{"GET", "/v1/prefixes/nope/bindings", ""},
		{"GET", "/v1/prefixes/" + pid + "/bindings/nope", ""},
		{"POST", "/v1/prefixes/" + pid + "/bindings", `{"cidr":"198.51.100.0/25","service_id":"cdn"}`},
		{"POST", "/v1/prefixes/" + pid + "/bindings", `{"cidr":"198.51.100.0/24","service_id":"cdn"}`},
		{"POST", "/v1/prefixes/" + pid + "/bindings", `{"cidr":"198.51.100.128/25","service_id":"cdn","port":443}`},
		{"POST", "/v1/prefixes/" + pid + "/bindings", `{"cidr":"198.51.100.128/25","service_id":"cdn","protocol":"tcp","port":22}`},
		{"POST", "/v1/prefixes/" + pid + "/bindings", `{"cidr":"198.51.100.128/25","service_id":"magic-transit"}`},
		{"POST", "/v1/prefixes/" + pid + "/bindings", `{"cidr":"198.51.100.128/25","service_id":"cdn","canary":{"labels":{}}}`},
		{"POST", "/v1/prefixes/" + pid + "/bindings", `{"cidr":"198.51.100.128/25","service_id":"cdn","canary":{"labels":{"a":"b"}}}`},
		{"POST", "/v1/prefixes/" + pid + "/bindings?wait=forever", `{"cidr":"198.51.100.128/25","service_id":"cdn"}`},
		{"PATCH", "/v1/prefixes/" + pid + "/bindings/" + cfgB, `{"service_id":"cdn"}`},
		{"PATCH", "/v1/prefixes/" + pid + "/bindings/" + def, `{"service_id":"cdn","drain":"soon"}`},
		{"PATCH", "/v1/prefixes/" + pid + "/bindings/" + def, `{"service_id":"cdn","drain":"1s"}`},
		{"PATCH", "/v1/prefixes/" + pid + "/bindings/" + def, `{}`},
		{"DELETE", "/v1/prefixes/" + pid + "/bindings/" + def, ""},
		{"DELETE", "/v1/prefixes/" + pid + "/bindings/" + cfgB, ""},
		{"POST", "/v1/prefixes/" + pid + "/bindings/" + cfgB + "/promote", ""},
		{"POST", "/v1/prefixes/" + pid + "/bindings/" + cfgB + "/rollback", ""},
		{"POST", "/v1/batch", `{"bindings":[]}`},
		{"POST", "/v1/batch", `{"bindings":{}}`},
		{"POST", "/v1/batch", `{"bindings":[1]}`},
		{"POST", "/v1/batch", `{"bindings":[{"port":"x"}]}`},
		{"POST", "/v1/batch", `{"bindings":[{"canary":{"labels":{"a":1}}}]}`},
		{"POST", "/v1/prefixes/" + pid + "/bindings", `{"canary":{"labels":[]}}`},
		{"PATCH", "/v1/prefixes/" + pid + "/bindings/" + def, `{"service_id":"cdn","drain":30}`},
		{"DELETE", "/v1/prefixes/" + pid + "/bindings/" + cfgB, `{"drain":true}`},
		{"POST", "/v1/batch", `{"bindings":[{"cidr":"x","service_id":"cdn"}]}`},
		{"POST", "/v1/batch", `{"bindings":[{"cidr":"198.51.100.200/32","service_id":"cdn","canary":{"labels":{"a":"b"}}}]}`},
		{"POST", "/v1/batch", `{"bindings":[{"cidr":"198.18.5.0/32","service_id":"cdn"}]}`},
		{"POST", "/v1/batch", `{"bindings":[{"cidr":"198.51.100.0/25","service_id":"cdn"}]}`},
		{"POST", "/v1/prefixes?dry_run=maybe", `{"cidr":"198.18.0.0/24","service_id":"cdn"}`},
		{"POST", "/v1/prefixes/" + pid + "/bindings/" + cfgB + "/promote?dry_run=true", ""},
		{"POST", "/v1/prefixes/" + pid + "/bindings?dry_run=true", `{"cidr":"198.51.100.128/25","service_id":"cdn","canary":{"labels":{"a":"b"}}}`},
		{"POST", "/v1/prefixes?dry_run=true", `{"cidr":"198.51.100.0/24","service_id":"cdn"}`},
		{"GET", "/v1/lookup", ""},
		{"GET", "/v1/lookup?addr=x", ""},
		{"GET", "/v1/lookup?addr=198.51.100.1:1&protocol=icmp", ""},
		{"GET", "/v1/audit?since=-1", ""},
		{"GET", "/v1/audit?limit=0", ""},
		{"GET", "/v1/audit", ""},
		{"GET", "/v1/origins", ""},
		{"GET", "/v1/status", ""},
		{"PUT", "/v1/services", ""},
		{"GET", "/v1/nothing", ""},
	}
	for _, c := range bad {
		r := call(t, h, c.method, c.path, c.body)
		what := c.method + " " + c.path + " " + c.body
		if r.status < 400 || len(r.env.Errors) == 0 {
			t.Errorf("%s: %d %s, want an error", what, r.status, r.body)
			continue
		}
		for _, e := range r.env.Errors {
			field, reason, ok := strings.Cut(e.Message, ": ")
			if !ok || reason == "" || !knownField(field) {
				t.Errorf("%s: %d %q does not start with a field", what, r.status, e.Message)
			}
			for _, goWord := range []string{"slice", "struct", "map", "bool", "int", "*"} {
				if strings.Contains(reason, "JSON "+goWord) || strings.HasSuffix(reason, "not "+goWord) {
					t.Errorf("%s: %q names a Go type, not a JSON one", what, e.Message)
				}
			}
		}
	}
	// A held manager (a live upgrade) answers 503 naming the node.
	m.Hold("an upgrade is in progress")
	r := call(t, h, "POST", "/v1/prefixes", `{"cidr":"198.18.0.0/24","service_id":"cdn"}`)
	if r.status != 503 || len(r.env.Errors) != 1 || !strings.HasPrefix(r.env.Errors[0].Message, "node: ") {
		t.Errorf("held: %d %s", r.status, r.body)
	}
}

// TestNoHTMLEscaping: the API's JSON is not HTML-escaped, in its errors
// nor in its results.
func TestNoHTMLEscaping(t *testing.T) {
	h, _ := newAPIWith(t, Options{Origins: func() any { return []string{"<a> & <b>"} }})
	pid := bindings.PrefixID(netip.MustParsePrefix("198.51.100.0/24"))
	r := call(t, h, "POST", "/v1/prefixes/"+pid+"/bindings", `{"cidr":"198.51.100.0/25","service_id":"cdn"}`)
	if r.status != 409 || !strings.Contains(r.body, "198.51.100.0/25 -> spectrum") || strings.Contains(r.body, `\u003e`) {
		t.Errorf("an error naming a binding: %d %s", r.status, r.body)
	}
	r = call(t, h, "GET", "/v1/origins", "")
	if r.status != 200 || !strings.Contains(r.body, `"<a> & <b>"`) {
		t.Errorf("a result: %d %s", r.status, r.body)
	}
	for _, s := range []string{`\u003c`, `\u003e`, `\u0026`} {
		if strings.Contains(r.body, s) {
			t.Errorf("a result escapes HTML: %s", r.body)
		}
	}
}
