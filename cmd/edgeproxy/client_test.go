package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeAPI answers the admin API's routes with canned results and records
// what it was asked.
type fakeAPI struct {
	t       *testing.T
	mu      sync.Mutex
	calls   []string         // "METHOD path?query"
	bodies  []map[string]any // the bodies of the calls that had one
	results map[string]any   // by "METHOD path" (without the query)
	ids     []string         // the X-Request-Id of each call
	down    bool             // answer every change 503, its outcome unknown
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	call := r.Method + " " + r.URL.Path
	f.calls = append(f.calls, call+"?"+r.URL.RawQuery)
	f.ids = append(f.ids, r.Header.Get("X-Request-Id"))
	if b, _ := io.ReadAll(r.Body); len(b) > 0 {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			f.t.Errorf("%s: body %s: %v", call, b, err)
		}
		f.bodies = append(f.bodies, m)
	}
	w.Header().Set("Content-Type", "application/json")
	if f.down && r.Method != "GET" {
		w.WriteHeader(503)
		io.WriteString(w, `{"success":false,"errors":[{"code":1010,"message":"the fleet's store did not answer: the change may or may not have been made"}],"messages":[],"result":null}`)
		return
	}
	res, ok := f.results[call]
	if !ok {
		w.WriteHeader(404)
		io.WriteString(w, `{"success":false,"errors":[{"code":1005,"message":"no route `+call+`"}],"messages":[],"result":null}`)
		return
	}
	raw, _ := json.Marshal(res)
	w.Write([]byte(`{"success":true,"errors":[],"messages":[],"result":` + string(raw) + `}`))
}

// lastBody is the body of the last call that had one.
func (f *fakeAPI) lastBody() map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.bodies) == 0 {
		return nil
	}
	return f.bodies[len(f.bodies)-1]
}

func (f *fakeAPI) lastCall() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[len(f.calls)-1]
}

const (
	pid = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	bid = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func prov(state string, applied, total int, failed map[string]string) map[string]any {
	names := []string{}
	for n := range failed {
		names = append(names, n)
	}
	return map[string]any{"state": state, "revision": 7, "nodes_total": total, "nodes_applied": applied, "nodes_failed": names, "errors": failed}
}

func newFake(t *testing.T, state map[string]any) (*fakeAPI, string) {
	binding := map[string]any{"id": bid, "prefix_id": pid, "cidr": "192.0.2.128/25", "service_id": "spectrum", "source": "api", "provisioning": state}
	moved := map[string]any{"id": bid, "prefix_id": pid, "cidr": "192.0.2.128/25", "service_id": "cdn", "source": "api", "provisioning": state}
	f := &fakeAPI{t: t, results: map[string]any{
		"GET /v1/prefixes":                                            []map[string]any{{"id": pid, "cidr": "192.0.2.0/24", "service_id": "spectrum", "source": "api"}},
		"GET /v1/prefixes/" + pid + "/bindings":                       []any{binding},
		"POST /v1/prefixes/" + pid + "/bindings":                      binding,
		"PATCH /v1/prefixes/" + pid + "/bindings/" + bid:              moved,
		"DELETE /v1/prefixes/" + pid + "/bindings/" + bid:             binding,
		"POST /v1/prefixes/" + pid + "/bindings/" + bid + "/promote":  moved,
		"POST /v1/prefixes/" + pid + "/bindings/" + bid + "/rollback": binding,
		"POST /v1/batch": map[string]any{"revision": 9, "count": 2, "provisioning": state},
		"GET /v1/nodes": []map[string]any{
			{"id": "edge-1", "labels": map[string]string{"role": "canary", "dc": "a"}, "live": true, "revision": 7, "state": "in_sync", "error": ""},
			{"id": "edge-2", "labels": map[string]string{}, "live": false, "revision": 5, "state": "failed", "error": "revision 6: port 8443 not served"},
		},
		"GET /v1/fleet": map[string]any{"node": "edge-1", "endpoints": []string{"http://198.18.0.1:2379"}, "revision": 7, "applied": 7, "stale": false, "nodes": 2, "states": map[string]int{"in_sync": 1, "failed": 1}},
		"GET /v1/audit": []map[string]any{{"revision": 7, "time": "2026-01-02T03:04:05Z", "who": "token:0123456789ab", "action": "move", "prefix_id": pid, "binding_id": bid,
			"before": map[string]any{"id": bid, "prefix_id": pid, "cidr": "192.0.2.128/25", "service_id": "spectrum"},
			"after":  map[string]any{"id": bid, "prefix_id": pid, "cidr": "192.0.2.128/25", "protocol": "tcp", "port": 443, "service_id": "cdn"}, "node": "edge-1"}},
	}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL
}

// runCLI runs the command line against the API at url.
func runCLI(url string, args ...string) (stdout, stderr string, err error) {
	var out, errb bytes.Buffer
	full := append([]string{args[0], "--admin", url}, args[1:]...)
	if args[0] == "bindings" && len(args) > 1 {
		full = append([]string{args[0], args[1], "--admin", url}, args[2:]...)
	}
	err = run(context.Background(), full, &out, &errb)
	return out.String(), errb.String(), err
}

func isUsage(err error) bool {
	var ue usageError
	return errors.As(err, &ue)
}

// TestCLIWaitAndStates: --wait passes ?wait=; each line names what
// changed and the state reached; failed exits non-zero naming the nodes
// and reasons, pending after the wait succeeds with a note.
func TestCLIWaitAndStates(t *testing.T) {
	f, url := newFake(t, prov("active", 3, 3, nil))
	out, _, err := runCLI(url, "bindings", "add", "--wait", "5s", "--port", "tcp/443", "192.0.2.128/25", "spectrum")
	if err != nil || out != "added 192.0.2.128/25 * -> spectrum (id "+bid+", in prefix 192.0.2.0/24; active)\n" {
		t.Fatalf("add: %q %v", out, err)
	}
	if c := f.lastCall(); c != "POST /v1/prefixes/"+pid+"/bindings?wait=5s" {
		t.Fatalf("add called %s", c)
	}
	if b := f.lastBody(); b["protocol"] != "tcp" || b["port"] != float64(443) || b["canary"] != nil {
		t.Fatalf("add sent %v", b)
	}

	_, url = newFake(t, prov("pending", 2, 3, nil))
	out, errOut, err := runCLI(url, "bindings", "move", "--wait", "2s", bid, "cdn")
	if err != nil || out != "moved 192.0.2.128/25 * from spectrum to cdn (id "+bid+"; pending: 2/3 nodes hold it)\n" || !strings.Contains(errOut, "still pending after 2s") {
		t.Fatalf("move, pending: %q %q %v", out, errOut, err)
	}

	f, url = newFake(t, prov("failed", 2, 3, map[string]string{"edge-3": "port 8443 not served"}))
	out, _, err = runCLI(url, "bindings", "delete", "--wait", "1s", bid)
	if err == nil || isUsage(err) || !strings.Contains(err.Error(), "edge-3") ||
		out != "deleted 192.0.2.128/25 * -> spectrum (id "+bid+"; failed on edge-3 (port 8443 not served); 2/3 nodes hold it)\n" {
		t.Fatalf("delete, failed: %q %v", out, err)
	}
	if c := f.lastCall(); c != "DELETE /v1/prefixes/"+pid+"/bindings/"+bid+"?wait=1s" {
		t.Fatalf("delete called %s", c)
	}

	// Without --wait nothing is waited for and nothing noted.
	f, url = newFake(t, prov("pending", 1, 3, nil))
	if out, errOut, err := runCLI(url, "bindings", "move", bid, "cdn"); err != nil || errOut != "" || !strings.Contains(out, "pending: 1/3") {
		t.Fatalf("move without --wait: %q %q %v", out, errOut, err)
	}
	if c := f.lastCall(); strings.Contains(c, "wait") {
		t.Fatalf("move without --wait called %s", c)
	}
}

// TestCLICanary: --canary k=v (repeatable) sends the canary's labels;
// promote and rollback find the binding's prefix and post to it.
func TestCLICanary(t *testing.T) {
	f, url := newFake(t, prov("canary", 1, 1, nil))
	if _, _, err := runCLI(url, "bindings", "move", "--canary", "role=canary", "--canary", "dc=a", bid, "cdn"); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"labels": map[string]any{"role": "canary", "dc": "a"}}
	if b := f.lastBody(); !jsonEqual(b["canary"], want) || b["service_id"] != "cdn" {
		t.Fatalf("move sent %v", b)
	}
	if _, _, err := runCLI(url, "bindings", "add", "--canary", "role=canary", "192.0.2.128/25", "spectrum"); err != nil || !jsonEqual(f.lastBody()["canary"], map[string]any{"labels": map[string]any{"role": "canary"}}) {
		t.Fatalf("add: %v %v", f.lastBody(), err)
	}
	out, _, err := runCLI(url, "bindings", "promote", bid)
	if err != nil || out != "promoted 192.0.2.128/25 *: cdn on every node (id "+bid+"; canary: 1/1 nodes hold it)\n" || f.lastCall() != "POST /v1/prefixes/"+pid+"/bindings/"+bid+"/promote?" {
		t.Fatalf("promote: %q %s %v", out, f.lastCall(), err)
	}
	out, _, err = runCLI(url, "bindings", "rollback", bid)
	if err != nil || !strings.HasPrefix(out, "rolled back the canary of 192.0.2.128/25 *: spectrum on every node") || f.lastCall() != "POST /v1/prefixes/"+pid+"/bindings/"+bid+"/rollback?" {
		t.Fatalf("rollback: %q %s %v", out, f.lastCall(), err)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// TestCLIBatch: a file of CIDR SERVICE [PROTO/PORT] lines is one POST
// /v1/batch; a bad line is refused naming its number, and nothing is sent.
func TestCLIBatch(t *testing.T) {
	f, url := newFake(t, prov("active", 3, 3, nil))
	file := filepath.Join(t.TempDir(), "batch.txt")
	os.WriteFile(file, []byte("# two bindings\n192.0.2.0/25 cdn\n\n192.0.2.128/25 spectrum tcp/443\n"), 0o600)
	out, _, err := runCLI(url, "bindings", "batch", "--wait", "3s", file)
	if err != nil || out != "added 2 binding(s) from "+file+" at revision 9 (active)\n" || f.lastCall() != "POST /v1/batch?wait=3s" {
		t.Fatalf("batch: %q %s %v", out, f.lastCall(), err)
	}
	want := map[string]any{"bindings": []any{
		map[string]any{"cidr": "192.0.2.0/25", "service_id": "cdn"},
		map[string]any{"cidr": "192.0.2.128/25", "port": 443, "protocol": "tcp", "service_id": "spectrum"},
	}}
	if !jsonEqual(f.lastBody(), want) {
		t.Fatalf("batch sent %v", f.lastBody())
	}
	n := len(f.calls)
	for _, bad := range []struct{ text, want string }{
		{"192.0.2.0/25\n", "batch.txt:1: \"192.0.2.0/25\" is not CIDR SERVICE [PROTO/PORT]"},
		{"192.0.2.0/25 cdn\n192.0.2.1/24 cdn\n", "batch.txt:2: CIDR:"},
		{"192.0.2.0/25 cdn tcp/0\n", "batch.txt:1: PROTO/PORT:"},
		{"# nothing\n", "no bindings"},
	} {
		os.WriteFile(file, []byte(bad.text), 0o600)
		_, _, err := runCLI(url, "bindings", "batch", file)
		if !isUsage(err) || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: %v, want %q", bad.text, err, bad.want)
		}
	}
	if len(f.calls) != n {
		t.Fatalf("a bad batch was sent: %v", f.calls[n:])
	}
}

// TestCLIFleet: nodes prints a table, fleet a summary, audit a line per
// entry; --json prints the results.
func TestCLIFleet(t *testing.T) {
	_, url := newFake(t, prov("active", 1, 1, nil))
	out, _, err := runCLI(url, "nodes")
	want := "ID      LABELS            LIVE  REVISION  STATE    ERROR\n" +
		"edge-1  dc=a,role=canary  yes   7         in_sync  -\n" +
		"edge-2  -                 no    5         failed   revision 6: port 8443 not served\n"
	if err != nil || out != want {
		t.Fatalf("nodes:\n%s\nwant:\n%s%v", out, want, err)
	}
	out, _, err = runCLI(url, "nodes", "--json")
	var nodes []map[string]any
	if err != nil || json.Unmarshal([]byte(out), &nodes) != nil || len(nodes) != 2 {
		t.Fatalf("nodes --json: %q %v", out, err)
	}
	out, _, err = runCLI(url, "fleet")
	if err != nil || out != "2 node(s) as edge-1 sees them: state at revision 7, applied here 7\nnodes by state: failed=1,in_sync=1\netcd: http://198.18.0.1:2379\n" {
		t.Fatalf("fleet: %q %v", out, err)
	}
	out, _, err = runCLI(url, "audit", "--since", "6", "--limit", "10")
	if err != nil || out != "7 2026-01-02T03:04:05Z token:0123456789ab move 192.0.2.128/25 * spectrum -> 192.0.2.128/25 tcp/443 cdn via edge-1\n" {
		t.Fatalf("audit: %q %v", out, err)
	}
	out, _, err = runCLI(url, "audit", "--json")
	if err != nil || !strings.Contains(out, `"action": "move"`) {
		t.Fatalf("audit --json: %q %v", out, err)
	}
}

// TestCLIAuditQuery: --since and --limit are the query.
func TestCLIAuditQuery(t *testing.T) {
	f, url := newFake(t, prov("active", 1, 1, nil))
	if _, _, err := runCLI(url, "audit", "--since", "6", "--limit", "10"); err != nil || f.lastCall() != "GET /v1/audit?limit=10&since=6" {
		t.Fatalf("audit called %s: %v", f.lastCall(), err)
	}
}

// TestCLIErrors: unknown flags, a bad --canary or --wait are usage errors
// (exit 2) and call nothing.
func TestCLIErrors(t *testing.T) {
	f, url := newFake(t, prov("active", 1, 1, nil))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"bindings", "add", "--bogus", "192.0.2.0/25", "cdn"}, "flag provided but not defined: -bogus"},
		{[]string{"bindings", "add", "--canary", "role", "192.0.2.0/25", "cdn"}, `"role" is not KEY=VALUE`},
		{[]string{"bindings", "move", "--canary", "=x", bid, "cdn"}, `"=x" is not KEY=VALUE`},
		{[]string{"bindings", "move", "--canary", "a=1", "--canary", "a=2", bid, "cdn"}, "label a is already 1"},
		{[]string{"bindings", "delete", "--canary", "a=1", bid}, "flag provided but not defined: -canary"},
		{[]string{"bindings", "move", "--wait", "soon", bid, "cdn"}, `--wait: "soon" is not a duration`},
		{[]string{"bindings", "move", "--wait", "31s", bid, "cdn"}, "--wait: 31s is out of range"},
		{[]string{"bindings", "add", "--wait", "-1s", "192.0.2.0/25", "cdn"}, "--wait: -1s is out of range"},
		{[]string{"bindings", "promote"}, "usage: edgeproxy bindings promote"},
		{[]string{"bindings", "batch"}, "usage: edgeproxy bindings batch"},
		{[]string{"nodes", "extra"}, "usage: edgeproxy nodes"},
		{[]string{"audit", "--since", "x"}, "invalid value"},
		{[]string{"audit", "--limit", "-1"}, "--limit: -1"},
	} {
		_, _, err := runCLI(url, c.args...)
		if !isUsage(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want a usage error with %q", c.args, err, c.want)
		}
	}
	if len(f.calls) != 0 {
		t.Fatalf("usage errors called the API: %v", f.calls)
	}
	// An API error is not a usage error.
	if _, _, err := runCLI(url, "bindings", "promote", "cccccccccccccccccccccccccccccccc"); err == nil || isUsage(err) || !strings.Contains(err.Error(), "no binding has id") {
		t.Fatalf("promote of an unknown id: %v", err)
	}
}

// TestCLIRequestID: every call of a command carries one X-Request-Id, and
// a change answered 503 names it, so that the audit log can tell whether
// the change was made.
func TestCLIRequestID(t *testing.T) {
	f, url := newFake(t, prov("active", 1, 1, nil))
	f.down = true
	_, _, err := runCLI(url, "bindings", "move", bid, "cdn")
	if err == nil || len(f.ids) < 2 || f.ids[0] == "" || !strings.HasPrefix(f.ids[0], "cli-") {
		t.Fatalf("move: %v, ids %v", err, f.ids)
	}
	for _, id := range f.ids {
		if id != f.ids[0] {
			t.Fatalf("the calls of one command carry different ids: %v", f.ids)
		}
	}
	if !strings.Contains(err.Error(), "may or may not") || !strings.Contains(err.Error(), "request id "+f.ids[0]) {
		t.Fatalf("the 503's error: %v", err)
	}
}
