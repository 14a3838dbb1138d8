package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudflare/cloudflare-go/v6"
	"github.com/cloudflare/cloudflare-go/v6/addressing"
	"github.com/cloudflare/cloudflare-go/v6/option"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// TestCloudflareSDK: Cloudflare's own Go client, pointed at the binary by
// its base URL, lists the services, onboards a prefix, binds it as a whole
// and a part of it, lists, gets and deletes the bindings and reads their
// provisioning; and traffic moves with each answer: a TCP connection to
// the prefix reaches the kernel's socket, then spectrum's origin, the
// cdn's (or its refusal) on the part, and the kernel's again.
func TestCloudflareSDK(t *testing.T) {
	ns := netns.New(t)
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("cf-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	serveHost(t, 7)
	echo.Start(t, "origin", "127.0.0.1:7007")
	testOrigin(t, "cdn-origin", "127.0.0.1:18090")
	in := startInstance(t, ns, fmt.Sprintf(`admin: {listen: 127.0.0.1:9180, token_file: %q}
store: {path: %q}
cdn:
  http_ports: [80]
  https_ports: []
  http3: false
  access_log: "off"
  sites: [{hosts: [a.example], origins: ["http://127.0.0.1:18090"]}]
spectrum:
  apps: [{name: echo, protocol: tcp, edge: 192.0.2.0/24, ports: "7", origins: ["127.0.0.1:7007"]}]
`, token, filepath.Join(dir, "bindings.db")))
	in.logOnFailure()
	hc := ns.HTTPClient()
	newClient := func(opts ...option.RequestOption) *cloudflare.Client {
		return cloudflare.NewClient(append([]option.RequestOption{
			option.WithBaseURL(in.admin + "/client/v4/"),
			option.WithHTTPClient(hc),
			option.WithMaxRetries(0),
			option.WithRequestTimeout(30 * time.Second),
		}, opts...)...)
	}
	cf := newClient(option.WithAPIToken("cf-token"))
	ctx := context.Background()
	acct := cloudflare.F("023e105f4ecef8ad9ca31a8372d0c353")
	tcp := func(dst string) string {
		t.Helper()
		return askName(t, "tcp", dst)
	}
	web := func(dst string) string {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+dst+"/", nil)
		req.Host = "a.example"
		resp, err := hc.Do(req)
		if err != nil {
			return "no answer"
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return decodeSeen(t, string(b)).Origin
	}

	svcs, err := cf.Addressing.Services.List(ctx, addressing.ServiceListParams{AccountID: acct})
	if err != nil || len(svcs.Result) != 3 || svcs.Result[1].ID != "spectrum" {
		t.Fatalf("services: %+v %v", svcs, err)
	}
	_, err = newClient().Addressing.Prefixes.New(ctx, addressing.PrefixNewParams{AccountID: acct, CIDR: cloudflare.F("192.0.2.0/24")})
	if ce := (*cloudflare.Error)(nil); !errors.As(err, &ce) || ce.StatusCode != 401 {
		t.Fatalf("onboarding without the token: %v, want 401", err)
	}
	p, err := cf.Addressing.Prefixes.New(ctx, addressing.PrefixNewParams{AccountID: acct, CIDR: cloudflare.F("192.0.2.0/24"), ASN: cloudflare.F(int64(64500))})
	if err != nil || p.CIDR != "192.0.2.0/24" || p.AccountID != acct.Value {
		t.Fatalf("onboard: %+v %v", p, err)
	}
	if got := tcp("192.0.2.1:7"); got != "host" {
		t.Fatalf("192.0.2.1:7 of a prefix onboarded and not bound: %q, want the kernel's socket", got)
	}

	sb := cf.Addressing.Prefixes.ServiceBindings
	whole, err := sb.New(ctx, p.ID, addressing.PrefixServiceBindingNewParams{AccountID: acct, CIDR: cloudflare.F("192.0.2.0/24"), ServiceID: cloudflare.F("spectrum")},
		option.WithHeader("X-Request-Id", "cf-bind-whole"))
	if err != nil || whole.ServiceID != "spectrum" || whole.Provisioning.State != addressing.ServiceBindingProvisioningStateActive {
		t.Fatalf("bind the prefix to spectrum: %+v %v", whole, err)
	}
	// Active: the data plane holds it as the answer comes.
	if got := tcp("192.0.2.1:7"); got != "origin" {
		t.Fatalf("192.0.2.1:7 once the prefix is spectrum's: %q, want spectrum's origin", got)
	}
	part, err := sb.New(ctx, p.ID, addressing.PrefixServiceBindingNewParams{AccountID: acct, CIDR: cloudflare.F("192.0.2.128/25"), ServiceID: cloudflare.F("cdn")})
	if err != nil || part.Provisioning.State != addressing.ServiceBindingProvisioningStateActive {
		t.Fatalf("bind 192.0.2.128/25 to the cdn: %+v %v", part, err)
	}
	if got := web("192.0.2.200:80"); got != "cdn-origin" {
		t.Errorf("192.0.2.200:80 once the cdn's: %q, want the cdn's origin", got)
	}
	if got := tcp("192.0.2.200:7"); got != echo.Refused {
		t.Errorf("192.0.2.200:7 once the cdn's, which does not serve it: %q, want refused", got)
	}
	if got := tcp("192.0.2.1:7"); got != "origin" {
		t.Errorf("192.0.2.1:7, outside the /25: %q, want spectrum's origin", got)
	}

	list, err := sb.List(ctx, p.ID, addressing.PrefixServiceBindingListParams{AccountID: acct})
	if err != nil || len(list.Result) != 2 || list.Result[0].ID != whole.ID || list.Result[1].CIDR != "192.0.2.128/25" {
		t.Fatalf("list: %+v %v", list, err)
	}
	got, err := sb.Get(ctx, p.ID, part.ID, addressing.PrefixServiceBindingGetParams{AccountID: acct})
	if err != nil || got.ServiceID != "cdn" || got.ServiceName != "CDN" || got.Provisioning.State != addressing.ServiceBindingProvisioningStateActive {
		t.Fatalf("get: %+v %v", got, err)
	}

	if _, err := sb.Delete(ctx, p.ID, part.ID, addressing.PrefixServiceBindingDeleteParams{AccountID: acct}); err != nil {
		t.Fatal(err)
	}
	if got := tcp("192.0.2.200:7"); got != "origin" {
		t.Errorf("192.0.2.200:7 once the /25 is deleted: %q, want spectrum's origin", got)
	}
	if _, err := sb.Delete(ctx, p.ID, whole.ID, addressing.PrefixServiceBindingDeleteParams{AccountID: acct}); err != nil {
		t.Fatal(err)
	}
	if got := tcp("192.0.2.1:7"); got != "host" {
		t.Errorf("192.0.2.1:7 once the prefix-wide binding is deleted: %q, want the kernel's socket", got)
	}
	if list, err := sb.List(ctx, p.ID, addressing.PrefixServiceBindingListParams{AccountID: acct}); err != nil || len(list.Result) != 0 {
		t.Errorf("list after the deletes: %+v %v", list, err)
	}
	if _, err := cf.Addressing.Prefixes.Delete(ctx, p.ID, addressing.PrefixDeleteParams{AccountID: acct}); err != nil {
		t.Fatal(err)
	}
	if ps, err := cf.Addressing.Prefixes.List(ctx, addressing.PrefixListParams{AccountID: acct}); err != nil || len(ps.Result) != 0 {
		t.Errorf("prefixes after the delete: %+v %v", ps, err)
	}

	// The same audit as /v1's: who by the token's id, the request's id.
	resp, err := hc.Get(in.admin + "/v1/audit")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var audit struct {
		Result []struct {
			Who       string `json:"who"`
			Action    string `json:"action"`
			RequestID string `json:"request_id"`
		} `json:"result"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &audit); err != nil || len(audit.Result) != 6 {
		t.Fatalf("audit: %v %s, want the six changes", err, raw)
	}
	if e := audit.Result[1]; e.Action != "move" || e.RequestID != "cf-bind-whole" || !strings.HasPrefix(e.Who, "token:") {
		t.Errorf("the prefix-wide binding's audit entry: %+v", e)
	}
}

// TestCloudflareAPIExamples runs the curl examples of docs/api.md's
// "Cloudflare's API" in order, on the configuration the doc gives them,
// each answering success, $PREFIX and $BINDING taken from the results
// before them.
func TestCloudflareAPIExamples(t *testing.T) {
	testutil.NeedTool(t, "curl", "curl")
	var examples []string
	var config docBlock
	for _, b := range examplesOf(t, "../docs/api.md", "TestCloudflareAPIExamples") {
		switch b.info {
		case "yaml":
			config = b
		case "sh":
			examples = b.lines
		}
	}
	if config.lines == nil || examples == nil {
		t.Fatal("docs/api.md marks no configuration and commands as run by TestCloudflareAPIExamples")
	}
	ns := netns.New(t)
	startInstance(t, ns, configExample(t, t.TempDir(), config))
	env := map[string]string{"ACCOUNT": "023e105f4ecef8ad9ca31a8372d0c353"}
	for _, line := range examples {
		out, ok := shell(t, os.Expand(line, func(k string) string { return env[k] }))
		var resp admin.Envelope
		if !ok || json.Unmarshal([]byte(out), &resp) != nil || !resp.Success {
			t.Fatalf("docs/api.md: %q: %s", line, out)
		}
		var item struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(resp.Result, &item) != nil {
			continue // a list
		}
		switch {
		case env["PREFIX"] == "":
			env["PREFIX"] = item.ID
		case env["BINDING"] == "":
			env["BINDING"] = item.ID
		}
	}
}
