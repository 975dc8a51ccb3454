package node

import (
	"context"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/feed"
	"github.com/syncnode/syncnode/internal/blobproto"
	"github.com/syncnode/syncnode/internal/retrieval"
)

// State is a stage of a blob fetch (see retrieval.State).
type State = retrieval.State

// The stages of a fetch; Failed ends a fetch that did not finish.
const (
	Pending  = retrieval.Pending
	Locating = retrieval.Locating
	Fetching = retrieval.Fetching
	Done     = retrieval.Done
	Failed   = retrieval.Failed
	Waiting  = retrieval.Waiting
)

// Status is a fetch's progress (see retrieval.Status).
type Status = retrieval.Status

// Fetch urgencies: a waiting fetch with a higher urgency starts first.
const (
	UrgencyBackground = retrieval.UrgencyBackground // the server fetcher's
	UrgencyNormal     = retrieval.UrgencyNormal
	UrgencyHigh       = retrieval.UrgencyHigh
)

// FetchOptions modify FetchBlob.
type FetchOptions struct {
	// Urgency orders this fetch among those waiting to start.
	Urgency int
	// Status, if not nil, is called with every change of the fetch's
	// status, one call at a time, ending with Done or Failed.
	Status func(Status)
	// WaitForHolder is how long a fetch whose holders could not be
	// reached (gone, restarting, unreachable; not lying) waits for one to
	// come back: it is Waiting, and tries again whenever a peer connects
	// and every few seconds. Zero fails at once.
	WaitForHolder time.Duration
}

// ErrNoHolder reports a blob that no reachable peer holds.
var ErrNoHolder = blobproto.ErrNoHolder

// FetchBlob fetches ref from the peers that hold it, located through its
// signpost and then the DHT, verifying every byte, and takes the ownership
// shares the holders offer. Concurrent fetches of one blob share one
// transfer. A blob already held is Done at once.
func (n *Node) FetchBlob(ctx context.Context, ref syncnode.BlobRef, opts FetchOptions) (blobstore.Info, error) {
	ctx, done, err := n.call(ctx)
	if err != nil {
		return blobstore.Info{}, err
	}
	defer done()
	res, err := n.retr.Fetch(ctx, ref, retrieval.Request{Urgency: opts.Urgency, Status: opts.Status, WaitForHolder: opts.WaitForHolder})
	if err != nil {
		return res.Info, err
	}
	if err := n.handoffs.TakeShares(ctx, ref, res.Holders, false); err != nil {
		n.log.Info("fetched, but shares not all taken", "blob", ref, "err", err)
	}
	return res.Info, nil
}

// fetched records that this node now holds ref, of size bytes: it
// provides the blob and names itself in the signpost.
func (n *Node) fetched(ref syncnode.BlobRef, size int64) {
	n.disc.Announce(ref)
	n.custody.Touch(ref, time.Now(), size)
	defer n.custody.EvictSoon()
	n.book.Held(ref)
	n.blobEvent(feed.BlobFetched, ref, size, "")
	if err := n.collector.Arrived(ref); err != nil {
		n.log.Warn("collection state not read", "blob", ref, "err", err)
	}
}

// room reports whether this node's blobs are under its budget (always,
// with none): a server past it fetches no blob that enough other servers
// of its groups hold.
func (n *Node) room() bool {
	_, bytes := n.custody.Held()
	return n.cfg.BlobBudget <= 0 || bytes < n.cfg.BlobBudget
}
