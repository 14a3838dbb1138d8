package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/internal/echo"
	"github.com/edgeproxy/edgeproxy/internal/fleettest"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// A fleet in tests: a real etcd in the hub namespace, and edgeproxy
// processes each in a namespace of its own, joined to it by veth pairs on a
// bridge (internal/fleettest). Every node serves the same file: the
// prefix 192.0.2.0/24 to spectrum, whose app answers tcp/7000 through an
// echo origin in the node's namespace that says the node's name. A binding
// to the cdn (which does not serve tcp/7000) makes an address refuse: a
// probe from inside a node's namespace sees which way its data plane
// steers.

// fleetNode is one edgeproxy of a test's fleet.
type fleetNode struct {
	*fleettest.Node
	t      *testing.T
	id     string
	cmd    *exec.Cmd
	stderr *testutil.Buffer
	config string
	hc     *http.Client
}

const fleetAdmin = "http://127.0.0.1:9180"

// fleetOpts vary a fleet's nodes.
type fleetOpts struct {
	labels func(i int) string // a node's labels, in YAML
	apps   func(i int) string // more spectrum apps of node i, YAML flow mappings each followed by ", "
	extra  string             // more of the file (a cdn section)
	// origin, when set, starts in each node's namespace before it runs.
	origin func(t *testing.T, fn *fleetNode)
}

// fleetConfig is a node's file.
func fleetConfig(id, store string, endpoints []string, labels, apps string, o fleetOpts) string {
	eps, _ := json.Marshal(endpoints)
	if labels == "" {
		labels = "{}"
	}
	return fmt.Sprintf(`node: %s
labels: %s
admin: {listen: 127.0.0.1:9180}
shutdown_grace: 1s
store:
  path: %s
  etcd: {endpoints: %s, dial_timeout: 1s, node_ttl: 3s}
prefixes: [{cidr: 192.0.2.0/24, service: spectrum}]
spectrum:
  apps: [%s{name: probe, protocol: tcp, edge: 192.0.2.0/24, ports: "7000", origins: ["127.0.0.1:7001"]}]
%s`, id, labels, store, eps, apps, o.extra)
}

// startFleet starts n nodes on net, each with its own echo origin, and
// waits until every one answers.
func startFleet(t *testing.T, net *fleettest.Net, n int, endpoints []string, o fleetOpts) []*fleetNode {
	t.Helper()
	var nodes []*fleetNode
	for i := range n {
		id := fmt.Sprintf("edge-%d", i+1)
		fn := &fleetNode{Node: net.Node(t, id), t: t, id: id}
		fn.hc = fn.NS.HTTPClient()
		fn.hc.Timeout = 10 * time.Second
		if err := fn.NS.Do(func() error { echo.StartTCP(t, id, "127.0.0.1:7001", false); return nil }); err != nil {
			t.Fatal(err)
		}
		if o.origin != nil {
			o.origin(t, fn)
		}
		l, apps := "", ""
		if o.labels != nil {
			l = o.labels(i)
		}
		if o.apps != nil {
			apps = o.apps(i)
		}
		fn.config = testutil.WriteConfig(t, fmt.Sprintf("dispatch: {pin_dir: \"\", netns: %s}\n", fn.NS.Path())+
			fleetConfig(id, filepath.Join(t.TempDir(), "bindings.db"), endpoints, l, apps, o))
		fn.start()
		nodes = append(nodes, fn)
	}
	for _, fn := range nodes {
		fn.waitUp()
	}
	// Ready, and each has found etcd (on a loaded machine a start may find
	// it only at the next probe).
	waitAll(t, nodes, 30*time.Second, "every node found etcd", func(fn *fleetNode) error {
		if fn.summary().Stale {
			return errors.New("stale")
		}
		return nil
	})
	return nodes
}

// start runs the node's edgeproxy.
func (fn *fleetNode) start() {
	fn.stderr = new(testutil.Buffer)
	fn.cmd = exec.Command(binary, "run", "--config", fn.config)
	fn.cmd.Stderr = fn.stderr
	if err := fn.cmd.Start(); err != nil {
		fn.t.Fatal(err)
	}
	cmd, stderr := fn.cmd, fn.stderr
	fn.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if fn.t.Failed() {
			fn.t.Logf("%s's log (last lines):\n%s", fn.id, tail(stderr.String(), 30))
		}
	})
}

// waitUp waits for the node's readiness.
func (fn *fleetNode) waitUp() {
	fn.t.Helper()
	if err := testutil.WaitFor(15*time.Second, func() error { return testutil.Answers(fn.hc, fleetAdmin+"/readyz", 200) }); err != nil {
		fn.t.Fatalf("%s did not come up: %v\n%s", fn.id, err, tail(fn.stderr.String(), 30))
	}
}

// kill ends the node's process at once (SIGKILL).
func (fn *fleetNode) kill() {
	fn.cmd.Process.Kill()
	fn.cmd.Wait()
}

// api calls the node's admin API and decodes the envelope's result into
// out (when not nil); it returns the status.
func (fn *fleetNode) api(method, path string, body any, out any) (int, string) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, fleetAdmin+path, rd)
	resp, err := fn.hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var env struct {
		Result json.RawMessage `json:"result"`
	}
	if json.Unmarshal(raw, &env) == nil && out != nil && resp.StatusCode == 200 {
		json.Unmarshal(env.Result, out)
	}
	return resp.StatusCode, string(raw)
}

// fleetBinding is the part of a binding the fleet tests read.
type fleetBinding struct {
	ID           string `json:"id"`
	CIDR         string `json:"cidr"`
	ServiceID    string `json:"service_id"`
	Provisioning struct {
		State        string            `json:"state"`
		Revision     int64             `json:"revision"`
		NodesTotal   int               `json:"nodes_total"`
		NodesApplied int               `json:"nodes_applied"`
		NodesFailed  []string          `json:"nodes_failed"`
		Errors       map[string]string `json:"errors"`
	} `json:"provisioning"`
}

// probePrefix is the file's prefix, whose id the API paths take.
var probePrefix = netip.MustParsePrefix("192.0.2.0/24")

func prefixPath() string {
	return "/v1/prefixes/" + bindingsPrefixID(probePrefix.String()) + "/bindings"
}

// steers asks addr's tcp/7000 from inside the node's namespace: the node's
// name (spectrum), or echo.Refused (the cdn, which does not serve it).
func (fn *fleetNode) steers(addr netip.Addr) string {
	var got string
	fn.NS.Do(func() error {
		got, _ = echo.Ask("tcp", netip.AddrPortFrom(addr, 7000), time.Second)
		return nil
	})
	return got
}

// waitSteers polls the node's data plane from inside its namespace until
// addr goes to spectrum (toSpectrum) or refuses, and returns when it first
// did, or false at the deadline.
func (fn *fleetNode) waitSteers(addr netip.Addr, toSpectrum bool, deadline time.Time) (time.Time, bool) {
	var at time.Time
	ok := false
	fn.NS.Do(func() error {
		for time.Now().Before(deadline) {
			got, _ := echo.Ask("tcp", netip.AddrPortFrom(addr, 7000), 500*time.Millisecond)
			if (got == fn.id) == toSpectrum && (got == echo.Refused) != toSpectrum {
				at, ok = time.Now(), true
				return nil
			}
			time.Sleep(time.Millisecond)
		}
		return nil
	})
	return at, ok
}

// convergence makes a change through writer and returns how long it took
// until every node's data plane steered addr the new way, and checks that
// provisioning read active only once every node did.
func convergence(t *testing.T, nodes []*fleetNode, writer *fleetNode, addr netip.Addr, toSpectrum bool, change func() fleetBinding) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	seen := make([]time.Time, len(nodes))
	var wg sync.WaitGroup
	for i, fn := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at, ok := fn.waitSteers(addr, toSpectrum, deadline)
			if !ok {
				t.Errorf("%s: %s still does not steer to spectrum=%v after 10 s", fn.id, addr, toSpectrum)
			}
			seen[i] = at
		}()
	}
	b := change()
	// Provisioning: pending until the last node holds it, then active.
	var activeAt time.Time
	for time.Now().Before(deadline) {
		var got fleetBinding
		if code, raw := writer.api("GET", prefixPath()+"/"+b.ID, nil, &got); code != 200 {
			t.Fatalf("GET the binding: %d %s", code, raw)
		}
		if got.Provisioning.State == "active" {
			activeAt = time.Now()
			if got.Provisioning.NodesApplied != len(nodes) || got.Provisioning.NodesTotal != len(nodes) {
				t.Errorf("active with %d of %d nodes applied, want %d", got.Provisioning.NodesApplied, got.Provisioning.NodesTotal, len(nodes))
			}
			break
		}
		if got.Provisioning.State != "pending" {
			t.Fatalf("provisioning %+v, want pending then active", got.Provisioning)
		}
		time.Sleep(2 * time.Millisecond)
	}
	// Active: every data plane holds it now.
	for _, fn := range nodes {
		if got := fn.steers(addr); (got == fn.id) != toSpectrum {
			t.Errorf("provisioning read active, but %s's data plane answers %q for %s", fn.id, got, addr)
		}
	}
	wg.Wait()
	last := slices.MaxFunc(seen, func(a, b time.Time) int { return a.Compare(b) })
	if activeAt.IsZero() {
		t.Errorf("provisioning never read active")
	}
	return last.Sub(start)
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// TestFleetConvergence: ten nodes; 100 changes made through different
// nodes' APIs (50 bindings created to the cdn, then moved back to
// spectrum); for each, the time from the API call until every node's data
// plane steers the new way, probed from inside each namespace.
func TestFleetConvergence(t *testing.T) {
	net := fleettest.NewNet(t)
	etcd := fleettest.StartEtcd(t, net)
	nodes := startFleet(t, net, 10, etcd.Endpoints(), fleetOpts{})

	var took []time.Duration
	ids := map[int]string{}
	for i := range 100 {
		k := i % 50
		addr := netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + k)})
		writer := nodes[i%len(nodes)]
		toSpectrum := i >= 50
		d := convergence(t, nodes, writer, addr, toSpectrum, func() fleetBinding {
			var b fleetBinding
			var code int
			var raw string
			if !toSpectrum {
				code, raw = writer.api("POST", prefixPath(), map[string]any{"cidr": addr.String() + "/32", "service_id": "cdn"}, &b)
				ids[k] = b.ID
			} else {
				code, raw = writer.api("PATCH", prefixPath()+"/"+ids[k], map[string]any{"service_id": "spectrum"}, &b)
			}
			if code != 200 {
				t.Fatalf("change %d through %s: %d %s", i, writer.id, code, raw)
			}
			return b
		})
		took = append(took, d)
		if t.Failed() {
			t.FailNow()
		}
	}
	p50, p99 := percentile(took, 0.5), percentile(took, 0.99)
	t.Logf("100 changes on 10 nodes: API call to every data plane steering the new way: p50 %v, p99 %v, max %v",
		p50.Round(time.Microsecond), p99.Round(time.Microsecond), slices.Max(took).Round(time.Microsecond))
	if p99 > time.Second {
		t.Errorf("p99 %v, want under 1 s", p99)
	}
	// Every node ends with the same bindings.
	want := nodeBindings(t, nodes[0])
	for _, fn := range nodes[1:] {
		if got := nodeBindings(t, fn); got != want {
			t.Errorf("%s's bindings differ from %s's:\n%s\nvs\n%s", fn.id, nodes[0].id, got, want)
		}
	}
}

// nodeBindings lists a node's bindings of the prefix, sorted.
func nodeBindings(t *testing.T, fn *fleetNode) string {
	t.Helper()
	var bs []fleetBinding
	if code, raw := fn.api("GET", prefixPath(), nil, &bs); code != 200 {
		t.Fatalf("%s: list: %d %s", fn.id, code, raw)
	}
	var lines []string
	for _, b := range bs {
		lines = append(lines, b.CIDR+" "+b.ServiceID)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestFleetConflicts: two nodes take a create of the same CIDR at the same
// instant, 1000 times: exactly one wins each time (the other answers 409),
// and every node ends identical.
func TestFleetConflicts(t *testing.T) {
	net := fleettest.NewNet(t)
	etcd := fleettest.StartEtcd(t, net)
	nodes := startFleet(t, net, 3, etcd.Endpoints(), fleetOpts{})
	a, b := nodes[0], nodes[1]
	const rounds = 1000
	var wins [2]int
	for i := range rounds {
		addr := fmt.Sprintf("192.0.2.%d/32", 10+i%200)
		var codes [2]int
		var raws [2]string
		var got [2]fleetBinding
		var wg sync.WaitGroup
		start := make(chan struct{})
		for j, fn := range []*fleetNode{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				codes[j], raws[j] = fn.api("POST", prefixPath(), map[string]any{"cidr": addr, "service_id": "cdn"}, &got[j])
			}()
		}
		close(start)
		wg.Wait()
		sorted := codes
		slices.Sort(sorted[:])
		if sorted != [2]int{200, 409} {
			t.Fatalf("round %d: statuses %v, want one 200 and one 409:\n%s\n%s", i, codes, raws[0], raws[1])
		}
		for j := range 2 {
			if codes[j] == 200 {
				wins[j]++
			} else if !strings.Contains(raws[j], `"code": 1003`) {
				t.Fatalf("round %d: the loser's answer %s, want code 1003", i, raws[j])
			}
		}
		id := got[0].ID + got[1].ID
		if code, raw := nodes[i%3].api("DELETE", prefixPath()+"/"+id, nil, nil); code != 200 {
			for _, fn := range nodes {
				t.Logf("%s: %+v", fn.id, fn.summary())
			}
			t.Fatalf("round %d: delete: %d %s", i, code, raw)
		}
	}
	t.Logf("%d rounds: %s won %d, %s won %d", rounds, a.id, wins[0], b.id, wins[1])
	// Two moves of one binding at once both succeed, one after the other.
	var made fleetBinding
	if code, raw := a.api("POST", prefixPath(), map[string]any{"cidr": "192.0.2.250/32", "service_id": "cdn"}, &made); code != 200 {
		t.Fatalf("create: %d %s", code, raw)
	}
	var wg sync.WaitGroup
	for j, fn := range []*fleetNode{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			svc := []string{"spectrum", "cdn"}[j]
			if code, raw := fn.api("PATCH", prefixPath()+"/"+made.ID, map[string]any{"service_id": svc}, nil); code != 200 {
				t.Errorf("concurrent move to %s: %d %s", svc, code, raw)
			}
		}()
	}
	wg.Wait()
	waitIdentical(t, nodes)
}

// waitIdentical waits until every node lists the same bindings.
func waitIdentical(t *testing.T, nodes []*fleetNode) {
	t.Helper()
	err := testutil.WaitFor(5*time.Second, func() error {
		want := nodeBindings(t, nodes[0])
		for _, fn := range nodes[1:] {
			if got := nodeBindings(t, fn); got != want {
				return fmt.Errorf("%s's bindings differ from %s's:\n%s\nvs\n%s", fn.id, nodes[0].id, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// fleetSummary is the part of GET /v1/fleet the tests read.
type fleetSummary struct {
	Revision int64 `json:"revision"`
	Applied  int64 `json:"applied"`
	Stale    bool  `json:"stale"`
	Nodes    int   `json:"nodes"`
}

func (fn *fleetNode) summary() fleetSummary {
	var s fleetSummary
	if code, raw := fn.api("GET", "/v1/fleet", nil, &s); code != 200 {
		fn.t.Fatalf("%s: GET /v1/fleet: %d %s", fn.id, code, raw)
	}
	return s
}

// waitAll waits until cond holds for every node, and returns how long it
// took.
func waitAll(t *testing.T, nodes []*fleetNode, d time.Duration, what string, cond func(*fleetNode) error) time.Duration {
	t.Helper()
	start := time.Now()
	if err := testutil.WaitFor(d, func() error {
		for _, fn := range nodes {
			if err := cond(fn); err != nil {
				return fmt.Errorf("%s: %w", fn.id, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("%s: not within %v: %v", what, d, err)
	}
	return time.Since(start)
}

// create makes a binding of addr to svc through fn and returns it.
func (fn *fleetNode) create(addr, svc string) fleetBinding {
	fn.t.Helper()
	var b fleetBinding
	if code, raw := fn.api("POST", prefixPath(), map[string]any{"cidr": addr, "service_id": svc}, &b); code != 200 {
		fn.t.Fatalf("%s: create %s: %d %s", fn.id, addr, code, raw)
	}
	return b
}

// TestFleetOutage: etcd stops for 10 s. Every node keeps steering by its
// last state, reports itself stale within 3 s, refuses writes with 503,
// stays ready; a node restarted meanwhile serves its last applied state.
// Within 2 s of etcd's return every node is live and at the latest
// revision, and a change converges with every node counted. Then a node
// killed drops out of nodes_total after its TTL, and a change turns active
// without it.
func TestFleetOutage(t *testing.T) {
	net := fleettest.NewNet(t)
	etcd := fleettest.StartEtcd(t, net)
	nodes := startFleet(t, net, 5, etcd.Endpoints(), fleetOpts{})
	var listed []struct {
		ID    string `json:"id"`
		Live  bool   `json:"live"`
		State string `json:"state"`
	}
	if code, raw := nodes[4].api("GET", "/v1/nodes", nil, &listed); code != 200 || len(listed) != 5 {
		t.Fatalf("GET /v1/nodes once every node is ready: %d %s, want all 5 listed", code, raw)
	}
	for _, l := range listed {
		if !l.Live || l.State != "in_sync" {
			t.Errorf("node %+v, want live and in_sync", l)
		}
	}
	addr := netip.MustParseAddr("192.0.2.20")
	convergence(t, nodes, nodes[0], addr, false, func() fleetBinding { return nodes[0].create("192.0.2.20/32", "cdn") })

	etcd.Stop()
	stopped := time.Now()
	took := waitAll(t, nodes, 3*time.Second, "stale after etcd stopped", func(fn *fleetNode) error {
		if !fn.summary().Stale {
			return fmt.Errorf("not stale")
		}
		return nil
	})
	t.Logf("every node reported stale %v after etcd stopped", took.Round(time.Millisecond))
	for _, fn := range nodes {
		if code, raw := fn.api("GET", "/metrics", nil, nil); code != 200 || !strings.Contains(raw, "\nedgeproxy_fleet_stale 1\n") {
			t.Errorf("%s while etcd is away: metrics want edgeproxy_fleet_stale 1", fn.id)
		}
		if code, raw := fn.api("GET", "/v1/nodes", nil, nil); code != 200 || !strings.Contains(raw, `"stale"`) {
			t.Errorf("%s while etcd is away: /v1/nodes %d %.300s, want the nodes stale", fn.id, code, raw)
		}
		if got := fn.steers(addr); got != echo.Refused {
			t.Errorf("%s while etcd is away: %s answers %q, want its last state (the cdn: refused)", fn.id, addr, got)
		}
		if code, _ := fn.api("GET", "/readyz", nil, nil); code != 200 {
			t.Errorf("%s while etcd is away: readyz %d, want 200", fn.id, code)
		}
	}
	start := time.Now()
	code, raw := nodes[1].api("POST", prefixPath(), map[string]any{"cidr": "192.0.2.21/32", "service_id": "cdn"}, nil)
	if code != 503 || time.Since(start) > 2*time.Second {
		t.Errorf("a write while etcd is away: %d after %v (%s), want 503 within dial_timeout + 1 s", code, time.Since(start), raw)
	}
	// A node restarted while etcd is away serves its last applied state.
	nodes[2].kill()
	nodes[2].start()
	nodes[2].waitUp()
	if got := nodes[2].steers(addr); got != echo.Refused {
		t.Errorf("%s restarted while etcd is away: %s answers %q, want its last state", nodes[2].id, addr, got)
	}
	time.Sleep(time.Until(stopped.Add(10 * time.Second)))

	etcd.Start()
	took = waitAll(t, nodes, 2*time.Second, "in sync after etcd returned", func(fn *fleetNode) error {
		s := fn.summary()
		if s.Stale || s.Applied < s.Revision || s.Nodes != len(nodes) {
			return fmt.Errorf("%+v", s)
		}
		return nil
	})
	t.Logf("every node live and at the latest revision %v after etcd returned", took.Round(time.Millisecond))
	convergence(t, nodes, nodes[3], addr, true, func() fleetBinding {
		var b fleetBinding
		if code, raw := nodes[3].api("PATCH", prefixPath()+"/"+bindingID("192.0.2.20/32"), map[string]any{"service_id": "spectrum"}, &b); code != 200 {
			t.Fatalf("move after the return: %d %s", code, raw)
		}
		return b
	})

	// A node killed: the change is pending while its lease lives, then
	// active without it.
	nodes[4].kill()
	killed := time.Now()
	b := nodes[0].create("192.0.2.22/32", "cdn")
	var got fleetBinding
	for {
		if code, raw := nodes[0].api("GET", prefixPath()+"/"+b.ID, nil, &got); code != 200 {
			t.Fatalf("GET: %d %s", code, raw)
		}
		if got.Provisioning.State == "active" {
			break
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("still %+v 10 s after a node was killed (node_ttl 3s)", got.Provisioning)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if after := time.Since(killed); after < 2*time.Second || got.Provisioning.NodesTotal != 4 || got.Provisioning.NodesApplied != 4 {
		t.Errorf("active %v after the kill with %d of %d nodes, want after its lease (3 s) with 4 of 4", after, got.Provisioning.NodesApplied, got.Provisioning.NodesTotal)
	}
}

// bindingID is the id of an address binding.
func bindingID(cidr string) string { return bindings.BindingID(netip.MustParsePrefix(cidr), 0, 0) }

// waitPlanes waits until every node steers addr as want says (true:
// spectrum), probed from inside each namespace.
func waitPlanes(t *testing.T, nodes []*fleetNode, addr netip.Addr, want func(*fleetNode) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, fn := range nodes {
		if _, ok := fn.waitSteers(addr, want(fn), deadline); !ok {
			t.Errorf("%s: %s does not steer to spectrum=%v", fn.id, addr, want(fn))
		}
	}
}

// waitState waits until the binding's provisioning reads state, through fn.
func (fn *fleetNode) waitState(id, state string) fleetBinding {
	fn.t.Helper()
	var b fleetBinding
	err := testutil.WaitFor(5*time.Second, func() error {
		if code, raw := fn.api("GET", prefixPath()+"/"+id, nil, &b); code != 200 {
			return fmt.Errorf("%d %s", code, raw)
		}
		if b.Provisioning.State != state {
			return fmt.Errorf("provisioning %+v", b.Provisioning)
		}
		return nil
	})
	if err != nil {
		fn.t.Fatalf("%s: binding %s never read %s: %v", fn.id, id, state, err)
	}
	return b
}

// TestFleetCanary: a change scoped to the nodes labelled stage=canary
// applies there only (probed), promote spreads it, and a canary move is
// rolled back on the canary nodes.
func TestFleetCanary(t *testing.T) {
	net := fleettest.NewNet(t)
	etcd := fleettest.StartEtcd(t, net)
	nodes := startFleet(t, net, 4, etcd.Endpoints(), fleetOpts{labels: func(i int) string {
		if i < 2 {
			return "{stage: canary}"
		}
		return "{stage: main}"
	}})
	canary := func(fn *fleetNode) bool { return fn.id == "edge-1" || fn.id == "edge-2" }
	addr := netip.MustParseAddr("192.0.2.30")
	scope := map[string]any{"labels": map[string]string{"stage": "canary"}}

	// A canary create: the canary nodes refuse (the cdn), the others keep
	// spectrum; every node lists it, in its stable form (no service).
	var b fleetBinding
	if code, raw := nodes[3].api("POST", prefixPath(), map[string]any{"cidr": "192.0.2.30/32", "service_id": "cdn", "canary": scope}, &b); code != 200 {
		t.Fatalf("canary create: %d %s", code, raw)
	}
	waitPlanes(t, nodes, addr, func(fn *fleetNode) bool { return !canary(fn) })
	got := nodes[2].waitState(b.ID, "canary")
	if got.ServiceID != "" || got.Provisioning.NodesTotal != 2 || got.Provisioning.NodesApplied != 2 {
		t.Errorf("a canary create on a main node: %+v, want no service_id and 2 of 2 canary nodes", got)
	}
	// Any other write to it is refused while the canary is pending.
	if code, raw := nodes[0].api("PATCH", prefixPath()+"/"+b.ID, map[string]any{"service_id": "spectrum"}, nil); code != 409 || !strings.Contains(raw, "pending") {
		t.Errorf("a move with a canary pending: %d %s, want 409 naming the pending change", code, raw)
	}
	// Promote spreads it.
	if code, raw := nodes[1].api("POST", prefixPath()+"/"+b.ID+"/promote", nil, nil); code != 200 {
		t.Fatalf("promote: %d %s", code, raw)
	}
	waitPlanes(t, nodes, addr, func(*fleetNode) bool { return false })
	if got := nodes[3].waitState(b.ID, "active"); got.ServiceID != "cdn" || got.Provisioning.NodesTotal != 4 {
		t.Errorf("promoted: %+v, want cdn, active on 4 nodes", got)
	}
	// A canary move back to spectrum, then rolled back.
	if code, raw := nodes[2].api("PATCH", prefixPath()+"/"+b.ID, map[string]any{"service_id": "spectrum", "canary": scope}, nil); code != 200 {
		t.Fatalf("canary move: %d %s", code, raw)
	}
	waitPlanes(t, nodes, addr, canary)
	if got := nodes[0].waitState(b.ID, "canary"); got.ServiceID != "cdn" {
		t.Errorf("a canary move shows its stable form: %+v, want cdn", got)
	}
	if code, raw := nodes[0].api("POST", prefixPath()+"/"+b.ID+"/rollback", nil, nil); code != 200 {
		t.Fatalf("rollback: %d %s", code, raw)
	}
	waitPlanes(t, nodes, addr, func(*fleetNode) bool { return false })
	nodes[1].waitState(b.ID, "active")
	// A rolled-back create is gone.
	var c fleetBinding
	if code, raw := nodes[0].api("POST", prefixPath(), map[string]any{"cidr": "192.0.2.31/32", "service_id": "cdn", "canary": scope}, &c); code != 200 {
		t.Fatalf("canary create: %d %s", code, raw)
	}
	if code, raw := nodes[3].api("POST", prefixPath()+"/"+c.ID+"/rollback?wait=5s", nil, nil); code != 200 {
		t.Fatalf("rollback of a create: %d %s", code, raw)
	}
	for _, fn := range nodes {
		if err := testutil.WaitFor(5*time.Second, func() error {
			if code, _ := fn.api("GET", prefixPath()+"/"+c.ID, nil, nil); code != 404 {
				return fmt.Errorf("GET %d", code)
			}
			return nil
		}); err != nil {
			t.Errorf("%s: a rolled-back create: %v, want 404", fn.id, err)
		}
	}
	waitIdentical(t, nodes)

	// Every node lists every change in the fleet's audit log, in order.
	var entries []struct {
		Revision  int64           `json:"revision"`
		Who       string          `json:"who"`
		Action    string          `json:"action"`
		BindingID string          `json:"binding_id"`
		Before    json.RawMessage `json:"before"`
		After     json.RawMessage `json:"after"`
		RequestID string          `json:"request_id"`
		Node      string          `json:"node"`
	}
	if code, raw := nodes[2].api("GET", "/v1/audit?since=0", nil, &entries); code != 200 {
		t.Fatalf("audit: %d %s", code, raw)
	}
	var actions []string
	for i, e := range entries {
		actions = append(actions, e.Action)
		if i > 0 && e.Revision <= entries[i-1].Revision || !strings.HasPrefix(e.Who, "127.0.0.1:") || e.RequestID == "" || e.Node == "" {
			t.Errorf("audit entry %d: %+v, want a growing revision, who (the remote address), the request id and the node", i, e)
		}
	}
	if want := "canary promote canary rollback canary rollback"; strings.Join(actions, " ") != want {
		t.Errorf("audit actions %q, want %q", strings.Join(actions, " "), want)
	}
	if len(entries) > 2 && (string(entries[1].Before) != "null" || !strings.Contains(string(entries[1].After), `"cdn"`)) {
		t.Errorf("the promote's entry: before %s after %s, want null (a canary create) and the cdn binding", entries[1].Before, entries[1].After)
	}
	var since []json.RawMessage
	if code, raw := nodes[0].api("GET", fmt.Sprintf("/v1/audit?since=%d", entries[3].Revision), nil, &since); code != 200 || len(since) != 2 {
		t.Errorf("audit since the 4th entry: %d, %d entries, want the last 2 (%s)", code, len(since), raw)
	}
}

// TestFleetMoveUnderLoad: a range moves between the cdn and spectrum and
// back across five nodes, 20 times, under continuous HTTP load on every
// node (a new connection per request, both services answering tcp/80
// from the same origin): no request fails.
func TestFleetMoveUnderLoad(t *testing.T) {
	net := fleettest.NewNet(t)
	etcd := fleettest.StartEtcd(t, net)
	nodes := startFleet(t, net, 5, etcd.Endpoints(), fleetOpts{
		apps: func(int) string {
			return `{name: web, protocol: tcp, edge: 192.0.2.0/24, ports: "80", origins: ["127.0.0.1:7002"]}, `
		},
		extra: `cdn:
  http_ports: [80]
  https_ports: []
  http3: false
  sites: [{hosts: ["*"], origins: ["http://127.0.0.1:7002"]}]
`,
		origin: func(t *testing.T, fn *fleetNode) {
			if err := fn.NS.Do(func() error { testOrigin(t, fn.id, "127.0.0.1:7002"); return nil }); err != nil {
				t.Fatal(err)
			}
		},
	})
	const target = "http://192.0.2.64/"
	var (
		mu       sync.Mutex
		ok, fail int
		errs     []string
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for _, fn := range nodes {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: fn.NS.DialContext}, Timeout: 5 * time.Second}
				for {
					select {
					case <-stop:
						return
					default:
					}
					resp, err := hc.Get(target)
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							err = fmt.Errorf("status %d", resp.StatusCode)
						}
					}
					mu.Lock()
					if err != nil {
						fail++
						if len(errs) < 5 {
							errs = append(errs, fn.id+": "+err.Error())
						}
					} else {
						ok++
					}
					mu.Unlock()
				}
			}()
		}
	}
	var b fleetBinding
	if code, raw := nodes[0].api("POST", prefixPath()+"?wait=5s", map[string]any{"cidr": "192.0.2.64/26", "service_id": "cdn"}, &b); code != 200 || b.Provisioning.State != "active" {
		t.Fatalf("create: %d %s", code, raw)
	}
	for i := range 20 {
		svc := []string{"spectrum", "cdn"}[i%2]
		var got fleetBinding
		if code, raw := nodes[i%len(nodes)].api("PATCH", prefixPath()+"/"+b.ID+"?wait=5s", map[string]any{"service_id": svc}, &got); code != 200 || got.Provisioning.State != "active" {
			t.Fatalf("move %d to %s: %d %s", i, svc, code, raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("20 moves of 192.0.2.64/26 between the cdn and spectrum on 5 nodes: %d requests served, %d failed", ok, fail)
	if fail > 0 || ok < 100 {
		t.Errorf("%d requests failed (%v), %d served; want none failed", fail, errs, ok)
	}
}

// TestFleetClusterAndLongOutage: on a three-member etcd cluster, a member
// (the leader) is killed mid-way: changes still converge on every node.
// Then the whole cluster stops for longer than node_ttl: on its return
// every node registers again, and a change made then reads active only
// once every node that was live before the outage holds it.
func TestFleetClusterAndLongOutage(t *testing.T) {
	net := fleettest.NewNet(t)
	cluster := fleettest.StartCluster(t, net, 3)
	nodes := startFleet(t, net, 4, cluster.Endpoints(), fleetOpts{})
	addr := netip.MustParseAddr("192.0.2.40")
	convergence(t, nodes, nodes[0], addr, false, func() fleetBinding { return nodes[0].create("192.0.2.40/32", "cdn") })

	cluster.Leader().Kill()
	killed := time.Now()
	// The change may wait for the new leader; it still converges.
	d := convergence(t, nodes, nodes[1], addr, true, func() fleetBinding {
		var b fleetBinding
		err := testutil.WaitFor(10*time.Second, func() error {
			code, raw := nodes[1].api("PATCH", prefixPath()+"/"+bindingID("192.0.2.40/32"), map[string]any{"service_id": "spectrum"}, &b)
			if code != 200 {
				return fmt.Errorf("%d %s", code, raw)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("move with a member killed: %v", err)
		}
		return b
	})
	t.Logf("a member killed: the next change converged on every node %v after the kill (%v after its call)", time.Since(killed).Round(time.Millisecond), d.Round(time.Millisecond))

	// The whole cluster away for longer than node_ttl (3 s).
	for _, m := range cluster.Members() {
		if m.Running() {
			m.Stop()
		}
	}
	time.Sleep(5 * time.Second)
	for _, m := range cluster.Members() {
		go m.Start()
	}
	returned := time.Now()
	took := waitAll(t, nodes, 10*time.Second, "in sync after the cluster returned", func(fn *fleetNode) error {
		s := fn.summary()
		if s.Stale || s.Applied < s.Revision || s.Nodes != len(nodes) {
			return fmt.Errorf("%+v", s)
		}
		return nil
	})
	t.Logf("the cluster back after 5 s away: every node live and in sync %v later", took.Round(time.Millisecond))
	_ = returned
	// etcd extends leases across its own restart; expire them all, as a
	// longer outage would: every node registers again at once.
	cli := net.Node(t, "operator").EtcdClient(t, cluster.Endpoints())
	leases, err := cli.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leases.Leases {
		if _, err := cli.Revoke(context.Background(), l.ID); err != nil {
			t.Fatal(err)
		}
	}
	revoked := time.Now()
	gone := map[int64]bool{}
	for _, l := range leases.Leases {
		gone[int64(l.ID)] = true
	}
	if err := testutil.WaitFor(3*time.Second, func() error {
		resp, err := cli.Get(context.Background(), "/edgeproxy/nodes/", clientv3.WithPrefix())
		if err != nil {
			return err
		}
		fresh := 0
		for _, kv := range resp.Kvs {
			if kv.Lease != 0 && !gone[kv.Lease] {
				fresh++
			}
		}
		if fresh != len(nodes) {
			return fmt.Errorf("%d of %d node keys on new leases", fresh, len(nodes))
		}
		return nil
	}); err != nil {
		t.Fatalf("after the leases expired: %v", err)
	}
	t.Logf("%d leases revoked: every node live again %v later", len(leases.Leases), time.Since(revoked).Round(time.Millisecond))
	// A change now counts every node (convergence checks that active
	// comes only once all four hold it, with nodes_total 4).
	convergence(t, nodes, nodes[2], addr, false, func() fleetBinding {
		var b fleetBinding
		if code, raw := nodes[2].api("PATCH", prefixPath()+"/"+bindingID("192.0.2.40/32"), map[string]any{"service_id": "cdn"}, &b); code != 200 {
			t.Fatalf("move after the return: %d %s", code, raw)
		}
		return b
	})
}

// TestFleetBatch: a batch of 2,100 bindings, beyond one etcd transaction,
// is applied by every node as one step; a batch with one bad item changes
// nothing; a batch's binding moves like any other afterwards.
func TestFleetBatch(t *testing.T) {
	net := fleettest.NewNet(t)
	etcd := fleettest.StartEtcd(t, net)
	nodes := startFleet(t, net, 3, etcd.Endpoints(), fleetOpts{})
	if code, raw := nodes[0].api("POST", "/v1/prefixes", map[string]any{"cidr": "2001:db8:7::/48", "service_id": "spectrum"}, nil); code != 200 {
		t.Fatalf("prefix: %d %s", code, raw)
	}
	var items []map[string]any
	for i := range 100 {
		items = append(items, map[string]any{"cidr": fmt.Sprintf("192.0.2.%d/32", 50+i), "service_id": "cdn"})
	}
	for i := range 2000 {
		items = append(items, map[string]any{"cidr": fmt.Sprintf("2001:db8:7::%x/128", i+1), "service_id": "cdn"})
	}
	// One bad item: nothing is applied.
	bad := append(slices.Clone(items), map[string]any{"cidr": "192.0.2.50/32", "service_id": "cdn"})
	if code, raw := nodes[1].api("POST", "/v1/batch", map[string]any{"bindings": bad}, nil); code != 409 {
		t.Fatalf("a batch with a duplicate: %d %s, want 409", code, raw)
	}
	var res struct {
		Revision     int64 `json:"revision"`
		Count        int   `json:"count"`
		Provisioning struct {
			State string `json:"state"`
		} `json:"provisioning"`
	}
	start := time.Now()
	if code, raw := nodes[1].api("POST", "/v1/batch?wait=10s", map[string]any{"bindings": items}, &res); code != 200 || res.Count != len(items) || res.Provisioning.State != "active" {
		t.Fatalf("batch: %d %s", code, raw)
	}
	t.Logf("a batch of %d bindings, active on 3 nodes %v after the call", len(items), time.Since(start).Round(time.Millisecond))
	for _, fn := range nodes {
		for _, a := range []string{"192.0.2.50", "192.0.2.149"} {
			if got := fn.steers(netip.MustParseAddr(a)); got != echo.Refused {
				t.Errorf("%s: %s answers %q, want the batch's cdn binding (refused)", fn.id, a, got)
			}
		}
		var bs []fleetBinding
		if code, raw := fn.api("GET", "/v1/prefixes/"+bindingsPrefixID("2001:db8:7::/48")+"/bindings", nil, &bs); code != 200 || len(bs) != 2001 {
			t.Errorf("%s: the v6 prefix lists %d bindings (%d), want 2001 (%.200s)", fn.id, len(bs), code, raw)
		}
	}
	// Once the batch's records have their own keys, one moves as ever.
	convergence(t, nodes, nodes[2], netip.MustParseAddr("192.0.2.77"), true, func() fleetBinding {
		var b fleetBinding
		err := testutil.WaitFor(10*time.Second, func() error {
			code, raw := nodes[2].api("PATCH", prefixPath()+"/"+bindingID("192.0.2.77/32"), map[string]any{"service_id": "spectrum"}, &b)
			if code != 200 {
				return fmt.Errorf("%d %s", code, raw)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("move a batch's binding: %v", err)
		}
		return b
	})
	waitIdentical(t, nodes)
}

// TestFleetUpgrade: a node of a fleet upgrades by SIGUSR2. The new process
// takes its store and its place in the fleet: it stays listed live once
// the old one has gone, follows the fleet's changes, and takes changes
// through its own API, each active on every node.
func TestFleetUpgrade(t *testing.T) {
	net := fleettest.NewNet(t)
	etcd := fleettest.StartEtcd(t, net)
	nodes := startFleet(t, net, 3, etcd.Endpoints(), fleetOpts{})
	addr := netip.MustParseAddr("192.0.2.60")
	convergence(t, nodes, nodes[1], addr, false, func() fleetBinding { return nodes[1].create("192.0.2.60/32", "cdn") })

	old := nodes[0].cmd.Process.Pid
	var st admin.Status
	syscall.Kill(old, syscall.SIGUSR2)
	if err := testutil.WaitFor(15*time.Second, func() error {
		if code, raw := nodes[0].api("GET", "/v1/status", nil, &st); code != 200 || st.PID == old || st.State != "serving" {
			return fmt.Errorf("%d %.200s", code, raw)
		}
		return nil
	}); err != nil {
		t.Fatalf("no new process serves edge-1: %v", err)
	}
	t.Cleanup(func() { syscall.Kill(st.PID, syscall.SIGKILL) })
	if err := testutil.WaitFor(10*time.Second, func() error {
		if running(old) {
			return errors.New("the old process still runs")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second) // past the old process's lease (node_ttl 3s)
	var listed []struct {
		ID   string `json:"id"`
		Live bool   `json:"live"`
	}
	if code, raw := nodes[2].api("GET", "/v1/nodes", nil, &listed); code != 200 || len(listed) != 3 {
		t.Fatalf("/v1/nodes after the upgrade: %d %s", code, raw)
	}
	for _, l := range listed {
		if !l.Live {
			t.Errorf("after edge-1's upgrade: %+v, want every node live", l)
		}
	}
	convergence(t, nodes, nodes[2], addr, true, func() fleetBinding {
		var b fleetBinding
		if code, raw := nodes[2].api("PATCH", prefixPath()+"/"+bindingID("192.0.2.60/32"), map[string]any{"service_id": "spectrum"}, &b); code != 200 {
			t.Fatalf("move through edge-3: %d %s", code, raw)
		}
		return b
	})
	convergence(t, nodes, nodes[0], addr, false, func() fleetBinding {
		var b fleetBinding
		if code, raw := nodes[0].api("PATCH", prefixPath()+"/"+bindingID("192.0.2.60/32"), map[string]any{"service_id": "cdn"}, &b); code != 200 {
			t.Fatalf("move through the upgraded edge-1: %d %s", code, raw)
		}
		return b
	})
}

// TestFleetRefused: a change one node cannot apply (its own file has no
// app for the port) is failed there, naming the node and the reason; the
// others apply it; the refusing node never counts as applied.
func TestFleetRefused(t *testing.T) {
	net := fleettest.NewNet(t)
	etcd := fleettest.StartEtcd(t, net)
	nodes := startFleet(t, net, 3, etcd.Endpoints(), fleetOpts{apps: func(i int) string {
		if i == 2 {
			return "" // edge-3 serves no tcp/9000
		}
		return `{name: extra, protocol: tcp, edge: 192.0.2.0/24, ports: "9000", origins: ["127.0.0.1:7001"]}, `
	}})
	// Make 192.0.2.90 the cdn's, then give its tcp/9000 back to spectrum.
	nodes[0].create("192.0.2.90/32", "cdn")
	var b fleetBinding
	if code, raw := nodes[0].api("POST", prefixPath()+"?wait=5s", map[string]any{"cidr": "192.0.2.90/32", "service_id": "spectrum", "protocol": "tcp", "port": 9000}, &b); code != 200 {
		t.Fatalf("create: %d %s", code, raw)
	}
	if b.Provisioning.State != "failed" || len(b.Provisioning.NodesFailed) != 1 || b.Provisioning.NodesFailed[0] != "edge-3" ||
		!strings.Contains(b.Provisioning.Errors["edge-3"], "tcp/9000") || b.Provisioning.NodesApplied != 2 || b.Provisioning.NodesTotal != 3 {
		t.Errorf("provisioning %+v, want failed naming edge-3 and why, 2 of 3 applied", b.Provisioning)
	}
	var listed []struct {
		ID    string `json:"id"`
		State string `json:"state"`
		Error string `json:"error"`
	}
	nodes[1].api("GET", "/v1/nodes", nil, &listed)
	for _, l := range listed {
		if (l.ID == "edge-3") != (l.State == "failed") || l.ID == "edge-3" && l.Error == "" {
			t.Errorf("/v1/nodes: %+v, want edge-3 alone failed, with its error", l)
		}
	}
	if code, raw := nodes[2].api("GET", "/metrics", nil, nil); code != 200 || !strings.Contains(raw, "edgeproxy_fleet_refused_total 1") {
		t.Errorf("edge-3's metrics: want edgeproxy_fleet_refused_total 1")
	}
}
