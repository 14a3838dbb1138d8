// Package fleettest gives a test a small fleet's network and a real etcd:
// a hub namespace holding a bridge, node namespaces joined to it by veth
// pairs, and etcd (Debian's /usr/bin/etcd) running as a process inside the
// hub, alone or as a three-member cluster.
//
// Every link and address lives in the test's own namespaces, and only
// 198.18.0.0/24 (a benchmarking range) is used on them: the hub's bridge is
// 198.18.0.1, etcd members take .1 to .3, nodes .11 and up. Nothing is made
// in the test's own namespace; the namespaces, and the veths with them,
// vanish when the test ends, and etcd is stopped.
package fleettest

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/netns"
)

// Bridge is the hub's bridge, and Prefix the one range on the fleet's links.
const Bridge = "br0"

var (
	Prefix  = netip.MustParsePrefix("198.18.0.0/24")
	HubAddr = netip.MustParseAddr("198.18.0.1")
)

// firstNode is the last byte of the first node's address.
const firstNode = 11

// Net is a fleet's network: the hub namespace with its bridge, and the nodes
// joined to it.
type Net struct {
	Hub *netns.NS

	mu    sync.Mutex
	nodes []*Node
	hubIP []netip.Addr // the bridge's addresses, HubAddr first
	etcd  bool         // an etcd (or cluster) has been started on the hub

	// launch runs functions on one thread inside the hub that lives as long
	// as the Net: etcd is forked from it, so that its parent-death signal
	// comes only when the test's process ends.
	launch chan func()
}

// Node is one namespace of the fleet, joined to the hub's bridge.
type Node struct {
	Name string
	NS   *netns.NS
	Addr netip.Addr // its address on the bridge's /24
	Link string     // its end of the veth pair, inside NS
}

// NewNet makes the hub: a fresh namespace holding Bridge, up, with
// 198.18.0.1/24.
func NewNet(tb testing.TB) *Net {
	tb.Helper()
	n := &Net{Hub: netns.Fresh(tb), hubIP: []netip.Addr{HubAddr}, launch: make(chan func())}
	n.Hub.Go(func() {
		for fn := range n.launch {
			fn()
		}
	})
	tb.Cleanup(func() { close(n.launch) })
	n.ip(tb, n.Hub,
		[]string{"link", "add", Bridge, "type", "bridge"},
		[]string{"addr", "add", prefixed(HubAddr), "dev", Bridge},
		[]string{"link", "set", Bridge, "up"},
	)
	return n
}

// Node makes a fresh namespace (set up as netns.Fresh does) and joins it to
// the bridge by a veth pair: its end, eth0, takes the next address from
// .11 on, and is up with the /24 routed on it.
func (n *Net) Node(tb testing.TB, name string) *Node {
	tb.Helper()
	n.mu.Lock()
	i := len(n.nodes)
	if firstNode+i > 254 {
		n.mu.Unlock()
		tb.Fatalf("fleettest: node %q: no address left in %s", name, Prefix)
	}
	addr := Prefix.Addr().As4()
	addr[3] = byte(firstNode + i)
	node := &Node{Name: name, Addr: netip.AddrFrom4(addr), Link: "eth0"}
	n.nodes = append(n.nodes, node)
	n.mu.Unlock()
	node.NS = netns.Fresh(tb)
	hubEnd := fmt.Sprintf("fv%d", addr[3])
	n.ip(tb, n.Hub,
		[]string{"link", "add", hubEnd, "type", "veth", "peer", "name", node.Link, "netns", node.NS.Path()},
		[]string{"link", "set", hubEnd, "master", Bridge},
		[]string{"link", "set", hubEnd, "up"},
	)
	n.ip(tb, node.NS,
		[]string{"addr", "add", prefixed(node.Addr), "dev", node.Link},
		[]string{"link", "set", node.Link, "up"},
	)
	return node
}

// Nodes returns the nodes made so far, in order.
func (n *Net) Nodes() []*Node {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Node(nil), n.nodes...)
}

// hubAddr returns the bridge's i-th address (198.18.0.1 + i), adding it to
// the bridge when it is new.
func (n *Net) hubAddr(tb testing.TB, i int) netip.Addr {
	tb.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	for len(n.hubIP) <= i {
		a := n.hubIP[len(n.hubIP)-1].Next()
		n.ip(tb, n.Hub, []string{"addr", "add", prefixed(a), "dev", Bridge})
		n.hubIP = append(n.hubIP, a)
	}
	return n.hubIP[i]
}

// ip runs ip commands inside ns, failing tb on the first that fails.
func (n *Net) ip(tb testing.TB, ns *netns.NS, cmds ...[]string) {
	tb.Helper()
	for _, c := range cmds {
		var out []byte
		err := ns.Do(func() error {
			var err error
			out, err = exec.Command("ip", c...).CombinedOutput()
			return err
		})
		if err != nil {
			tb.Fatalf("fleettest: ip %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
}

// onHub runs fn on the hub's launching thread and waits for it.
func (n *Net) onHub(fn func() error) error {
	errc := make(chan error, 1)
	n.launch <- func() { errc <- fn() }
	return <-errc
}

func prefixed(a netip.Addr) string {
	return netip.PrefixFrom(a, Prefix.Bits()).String()
}
