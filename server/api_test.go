package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// apiClient calls a running server's admin API from inside its namespace.
type apiClient struct {
	t  *testing.T
	ns *netns.NS // the test's namespace, where the server runs
	*admin.Client
}

func (c apiClient) do(method, path, body string) (int, json.RawMessage) {
	c.t.Helper()
	req, err := c.NewRequest(method, path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	res, err := c.Send(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	if res.Status != 200 {
		return res.Status, json.RawMessage(fmt.Sprint(res.Errors))
	}
	return res.Status, res.Result
}

// must calls the API, wants 200, and returns the result's id.
func (c apiClient) must(method, path, body string) string {
	c.t.Helper()
	status, res := c.do(method, path, body)
	if status != 200 {
		c.t.Fatalf("%s %s %s: %d %s", method, path, body, status, res)
	}
	var v struct {
		ID string `json:"id"`
	}
	json.Unmarshal(res, &v)
	return v.ID
}

// startWithAPI starts a server in a fresh namespace with echo sockets, a
// spectrum app on 192.0.2.0/24 tcp any port, a store in a temporary
// directory, and host services on tcp/22 and tcp/443.
func startWithAPI(t *testing.T, storePath string) (*Server, apiClient) {
	t.Helper()
	ns := netns.New(t)
	serveHost(t, "tcp", 22)
	serveHost(t, "tcp", 443)
	s := startAgain(t, ns, storePath)
	return s, apiClient{t: t, ns: ns, Client: &admin.Client{Base: "http://" + s.AdminAddr().String(), HTTP: ns.HTTPClient()}}
}

func startAgain(t *testing.T, ns *netns.NS, storePath string) *Server {
	t.Helper()
	cfg := writeConfig(t, fmt.Sprintf(`admin: {listen: "127.0.0.1:0"}
dispatch: {pin_dir: ""}
store: {path: %q}
spectrum:
  apps:
    - {name: any-tcp, protocol: tcp, edge: 192.0.2.0/24, ports: "*", origins: ["127.0.0.1:9"]}
`, storePath))
	s, err := Start(Options{Config: cfg, Sockets: echoSockets(t), Dial: ns.Dial, Socket: ns.Socket})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func askTCP(t *testing.T, dst string) string {
	t.Helper()
	got, err := echo.Ask("tcp", netip.MustParseAddrPort(dst), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got == "host" {
		return "kernel"
	}
	return got
}

// TestAPIMovesTraffic onboards a prefix and adds, moves and deletes bindings
// through the admin API of the running wiring, checking real traffic after
// every step, and that a connection established before a move keeps
// working.
func TestAPIMovesTraffic(t *testing.T) {
	_, api := startWithAPI(t, filepath.Join(t.TempDir(), "bindings.json"))
	expect := func(step, at443, at22 string) {
		t.Helper()
		if got := askTCP(t, "192.0.2.10:443"); got != at443 {
			t.Fatalf("%s: 192.0.2.10:443 -> %s, want %s", step, got, at443)
		}
		if got := askTCP(t, "192.0.2.10:22"); got != at22 {
			t.Fatalf("%s: 192.0.2.10:22 -> %s, want %s", step, got, at22)
		}
	}
	expect("before onboarding", "kernel", "kernel")

	pid := api.must("POST", "/v1/prefixes", `{"cidr":"192.0.2.0/24","service_id":"cdn"}`)
	expect("prefix onboarded to cdn", "cdn", "refuse")

	bid := api.must("POST", "/v1/prefixes/"+pid+"/bindings", `{"cidr":"192.0.2.0/25","service_id":"spectrum"}`)
	expect("/25 bound to spectrum", "spectrum", "spectrum")

	// A connection to spectrum, established before the move.
	c, err := net.Dial("tcp", "192.0.2.10:22")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "spectrum ") {
		t.Fatalf("greeting %q", line)
	}

	api.must("PATCH", "/v1/prefixes/"+pid+"/bindings/"+bid, `{"service_id":"cdn"}`)
	expect("/25 moved to cdn", "cdn", "refuse")
	fmt.Fprintf(c, "still here\n")
	if line, err := r.ReadString('\n'); err != nil || line != "still here\n" {
		t.Fatalf("the connection established before the move: %q, %v", line, err)
	}

	api.must("POST", "/v1/prefixes/"+pid+"/bindings", `{"cidr":"192.0.2.10/32","service_id":"spectrum","protocol":"tcp","port":22}`)
	expect("tcp/22 of 192.0.2.10 bound to spectrum", "cdn", "spectrum")

	api.must("DELETE", "/v1/prefixes/"+pid+"/bindings/"+bid, "")
	expect("/25 deleted", "cdn", "spectrum")
	if got := askTCP(t, "192.0.2.11:22"); got != "refuse" {
		t.Fatalf("192.0.2.11:22 -> %s, want refuse (cdn by the prefix)", got)
	}

	if status, _ := api.do("DELETE", "/v1/prefixes/"+pid, ""); status != 409 {
		t.Fatalf("delete with a binding inside: %d, want 409", status)
	}
	api.must("DELETE", "/v1/prefixes/"+pid+"?cascade=true", "")
	expect("prefix deleted", "kernel", "kernel")
}

// TestRestartRestoresAPIState: what the API made survives a restart, from
// the store.
func TestRestartRestoresAPIState(t *testing.T) {
	store := filepath.Join(t.TempDir(), "bindings.json")
	s, api := startWithAPI(t, store)
	pid := api.must("POST", "/v1/prefixes", `{"cidr":"192.0.2.0/24","service_id":"spectrum"}`)
	api.must("POST", "/v1/prefixes/"+pid+"/bindings", `{"cidr":"192.0.2.0/25","service_id":"cdn"}`)
	api.must("POST", "/v1/prefixes/"+pid+"/bindings", `{"cidr":"192.0.2.200/32","service_id":"cdn","protocol":"tcp","port":443}`)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := startAgain(t, api.ns, store)
	api.Base = "http://" + s2.AdminAddr().String()
	_, res := api.do("GET", "/v1/prefixes/"+pid+"/bindings", "")
	var bs []struct {
		CIDR string `json:"cidr"`
	}
	json.Unmarshal(res, &bs)
	if len(bs) != 3 {
		t.Fatalf("after restart: bindings %s", res)
	}
	for _, tc := range []struct{ dst, want string }{{"192.0.2.10:443", "cdn"}, {"192.0.2.200:443", "cdn"}, {"192.0.2.201:22", "spectrum"}} {
		if got := askTCP(t, tc.dst); got != tc.want {
			t.Errorf("after restart: %s -> %s, want %s", tc.dst, got, tc.want)
		}
	}
}

// TestStoreProblemsStopTheStart: a corrupt store, or one that conflicts with
// the configuration, stops the start with an error naming the items.
func TestStoreProblemsStopTheStart(t *testing.T) {
	ns := netns.New(t)
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.json")
	os.WriteFile(corrupt, []byte(`{"version":1,"prefixes":[{"cidr":"192.0.2.0/24"`), 0o600)
	conflict := filepath.Join(dir, "conflict.json")
	os.WriteFile(conflict, []byte(`{"version":1,"prefixes":[{"cidr":"192.0.2.0/23","service_id":"cdn"}],"bindings":[]}`), 0o600)
	for _, tc := range []struct{ store, want string }{
		{corrupt, "is corrupt"},
		{conflict, "prefix 192.0.2.0/24 (cdn, from config): cidr: overlaps prefix 192.0.2.0/23 (cdn, from api)"},
	} {
		cfg := writeConfig(t, fmt.Sprintf("admin: {listen: \"127.0.0.1:0\"}\ndispatch: {pin_dir: \"\"}\nstore: {path: %q}\nprefixes: [{cidr: 192.0.2.0/24, service: cdn}]\n", tc.store))
		s, err := Start(Options{Config: cfg, Dial: ns.Dial, Socket: ns.Socket})
		if err == nil {
			s.Close()
			t.Fatalf("store %s: started", tc.store)
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.store) {
			t.Errorf("store %s: %v, want an error naming the store and %q", tc.store, err, tc.want)
		}
	}
}

// TestReadiness: /readyz says ready once the sockets are registered and the
// bindings applied; /metrics carries the dispatcher's counters.
func TestReadinessAndMetrics(t *testing.T) {
	_, api := startWithAPI(t, "")
	resp, err := api.HTTP.Get(api.Base + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", resp, err)
	}
	resp.Body.Close()
	api.must("POST", "/v1/prefixes", `{"cidr":"192.0.2.0/24","service_id":"cdn"}`)
	askTCP(t, "192.0.2.1:443")
	resp, err = api.HTTP.Get(api.Base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body := new(strings.Builder)
	bufio.NewReader(resp.Body).WriteTo(body)
	resp.Body.Close()
	for _, want := range []string{
		`edgeproxy_dispatch_lookups_total{label="cdn/tcp"} 1`,
		`edgeproxy_dispatch_socket_registered{label="cdn/tcp"} 1`,
		`edgeproxy_bindings{service="cdn",source="api"} 1`,
		`edgeproxy_api_requests_total{code="200",route="POST /v1/prefixes"} 1`,
		`edgeproxy_bindings_apply_seconds_count`,
	} {
		if !strings.Contains(body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestPatchHasNoWindow: moving a binding between services with PATCH, while
// lookups run on another thread, never lets a lookup fall to the parent's
// service (here magic-transit: the kernel).
func TestPatchHasNoWindow(t *testing.T) {
	s, api := startWithAPI(t, "")
	pid := api.must("POST", "/v1/prefixes", `{"cidr":"192.0.2.0/24","service_id":"magic-transit"}`)
	bid := api.must("POST", "/v1/prefixes/"+pid+"/bindings", `{"cidr":"192.0.2.0/25","service_id":"cdn"}`)
	dst := netip.MustParseAddrPort("192.0.2.10:443")
	stop := make(chan struct{})
	result := make(chan [2]int)
	go func() {
		probes, bad := 0, 0
		for {
			select {
			case <-stop:
				result <- [2]int{probes, bad}
				return
			default:
			}
			v, err := s.Dispatcher().Probe(dispatch.TCP, dst)
			probes++
			if err != nil || (v.Label != "cdn/tcp" && v.Label != "spectrum/tcp") {
				bad++
			}
		}
	}()
	for i := range 200 {
		api.must("PATCH", "/v1/prefixes/"+pid+"/bindings/"+bid, `{"service_id":"`+[]string{"spectrum", "cdn"}[i%2]+`"}`)
	}
	close(stop)
	r := <-result
	t.Logf("%d probes during 200 moves", r[0])
	if r[1] > 0 {
		t.Fatalf("%d of %d probes fell to the parent's service", r[1], r[0])
	}
}
