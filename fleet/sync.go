package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// follow applies the fleet's changes: a watch of the state's keys from the
// manager's revision, each revision's events as one step; a full resync
// when that revision is compacted (or at the first start, with nothing
// applied yet).
func (n *Node) follow() {
	defer n.wg.Done()
	for n.ctx.Err() == nil {
		from := n.m.Revision()
		if from == 0 {
			if err := n.resync(); err != nil {
				n.pause()
				continue
			}
			from = n.m.Revision()
		}
		err := n.watch(from + 1)
		switch {
		case n.ctx.Err() != nil:
			return
		case errors.Is(err, rpctypes.ErrCompacted):
			n.log.Info("the revision this node holds was compacted: resyncing in full", "revision", from)
			if err := n.resync(); err != nil {
				n.pause()
			}
		case err != nil:
			n.log.Debug("the fleet's watch ended", "error", err)
			n.pause()
		}
	}
}

// pause waits a little before trying again, unless the node closes.
func (n *Node) pause() {
	select {
	case <-n.ctx.Done():
	case <-time.After(100 * time.Millisecond):
	}
}

// resync reads every item and makes them the node's.
func (n *Node) resync() error {
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer cancel()
	resp, err := n.cli.Get(ctx, n.stateKeys(), clientv3.WithPrefix())
	if err != nil {
		return err
	}
	items := make([]bindings.Event, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		items = append(items, bindings.Event{Key: strings.TrimPrefix(string(kv.Key), n.stateKeys()), Value: kv.Value})
	}
	rev := resp.Header.Revision
	if items, err = n.expand(ctx, items, rev); err != nil {
		return err
	}
	n.metrics.resyncs.Inc()
	for {
		err := n.m.Resync(rev, items)
		if isHeld(err) {
			if !n.sleep(50 * time.Millisecond) {
				return n.ctx.Err()
			}
			continue
		}
		n.outcome(rev, err)
		return nil
	}
}

// watch follows the state's keys from revision from until the watch ends.
func (n *Node) watch(from int64) error {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(n.ctx))
	defer cancel()
	// No progress notifications: etcd 3.4 may send one to a watch that
	// is still catching up, ahead of the events it has not delivered.
	// The state's revision moves only with the events themselves.
	ch := n.cli.Watch(ctx, n.stateKeys(), clientv3.WithPrefix(), clientv3.WithRev(from))
	for resp := range ch {
		if resp.CompactRevision != 0 {
			return rpctypes.ErrCompacted
		}
		if err := resp.Err(); err != nil {
			return err
		}
		if resp.IsProgressNotify() {
			continue
		}
		n.applyResponse(resp)
	}
	return errors.New("the watch closed")
}

// applyResponse applies a watch response's events, a revision at a time.
func (n *Node) applyResponse(resp clientv3.WatchResponse) {
	for i := 0; i < len(resp.Events); {
		rev := resp.Events[i].Kv.ModRevision
		var evs []bindings.Event
		for ; i < len(resp.Events) && resp.Events[i].Kv.ModRevision == rev; i++ {
			ev := resp.Events[i]
			e := bindings.Event{Key: strings.TrimPrefix(string(ev.Kv.Key), n.stateKeys())}
			if ev.Type == mvccpb.PUT {
				e.Value = ev.Kv.Value
				if e.Value == nil {
					e.Value = []byte{}
				}
			}
			evs = append(evs, e)
		}
		ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
		evs, err := n.expand(ctx, evs, rev)
		cancel()
		if err != nil {
			n.outcome(rev, fmt.Errorf("read the batch: %w", err))
			n.m.Seen(rev)
			continue
		}
		if len(evs) == 0 {
			n.m.Seen(rev)
			continue
		}
		for {
			err := n.m.ApplyEvents(rev, evs)
			if isHeld(err) {
				if !n.sleep(50 * time.Millisecond) {
					return
				}
				continue
			}
			n.outcome(rev, err)
			break
		}
	}
}

// outcome records a revision applied or refused.
func (n *Node) outcome(rev int64, err error) {
	n.mu.Lock()
	if err != nil {
		n.refusals = sortedRefusals(append(n.refusals, Refusal{Revision: rev, Error: err.Error()}))
		n.lastError = err.Error()
	} else {
		n.lastError = ""
	}
	n.mu.Unlock()
	if err != nil {
		n.metrics.refused.Inc()
		n.log.Error("this node refused a change of the fleet: it does not count as applied here", "revision", rev, "error", err)
	}
	n.wake()
}

func isHeld(err error) bool {
	var be *bindings.Error
	return errors.As(err, &be) && be.Kind == bindings.KindUnavailable
}

// sleep waits d, or returns false when the node closes first.
func (n *Node) sleep(d time.Duration) bool {
	select {
	case <-n.ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// register grants a lease and writes the node key on it.
func (n *Node) register(ctx context.Context) error {
	lease, err := n.cli.Grant(ctx, int64((n.opts.NodeTTL+time.Second-1)/time.Second))
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.lease = lease.ID
	n.mu.Unlock()
	if err := n.put(ctx); err != nil {
		return err
	}
	ka, err := n.cli.KeepAlive(n.ctx, lease.ID)
	if err != nil {
		return err
	}
	go func() {
		for range ka {
		}
		// The lease is gone (expired while etcd was away, or the node
		// closes): the reporter grants a new one at once.
		n.mu.Lock()
		if n.lease == lease.ID {
			n.lease = 0
		}
		n.mu.Unlock()
		n.wake()
	}()
	return nil
}

// put writes the node key on the current lease.
func (n *Node) put(ctx context.Context) error {
	n.mu.Lock()
	r := report{V: 1, ID: n.opts.Node, Labels: n.opts.Labels, Revision: n.m.Revision(), Refused: append([]Refusal(nil), n.refusals...),
		Error: n.lastError, Version: n.opts.Version, UpdatedAt: time.Now().UTC()}
	lease := n.lease
	n.mu.Unlock()
	if r.Labels == nil {
		r.Labels = map[string]string{}
	}
	if lease == 0 {
		return errors.New("no lease")
	}
	b, _ := json.Marshal(r)
	_, err := n.cli.Put(ctx, n.key("nodes/"+n.opts.Node), string(b), clientv3.WithLease(lease))
	return err
}

// reporter writes the node key whenever what it reports changed, and
// registers again when the lease was lost.
func (n *Node) reporter() {
	defer n.wg.Done()
	var last string
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.report:
		case <-tick.C:
		}
		n.mu.Lock()
		lease, stale := n.lease, n.stale
		sig := fmt.Sprint(n.m.Revision(), len(n.refusals), n.lastError, lease, n.epoch)
		n.mu.Unlock()
		if stale && lease != 0 || sig == last && lease != 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, n.opts.DialTimeout)
		var err error
		if lease == 0 {
			err = n.register(ctx)
			last = ""
		} else if err = n.put(ctx); err == nil {
			last = sig
		}
		cancel()
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			n.mu.Lock()
			n.lease = 0
			n.mu.Unlock()
			n.wake()
		}
	}
}

// prober finds out whether etcd answers: a bounded linearizable read every
// second, not the lease's keep-alive failing.
func (n *Node) prober() {
	defer n.wg.Done()
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(n.ctx, probeTimeout)
		resp, err := n.cli.Get(ctx, n.key("meta/last-change"))
		cancel()
		if n.ctx.Err() != nil {
			return
		}
		n.setStale(err != nil)
		if err == nil {
			n.mu.Lock()
			if len(resp.Kvs) > 0 {
				n.lastChange = resp.Kvs[0].ModRevision
			}
			n.mu.Unlock()
		}
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// followNodes keeps the fleet's node keys: a read, then a watch.
func (n *Node) followNodes() {
	defer n.wg.Done()
	for n.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(n.ctx, n.opts.DialTimeout)
		resp, err := n.cli.Get(ctx, n.key("nodes/"), clientv3.WithPrefix())
		cancel()
		if err != nil {
			n.pause()
			continue
		}
		seen := map[string]bool{}
		for _, kv := range resp.Kvs {
			seen[n.putMember(kv.Value)] = true
		}
		n.mu.Lock()
		for id, mb := range n.nodes {
			if !seen[id] {
				n.goneLocked(mb)
			}
		}
		n.mu.Unlock()
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(n.ctx))
		for wr := range n.cli.Watch(wctx, n.key("nodes/"), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.PUT {
					n.putMember(ev.Kv.Value)
					continue
				}
				id := strings.TrimPrefix(string(ev.Kv.Key), n.key("nodes/"))
				n.mu.Lock()
				if mb := n.nodes[id]; mb != nil {
					n.goneLocked(mb)
				}
				if id == n.opts.Node {
					// Our key went with a lease not ours (the other
					// process of a live upgrade): write it again.
					n.epoch++
				}
				n.mu.Unlock()
				n.wake()
			}
		}
		wcancel()
		n.pause()
	}
}

// putMember records a node key's report and returns its node.
func (n *Node) putMember(val []byte) string {
	var r report
	if json.Unmarshal(val, &r) != nil || r.ID == "" {
		return ""
	}
	n.mu.Lock()
	n.nodes[r.ID] = &member{report: r, live: true}
	n.mu.Unlock()
	return r.ID
}

// goneLocked marks a node whose key went. A key that went while etcd was
// away, or within a lease's time of its return, is a lease that expired
// for the outage: the node still counts until it is back or that time has
// passed, so that no change reads active without it.
func (n *Node) goneLocked(mb *member) {
	if !mb.live {
		return
	}
	mb.live = false
	if n.stale || time.Since(n.returnedAt) < n.opts.NodeTTL {
		mb.until = n.returnedAt.Add(n.opts.NodeTTL)
		if n.stale {
			mb.until = time.Now().Add(24 * time.Hour) // until etcd returns (setStale sets it)
		}
	}
}
