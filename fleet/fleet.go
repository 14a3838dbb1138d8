// Package fleet makes a node one of a fleet whose API-made prefixes and
// bindings live in etcd. The node writes the API's changes there, each in
// one transaction conditional on the keys its validation read; it watches
// the state's keys from the revision it applied and runs every change
// through the same bindings.Manager as the API; it reports what it holds in
// its own leased node key, and it computes a change's provisioning from the
// node keys of the fleet.
//
// Keys under the fleet's prefix (store.etcd.prefix):
//
//	state/prefixes/<id>, state/bindings/<prefix id>/<id>   the items (bindings/records.go's layout)
//	nodes/<node>                                          a node's report, on its lease
//	meta/last-change                                      put by every change: its revision is the state's
//	audit/<unix nanoseconds>-<node>                       an applied change's audit entry
//
// etcd unreachable, the node serves the last state it applied (its own
// store keeps it across restarts), says it is stale, and catches up from
// its revision when etcd is back: by the watch, or by a full resync when
// that revision was compacted.
package fleet

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// Options configure a node of a fleet.
type Options struct {
	Node      string
	Labels    map[string]string
	Endpoints []string
	Prefix    string // ends with "/"
	// DialTimeout bounds connecting and each write.
	DialTimeout time.Duration
	// NodeTTL is the node key's lease.
	NodeTTL  time.Duration
	TLS      *tls.Config
	Username string
	Password string
	// Version is the binary's, reported in the node key.
	Version string
	// AuditRetention bounds the fleet's audit log, in entries.
	AuditRetention int
	Manager        *bindings.Manager
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
	// DialOptions are more options of the client's connections (a test's
	// dialer inside a namespace).
	DialOptions []grpc.DialOption
}

// Probe timing: staleness is found by a bounded read made every second.
const (
	probeEvery   = time.Second
	probeTimeout = time.Second
	// maxBackoff caps the client's reconnect backoff, so that a returning
	// etcd is found quickly.
	maxBackoff = 500 * time.Millisecond
	// history is how many revisions of etcd's history the fleet keeps:
	// a node further behind resyncs in full.
	history = 10000
	// maxRefusals bounds the refusals a node key reports.
	maxRefusals = 32
	// maxAuditAge bounds the audit log's age.
	maxAuditAge = 30 * 24 * time.Hour
)

// Node is this process as a node of the fleet.
type Node struct {
	opts Options
	cli  *clientv3.Client
	m    *bindings.Manager
	log  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	report chan struct{} // wakes the reporter

	mu         sync.Mutex // guards the fields below
	stale      bool
	returnedAt time.Time // when etcd last came back
	lease      clientv3.LeaseID
	refusals   []Refusal
	lastError  string
	nodes      map[string]*member // the fleet's node keys, as last read
	lastChange int64              // the state's revision, as last read
	writes     int
	epoch      int // grows when the node key must be written again

	metrics metrics
}

// Refusal is a change a node refused: its revision and why.
type Refusal struct {
	Revision int64  `json:"revision"`
	Error    string `json:"error"`
}

// report is a node key's value.
type report struct {
	V         int               `json:"v"`
	ID        string            `json:"id"`
	Labels    map[string]string `json:"labels"`
	Revision  int64             `json:"revision"`
	Refused   []Refusal         `json:"refused"`
	Error     string            `json:"error,omitempty"`
	Version   string            `json:"version,omitempty"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// member is a node of the fleet as this node sees it.
type member struct {
	report
	live bool
	// until is when a node not seen since an outage stops counting:
	// zero while its key is there.
	until time.Time
}

// Start connects to etcd, registers the node (within the dial timeout:
// when etcd cannot be reached the node starts stale and registers once it
// can), and starts following the fleet's state from the manager's
// revision. The manager's API changes go to the fleet from now on.
func Start(opts Options) (*Node, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            opts.Endpoints,
		DialTimeout:          opts.DialTimeout,
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: opts.DialTimeout,
		TLS:                  opts.TLS,
		Username:             opts.Username,
		Password:             opts.Password,
		Logger:               zap.NewNop(),
		DialOptions: append([]grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxBackoff},
			MinConnectTimeout: opts.DialTimeout,
		})}, opts.DialOptions...),
		BackoffWaitBetween: 50 * time.Millisecond,
	})
	if err != nil {
		return nil, fmt.Errorf("store.etcd: %w", err)
	}
	n := &Node{opts: opts, cli: cli, m: opts.Manager, log: opts.Logger, report: make(chan struct{}, 1), nodes: map[string]*member{}}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.metrics = newMetrics(n)
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(n.metrics); err != nil {
			cli.Close()
			return nil, err
		}
	}
	// Register at once when etcd answers, so that the node is listed
	// live before it is ready.
	ctx, cancel := context.WithTimeout(n.ctx, opts.DialTimeout)
	if err := n.register(ctx); err != nil {
		n.setStale(true)
		n.log.Warn("the fleet's store cannot be reached: serving the last applied state", "endpoints", opts.Endpoints, "error", err)
	}
	cancel()
	n.m.SetFleet(n, n.wake)
	n.wg.Add(4)
	go n.follow()
	go n.followNodes()
	go n.reporter()
	go n.prober()
	return n, nil
}

// Close stops following and closes the connection. With leave, it revokes
// the node's lease first: the fleet stops counting the node at once.
func (n *Node) Close(leave bool) error {
	n.cancel()
	n.wg.Wait()
	n.mu.Lock()
	lease := n.lease
	n.mu.Unlock()
	if lease != 0 && leave {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		n.cli.Revoke(ctx, lease)
		cancel()
	}
	return n.cli.Close()
}

func (n *Node) key(k string) string { return n.opts.Prefix + k }

// stateKeys is the prefix of the items' keys.
func (n *Node) stateKeys() string { return n.key("state/") }

// Write commits mut, validated against the state at revision basedOn, in
// one transaction that succeeds only if none of the keys it depended on
// changed since, no key it creates exists and every key it updates or
// deletes does.
func (n *Node) Write(ctx context.Context, basedOn int64, mut bindings.Mutation) (int64, error) {
	if n.isStale() {
		return 0, unavailable("the fleet's store (%s) cannot be reached: changes are refused until it can; this node serves its last applied state", strings.Join(n.opts.Endpoints, ", "))
	}
	cmps := n.unchangedSince(mut.Depends, basedOn)
	var ops []clientv3.Op
	for _, r := range mut.Create {
		cmps = append(cmps, clientv3.Compare(clientv3.Version(n.stateKeys()+r.Key), "=", 0))
		ops = append(ops, clientv3.OpPut(n.stateKeys()+r.Key, string(r.Value)))
	}
	for _, r := range mut.Update {
		cmps = append(cmps, clientv3.Compare(clientv3.Version(n.stateKeys()+r.Key), ">", 0))
		ops = append(ops, clientv3.OpPut(n.stateKeys()+r.Key, string(r.Value)))
	}
	for _, k := range mut.Delete {
		cmps = append(cmps, clientv3.Compare(clientv3.Version(n.stateKeys()+k), ">", 0))
		ops = append(ops, clientv3.OpDelete(n.stateKeys()+k))
	}
	ops = append(ops, n.changeOps(mut.Audit)...)
	if len(ops) > maxTxnOps || len(cmps) > maxTxnOps || size(mut) > maxTxnBytes {
		// Beyond one transaction's limits: staged, then committed by one
		// marker (batch.go).
		return n.writeBatch(ctx, basedOn, mut)
	}
	ctx, cancel := context.WithTimeout(ctx, n.opts.DialTimeout)
	defer cancel()
	resp, err := n.cli.Txn(ctx).If(cmps...).Then(ops...).Else(clientv3.OpGet(n.key("meta/last-change"))).Commit()
	if err != nil {
		return 0, unavailable("the fleet's store did not answer (%v): the change may or may not have been made; GET /v1/audit says what happened", err)
	}
	if !resp.Succeeded {
		// Something it read changed: catch up to the state's last change
		// and validate again.
		return 0, &bindings.StaleError{Revision: lastChange(resp)}
	}
	rev := resp.Header.Revision
	n.afterWrite(rev)
	return rev, nil
}

// unchangedSince returns the comparisons that hold while no key under
// depends (a key, or a prefix ending with "/") changed after revision rev.
func (n *Node) unchangedSince(depends []string, rev int64) []clientv3.Cmp {
	cmps := make([]clientv3.Cmp, 0, len(depends))
	for _, d := range depends {
		c := clientv3.Compare(clientv3.ModRevision(n.stateKeys()+d), "<", rev+1)
		if strings.HasSuffix(d, "/") {
			c = c.WithPrefix()
		}
		cmps = append(cmps, c)
	}
	return cmps
}

// changeOps are what every change puts beside its items: the last-change
// key, and its audit entry (when it has one).
func (n *Node) changeOps(audit *bindings.AuditEntry) []clientv3.Op {
	ops := []clientv3.Op{clientv3.OpPut(n.key("meta/last-change"), n.opts.Node)}
	if audit != nil {
		a := *audit
		a.Node = n.opts.Node
		b, _ := json.Marshal(a)
		ops = append(ops, clientv3.OpPut(n.key(fmt.Sprintf("audit/%020d-%s", time.Now().UnixNano(), n.opts.Node)), string(b)))
	}
	return ops
}

// Latest returns the revision of the state's last change: a linearizable
// read.
func (n *Node) Latest(ctx context.Context) (int64, error) {
	resp, err := n.cli.Get(ctx, n.key("meta/last-change"))
	if err != nil {
		return 0, err
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	return resp.Kvs[0].ModRevision, nil
}

// lastChange reads the revision of the state's last change from a refused
// transaction's answer (its Else branch reads meta/last-change).
func lastChange(resp *clientv3.TxnResponse) int64 {
	for _, r := range resp.Responses {
		if rr := r.GetResponseRange(); rr != nil && len(rr.Kvs) > 0 {
			return rr.Kvs[0].ModRevision
		}
	}
	return 0
}

// maxTxnOps is etcd's default limit of operations in a transaction.
const maxTxnOps = 128

// afterWrite keeps etcd's history and the audit log bounded, now and then.
func (n *Node) afterWrite(rev int64) {
	n.mu.Lock()
	n.writes++
	due := n.writes%100 == 0
	n.mu.Unlock()
	if !due {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		defer cancel()
		if rev > history {
			if _, err := n.cli.Compact(ctx, rev-history); err != nil && !strings.Contains(err.Error(), "compacted") {
				n.log.Warn("compact etcd's history", "revision", rev-history, "error", err)
			}
		}
		n.trimAudit(ctx)
	}()
}

// trimAudit deletes the audit entries older than maxAuditAge and those
// beyond the retention.
func (n *Node) trimAudit(ctx context.Context) {
	old := n.key(fmt.Sprintf("audit/%020d", time.Now().Add(-maxAuditAge).UnixNano()))
	n.cli.Delete(ctx, n.key("audit/"), clientv3.WithRange(old))
	keep := n.opts.AuditRetention
	if keep <= 0 {
		keep = 100000
	}
	resp, err := n.cli.Get(ctx, n.key("audit/"), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count <= int64(keep) {
		return
	}
	over := resp.Count - int64(keep)
	first, err := n.cli.Get(ctx, n.key("audit/"), clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(over+1))
	if err != nil || len(first.Kvs) == 0 {
		return
	}
	end := first.Kvs[len(first.Kvs)-1].Key
	n.cli.Delete(ctx, n.key("audit/"), clientv3.WithRange(string(end)))
}

// Audit returns the fleet's audit entries after revision since, oldest
// first, at most limit.
func (n *Node) Audit(ctx context.Context, since int64, limit int) ([]bindings.AuditEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, n.opts.DialTimeout)
	defer cancel()
	resp, err := n.cli.Get(ctx, n.key("audit/"), clientv3.WithPrefix(), clientv3.WithMinModRev(since+1),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortAscend), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return nil, unavailable("the fleet's store did not answer: %v", err)
	}
	out := make([]bindings.AuditEntry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var e bindings.AuditEntry
		if json.Unmarshal(kv.Value, &e) != nil {
			continue
		}
		e.Revision = kv.ModRevision
		out = append(out, e)
	}
	return out, nil
}

func unavailable(format string, args ...any) error {
	return &bindings.Error{Kind: bindings.KindUnavailable, Reason: fmt.Sprintf(format, args...)}
}

// Provisioning says how far the change of key at revision rev has reached:
// active once every live node holds it, failed when one refused it.
func (n *Node) Provisioning(key string, rev int64, scope map[string]string) bindings.Provisioning {
	p := bindings.Provisioning{Revision: rev, NodesFailed: []string{}}
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	for _, id := range slices.Sorted(maps.Keys(n.nodes)) {
		mb := n.nodes[id]
		if !mb.counts(now) || !bindings.Selects(scope, mb.Labels) {
			continue
		}
		p.NodesTotal++
		switch {
		case mb.refused(rev):
			p.NodesFailed = append(p.NodesFailed, id)
			if p.Errors == nil {
				p.Errors = map[string]string{}
			}
			p.Errors[id] = mb.refusal(rev)
		case mb.Revision >= rev:
			p.NodesApplied++
		}
	}
	switch {
	case len(p.NodesFailed) > 0:
		p.State = bindings.Failed
	case p.NodesTotal > 0 && p.NodesApplied == p.NodesTotal:
		p.State = bindings.Active
	default:
		p.State = bindings.Pending
	}
	return p
}

// counts reports whether the member counts in a change's nodes_total now.
func (mb *member) counts(now time.Time) bool {
	return mb.live || now.Before(mb.until)
}

func (mb *member) refused(rev int64) bool { return mb.refusal(rev) != "" }

func (mb *member) refusal(rev int64) string {
	for _, r := range mb.Refused {
		if r.Revision == rev {
			return r.Error
		}
	}
	return ""
}

// NodeStatus is a node of the fleet as GET /v1/nodes lists it.
type NodeStatus struct {
	ID        string            `json:"id"`
	Labels    map[string]string `json:"labels"`
	Live      bool              `json:"live"`
	Revision  int64             `json:"revision"`
	State     string            `json:"state"` // in_sync, behind, failed, stale
	Error     string            `json:"error"`
	Version   string            `json:"version,omitempty"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// Nodes lists the fleet's nodes as last read, by id. While this node is
// stale every node's state is "stale": it cannot know better.
func (n *Node) Nodes() []NodeStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	out := []NodeStatus{}
	for _, id := range slices.Sorted(maps.Keys(n.nodes)) {
		mb := n.nodes[id]
		if !mb.counts(now) {
			continue
		}
		s := NodeStatus{ID: id, Labels: mb.Labels, Live: mb.live, Revision: mb.Revision, Error: mb.Error, Version: mb.Version, UpdatedAt: mb.UpdatedAt}
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		switch {
		case n.stale:
			s.State = "stale"
		case mb.Error != "":
			s.State = "failed"
		case mb.Revision >= n.lastChange:
			s.State = "in_sync"
		default:
			s.State = "behind"
		}
		out = append(out, s)
	}
	return out
}

// Summary is GET /v1/fleet: the store's revision and the nodes' states.
type Summary struct {
	Node      string         `json:"node"`
	Endpoints []string       `json:"endpoints"`
	Revision  int64          `json:"revision"` // of the state's last change
	Applied   int64          `json:"applied"`  // this node's
	Stale     bool           `json:"stale"`
	Nodes     int            `json:"nodes"`
	States    map[string]int `json:"states"`
}

// Summary returns the fleet's summary as this node sees it.
func (n *Node) Summary() Summary {
	nodes := n.Nodes()
	s := Summary{Node: n.opts.Node, Endpoints: n.opts.Endpoints, Applied: n.m.Revision(), Nodes: len(nodes), States: map[string]int{}}
	for _, st := range nodes {
		s.States[st.State]++
	}
	n.mu.Lock()
	s.Revision, s.Stale = n.lastChange, n.stale
	n.mu.Unlock()
	return s
}

func (n *Node) isStale() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stale
}

// setStale records whether etcd answers; a return wakes the reporter so
// that the node key is written again at once.
func (n *Node) setStale(stale bool) {
	n.mu.Lock()
	was := n.stale
	n.stale = stale
	if !stale && was {
		n.returnedAt = time.Now()
		// Nodes whose keys went while etcd was away still count for a
		// lease's time, until they are back.
		until := n.returnedAt.Add(n.opts.NodeTTL)
		for _, mb := range n.nodes {
			if !mb.live && mb.until.After(n.returnedAt) {
				mb.until = until
			}
		}
	}
	n.mu.Unlock()
	if stale != was {
		if stale {
			n.log.Warn("the fleet's store stopped answering: serving the last applied state", "revision", n.m.Revision())
		} else {
			n.log.Info("the fleet's store answers again", "revision", n.m.Revision())
		}
		n.wake()
	}
}

// wake asks the reporter to write the node key.
func (n *Node) wake() {
	select {
	case n.report <- struct{}{}:
	default:
	}
}

// sortedRefusals returns at most maxRefusals refusals, newest last.
func sortedRefusals(rs []Refusal) []Refusal {
	slices.SortFunc(rs, func(a, b Refusal) int { return cmp.Compare(a.Revision, b.Revision) })
	if len(rs) > maxRefusals {
		rs = rs[len(rs)-maxRefusals:]
	}
	return rs
}
