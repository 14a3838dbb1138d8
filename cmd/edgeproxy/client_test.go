package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// fakeAPI answers the admin API's routes with canned results and records
// what it was asked.
type fakeAPI struct {
	t       *testing.T
	mu      sync.Mutex
	calls   []string              // "METHOD path?query"
	bodies  []map[string]any      // the bodies of the calls that had one
	results map[string]any        // by "METHOD path" (without the query)
	ids     []string              // the X-Request-Id of each call
	down    bool                  // answer every change 503, its outcome unknown
	fail    map[string]apiFailure // by "METHOD path": answered with this error
}

// apiFailure is an error envelope the fake answers a call with.
type apiFailure struct {
	status, code int
	message      string
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
	if e, ok := f.fail[call]; ok {
		w.WriteHeader(e.status)
		msg, _ := json.Marshal(e.message)
		fmt.Fprintf(w, `{"success":false,"errors":[{"code":%d,"message":%s}],"messages":[],"result":null}`, e.code, msg)
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
	full := append([]string{"--admin", url}, args...)
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
	if _, _, err := runCLI(url, "bindings", "promote", "cccccccccccccccccccccccccccccccc"); err == nil || isUsage(err) || !strings.Contains(err.Error(), "no binding with id prefix cccc") {
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

// TestCLIFlagsAnywhere: flags go before the command, between its words or
// after them, global ones and the command's own alike.
func TestCLIFlagsAnywhere(t *testing.T) {
	f, url := newFake(t, prov("active", 1, 1, nil))
	for _, args := range [][]string{
		{"--json", "bindings", "list", "--admin", url},
		{"bindings", "--json", "list", "--admin", url},
		{"bindings", "list", "--json", "--admin=" + url},
		{"--admin", url, "bindings", "list", "--json"},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), args, &out, &errb)
		var bs []map[string]any
		if err != nil || json.Unmarshal(out.Bytes(), &bs) != nil || len(bs) != 1 || bs[0]["id"] != bid {
			t.Errorf("%v: %v %q %q", args, err, out.String(), errb.String())
		}
	}
	// The command's own flags after its arguments, and between them.
	if _, _, err := runCLI(url, "bindings", "add", "192.0.2.128/25", "spectrum", "--port", "tcp/443", "--wait", "5s"); err != nil {
		t.Fatal(err)
	}
	if b := f.lastBody(); b["protocol"] != "tcp" || b["port"] != float64(443) || f.lastCall() != "POST /v1/prefixes/"+pid+"/bindings?wait=5s" {
		t.Fatalf("add with flags after: %v %s", b, f.lastCall())
	}
	if _, _, err := runCLI(url, "bindings", "move", bid, "--drain", "30s", "cdn"); err != nil || f.lastBody()["drain"] != "30s" {
		t.Fatalf("move with a flag between: %v %v", f.lastBody(), err)
	}
	// After --, what looks like a flag is an argument.
	if _, _, err := runCLI(url, "bindings", "add", "--", "192.0.2.128/25", "--json"); !isUsage(err) || !strings.Contains(err.Error(), `"--json" is not`) {
		t.Fatalf("add -- ... --json: %v", err)
	}
}

// TestCLIHelpAndVersion: -h, --help and --version exit 0 printing to
// stdout at every level; an unknown flag or command is a usage error with
// the usage on stderr.
func TestCLIHelpAndVersion(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-h"}, "client commands"},
		{[]string{"--help"}, "client commands"},
		{[]string{"help"}, "client commands"},
		{[]string{"bindings", "-h"}, "edgeproxy bindings move"},
		{[]string{"prefixes", "--help"}, "edgeproxy prefixes delete [--cascade] [--dry-run] ID"},
		{[]string{"--help", "bindings"}, "edgeproxy bindings batch"},
		{[]string{"prefixes", "help"}, "edgeproxy prefixes list"},
		{[]string{"bindings", "list", "--help"}, "usage: edgeproxy bindings list\n"},
		{[]string{"bindings", "add", "-h"}, "--port PROTO/PORT"},
		{[]string{"prefixes", "delete", "-h"}, "--cascade"},
		{[]string{"nodes", "-h"}, "--admin URL"},
		{[]string{"lookup", "--help"}, "usage: edgeproxy lookup ADDR:PORT/PROTO"},
		{[]string{"dial", "--help"}, "--wait duration"},
		{[]string{"get", "-h"}, "-k\n"},
		{[]string{"check", "--help"}, "--config"},
		{[]string{"run", "--help"}, "--config"},
		{[]string{"unload", "-h"}, "--pin-dir"},
		{[]string{"--version"}, "edgeproxy " + version + "\n"},
		{[]string{"bindings", "--version"}, "edgeproxy " + version + "\n"},
		{[]string{"prefixes", "list", "--version"}, "edgeproxy " + version + "\n"},
		{[]string{"version"}, "edgeproxy " + version + "\n"},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), c.args, &out, &errb)
		if err != nil || !strings.Contains(out.String(), c.want) || errb.Len() != 0 {
			t.Errorf("%v: %v, stdout %q, stderr %q; want %q on stdout", c.args, err, out.String(), errb.String(), c.want)
		}
	}
	for _, c := range []struct {
		args      []string
		want, use string
	}{
		{[]string{}, "no command", "client commands"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`, "client commands"},
		{[]string{"--bogus"}, "no command, only flags: --bogus", "client commands"},
		{[]string{"bindings"}, "bindings: no command", "edgeproxy bindings list"},
		{[]string{"bindings", "frob"}, `unknown bindings command "frob"`, "edgeproxy bindings list"},
		{[]string{"prefixes", "frob"}, `unknown prefixes command "frob"`, "edgeproxy prefixes add"},
		{[]string{"bindings", "list", "--bogus"}, "flag provided but not defined: -bogus", "usage: edgeproxy bindings list"},
		{[]string{"prefixes", "add", "--cascade", "192.0.2.0/24", "cdn"}, "flag provided but not defined: -cascade", "usage: edgeproxy prefixes add"},
		{[]string{"get", "--bogus", "http://x/"}, "flag provided but not defined", "usage: edgeproxy get"},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), c.args, &out, &errb)
		if !isUsage(err) || !strings.Contains(err.Error(), c.want) || !strings.Contains(errb.String(), c.use) || out.Len() != 0 {
			t.Errorf("%v: %v, stdout %q, stderr %q; want a usage error %q and %q on stderr", c.args, err, out.String(), errb.String(), c.want, c.use)
		}
	}
}

// The ids of idFake's bindings that the API derives from them (its others
// are made up).
var (
	defaultID = bindings.BindingID(netip.MustParsePrefix("192.0.2.0/24"), 0, 0)
	derivedID = bindings.BindingID(netip.MustParsePrefix("192.0.2.128/26"), 0, 0)
)

// idFake is a fake API with two prefixes and bindings whose ids share
// prefixes: 1234abcd… and 1234ef…; and in the first, its default binding
// and 192.0.2.128/26, by the ids the API gives them, all of source api.
func idFake(t *testing.T) (*fakeAPI, string) {
	f, url := newFake(t, prov("active", 1, 1, nil))
	const p2 = "cccc0000000000000000000000000000"
	mk := func(id, prefix, cidr string, def bool) map[string]any {
		return map[string]any{"id": id, "prefix_id": prefix, "cidr": cidr, "service_id": "cdn", "source": "api", "default": def, "provisioning": prov("active", 1, 1, nil)}
	}
	f.results["GET /v1/prefixes"] = []map[string]any{
		{"id": pid, "cidr": "192.0.2.0/24", "service_id": "cdn", "source": "api"},
		{"id": p2, "cidr": "198.51.100.0/24", "service_id": "cdn", "source": "api"},
	}
	f.results["GET /v1/prefixes/"+pid+"/bindings"] = []any{
		mk("1234abcd000000000000000000000000", pid, "192.0.2.0/25", false),
		mk(defaultID, pid, "192.0.2.0/24", true),
		mk(derivedID, pid, "192.0.2.128/26", false),
	}
	f.results["GET /v1/prefixes/"+p2+"/bindings"] = []any{mk("1234ef00000000000000000000000000", p2, "198.51.100.0/25", false)}
	f.results["PATCH /v1/prefixes/"+p2+"/bindings/1234ef00000000000000000000000000"] = mk("1234ef00000000000000000000000000", p2, "198.51.100.0/25", false)
	f.results["DELETE /v1/prefixes/"+p2] = map[string]any{"id": p2, "cidr": "198.51.100.0/24", "service_id": "cdn", "source": "api"}
	return f, url
}

// TestCLIIDPrefix: an id is taken by any unique prefix of it (4
// characters or more), across prefixes; an ambiguous one lists the
// candidates, an unknown one says so, and a malformed one is a usage
// error that calls nothing.
func TestCLIIDPrefix(t *testing.T) {
	f, url := idFake(t)
	out, _, err := runCLI(url, "bindings", "move", "1234EF", "spectrum")
	if err != nil || f.lastCall() != "PATCH /v1/prefixes/cccc0000000000000000000000000000/bindings/1234ef00000000000000000000000000?" {
		t.Fatalf("move by a prefix of the id: %q %s %v", out, f.lastCall(), err)
	}
	_, _, err = runCLI(url, "bindings", "delete", "1234")
	if err == nil || isUsage(err) || !strings.Contains(err.Error(), "id prefix 1234 is ambiguous: 2 bindings have it") ||
		!strings.Contains(err.Error(), "1234abcd000000000000000000000000  192.0.2.0/25 * -> cdn") ||
		!strings.Contains(err.Error(), "1234ef00000000000000000000000000  198.51.100.0/25 * -> cdn") {
		t.Fatalf("an ambiguous prefix: %v", err)
	}
	if _, _, err := runCLI(url, "bindings", "promote", "9999"); err == nil || isUsage(err) || !strings.Contains(err.Error(), "no binding with id prefix 9999") {
		t.Fatalf("an unknown prefix: %v", err)
	}
	if _, _, err := runCLI(url, "prefixes", "delete", "cccc"); err != nil || f.lastCall() != "DELETE /v1/prefixes/cccc0000000000000000000000000000?" {
		t.Fatalf("prefixes delete by a prefix of the id: %s %v", f.lastCall(), err)
	}
	if _, _, err := runCLI(url, "prefixes", "delete", "abcd"); err == nil || !strings.Contains(err.Error(), "no prefix with id prefix abcd (see edgeproxy prefixes list)") {
		t.Fatalf("prefixes delete of an unknown prefix: %v", err)
	}
	n := len(f.calls)
	for _, bad := range []string{"123", "12345g", "", strings.Repeat("a", 33), "../x"} {
		if _, _, err := runCLI(url, "bindings", "move", bad, "cdn"); !isUsage(err) || !strings.Contains(err.Error(), "ID: ") {
			t.Errorf("move %q: %v, want a usage error naming ID", bad, err)
		}
	}
	if len(f.calls) != n {
		t.Fatalf("malformed ids called the API: %v", f.calls[n:])
	}
}

// TestCLIPrefixes: list prints each prefix with its count of bindings (the
// default one aside), add sends the CIDR (a bare address: its /32) and
// service, delete sends ?cascade=true with --cascade.
func TestCLIPrefixes(t *testing.T) {
	f, url := idFake(t)
	out, _, err := runCLI(url, "prefixes", "list")
	want := "ID                                CIDR             SERVICE  SOURCE  BINDINGS\n" +
		pid + "  192.0.2.0/24     cdn      api     2\n" +
		"cccc0000000000000000000000000000  198.51.100.0/24  cdn      api     1\n"
	if err != nil || out != want {
		t.Fatalf("prefixes list:\n%s\nwant:\n%s%v", out, want, err)
	}
	out, _, err = runCLI(url, "prefixes", "list", "--json")
	var rows []map[string]any
	if err != nil || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 2 || rows[0]["bindings"] != float64(2) || rows[0]["cidr"] != "192.0.2.0/24" {
		t.Fatalf("prefixes list --json: %q %v", out, err)
	}
	f.results["POST /v1/prefixes"] = map[string]any{"id": "eeee0000000000000000000000000000", "cidr": "203.0.113.7/32", "service_id": "spectrum", "source": "api"}
	out, _, err = runCLI(url, "prefixes", "add", "203.0.113.7", "spectrum")
	if err != nil || out != "added prefix 203.0.113.7/32 -> spectrum (id eeee0000000000000000000000000000)\n" || !jsonEqual(f.lastBody(), map[string]any{"cidr": "203.0.113.7/32", "service_id": "spectrum"}) {
		t.Fatalf("prefixes add: %q %v %v", out, f.lastBody(), err)
	}
	out, _, err = runCLI(url, "prefixes", "delete", "--cascade", "cccc0000000000000000000000000000")
	if err != nil || f.lastCall() != "DELETE /v1/prefixes/cccc0000000000000000000000000000?cascade=true" || out != "deleted prefix 198.51.100.0/24 -> cdn (id cccc0000000000000000000000000000) and its 1 binding(s)\n" {
		t.Fatalf("prefixes delete --cascade: %q %s %v", out, f.lastCall(), err)
	}
	n := len(f.calls)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"prefixes", "add", "203.0.113.1/24", "cdn"}, "CIDR: "},
		{[]string{"prefixes", "add", "203.0.113.0/24", "magic"}, "SERVICE: "},
		{[]string{"prefixes", "add", "203.0.113.0/24"}, "usage: edgeproxy prefixes add [--dry-run] CIDR SERVICE"},
		{[]string{"prefixes", "delete"}, "usage: edgeproxy prefixes delete"},
		{[]string{"prefixes", "list", "extra"}, "usage: edgeproxy prefixes list"},
	} {
		if _, _, err := runCLI(url, c.args...); !isUsage(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want a usage error with %q", c.args, err, c.want)
		}
	}
	if len(f.calls) != n {
		t.Fatalf("usage errors called the API: %v", f.calls[n:])
	}
}

// TestCLIBareAddress: wherever a CIDR is taken, a bare address is its /32
// or /128.
func TestCLIBareAddress(t *testing.T) {
	f, url := newFake(t, prov("active", 1, 1, nil))
	if _, _, err := runCLI(url, "bindings", "add", "192.0.2.200", "spectrum"); err != nil || f.lastBody()["cidr"] != "192.0.2.200/32" {
		t.Fatalf("bindings add of an address: %v %v", f.lastBody(), err)
	}
	for arg, want := range map[string]string{"2001:db8::1": "2001:db8::1/128", " 192.0.2.9 ": "192.0.2.9/32", "192.0.2.0/24": "192.0.2.0/24"} {
		if got, err := parseCIDR(arg); err != nil || got.String() != want {
			t.Errorf("parseCIDR(%q) = %v, %v; want %s", arg, got, err, want)
		}
	}
	for _, bad := range []string{"fe80::1%eth0", "::ffff:192.0.2.1", "192.0.2.300", "192.0.2.1/24", ""} {
		if _, err := parseCIDR(bad); !isUsage(err) || !strings.Contains(err.Error(), "CIDR: ") {
			t.Errorf("parseCIDR(%q): %v, want a usage error naming CIDR", bad, err)
		}
	}
	file := filepath.Join(t.TempDir(), "batch.txt")
	os.WriteFile(file, []byte("192.0.2.7 cdn tcp/443\n"), 0o600)
	if _, _, err := runCLI(url, "bindings", "batch", file); err != nil || !jsonEqual(f.lastBody(), map[string]any{"bindings": []any{map[string]any{"cidr": "192.0.2.7/32", "port": 443, "protocol": "tcp", "service_id": "cdn"}}}) {
		t.Fatalf("batch of an address: %v %v", f.lastBody(), err)
	}
}

// TestCLIHints: where the API's error asks for another change, keyed on
// its code and field, the CLI names the command that makes it.
func TestCLIHints(t *testing.T) {
	f, url := idFake(t)
	// Adding the prefix's own CIDR: the default binding is there; move it.
	f.fail = map[string]apiFailure{"POST /v1/prefixes/" + pid + "/bindings": {409, 1003, "cidr: 192.0.2.0/24 is the prefix's default binding (id " + defaultID + "): PATCH it to change the prefix's service"}}
	_, _, err := runCLI(url, "bindings", "add", "192.0.2.0/24", "spectrum")
	if err == nil || !strings.Contains(err.Error(), "PATCH it") || !strings.HasSuffix(err.Error(), "\n  to steer it to spectrum: edgeproxy bindings move "+defaultID+" spectrum") {
		t.Fatalf("add of the default binding: %v", err)
	}
	// A binding of the same addresses and scope: move it.
	_, _, err = runCLI(url, "bindings", "add", "192.0.2.128/26", "spectrum")
	if err == nil || !strings.HasSuffix(err.Error(), "edgeproxy bindings move "+derivedID+" spectrum") {
		t.Fatalf("add of an existing binding: %v", err)
	}
	// Another code, or another field: no hint.
	f.fail["POST /v1/prefixes/"+pid+"/bindings"] = apiFailure{400, 1001, "cidr: 192.0.2.0/25 is refused"}
	if _, _, err = runCLI(url, "bindings", "add", "192.0.2.0/25", "spectrum"); err == nil || strings.Contains(err.Error(), "bindings move") {
		t.Fatalf("another code: %v", err)
	}
	f.fail["POST /v1/prefixes/"+pid+"/bindings"] = apiFailure{409, 1003, "protocol: tcp/443 conflicts"}
	if _, _, err = runCLI(url, "bindings", "add", "192.0.2.0/25", "spectrum"); err == nil || strings.Contains(err.Error(), "bindings move") {
		t.Fatalf("another field: %v", err)
	}
	// Deleting a prefix's default binding: delete the prefix.
	f.fail["DELETE /v1/prefixes/"+pid+"/bindings/"+defaultID] = apiFailure{409, 1003, "binding_id: the default binding of 192.0.2.0/24 cannot be deleted alone: delete the prefix"}
	_, _, err = runCLI(url, "bindings", "delete", defaultID[:6])
	if err == nil || !strings.Contains(err.Error(), "delete the prefix\n") || !strings.HasSuffix(err.Error(), "edgeproxy prefixes delete "+pid+" --cascade") {
		t.Fatalf("delete of the default binding: %v", err)
	}
	// Deleting a prefix with bindings: --cascade.
	f.fail["DELETE /v1/prefixes/"+pid] = apiFailure{409, 1006, "prefix 192.0.2.0/24 has 1 bindings: delete them first, or delete with ?cascade=true"}
	_, _, err = runCLI(url, "prefixes", "delete", "aaaa")
	if err == nil || !strings.HasSuffix(err.Error(), "to delete them with it: edgeproxy prefixes delete "+pid+" --cascade") {
		t.Fatalf("delete of a prefix with bindings: %v", err)
	}
}

// TestGetHintsK: a certificate no trusted authority signed fails the get
// with a hint of -k, and -k fetches.
func TestGetHintsK(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi\n") }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	defer srv.Close()
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"get", srv.URL}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "unknown authority") || !strings.Contains(err.Error(), "-k fetches without checking it") {
		t.Fatalf("get of a self-signed server: %v", err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"get", srv.URL, "-k"}, &out, &errb); err != nil || !strings.HasSuffix(out.String(), "\nhi\n") {
		t.Fatalf("get -k: %q %v", out.String(), err)
	}
}

// TestDemoBanner: every command the demo prints runs this binary by its
// path, or curl, and the id it moves is the one its add makes.
func TestDemoBanner(t *testing.T) {
	const exe = "/opt/x/edgeproxy"
	text := demoBanner(exe, "127.0.0.1:9180")
	_, try, ok := strings.Cut(text, "each line pastes as it is):\n")
	if !ok {
		t.Fatalf("no commands:\n%s", text)
	}
	n := 0
	for _, line := range strings.Split(try, "\n") {
		if !strings.HasPrefix(line, "  ") {
			break
		}
		n++
		cmd, _, _ := strings.Cut(strings.TrimSpace(line), "  #")
		if !strings.HasPrefix(cmd, exe+" ") && !strings.HasPrefix(cmd, "curl ") {
			t.Errorf("%q runs neither %s nor curl", cmd, exe)
		}
		if strings.Contains(cmd, "--admin") {
			t.Errorf("%q: the demo's admin address is the default", cmd)
		}
	}
	if id := bindings.BindingID(demoMoved, 0, 0)[:8]; n < 10 || !strings.Contains(text, "bindings move "+id+" cdn") {
		t.Fatalf("%d commands, or no move of %s:\n%s", n, id, text)
	}
	if text := demoBanner(exe, "127.0.0.1:9999"); !strings.Contains(text, exe+" --admin http://127.0.0.1:9999 bindings list") {
		t.Fatalf("another admin address is not passed:\n%s", text)
	}
}

// TestPickIDListsAtMostTen: an ambiguous prefix's error lists ten
// candidates and counts the rest.
func TestPickIDListsAtMostTen(t *testing.T) {
	ids := make([]string, 15)
	for i := range ids {
		ids[i] = fmt.Sprintf("abcd%028x", i)
	}
	self := func(s string) string { return s }
	_, err := pickID("binding", "abcd", ids, self, self)
	if err == nil || strings.Count(err.Error(), "\n  abcd") != 10 || !strings.HasSuffix(err.Error(), "\n  and 5 more") {
		t.Fatalf("%v", err)
	}
	if got, err := pickID("binding", ids[3], ids, self, self); err != nil || got != ids[3] {
		t.Fatalf("a whole id: %q %v", got, err)
	}
}

// TestCLIPlan: bindings plan WORD and --dry-run ask for the plan and print
// each row with the traffic of the binding that decides it now.
func TestCLIPlan(t *testing.T) {
	f, url := newFake(t, prov("active", 1, 1, nil))
	plan := map[string]any{"dry_run": true, "revision": 4, "plan": []map[string]any{{
		"ranges": []string{"192.0.2.128/25"}, "ports": []string{"tcp/80", "tcp/443"},
		"before":  map[string]any{"outcome": "spectrum", "service": "spectrum", "binding_id": bid, "app": "web", "summary": `spectrum (app "web")`},
		"after":   map[string]any{"outcome": "refuse", "service": "cdn", "binding_id": bid, "summary": "refuse (cdn does not serve it)"},
		"summary": `192.0.2.128/25 tcp/22: spectrum (app "ssh") → refuse (cdn does not serve it)`,
		"traffic": map[string]any{"total": map[string]any{"steered": 40, "refused": 1, "missed": 0}, "recent": map[string]any{"steered": 12}, "window": "5m0s"},
	}}}
	f.results["PATCH /v1/prefixes/"+pid+"/bindings/"+bid] = plan
	want := "plan at revision 4 (nothing was changed; without --dry-run the change makes these):\n" +
		`  192.0.2.128/25 tcp/22: spectrum (app "ssh") → refuse (cdn does not serve it)` + "\n" +
		"      now by binding bbbbbbbb: 12 steered, 0 refused, 0 missed in the last 5m0s (40 steered, 1 refused, 0 missed since counted)\n"
	for _, args := range [][]string{
		{"bindings", "plan", "move", "bbbb", "cdn"},
		{"bindings", "move", "bbbb", "cdn", "--dry-run"},
		{"bindings", "plan", "--wait", "1s", "move", bid, "cdn"},
	} {
		out, _, err := runCLI(url, args...)
		if err != nil || out != want {
			t.Fatalf("%v: %q %v", args, out, err)
		}
		if c := f.lastCall(); c != "PATCH /v1/prefixes/"+pid+"/bindings/"+bid+"?dry_run=true" {
			t.Fatalf("%v called %s", args, c)
		}
	}
	out, _, err := runCLI(url, "--json", "bindings", "plan", "move", "bbbb", "cdn")
	var back map[string]any
	if err != nil || json.Unmarshal([]byte(out), &back) != nil || back["revision"] != float64(4) {
		t.Fatalf("--json: %q %v", out, err)
	}

	f.results["POST /v1/prefixes"] = map[string]any{"dry_run": true, "revision": 4, "plan": []any{}}
	out, _, err = runCLI(url, "prefixes", "add", "--dry-run", "198.51.100.0/24", "cdn")
	if err != nil || out != "plan at revision 4: no destination changes its outcome (nothing was changed)\n" || f.lastCall() != "POST /v1/prefixes?dry_run=true" {
		t.Fatalf("prefixes add --dry-run: %q %v (%s)", out, err, f.lastCall())
	}
	for _, args := range [][]string{{"bindings", "plan"}, {"bindings", "plan", "list"}, {"bindings", "promote", "--dry-run", bid}} {
		if _, _, err := runCLI(url, args...); !isUsage(err) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

// TestPrintJSONUnescaped: --json prints what the API wrote, "->" and all.
func TestPrintJSONUnescaped(t *testing.T) {
	var out bytes.Buffer
	c := &client{stdout: &out, json: true}
	if err := c.printJSON(map[string]string{"message": "binding 192.0.2.0/24 -> cdn & more"}); err != nil || !strings.Contains(out.String(), "192.0.2.0/24 -> cdn & more") {
		t.Fatalf("%q %v", out.String(), err)
	}
}
