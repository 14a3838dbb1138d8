package server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// readOnlyDir mounts a tmpfs on a temporary directory, lets fill write
// into it, and remounts it read-only (root ignores permission bits).
func readOnlyDir(t *testing.T, fill func(dir string)) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	fill(dir)
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	return dir
}

// TestHostileReadOnlyStore: a store on a read-only filesystem does not stop
// the start: the node serves the store's bindings and the configuration's,
// is ready, reloads, and answers API changes with 503 naming the store.
func TestHostileReadOnlyStore(t *testing.T) {
	ns := netns.New(t)
	serveHost(t, "tcp", 22)
	serveHost(t, "tcp", 443)
	dir := readOnlyDir(t, func(dir string) {
		os.WriteFile(filepath.Join(dir, "bindings.json"), []byte(`{"version":1,"prefixes":[
{"cidr":"192.0.2.0/24","service_id":"spectrum"}
],"bindings":[
{"cidr":"192.0.2.0/25","service_id":"cdn"}
]}
`), 0o600)
		// A kill -9 in the middle of a write left this; it cannot be
		// removed now, and must not stop the start.
		os.WriteFile(filepath.Join(dir, ".bindings.json.tmp-1"), []byte("{"), 0o600)
	})
	store := filepath.Join(dir, "bindings.json")
	cfgPath := filepath.Join(t.TempDir(), "edgeproxy.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`admin: {listen: "127.0.0.1:0"}
dispatch: {pin_dir: ""}
store: {path: %q}
prefixes: [{cidr: 198.51.100.0/24, service: cdn}]
spectrum:
  apps:
    - {name: any-tcp, protocol: tcp, edge: 192.0.2.0/24, ports: "*", origins: ["127.0.0.1:9"]}
`, store)), 0o600)
	cfg := writeConfig(t, string(mustRead(t, cfgPath)))
	s, err := Start(Options{Config: cfg, Sockets: echoSockets(t), Dial: ns.Dial, Socket: ns.Socket})
	if err != nil {
		t.Fatalf("start with a read-only store: %v", err)
	}
	defer s.Close()
	for dst, want := range map[string]string{"192.0.2.1:443": "cdn", "192.0.2.200:22": "spectrum", "198.51.100.1:443": "cdn"} {
		if got := askTCP(t, dst); got != want {
			t.Errorf("%s: %s, want %s", dst, got, want)
		}
	}
	hc := ns.HTTPClient()
	base := "http://" + s.AdminAddr().String()
	if resp, err := hc.Get(base + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", resp, err)
	}
	resp, err := hc.Post(base+"/v1/prefixes", "application/json", strings.NewReader(`{"cidr":"203.0.113.0/24","service_id":"cdn"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), store) || !strings.Contains(string(body), "read-only") {
		t.Fatalf("POST with a read-only store: %d %s, want 503 naming the store", resp.StatusCode, body)
	}
	if resp, err := hc.Get(base + "/v1/prefixes"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("reading with a read-only store: %v %v", resp, err)
	}
	if err := s.ReloadFile(cfgPath); err != nil {
		t.Fatalf("reload with a read-only store: %v", err)
	}
	if got := metricValue(t, hc, base, "edgeproxy_store_read_only"); got != "1" {
		t.Errorf("edgeproxy_store_read_only %q, want 1", got)
	}
	if got := metricValue(t, hc, base, `edgeproxy_api_requests_total{code="503",route="POST /v1/prefixes"}`); got != "1" {
		t.Errorf("503s counted: %q, want 1", got)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func metricValue(t *testing.T, hc *http.Client, base, name string) string {
	t.Helper()
	resp, err := hc.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// TestHostilePrefixCoversInterfaceAddress: a prefix that contains an
// address assigned to an interface of the namespace is refused at start, by
// the API and by reload, naming the interface; a prefix merely routed
// locally (the tests' documentation prefixes) is fine.
func TestHostilePrefixCoversInterfaceAddress(t *testing.T) {
	ns := netns.New(t)
	if out, err := exec.Command("ip", "addr", "add", "198.51.100.7/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}
	const want = "contains 198.51.100.7 (address 198.51.100.7 of interface lo)"
	cfg := writeConfig(t, "admin: {listen: \"127.0.0.1:0\"}\ndispatch: {pin_dir: \"\"}\nstore: {path: \"\"}\nprefixes: [{cidr: 198.51.100.0/24, service: cdn}]\n")
	if s, err := Start(Options{Config: cfg, Sockets: echoSockets(t), Dial: ns.Dial, Socket: ns.Socket}); err == nil {
		s.Close()
		t.Fatal("started with a prefix covering an interface's address")
	} else if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "cidr") {
		t.Fatalf("start: %v, want %q", err, want)
	}

	okPath := filepath.Join(t.TempDir(), "ok.yaml")
	os.WriteFile(okPath, []byte("admin: {listen: \"127.0.0.1:0\"}\ndispatch: {pin_dir: \"\"}\nstore: {path: \"\"}\nprefixes: [{cidr: 203.0.113.0/24, service: cdn}]\n"), 0o600)
	cfg = writeConfig(t, string(mustRead(t, okPath)))
	s, err := Start(Options{Config: cfg, Sockets: echoSockets(t), Dial: ns.Dial, Socket: ns.Socket})
	if err != nil {
		t.Fatalf("a locally routed prefix: %v", err)
	}
	defer s.Close()
	base := "http://" + s.AdminAddr().String()
	for _, cidr := range []string{"198.51.100.0/24", "::/48"} {
		resp, err := ns.HTTPClient().Post(base+"/v1/prefixes", "application/json", strings.NewReader(`{"cidr":"`+cidr+`","service_id":"cdn"}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), "cidr: prefix "+cidr) || !strings.Contains(string(body), "contains") {
			t.Errorf("POST %s: %d %s, want 400 naming the cidr", cidr, resp.StatusCode, body)
		}
	}
	badPath := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(badPath, []byte("admin: {listen: \"127.0.0.1:0\"}\ndispatch: {pin_dir: \"\"}\nstore: {path: \"\"}\nprefixes: [{cidr: 203.0.113.0/24, service: cdn}, {cidr: 198.51.100.0/24, service: cdn}]\n"), 0o600)
	if err := s.ReloadFile(badPath); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("reload: %v, want %q", err, want)
	}
}

// TestHostileSecondStartInProcess: a second Start on the same pin dir, in
// the same process, fails with ErrLocked naming this pid before anything
// else, and the first keeps serving.
func TestHostileSecondStartInProcess(t *testing.T) {
	ns := netns.New(t)
	pin := filepath.Join(netns.BPFFS(t), "edgeproxy")
	yaml := fmt.Sprintf("admin: {listen: \"127.0.0.1:0\"}\ndispatch: {pin_dir: %q}\nstore: {path: \"\"}\nprefixes: [{cidr: 192.0.2.0/24, service: cdn}]\n", pin)
	a, err := Start(Options{Config: writeConfig(t, yaml), Sockets: echoSockets(t), Dial: ns.Dial, Socket: ns.Socket})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	serveHost(t, "tcp", 443)
	if got := askTCP(t, "192.0.2.1:443"); got != "cdn" {
		t.Fatalf("first: %s", got)
	}
	b, err := Start(Options{Config: writeConfig(t, yaml), Sockets: echoSockets(t), Dial: ns.Dial, Socket: ns.Socket})
	if err == nil {
		b.Close()
		t.Fatal("a second start on the same pin dir succeeded")
	}
	if !errors.Is(err, dispatch.ErrLocked) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) || !strings.Contains(err.Error(), "dispatch.pin_dir") {
		t.Fatalf("second start: %v, want ErrLocked naming pid %d", err, os.Getpid())
	}
	if got := askTCP(t, "192.0.2.1:443"); got != "cdn" {
		t.Fatalf("first, after the second failed: %s, want cdn", got)
	}
}
