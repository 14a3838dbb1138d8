package fleettest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/edgeproxy/edgeproxy/internal/testutil"
)

// EtcdPath is Debian's etcd (the etcd-server package, 3.4), which CI
// installs.
const EtcdPath = "/usr/bin/etcd"

// The ports every member listens on, at its own address on the bridge.
const (
	ClientPort = 2379
	PeerPort   = 2380
)

// How long a member may take to answer its health check, and a stop to end
// it before it is killed.
const (
	readyTimeout = 15 * time.Second
	stopTimeout  = 10 * time.Second
)

// RequireEtcd skips tb when EtcdPath is not installed, or fails it when
// EDGEPROXY_REQUIRE_PRIVILEGES=1, as netns.Require does for privileges.
func RequireEtcd(tb testing.TB) {
	tb.Helper()
	testutil.NeedTool(tb, EtcdPath, "etcd-server")
}

// An Option changes how etcd runs.
type Option func(*options)

type options struct {
	heartbeat, election time.Duration
	args                []string
}

// Timeouts sets the raft heartbeat interval and election timeout (etcd's
// --heartbeat-interval and --election-timeout, in milliseconds). The
// default is short enough that a cluster which lost its leader elects
// another well within a second.
func Timeouts(heartbeat, election time.Duration) Option {
	return func(o *options) { o.heartbeat, o.election = heartbeat, election }
}

// AutoCompaction sets --auto-compaction-mode (periodic or revision) and
// --auto-compaction-retention (a duration such as "1s", or a number of
// revisions).
func AutoCompaction(mode, retention string) Option {
	return Args("--auto-compaction-mode="+mode, "--auto-compaction-retention="+retention)
}

// Args adds etcd flags of the test's own, written as --flag=value.
func Args(args ...string) Option {
	return func(o *options) { o.args = append(o.args, args...) }
}

// Etcd is one etcd member: a process inside the hub, on a data dir of its
// own that outlives the process, so that Stop and Start keep the data. Call
// its methods from the test's goroutine.
type Etcd struct {
	tb   testing.TB
	net  *Net
	Name string
	Addr netip.Addr // its address on the bridge
	Dir  string     // its data dir
	Log  string     // its log file, which every run appends to
	args []string

	mu   sync.Mutex
	proc *os.Process
	done chan struct{} // closed when proc has exited
}

// StartEtcd starts a single-member etcd inside the hub of n, on HubAddr,
// and waits until it answers. It is killed when the test ends, and its log
// is written to the test's output if the test failed.
func StartEtcd(tb testing.TB, n *Net, opts ...Option) *Etcd {
	tb.Helper()
	return StartCluster(tb, n, 1, opts...).Member(0)
}

// Cluster is a cluster of etcd members inside the hub, member i on the
// bridge's address 198.18.0.1+i.
type Cluster struct {
	members []*Etcd
}

// StartCluster starts a cluster of size members inside the hub of n, adding
// the bridge addresses it needs, and waits until every member answers. A
// Net holds one etcd: StartEtcd or one StartCluster.
func StartCluster(tb testing.TB, n *Net, size int, opts ...Option) *Cluster {
	tb.Helper()
	RequireEtcd(tb)
	if size < 1 || size > 9 {
		tb.Fatalf("fleettest: a cluster of %d members: want 1 to 9", size)
	}
	n.mu.Lock()
	had := n.etcd
	n.etcd = true
	n.mu.Unlock()
	if had {
		tb.Fatalf("fleettest: the net already runs an etcd: one StartEtcd or StartCluster a Net")
	}
	o := options{heartbeat: 20 * time.Millisecond, election: 200 * time.Millisecond}
	for _, opt := range opts {
		opt(&o)
	}
	dir := tb.TempDir()
	c := &Cluster{}
	var initial []string
	for i := range size {
		e := &Etcd{tb: tb, net: n, Name: fmt.Sprintf("m%d", i), Addr: n.hubAddr(tb, i)}
		e.Dir = filepath.Join(dir, e.Name)
		e.Log = filepath.Join(dir, e.Name+".log")
		initial = append(initial, e.Name+"="+e.peerURL())
		c.members = append(c.members, e)
	}
	for _, e := range c.members {
		e.args = append([]string{
			"--name=" + e.Name,
			"--data-dir=" + e.Dir,
			"--listen-client-urls=" + e.ClientURL(),
			"--advertise-client-urls=" + e.ClientURL(),
			"--listen-peer-urls=" + e.peerURL(),
			"--initial-advertise-peer-urls=" + e.peerURL(),
			"--initial-cluster=" + strings.Join(initial, ","),
			"--initial-cluster-state=new",
			"--initial-cluster-token=fleettest",
			"--heartbeat-interval=" + strconv.FormatInt(o.heartbeat.Milliseconds(), 10),
			"--election-timeout=" + strconv.FormatInt(o.election.Milliseconds(), 10),
			"--logger=zap",
			"--log-outputs=stderr",
		}, o.args...)
		tb.Cleanup(func() {
			e.kill()
			if tb.Failed() {
				e.dumpLog()
			}
		})
	}
	for _, e := range c.members {
		e.start()
	}
	for _, e := range c.members {
		e.waitReady()
	}
	return c
}

// Member returns member i.
func (c *Cluster) Member(i int) *Etcd { return c.members[i] }

// Members returns every member.
func (c *Cluster) Members() []*Etcd { return append([]*Etcd(nil), c.members...) }

// Endpoints returns every member's client URL.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, e := range c.members {
		eps = append(eps, e.ClientURL())
	}
	return eps
}

// WaitHealthy waits until every running member answers its health check,
// which in etcd 3.4 means it knows a leader and a read went through raft.
// After a leader is killed, a write sent before the others have elected
// another can wait out etcd's request timeout (seconds) instead of failing
// over; a test that kills the leader waits for this first.
func (c *Cluster) WaitHealthy() {
	for _, e := range c.members {
		if e.Running() {
			e.tb.Helper()
			e.waitReady()
		}
	}
}

// Leader returns the running member that says it is the leader, or nil
// when none does (as while the others elect a new one).
func (c *Cluster) Leader() *Etcd {
	for _, e := range c.members {
		if !e.Running() {
			continue
		}
		st, err := e.status()
		if err == nil && st.Header.MemberID != "" && st.Header.MemberID == st.Leader {
			return e
		}
	}
	return nil
}

// memberStatus is the part of etcd's maintenance status (its JSON gateway,
// which writes 64-bit numbers as strings) that Leader reads.
type memberStatus struct {
	Header struct {
		MemberID string `json:"member_id"`
	} `json:"header"`
	Leader string `json:"leader"`
}

func (e *Etcd) status() (memberStatus, error) {
	var st memberStatus
	client := &http.Client{Transport: &http.Transport{DialContext: e.net.Hub.DialContext}, Timeout: time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Post(e.ClientURL()+"/v3/maintenance/status", "application/json", strings.NewReader("{}"))
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status: %s", resp.Status)
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&st)
	return st, err
}

// ClientURL is the member's client URL, http://ADDR:2379.
func (e *Etcd) ClientURL() string {
	return "http://" + netip.AddrPortFrom(e.Addr, ClientPort).String()
}

func (e *Etcd) peerURL() string {
	return "http://" + netip.AddrPortFrom(e.Addr, PeerPort).String()
}

// Endpoints returns the member's client URL, for clientv3.Config.
func (e *Etcd) Endpoints() []string { return []string{e.ClientURL()} }

// Start starts the member again on its data dir and waits until it
// answers (for a cluster's member: once it has a leader).
func (e *Etcd) Start() {
	e.tb.Helper()
	e.start()
	e.waitReady()
}

// Stop sends the member SIGTERM and waits for it to exit (killing it if it
// has not after a while).
func (e *Etcd) Stop() {
	e.tb.Helper()
	e.signal(syscall.SIGTERM)
	if !e.wait(stopTimeout) {
		e.tb.Errorf("fleettest: etcd %s did not stop on SIGTERM within %v; killing it", e.Name, stopTimeout)
		e.kill()
	}
}

// Kill sends the member SIGKILL and waits for it to exit.
func (e *Etcd) Kill() {
	e.tb.Helper()
	e.kill()
}

// Running tells whether the member's process is running.
func (e *Etcd) Running() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.done == nil {
		return false
	}
	select {
	case <-e.done:
		return false
	default:
		return true
	}
}

// Pid returns the member's process id, or 0 when none has been started.
func (e *Etcd) Pid() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc == nil {
		return 0
	}
	return e.proc.Pid
}

func (e *Etcd) start() {
	e.tb.Helper()
	if e.Running() {
		e.tb.Fatalf("fleettest: etcd %s is already running", e.Name)
	}
	log, err := os.OpenFile(e.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		e.tb.Fatalf("fleettest: etcd %s: %v", e.Name, err)
	}
	defer log.Close()
	fmt.Fprintf(log, "=== fleettest: %s %s\n", EtcdPath, strings.Join(e.args, " "))
	cmd := exec.Command(EtcdPath, e.args...)
	cmd.Env = etcdEnv()
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, so that a signal reaches only it; SIGKILL
	// when the hub's launching thread ends, which happens only with the
	// Net or the test's process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := e.net.onHub(cmd.Start); err != nil {
		e.tb.Fatalf("fleettest: start etcd %s: %v", e.Name, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	e.mu.Lock()
	e.proc, e.done = cmd.Process, done
	e.mu.Unlock()
}

// etcdEnv is etcd's environment: none of the caller's ETCD_ variables,
// which etcd would read as flags.
func etcdEnv() []string {
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if runtime.GOARCH != "amd64" {
		// etcd 3.4 refuses other architectures unless told they are meant.
		env = append(env, "ETCD_UNSUPPORTED_ARCH="+runtime.GOARCH)
	}
	return env
}

// waitReady waits until the member's /health says true, asked from inside
// the hub.
func (e *Etcd) waitReady() {
	e.tb.Helper()
	client := &http.Client{Transport: &http.Transport{DialContext: e.net.Hub.DialContext}, Timeout: time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		if !e.Running() {
			e.tb.Fatalf("fleettest: etcd %s exited before it answered (log in %s):\n%s", e.Name, e.Log, e.tail())
		}
		if last = health(client, e.ClientURL()); last == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.tb.Fatalf("fleettest: etcd %s did not answer within %v: %v (log in %s):\n%s", e.Name, readyTimeout, last, e.Log, e.tail())
}

func health(client *http.Client, url string) error {
	resp, err := client.Get(url + "/health")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
		return fmt.Errorf("health: %s: %s", resp.Status, body)
	}
	return nil
}

// signal sends sig to the member's process group, if it runs.
func (e *Etcd) signal(sig syscall.Signal) {
	if !e.Running() {
		return
	}
	e.mu.Lock()
	pid := e.proc.Pid
	e.mu.Unlock()
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		e.tb.Errorf("fleettest: signal etcd %s (pid %d): %v", e.Name, pid, err)
	}
}

// wait waits up to d for the member's process to exit.
func (e *Etcd) wait(d time.Duration) bool {
	e.mu.Lock()
	done := e.done
	e.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

func (e *Etcd) kill() {
	e.signal(syscall.SIGKILL)
	e.wait(stopTimeout)
}

// tail is the end of the member's log.
func (e *Etcd) tail() string {
	const max = 16 << 10
	b, err := os.ReadFile(e.Log)
	if err != nil {
		return err.Error()
	}
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

func (e *Etcd) dumpLog() {
	e.tb.Logf("fleettest: etcd %s's log (%s):\n%s", e.Name, e.Log, e.tail())
}

// Dialer returns a gRPC dialer that connects from inside the node, for
// clientv3.Config.DialOptions.
func (node *Node) Dialer() grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		if _, hostport, ok := strings.Cut(addr, "://"); ok {
			addr = hostport
		}
		return node.NS.Dial(ctx, &net.Dialer{}, "tcp", addr)
	})
}

// EtcdConfig returns an etcd client's configuration for endpoints whose
// connections are made inside the node, and are made again soon after a
// member comes back (gRPC's default backoff waits a second and more).
func (node *Node) EtcdConfig(endpoints []string) clientv3.Config {
	return clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{
			node.Dialer(),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff: backoff.Config{
					BaseDelay:  50 * time.Millisecond,
					Multiplier: 1.6,
					Jitter:     0.2,
					MaxDelay:   500 * time.Millisecond,
				},
				MinConnectTimeout: time.Second,
			}),
		},
		Logger: zap.NewNop(),
	}
}

// EtcdClient returns a client of EtcdConfig, closed when the test ends.
func (node *Node) EtcdClient(tb testing.TB, endpoints []string) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(node.EtcdConfig(endpoints))
	if err != nil {
		tb.Fatalf("fleettest: etcd client on %s: %v", node.Name, err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}
