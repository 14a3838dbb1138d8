package fleet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
	"github.com/edgeproxy/edgeproxy/dispatch"
	"github.com/edgeproxy/edgeproxy/internal/fleettest"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// tables records the tables a manager applies, standing in for the data
// plane.
type tables struct {
	mu   sync.Mutex
	last *dispatch.Table
}

func (t *tables) Replace(tb *dispatch.Table) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.last = tb
	return nil
}

var pfx = netip.MustParsePrefix("192.0.2.0/24")

// joined starts a node of the fleet on etcd, its manager holding the
// prefix pfx from its file.
func joined(t *testing.T, node *fleettest.Node, endpoints []string) (*Node, *bindings.Manager) {
	t.Helper()
	m := bindings.NewManager(&tables{}, nil)
	st := &bindings.State{Prefixes: []bindings.Prefix{bindings.NewPrefix(pfx, bindings.Spectrum, bindings.FromConfig)}}
	if err := m.Apply(st, bindings.Services{CDN: bindings.CDNPorts{HTTP: []uint16{80}}}, nil); err != nil {
		t.Fatal(err)
	}
	n, err := Start(Options{
		Node: node.Name, Endpoints: endpoints, Prefix: "/test/", DialTimeout: time.Second, NodeTTL: 2 * time.Second,
		Manager: m, DialOptions: node.EtcdConfig(endpoints).DialOptions,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(true) })
	waitLive(t, n)
	return n, m
}

// waitLive waits until the node has found etcd: a start on a loaded
// machine may find it only at the next probe.
func waitLive(t *testing.T, n *Node) {
	t.Helper()
	if err := testutil.WaitFor(5*time.Second, func() error {
		if n.Summary().Stale {
			return errors.New("stale")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestNodes runs two nodes of a fleet in process, under the race
// detector: a change through one reaches the other, conflicting creates
// give one winner, and an outage makes both stale and then catches up.
func TestNodes(t *testing.T) {
	net := fleettest.NewNet(t)
	etcd := fleettest.StartEtcd(t, net)
	na, ma := joined(t, net.Node(t, "a"), etcd.Endpoints())
	nb, mb := joined(t, net.Node(t, "b"), etcd.Endpoints())
	ctx := context.Background()
	cidr := netip.MustParsePrefix("192.0.2.7/32")
	b, err := ma.CreateBinding(ctx, bindings.PrefixID(pfx), cidr, 0, 0, bindings.CDN)
	if err != nil {
		t.Fatal(err)
	}
	rev := ma.Provisioning(b).Revision
	if err := testutil.WaitFor(5*time.Second, func() error {
		if _, err := mb.Binding(bindings.PrefixID(pfx), b.ID); err != nil {
			return err
		}
		if p := ma.Provisioning(b); p.State != bindings.Active || p.NodesTotal != 2 {
			return errors.New(p.State)
		}
		return nil
	}); err != nil {
		t.Fatalf("b: %v", err)
	}
	if got, err := mb.Binding(bindings.PrefixID(pfx), b.ID); err != nil || got.Service != bindings.CDN || mb.Revision() < rev {
		t.Fatalf("b holds %+v, %v at %d, want the cdn binding at %d", got, err, mb.Revision(), rev)
	}
	// Conflicting creates at once: one wins.
	for i := range 20 {
		c := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)}), 32)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for j, m := range []*bindings.Manager{ma, mb} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[j] = m.CreateBinding(ctx, bindings.PrefixID(pfx), c, 0, 0, bindings.CDN)
			}()
		}
		wg.Wait()
		var be *bindings.Error
		if (errs[0] == nil) == (errs[1] == nil) || !errors.As(errors.Join(errs...), &be) || be.Kind != bindings.KindConflict {
			t.Fatalf("round %d: %v, want one success and one conflict", i, errs)
		}
	}
	etcd.Stop()
	if err := testutil.WaitFor(4*time.Second, func() error {
		if !na.Summary().Stale || !nb.Summary().Stale {
			return errors.New("not stale")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := ma.MoveBinding(ctx, bindings.PrefixID(pfx), b.ID, bindings.Spectrum); err == nil {
		t.Fatal("a move while etcd is away succeeded")
	}
	etcd.Start()
	if err := testutil.WaitFor(3*time.Second, func() error {
		if na.Summary().Stale || nb.Summary().Stale {
			return errors.New("stale")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.MoveBinding(ctx, bindings.PrefixID(pfx), b.ID, bindings.Spectrum); err != nil {
		t.Fatal(err)
	}
	if err := testutil.WaitFor(3*time.Second, func() error {
		if got, _ := ma.Binding(bindings.PrefixID(pfx), b.ID); got.Service != bindings.Spectrum {
			return errors.New(string(got.Service))
		}
		return nil
	}); err != nil {
		t.Fatalf("a after the return: %v", err)
	}
}

// TestAuditBounded: the fleet's audit log keeps at most its retention.
func TestAuditBounded(t *testing.T) {
	net := fleettest.NewNet(t)
	etcd := fleettest.StartEtcd(t, net)
	node := net.Node(t, "a")
	m := bindings.NewManager(&tables{}, nil)
	st := &bindings.State{Prefixes: []bindings.Prefix{bindings.NewPrefix(pfx, bindings.Spectrum, bindings.FromConfig)}}
	if err := m.Apply(st, bindings.Services{CDN: bindings.CDNPorts{HTTP: []uint16{80}}}, nil); err != nil {
		t.Fatal(err)
	}
	n, err := Start(Options{Node: "a", Endpoints: etcd.Endpoints(), Prefix: "/test/", DialTimeout: time.Second, NodeTTL: 2 * time.Second,
		AuditRetention: 5, Manager: m, DialOptions: node.EtcdConfig(etcd.Endpoints()).DialOptions})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close(true)
	waitLive(t, n)
	ctx := context.Background()
	c := netip.MustParsePrefix("192.0.2.9/32")
	for i := range 50 {
		b, err := m.CreateBinding(ctx, bindings.PrefixID(pfx), c, 0, 0, bindings.CDN)
		if err == nil {
			_, _, err = m.DeleteBinding(ctx, b.PrefixID, b.ID)
		}
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	if err := testutil.WaitFor(5*time.Second, func() error {
		es, err := n.Audit(ctx, 0, 1000)
		if err != nil {
			return err
		}
		if len(es) > 5 {
			return fmt.Errorf("%d entries", len(es))
		}
		if len(es) == 0 || es[len(es)-1].Action != "delete" {
			return fmt.Errorf("the newest entries gone: %+v", es)
		}
		return nil
	}); err != nil {
		t.Fatalf("after 100 changes with a retention of 5: %v", err)
	}
}
