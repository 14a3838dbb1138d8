package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// TestAuditSingleNode: every change through the API is one audit line in
// the log and an entry of GET /v1/audit, kept in the store across a
// restart: who (the token's id, never the token), what, before and after,
// the revision and the request id.
func TestAuditSingleNode(t *testing.T) {
	ns := netns.New(t)
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	body := fmt.Sprintf(`admin: {listen: 127.0.0.1:9180, token_file: %q}
store: {path: %q}
prefixes: [{cidr: 192.0.2.0/24, service: spectrum}]
cdn: {http_ports: [80], https_ports: [], http3: false}
`, token, filepath.Join(dir, "bindings.db"))
	if err := os.WriteFile(token, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in := startInstance(t, ns, body)
	in.logOnFailure()
	hc := ns.HTTPClient()
	call := func(method, path, body, reqID string) (int, string) {
		req, _ := http.NewRequest(method, in.admin+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer s3cret-token")
		if reqID != "" {
			req.Header.Set("X-Request-Id", reqID)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	pid := bindingsPrefixID("192.0.2.0/24")
	if code, raw := call("POST", "/v1/prefixes/"+pid+"/bindings", `{"cidr":"192.0.2.8/29","service_id":"cdn"}`, "req-create-1"); code != 200 {
		t.Fatalf("create: %d %s", code, raw)
	}
	id := bindingID("192.0.2.8/29")
	if code, raw := call("PATCH", "/v1/prefixes/"+pid+"/bindings/"+id, `{"service_id":"spectrum"}`, "req-move-2"); code != 200 {
		t.Fatalf("move: %d %s", code, raw)
	}
	line := in.waitLog(3*time.Second, "audit", func(rec map[string]any) bool {
		c, _ := rec["change"].(map[string]any)
		return c["action"] == "move"
	})
	c := line["change"].(map[string]any)
	before, _ := c["before"].(map[string]any)
	after, _ := c["after"].(map[string]any)
	if c["request_id"] != "req-move-2" || !strings.HasPrefix(fmt.Sprint(c["who"]), "token:") || before["service_id"] != "cdn" || after["service_id"] != "spectrum" || c["revision"] == nil {
		t.Errorf("the move's audit line %v, want who token:…, the request id, before cdn and after spectrum, the revision", c)
	}
	if strings.Contains(in.stderr.String(), "s3cret-token") {
		t.Error("the log holds the token")
	}
	check := func(what string) {
		code, raw := call("GET", "/v1/audit", "", "")
		var env struct {
			Result []struct {
				Revision  int64  `json:"revision"`
				Action    string `json:"action"`
				RequestID string `json:"request_id"`
			} `json:"result"`
		}
		if code != 200 || json.Unmarshal([]byte(raw), &env) != nil || len(env.Result) != 2 ||
			env.Result[0].Action != "create" || env.Result[1].Action != "move" || env.Result[1].RequestID != "req-move-2" || env.Result[1].Revision <= env.Result[0].Revision {
			t.Errorf("%s: GET /v1/audit %d %s, want the create, then the move", what, code, raw)
		}
	}
	check("running")
	in.stop()
	in2 := startInstance(t, ns, body)
	in2.logOnFailure()
	in = in2
	check("after a restart")
}
