// Package e2e tests edgeproxy through its built binary: TestMain builds
// ./cmd/edgeproxy once; the tests run it, those that serve traffic in a
// network namespace of their own, and talk to it as an operator and a
// client would.
package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/netns"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// binary is the edgeproxy binary the tests run, built once.
var binary string

func TestMain(m *testing.M) {
	if addr := os.Getenv(sinkEnv); addr != "" {
		os.Exit(runSink(addr)) // a helper process of a test (fds_test.go)
	}
	dir, err := os.MkdirTemp("", "edgeproxy-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "edgeproxy")
	if out, err := exec.Command("go", "build", "-o", binary, "../cmd/edgeproxy").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build edgeproxy: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runBinary runs edgeproxy and returns its output and exit code.
func runBinary(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func TestCheck(t *testing.T) {
	good := testutil.WriteConfig(t, "prefixes: [{cidr: 192.0.2.0/24, service: cdn}]\n")
	out, _, code := runBinary(t, "check", "--config", good)
	if code != 0 || !strings.Contains(out, "ok (1 prefixes") {
		t.Errorf("valid file: exit %d, %q", code, out)
	}
	bad := testutil.WriteConfig(t, "prefixes: [{cidr: 192.0.2.0/24, service: cdn}]\nbindings: [{cidr: 192.0.2.0/25, service: magic-transit}]\n")
	_, errOut, code := runBinary(t, "check", "--config", bad)
	if code != 1 || !strings.Contains(errOut, "binding 192.0.2.0/25") || !strings.Contains(errOut, "magic-transit can only be the default") {
		t.Errorf("invalid file: exit %d, %q", code, errOut)
	}
	_, _, code = runBinary(t, "check")
	if code != 2 {
		t.Errorf("no --config: exit %d, want 2", code)
	}
	_, _, code = runBinary(t, "frobnicate")
	if code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
	out, _, code = runBinary(t, "version")
	if code != 0 || !strings.HasPrefix(out, "edgeproxy ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
}

// TestRunEntersNetns: `run --config` with dispatch.netns, started from the
// original namespace, enters the configured one: its prefix is steered (and,
// without service sockets, refused) there, while other addresses reach the
// host service.
func TestRunEntersNetns(t *testing.T) {
	ns := netns.New(t)
	serveHost(t, 8443) // not a cdn port: refused on cdn addresses
	cfg := testutil.WriteConfig(t, fmt.Sprintf("dispatch: {netns: %q, pin_dir: \"\"}\nstore: {path: \"\"}\nprefixes: [{cidr: 192.0.2.0/24, service: cdn}]\n", ns.Path()))

	// Start it from a goroutine off this thread: in the original namespace.
	cmd := exec.Command(binary, "run", "--config", cfg)
	var stderr testutil.Buffer
	cmd.Stderr = &stderr
	started := make(chan error)
	go func() { started <- cmd.Start() }()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	dst := netip.MustParseAddrPort("192.0.2.1:8443")
	if err := testutil.WaitFor(10*time.Second, func() error {
		got, err := echo.Ask("tcp", dst, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got != echo.Refused {
			return fmt.Errorf("192.0.2.1:8443 still answers %q", got)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v: edgeproxy did not steer in this namespace\n%s", err, stderr.String())
	}
	if got, _ := echo.Ask("tcp", netip.MustParseAddrPort("198.51.100.1:8443"), time.Second); got != "host" {
		t.Errorf("unbound address: %q, want the host service", got)
	}
}

func serveHost(t *testing.T, port int) {
	echo.StartTCP(t, "host", fmt.Sprintf("[::]:%d", port), false)
}

// instance is an edgeproxy run by a test, in the test's namespace.
type instance struct {
	t      *testing.T
	cmd    *exec.Cmd
	admin  string
	stderr *testutil.Buffer
	config string // the file it runs on
}

// startInstance runs `edgeproxy run --config` with body plus an admin API on
// 127.0.0.1:9180 and an unpinned dispatcher, from the test's thread (so in
// its namespace), and waits for /healthz.
func startInstance(t *testing.T, ns *netns.NS, body string) *instance {
	t.Helper()
	return startWrapped(t, ns, body)
}

// startWrapped is startInstance with the binary run through a wrapper
// command (wrap, then the binary and its arguments), such as prlimit.
func startWrapped(t *testing.T, ns *netns.NS, body string, wrap ...string) *instance {
	t.Helper()
	if !strings.Contains(body, "admin:") {
		body = "admin: {listen: 127.0.0.1:9180}\n" + body
	}
	cfg := testutil.WriteConfig(t, "dispatch: {pin_dir: \"\"}\n"+body)
	in := &instance{t: t, admin: "http://127.0.0.1:9180", stderr: new(testutil.Buffer), config: cfg}
	args := append(append([]string{}, wrap...), binary, "run", "--config", cfg)
	in.cmd = exec.Command(args[0], args[1:]...)
	in.cmd.Stderr = in.stderr
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.stop)
	hc := ns.HTTPClient()
	if err := testutil.WaitFor(10*time.Second, func() error { return testutil.Answers(hc, in.admin+"/healthz", 0) }); err != nil {
		t.Fatalf("edgeproxy did not come up: %v\n%s", err, in.stderr)
	}
	return in
}

// stop kills the instance, unless it has exited already.
func (in *instance) stop() {
	if in.cmd.ProcessState == nil {
		in.cmd.Process.Kill()
		in.cmd.Wait()
	}
}

// cli runs a client command against the instance (flags first, as the CLI
// wants them) and returns stdout, stderr and the exit code.
func (in *instance) cli(args ...string) (string, string, int) {
	in.t.Helper()
	return runBinary(in.t, args...)
}

func TestCLIAgainstRunningBinary(t *testing.T) {
	ns := netns.New(t)
	in := startInstance(t, ns, `store: {path: ""}
prefixes: [{cidr: 192.0.2.0/24, service: spectrum}]
spectrum:
  apps: [{name: web, protocol: tcp, edge: 192.0.2.0/24, ports: "8000-8999", origins: ["127.0.0.1:9"]}]
`)
	os.Setenv("EDGEPROXY_ADMIN", in.admin)
	defer os.Unsetenv("EDGEPROXY_ADMIN")

	out, _, code := in.cli("bindings", "list")
	if code != 0 || !strings.Contains(out, "192.0.2.0/24") || !strings.Contains(out, "prefix default") {
		t.Fatalf("list: %d %q", code, out)
	}
	out, errOut, code := in.cli("bindings", "add", "--port", "tcp/443", "192.0.2.200/32", "cdn")
	if code != 0 || !strings.Contains(out, "added 192.0.2.200/32 tcp/443 -> cdn") || !strings.Contains(out, "active") {
		t.Fatalf("add: %d %q %q", code, out, errOut)
	}
	out, _, code = in.cli("bindings", "add", "--json", "192.0.2.128/25", "cdn")
	var b struct {
		ID        string `json:"id"`
		ServiceID string `json:"service_id"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &b) != nil || b.ServiceID != "cdn" || len(b.ID) != 32 {
		t.Fatalf("add --json: %d %q", code, out)
	}
	out, _, code = in.cli("lookup", "192.0.2.130:8080/tcp")
	if code != 0 || !strings.Contains(out, "192.0.2.130:8080/tcp: refuse") || !strings.Contains(out, "cdn does not serve tcp/8080") {
		t.Fatalf("lookup: %d %q", code, out)
	}
	out, _, code = in.cli("bindings", "move", b.ID, "spectrum")
	if code != 0 || !strings.Contains(out, "from cdn to spectrum") {
		t.Fatalf("move: %d %q", code, out)
	}
	out, _, code = in.cli("lookup", "--json", "192.0.2.130:8080/tcp")
	var l struct {
		Outcome string `json:"outcome"`
		App     struct {
			Name string `json:"name"`
		} `json:"app"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &l) != nil || l.Outcome != "spectrum" || l.App.Name != "web" {
		t.Fatalf("lookup --json: %d %q", code, out)
	}
	if got := askName(t, "tcp", "192.0.2.130:8080"); got != echo.Refused {
		t.Fatalf("traffic: %s (spectrum has no socket yet: refused)", got)
	}
	out, _, code = in.cli("bindings", "delete", b.ID)
	if code != 0 || !strings.Contains(out, "deleted 192.0.2.128/25") {
		t.Fatalf("delete: %d %q", code, out)
	}

	// Refusals and usage.
	_, errOut, code = in.cli("bindings", "add", "198.51.100.0/25", "cdn")
	if code != 1 || !strings.Contains(errOut, "not inside any onboarded prefix") {
		t.Errorf("add outside: %d %q", code, errOut)
	}
	_, errOut, code = in.cli("bindings", "add", "192.0.2.0/25", "magic-transit")
	if code != 1 || !strings.Contains(errOut, "400 Bad Request") || !strings.Contains(errOut, "magic-transit can only be the default") {
		t.Errorf("add magic-transit: %d %q", code, errOut)
	}
	_, errOut, code = in.cli("bindings", "move", "0123", "cdn")
	if code != 1 || !strings.Contains(errOut, "no binding with id prefix 0123") {
		t.Errorf("move unknown: %d %q", code, errOut)
	}
	for _, args := range [][]string{{"bindings"}, {"bindings", "add", "192.0.2.0/25"}, {"bindings", "add", "192.0.2.1/25", "cdn"}, {"lookup", "192.0.2.1/tcp"}, {"bindings", "list", "extra"}} {
		if _, _, code := in.cli(args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	_, errOut, code = in.cli("bindings", "list", "--admin", "http://127.0.0.1:1")
	if code != 1 || !strings.Contains(errOut, "cannot reach the admin API at http://127.0.0.1:1") {
		t.Errorf("unreachable: %d %q", code, errOut)
	}
}

func TestCLIToken(t *testing.T) {
	ns := netns.New(t)
	dir := t.TempDir()
	token, wrong := filepath.Join(dir, "token"), filepath.Join(dir, "wrong")
	os.WriteFile(token, []byte("s3cret\n"), 0o600)
	os.WriteFile(wrong, []byte("nope\n"), 0o600)
	in := startInstance(t, ns, fmt.Sprintf("admin: {listen: 127.0.0.1:9180, token_file: %q}\nstore: {path: \"\"}\nprefixes: [{cidr: 192.0.2.0/24, service: cdn}]\n", token))
	_, errOut, code := in.cli("bindings", "add", "--admin", in.admin, "192.0.2.0/25", "spectrum")
	if code != 1 || !strings.Contains(errOut, "needs a token for this call: pass --token-file") {
		t.Errorf("no token: %d %q", code, errOut)
	}
	_, errOut, code = in.cli("bindings", "add", "--admin", in.admin, "--token-file", wrong, "192.0.2.0/25", "spectrum")
	if code != 1 || !strings.Contains(errOut, "refused the token in "+wrong) {
		t.Errorf("wrong token: %d %q", code, errOut)
	}
	if _, errOut, code = in.cli("bindings", "add", "--admin", in.admin, "--token-file", token, "192.0.2.0/25", "spectrum"); code != 0 {
		t.Errorf("right token: %d %q", code, errOut)
	}
	if out, _, code := in.cli("bindings", "list", "--admin", in.admin); code != 0 || !strings.Contains(out, "192.0.2.0/25") {
		t.Errorf("reading needs no token: %d %q", code, out)
	}
	if strings.Contains(in.stderr.String(), "s3cret") {
		t.Error("the token appears in the log")
	}
}

// TestKill9LosesNoAcknowledgedChange: a burst of API writes from several
// clients, edgeproxy killed with SIGKILL in the middle of it; after a
// restart every change that was acknowledged is there.
func TestKill9LosesNoAcknowledgedChange(t *testing.T) {
	ns := netns.New(t)
	store := filepath.Join(t.TempDir(), "bindings.db")
	body := fmt.Sprintf("store: {path: %q}\n", store)
	in := startInstance(t, ns, body)
	hc := ns.HTTPClient()
	api := &admin.Client{Base: in.admin, HTTP: hc}
	post := func(path, body string) bool {
		_, err := api.Call("POST", path, strings.NewReader(body))
		return err == nil
	}
	if !post("/v1/prefixes", `{"cidr":"10.9.0.0/16","service_id":"spectrum"}`) {
		t.Fatal("onboard the prefix")
	}
	pid := bindingsPrefixID("10.9.0.0/16")

	acked := make(chan string, 100000)
	stop := make(chan struct{})
	done := make(chan struct{})
	const writers = 8
	for w := range writers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				cidr := fmt.Sprintf("10.9.%d.%d/32", w*16+i/256, i%256)
				if post("/v1/prefixes/"+pid+"/bindings", `{"cidr":"`+cidr+`","service_id":"cdn"}`) {
					acked <- cidr
				}
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	in.cmd.Process.Signal(os.Kill)
	in.cmd.Wait()
	close(stop)
	for range writers {
		<-done
	}
	close(acked)
	var want []string
	for c := range acked {
		want = append(want, c)
	}
	if len(want) < 20 {
		t.Fatalf("only %d writes acknowledged before the kill", len(want))
	}

	in2 := startInstance(t, ns, body)
	var after []admin.Binding
	if err := (&admin.Client{Base: in2.admin, HTTP: hc}).Do("GET", "/v1/prefixes/"+pid+"/bindings", nil, &after); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, b := range after {
		have[b.CIDR] = true
	}
	var lost []string
	for _, c := range want {
		if !have[c] {
			lost = append(lost, c)
		}
	}
	t.Logf("%d writes acknowledged before SIGKILL, %d bindings after the restart", len(want), len(after)-1)
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged changes lost: %v", len(lost), lost)
	}
}

func bindingsPrefixID(cidr string) string {
	return bindings.PrefixID(netip.MustParsePrefix(cidr))
}

func askName(t *testing.T, proto, dst string) string {
	t.Helper()
	got, err := echo.Ask(proto, netip.MustParseAddrPort(dst), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestSpectrumThroughBinary: TCP and UDP apps of the binary, IPv4 and IPv6,
// forward to their origins; UDP answers come from the dialled address and
// port (the client's socket is connected).
func TestSpectrumThroughBinary(t *testing.T) {
	ns := netns.New(t)
	echo.Start(t, "origin", "127.0.0.1:7007")
	echo.Start(t, "origin", "[::1]:7008")
	startInstance(t, ns, `store: {path: ""}
prefixes:
  - {cidr: 192.0.2.0/24, service: spectrum}
  - {cidr: "2001:db8:7::/48", service: spectrum}
spectrum:
  apps:
    - {name: tcp4, protocol: tcp, edge: 192.0.2.0/24, ports: "7", origins: ["127.0.0.1:7007"]}
    - {name: udp4, protocol: udp, edge: 192.0.2.0/24, ports: "7", origins: ["127.0.0.1:7007"]}
    - {name: tcp6, protocol: tcp, edge: "2001:db8:7::/48", ports: "1-1000", origins: ["[::1]:7008"], proxy_protocol: "off"}
    - {name: udp6, protocol: udp, edge: "2001:db8:7::/48", ports: "*", origins: ["[::1]:7008"]}
`)
	for _, tc := range []struct{ network, dst string }{
		{"tcp", "192.0.2.1:7"}, {"udp", "192.0.2.1:7"},
		{"tcp", "[2001:db8:7::1]:1"}, {"udp", "[2001:db8:7::1]:5353"},
	} {
		if got := askName(t, tc.network, tc.dst); got != "origin" {
			t.Errorf("%s %s: %q, want the origin", tc.network, tc.dst, got)
		}
	}
}

// TestSpectrumBehaviourThroughBinary: half-close, firewall deny, origin
// failover and flow expiry, through the binary (the server package tests
// the same in process, in more detail).
func TestSpectrumBehaviourThroughBinary(t *testing.T) {
	ns := netns.New(t)
	// A TCP origin that answers after the client's EOF; a UDP echo.
	ln, err := echo.ListenTCP("127.0.0.1:7010", false)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				fmt.Fprintf(c, "got %d bytes after your EOF", len(b))
			}()
		}
	}()
	echo.StartUDP(t, "origin", "127.0.0.1:7011")
	in := startInstance(t, ns, `store: {path: ""}
prefixes: [{cidr: 192.0.2.0/24, service: spectrum}]
spectrum:
  apps:
    - {name: half, protocol: tcp, edge: 192.0.2.0/24, ports: "10", origins: ["127.0.0.1:1", "127.0.0.1:7010"], ip_firewall: {deny: [198.51.100.66]}}
    - {name: flows, protocol: udp, edge: 192.0.2.0/24, ports: "11", origins: ["127.0.0.1:1", "127.0.0.1:7011"], idle_timeout: 1s}
`)
	// Half-close, after failing over from the dead first origin.
	for range 2 {
		c, err := net.Dial("tcp", "192.0.2.1:10")
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		c.Write([]byte("12345"))
		c.(*net.TCPConn).CloseWrite()
		got, _ := io.ReadAll(c)
		c.Close()
		if string(got) != "got 5 bytes after your EOF" {
			t.Fatalf("half-close: %q", got)
		}
	}
	// Firewall.
	c, err := echo.FreebindDialer(netip.MustParseAddr("198.51.100.66"), 0).Dial("tcp", "192.0.2.1:10")
	if err == nil {
		c.SetDeadline(time.Now().Add(time.Second))
		n, rerr := c.Read(make([]byte, 1))
		c.Close()
		if n > 0 || rerr == nil {
			t.Fatal("a denied client got an answer")
		}
	}
	// UDP failover on the ICMP error, then expiry.
	u, err := net.Dial("udp", "192.0.2.1:11")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if testutil.AskUDP(u, "hi\n", 10, 300*time.Millisecond) == "" {
		t.Fatal("the udp flow never reached the live origin")
	}
	metric := func(name string) string {
		resp, err := ns.HTTPClient().Get(in.admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, name+" ") {
				return strings.TrimPrefix(line, name+" ")
			}
		}
		return ""
	}
	active := `edgeproxy_spectrum_active{app="flows",protocol="udp"}`
	if got := metric(active); got != "1" {
		t.Fatalf("active flows %q, want 1", got)
	}
	time.Sleep(2500 * time.Millisecond)
	if got := metric(active); got != "0" {
		t.Fatalf("after the idle timeout: active flows %q, want 0", got)
	}
	if got := metric(`edgeproxy_spectrum_refused_total{app="half",protocol="tcp",reason="firewall"}`); got != "1" {
		t.Fatalf("firewall refusals %q, want 1", got)
	}
}
