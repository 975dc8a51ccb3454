package node

import (
	"context"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/signpost"
)

// serverFetch is the server fetcher's attempt at ref: fetch it if not held,
// then take the shares of the devices that hold it. An attempt that could
// not ask every such device fails, to be retried after the backoff.
func (n *Node) serverFetch(ctx context.Context, ref syncnode.BlobRef) error {
	tr := &attemptTrace{}
	err := n.serverAttempt(withTrace(ctx, tr), ref)
	e := journalEntry{LastAttempt: n.clock.Now().UnixNano(), Tried: peerStrings(tr.tried),
		Holders: peerStrings(tr.holders), Done: err == nil}
	if err != nil {
		e.LastErr = err.Error()
	}
	if ctx.Err() == nil {
		n.writeJournal(ref, e)
	}
	return err
}

func (n *Node) serverAttempt(ctx context.Context, ref syncnode.BlobRef) error {
	if _, err := n.fetch(ctx, ref, PriorityBackground, nil, nil); err != nil {
		return err
	}
	return n.takeShares(ctx, ref, nil)
}

// scan queues every blob whose signpost names a group where this node is a
// server and that this node lacks: the safety net behind the queueing done
// as rows arrive.
func (n *Node) scan(ctx context.Context) error {
	var want []syncnode.BlobRef
	err := n.signposts.Scan(func(ref syncnode.BlobRef, sp signpost.Signpost) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if n.isServerIn(sp.Groups()) && !n.holds(ref) {
			want = append(want, ref)
		}
		return nil
	})
	for _, ref := range want {
		n.fetcher.Enqueue(ref)
	}
	if n.cfg.BlobBudget > 0 {
		if _, err := n.Evict(); err != nil {
			n.log.Error("eviction pass failed", "err", err)
		}
	}
	return err
}
