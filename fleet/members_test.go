package fleet

import (
	"log/slog"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// offline is a node with no connection, for the bookkeeping's tests.
func offline() *Node {
	return &Node{
		opts:   Options{Node: "me", NodeTTL: 3 * time.Second},
		m:      bindings.NewManager(nil, nil),
		log:    slog.New(slog.DiscardHandler),
		report: make(chan struct{}, 1),
		nodes:  map[string]*member{},
	}
}

func TestProvisioningCounts(t *testing.T) {
	n := offline()
	if p := n.Provisioning("k", 5, nil); p.State != bindings.Pending || p.NodesTotal != 0 {
		t.Errorf("no nodes: %+v, want pending: a change is never active while nodes_total is 0", p)
	}
	n.nodes["a"] = &member{report: report{ID: "a", Revision: 5, Labels: map[string]string{"stage": "canary"}}, live: true}
	n.nodes["b"] = &member{report: report{ID: "b", Revision: 4}, live: true}
	if p := n.Provisioning("k", 5, nil); p.State != bindings.Pending || p.NodesTotal != 2 || p.NodesApplied != 1 {
		t.Errorf("one of two nodes at 5: %+v, want pending 1/2", p)
	}
	if p := n.Provisioning("k", 5, map[string]string{"stage": "canary"}); p.State != bindings.Active || p.NodesTotal != 1 {
		t.Errorf("scoped to the canary node, at 5: %+v, want active 1/1", p)
	}
	n.nodes["b"].Revision = 6
	n.nodes["b"].Refused = []Refusal{{Revision: 5, Error: "no"}}
	p := n.Provisioning("k", 5, nil)
	if p.State != bindings.Failed || len(p.NodesFailed) != 1 || p.NodesFailed[0] != "b" || p.Errors["b"] != "no" || p.NodesApplied != 1 {
		t.Errorf("b refused 5, though at 6: %+v, want failed naming b, not counted applied", p)
	}
}

func TestLeaseLostInOutageStillCounts(t *testing.T) {
	n := offline()
	n.nodes["a"] = &member{report: report{ID: "a", Revision: 3}, live: true}
	n.setStale(true)
	n.mu.Lock()
	n.goneLocked(n.nodes["a"]) // its key went while etcd was away
	n.mu.Unlock()
	if p := n.Provisioning("k", 3, nil); p.NodesTotal != 1 {
		t.Fatalf("stale, a's key gone: %+v, want a still counted", p)
	}
	n.setStale(false)
	if p := n.Provisioning("k", 3, nil); p.NodesTotal != 1 {
		t.Fatalf("just returned: %+v, want a counted for node_ttl", p)
	}
	// A key that goes within node_ttl of the return counts too.
	n.nodes["b"] = &member{report: report{ID: "b", Revision: 3}, live: true}
	n.mu.Lock()
	n.goneLocked(n.nodes["b"])
	n.mu.Unlock()
	if p := n.Provisioning("k", 3, nil); p.NodesTotal != 2 {
		t.Fatalf("b's key gone just after the return: %+v, want both counted", p)
	}
	// Once node_ttl has passed since the return, neither counts.
	n.mu.Lock()
	for _, mb := range n.nodes {
		mb.until = time.Now().Add(-time.Millisecond)
	}
	n.mu.Unlock()
	if p := n.Provisioning("k", 3, nil); p.NodesTotal != 0 || p.State != bindings.Pending {
		t.Fatalf("node_ttl after the return: %+v, want none counted, pending", p)
	}
	// A key that goes long after a return is a node that stopped.
	n.mu.Lock()
	n.returnedAt = time.Now().Add(-time.Minute)
	n.nodes["c"] = &member{report: report{ID: "c"}, live: true}
	n.goneLocked(n.nodes["c"])
	n.mu.Unlock()
	if ns := n.Nodes(); len(ns) != 0 {
		t.Errorf("c stopped long after the return: listed %+v, want gone", ns)
	}
}
