package fleettest_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/edgeproxy/edgeproxy/internal/fleettest"
	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

func TestNodesReachEachOtherAndTheHub(t *testing.T) {
	n := fleettest.NewNet(t)
	nodes := []*fleettest.Node{n.Node(t, "a"), n.Node(t, "b"), n.Node(t, "c")}
	for i, node := range nodes {
		if want := netip.AddrFrom4([4]byte{198, 18, 0, byte(11 + i)}); node.Addr != want {
			t.Errorf("node %s: address %s, want %s", node.Name, node.Addr, want)
		}
	}
	// Every node and the hub listen; every node dials every other and the
	// hub over the bridge.
	hub := listen(t, n.Hub.Do, fleettest.HubAddr)
	var lns []string
	for _, node := range nodes {
		lns = append(lns, listen(t, node.NS.Do, node.Addr))
	}
	for i, from := range nodes {
		for j, to := range append(lns, hub) {
			if j == i {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := from.NS.Dial(ctx, &net.Dialer{}, "tcp", to)
			cancel()
			if err != nil {
				t.Fatalf("node %s dials %s: %v", from.Name, to, err)
			}
			if got := netip.MustParseAddrPort(c.LocalAddr().String()).Addr(); got != from.Addr {
				t.Errorf("node %s dials %s from %s", from.Name, to, got)
			}
			c.Close()
		}
	}
}

// listen listens on addr inside a namespace (through its Do) and accepts
// until the test ends; it returns the address listened on.
func listen(t *testing.T, do func(func() error) error, addr netip.Addr) string {
	t.Helper()
	var ln net.Listener
	if err := do(func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// TestNothingLeaks makes a net with nodes and etcd in a subtest, and checks
// that the test's own namespace never sees their links or addresses, and
// that afterwards no thread or descriptor of the process holds their
// namespaces and etcd has exited.
func TestNothingLeaks(t *testing.T) {
	linksBefore := hostLinks(t)
	var inodes []uint64
	var pid int
	t.Run("fleet", func(t *testing.T) {
		n := fleettest.NewNet(t)
		a, b := n.Node(t, "a"), n.Node(t, "b")
		e := fleettest.StartEtcd(t, n)
		pid = e.Pid()
		for _, p := range []string{n.Hub.Path(), a.NS.Path(), b.NS.Path()} {
			inodes = append(inodes, inode(t, p))
		}
		if got := hostLinks(t); got != linksBefore {
			t.Errorf("host links changed:\nbefore %s\nafter  %s", linksBefore, got)
		}
		out, err := exec.Command("ip", "-o", "addr").CombinedOutput()
		if err != nil {
			t.Fatalf("ip -o addr: %v: %s", err, out)
		}
		if strings.Contains(string(out), "198.18.") {
			t.Errorf("198.18.0.0/24 in the test's own namespace:\n%s", out)
		}
	})
	if got := hostLinks(t); got != linksBefore {
		t.Errorf("host links changed:\nbefore %s\nafter  %s", linksBefore, got)
	}
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		t.Errorf("etcd (pid %d) still there after the test: kill 0: %v", pid, err)
	}
	held := map[string]bool{}
	for _, glob := range []string{"/proc/self/task/*/ns/net", "/proc/self/fd/*"} {
		paths, _ := filepath.Glob(glob)
		for _, p := range paths {
			if l, err := os.Readlink(p); err == nil {
				held[l] = true
			}
		}
	}
	for _, ino := range inodes {
		if held[fmt.Sprintf("net:[%d]", ino)] {
			t.Errorf("namespace %d still held by the test's process", ino)
		}
	}
}

func hostLinks(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link").CombinedOutput()
	if err != nil {
		t.Fatalf("ip -o link: %v: %s", err, out)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			names = append(names, f[1])
		}
	}
	return strings.Join(names, " ")
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestNodesShareKeysThroughEtcd(t *testing.T) {
	n := fleettest.NewNet(t)
	e := fleettest.StartEtcd(t, n)
	nodes := []*fleettest.Node{n.Node(t, "a"), n.Node(t, "b"), n.Node(t, "c")}
	clients := make([]*clientv3.Client, len(nodes))
	for i, node := range nodes {
		clients[i] = node.EtcdClient(t, e.Endpoints())
		put(t, clients[i], "nodes/"+node.Name, node.Addr.String())
	}
	for _, cli := range clients {
		for _, node := range nodes {
			if got := get(t, cli, "nodes/"+node.Name); got != node.Addr.String() {
				t.Errorf("nodes/%s = %q, want %q", node.Name, got, node.Addr)
			}
		}
	}
}

func TestEtcdTakesTheTestsFlags(t *testing.T) {
	n := fleettest.NewNet(t)
	e := fleettest.StartEtcd(t, n, fleettest.AutoCompaction("periodic", "2s"))
	b, err := os.ReadFile(e.Log)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"auto-compaction-retention":"2s"`; !strings.Contains(string(b), want) {
		t.Errorf("etcd's log does not say %s", want)
	}
}

func TestEtcdKeepsItsDataAcrossARestart(t *testing.T) {
	n := fleettest.NewNet(t)
	e := fleettest.StartEtcd(t, n)
	node := n.Node(t, "a")
	cli := node.EtcdClient(t, e.Endpoints())
	put(t, cli, "k", "before")
	e.Stop()
	if e.Running() {
		t.Fatal("etcd runs after Stop")
	}
	e.Start()
	if got := get(t, cli, "k"); got != "before" {
		t.Fatalf("k = %q after a restart, want %q", got, "before")
	}
	put(t, cli, "k", "after")
	e.Kill()
	e.Start()
	if got := get(t, cli, "k"); got != "after" {
		t.Fatalf("k = %q after a kill and a start, want %q", got, "after")
	}
}

func TestClusterWritesWithAMemberKilled(t *testing.T) {
	n := fleettest.NewNet(t)
	c := fleettest.StartCluster(t, n, 3)
	if got := len(c.Endpoints()); got != 3 {
		t.Fatalf("%d endpoints, want 3", got)
	}
	node := n.Node(t, "a")
	cli := node.EtcdClient(t, c.Endpoints())
	put(t, cli, "k", "0")

	// Kill the leader: the two left elect another and take writes.
	leader := leaderOf(t, cli, c)
	if got := c.Leader(); got != leader {
		t.Fatalf("Cluster.Leader() = %v, the client's status says %s", got, leader.Name)
	}
	leader.Kill()
	start := time.Now()
	var next *fleettest.Etcd
	if err := testutil.WaitFor(5*time.Second, func() error {
		if next = c.Leader(); next == nil {
			return fmt.Errorf("no member says it leads")
		}
		return nil
	}); err != nil {
		t.Fatalf("no new leader after %s was killed: %v", leader.Name, err)
	}
	elected := time.Since(start)
	c.WaitHealthy()
	put(t, cli, "k", "1")
	t.Logf("leader %s killed: %s elected after %v, healthy and a write done after %v", leader.Name, next.Name, elected, time.Since(start))
	if got := get(t, cli, "k"); got != "1" {
		t.Fatalf("k = %q, want 1", got)
	}
	leader.Start()
	put(t, cli, "k", "2")
	// The member that came back has caught up.
	one := node.EtcdClient(t, leader.Endpoints())
	if got := get(t, one, "k"); got != "2" {
		t.Fatalf("k = %q on the restarted member, want 2", got)
	}
}

// leaderOf returns the cluster's current leader.
func leaderOf(t *testing.T, cli *clientv3.Client, c *fleettest.Cluster) *fleettest.Etcd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, m := range c.Members() {
		st, err := cli.Status(ctx, m.ClientURL())
		if err != nil {
			t.Fatalf("status of %s: %v", m.Name, err)
		}
		if st.Header.MemberId == st.Leader {
			return m
		}
	}
	t.Fatal("no member is the leader")
	return nil
}

func put(t *testing.T, cli *clientv3.Client, key, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, key, value); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func get(t *testing.T, cli *clientv3.Client, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %d values, want 1", key, len(resp.Kvs))
	}
	return string(resp.Kvs[0].Value)
}
