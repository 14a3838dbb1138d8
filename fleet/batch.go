package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/edgeproxy/edgeproxy/bindings"
)

// A change larger than one etcd transaction (a batch of many bindings) is
// written so that every node still applies it as one step:
//
//  1. staged: its records in chunks under staging/<id>/, which no node
//     follows;
//  2. committed: one transaction, conditional on what the change's
//     validation read (as every change), puts the marker
//     state/batches/<id>. A node that sees the marker reads the staged
//     chunks at the marker's revision and applies them all at that
//     revision;
//  3. materialized: the writer then copies each record to its own key
//     (only where that key is still absent: a later change wins) and
//     deletes the marker and the chunks. Nodes see those puts as changes
//     to what they hold already: nothing to do.
//
// A resync reads the markers still there with their chunks.

// Limits of one transaction: etcd's defaults are 128 operations and a
// request of 1.5 MiB.
const (
	maxTxnBytes = 1 << 20
	// chunkRecords is how many records a staged chunk holds, and
	// chunksPerTxn how many chunks one staging transaction writes.
	chunkRecords = 1000
	chunksPerTxn = 4
	// perTxn is how many records one materializing transaction copies.
	perTxn = 100
)

// batchPrefix is the state key prefix of the markers.
const batchPrefix = "batches/"

// size is roughly how many bytes m's records take in a request.
func size(m bindings.Mutation) int {
	n := 0
	for _, rs := range [][]bindings.Record{m.Create, m.Update} {
		for _, r := range rs {
			n += len(r.Key) + len(r.Value) + 64
		}
	}
	return n + 64*len(m.Delete)
}

// marker is a committed batch's marker.
type marker struct {
	Chunks int    `json:"chunks"`
	Count  int    `json:"count"`
	Node   string `json:"node"`
}

// stagedRecord is a record as a chunk holds it.
type stagedRecord struct {
	Key   string          `json:"k"`
	Value json.RawMessage `json:"v"`
}

func (n *Node) writeBatch(ctx context.Context, basedOn int64, mut bindings.Mutation) (int64, error) {
	if len(mut.Update)+len(mut.Delete) > 0 {
		return 0, &bindings.Error{Kind: bindings.KindInvalid, Reason: "a change beyond one transaction may only create items (a batch)"}
	}
	id := fmt.Sprintf("%020d-%s", time.Now().UnixNano(), n.opts.Node)
	staging := n.key("staging/" + id + "/")
	// 1. Stage the chunks.
	var chunks []clientv3.Op
	for i := 0; i < len(mut.Create); i += chunkRecords {
		part := mut.Create[i:min(i+chunkRecords, len(mut.Create))]
		recs := make([]stagedRecord, len(part))
		for j, r := range part {
			recs[j] = stagedRecord{Key: r.Key, Value: r.Value}
		}
		b, _ := json.Marshal(recs)
		chunks = append(chunks, clientv3.OpPut(fmt.Sprintf("%s%08d", staging, len(chunks)), string(b)))
	}
	wctx, cancel := context.WithTimeout(ctx, n.opts.DialTimeout+time.Duration(len(chunks))*100*time.Millisecond)
	defer cancel()
	for i := 0; i < len(chunks); i += chunksPerTxn {
		if _, err := n.cli.Txn(wctx).Then(chunks[i:min(i+chunksPerTxn, len(chunks))]...).Commit(); err != nil {
			n.dropStaging(staging)
			return 0, unavailable("the fleet's store did not take the batch's chunks (%v): nothing was applied", err)
		}
	}
	// 2. Commit: the marker, if nothing the validation read changed.
	mk, _ := json.Marshal(marker{Chunks: len(chunks), Count: len(mut.Create), Node: n.opts.Node})
	ops := append([]clientv3.Op{clientv3.OpPut(n.stateKeys()+batchPrefix+id, string(mk))}, n.changeOps(mut.Audit)...)
	resp, err := n.cli.Txn(wctx).If(n.unchangedSince(mut.Depends, basedOn)...).Then(ops...).Else(clientv3.OpGet(n.key("meta/last-change"))).Commit()
	if err != nil {
		return 0, unavailable("the fleet's store did not answer the batch's commit (%v): it may or may not have been made; GET /v1/audit says what happened", err)
	}
	if !resp.Succeeded {
		n.dropStaging(staging)
		return 0, &bindings.StaleError{Revision: lastChange(resp)}
	}
	rev := resp.Header.Revision
	// 3. Materialize, in the background.
	go n.materialize(id, mut.Create)
	n.afterWrite(rev)
	return rev, nil
}

func (n *Node) dropStaging(staging string) {
	ctx, cancel := context.WithTimeout(n.ctx, n.opts.DialTimeout)
	defer cancel()
	n.cli.Delete(ctx, staging, clientv3.WithPrefix())
}

// materialize copies a committed batch's records to their own keys, where
// absent, then removes the marker and the chunks.
func (n *Node) materialize(id string, recs []bindings.Record) {
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Minute)
	defer cancel()
	for i := 0; i < len(recs); i += perTxn {
		part := recs[i:min(i+perTxn, len(recs))]
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, r := range part {
			cmps = append(cmps, clientv3.Compare(clientv3.Version(n.stateKeys()+r.Key), "=", 0))
			ops = append(ops, clientv3.OpPut(n.stateKeys()+r.Key, string(r.Value)))
		}
		resp, err := n.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			n.log.Warn("a batch stays staged: its marker keeps it applied, a later writer's resync reads it", "batch", id, "error", err)
			return
		}
		if !resp.Succeeded {
			// Some key was written since: copy the others one by one.
			for _, r := range part {
				n.cli.Txn(ctx).If(clientv3.Compare(clientv3.Version(n.stateKeys()+r.Key), "=", 0)).
					Then(clientv3.OpPut(n.stateKeys()+r.Key, string(r.Value))).Commit()
			}
		}
	}
	n.cli.Txn(ctx).Then(clientv3.OpDelete(n.stateKeys()+batchPrefix+id), clientv3.OpDelete(n.key("staging/"+id+"/"), clientv3.WithPrefix())).Commit()
}

// expandBatch returns the events of the batch whose marker is key: the
// staged records, read at revision rev.
func (n *Node) expandBatch(ctx context.Context, key string, rev int64) ([]bindings.Event, error) {
	id := strings.TrimPrefix(key, batchPrefix)
	resp, err := n.cli.Get(ctx, n.key("staging/"+id+"/"), clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return nil, err
	}
	var evs []bindings.Event
	for _, kv := range resp.Kvs {
		var recs []stagedRecord
		if err := json.Unmarshal(kv.Value, &recs); err != nil {
			return nil, fmt.Errorf("batch %s: chunk %s: %v", id, kv.Key, err)
		}
		for _, r := range recs {
			evs = append(evs, bindings.Event{Key: r.Key, Value: r.Value})
		}
	}
	return evs, nil
}

// expand replaces the batch markers among evs with their records; a
// marker's deletion is nothing to apply (its records have their own keys
// by then).
func (n *Node) expand(ctx context.Context, evs []bindings.Event, rev int64) ([]bindings.Event, error) {
	out := evs[:0:0]
	for _, ev := range evs {
		if !strings.HasPrefix(ev.Key, batchPrefix) {
			out = append(out, ev)
			continue
		}
		if ev.Value == nil {
			continue
		}
		recs, err := n.expandBatch(ctx, ev.Key, rev)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	return out, nil
}
