package node

import (
	"context"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/shares"
)

// takes gathers the share takes this node asks of each peer, so that the
// takes of many blobs from one holder travel together: while one batch is
// on its way, the next gathers, and each goes in three requests (challenge,
// offer, settle) whatever its size, instead of three per blob. A server
// catching up on a device's blobs asks for their shares in batches.
type takes struct {
	n *Node

	mu sync.Mutex
	// queued holds, for each peer with a batch on its way, the takes
	// waiting for its next one.
	queued map[peer.ID][]*take
}

// take is one blob's shares in one group, waiting for its batch.
type take struct {
	item shares.Item
	done chan takeResult
}

type takeResult struct {
	res shares.Result
	err error
}

// Take asks p for its shares of ref in group g, in p's next batch, and
// returns what came of it. The batch runs on even if ctx ends first: the
// shares it moves are accepted here all the same.
func (t *takes) Take(ctx context.Context, p peer.ID, ref syncnode.BlobRef, g syncnode.GroupID) (shares.Result, error) {
	tk := &take{item: shares.Item{Ref: ref, Group: g}, done: make(chan takeResult, 1)}
	t.mu.Lock()
	if t.queued == nil {
		t.queued = map[peer.ID][]*take{}
	}
	q, running := t.queued[p]
	t.queued[p] = append(q, tk)
	t.mu.Unlock()
	if !running {
		t.n.goRun(func() { t.drain(p) })
	}
	select {
	case r := <-tk.done:
		return r.res, r.err
	case <-ctx.Done():
		return shares.Result{}, ctx.Err()
	case <-t.n.ctx.Done():
		return shares.Result{}, t.n.ctx.Err()
	}
}

// drain sends p's queued takes in batches until none are left.
func (t *takes) drain(p peer.ID) {
	for {
		t.mu.Lock()
		batch := t.queued[p]
		if len(batch) > shares.MaxBatch {
			batch = batch[:shares.MaxBatch]
		}
		t.queued[p] = t.queued[p][len(batch):]
		if len(batch) == 0 {
			delete(t.queued, p)
			t.mu.Unlock()
			return
		}
		t.mu.Unlock()
		items := make([]shares.Item, len(batch))
		for i, tk := range batch {
			items[i] = tk.item
		}
		res, errs := t.n.shares.TakeAll(t.n.ctx, p, items)
		for i, tk := range batch {
			tk.done <- takeResult{res[i], errs[i]}
		}
	}
}
