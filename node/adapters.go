package node

import (
	"context"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/feed"
	"github.com/syncnode/syncnode/internal/connectivity"
	"github.com/syncnode/syncnode/internal/custody"
	"github.com/syncnode/syncnode/internal/handoff"
	"github.com/syncnode/syncnode/internal/retrieval"
	"github.com/syncnode/syncnode/internal/signposting"
	"github.com/syncnode/syncnode/internal/syncer"
)

var (
	_ handoff.Groups      = (*syncer.Syncer)(nil)
	_ connectivity.Groups = (*syncer.Syncer)(nil)
	_ signposting.Groups  = (*syncer.Syncer)(nil)
)

// ErrAtRisk reports a leave or an ejection refused because it would
// leave blobs at risk (see handoff.ErrAtRisk).
var ErrAtRisk = handoff.ErrAtRisk

// Ejection is what an ejection did about the blobs of the group that the
// ejected member kept shares of.
type Ejection = handoff.Ejection

// ErrAccess reports a request for a blob the requester may not fetch.
var ErrAccess = signposting.ErrAccess

// Reachability is what AutoNAT found of this node, and the relays it
// holds reservations with.
type Reachability = connectivity.Reachability

// Reachability returns what this node knows of its reachability.
func (n *Node) Reachability() Reachability { return n.conn.Reachability() }

var _ retrieval.Directory = (*signposting.Book)(nil)

// keeper is the node's custody of copies as retrieval commits a fetch.
type keeper struct{ n *Node }

// Receive marks ref as got from a peer while its bytes arrive, and
// commits it under custody's lock (see custody.Custody.Receive).
func (k keeper) Receive(ref syncnode.BlobRef) func(commit func() (blobstore.Info, error)) (blobstore.Info, error) {
	return k.n.custody.Receive(ref, func() error { return k.n.ledger.MarkFetched(ref) })
}

// Fetched records that this node now holds ref.
func (k keeper) Fetched(ref syncnode.BlobRef, size int64) { k.n.fetched(ref, size) }

var _ retrieval.Keeper = keeper{}

// custodyRules are the node's shares and groups as custody asks what a
// copy may do.
type custodyRules struct{ n *Node }

// MayEvict reports whether eviction may drop ref: it must have no shares
// here, have come from a peer or have been granted to this device as its
// origin, be referenced in a syncgroup, and be held verified by as many
// servers of each of its groups as the group wants (Spec.Copies; with
// one, the shares having moved is enough). With more than one, the
// servers its signpost counts are asked whether they still hold it: one
// that says not is not counted (one that cannot be reached is, on its
// earlier word). A blob no row has referenced,
// or one put here whose creator shares were never granted (no row of a
// group this node is a member of named it since), exists nowhere else;
// only RemoveBlob, asked for by name, deletes it.
func (r custodyRules) MayEvict(ref syncnode.BlobRef) (bool, error) {
	if ok, err := r.n.ledger.MayEvictCopy(ref); err != nil || !ok {
		return false, err
	}
	return r.n.handoffs.CopiesHeld(r.n.ctx, ref)
}

// KeepsAll reports whether this node is a server in any of its groups,
// or is still walking its store after the open: until the walk has
// restored every creator grant a stop cut short, no copy is evicted.
func (r custodyRules) KeepsAll() bool {
	return r.n.takingUp.Load() || r.n.book.IsServerIn(r.n.sync.Groups())
}

// Busy reports whether a fetch of ref is under way.
func (r custodyRules) Busy(ref syncnode.BlobRef) bool { return r.n.retr.InFlight(ref) }

// Wanted reports whether ref's copy must come back: shares or groups
// name it.
func (r custodyRules) Wanted(ref syncnode.BlobRef) bool {
	sh, _ := r.n.ledger.Shares(ref)
	return len(sh) > 0 || len(r.n.book.GroupsOf(ref)) > 0
}

var _ custody.Rules = custodyRules{}

// custodyPeers is the node's network as custody asks it to stop claiming
// a copy or to get one back.
type custodyPeers struct{ n *Node }

// Unclaim stops providing ref and naming this node in its signpost.
func (p custodyPeers) Unclaim(ref syncnode.BlobRef) {
	n := p.n
	n.reprov.Remove(ref)
	n.book.Dropped(ref)
	n.blobEvent(feed.BlobDropped, ref, 0, "")
}

// Refetch fetches ref from a peer.
func (p custodyPeers) Refetch(ctx context.Context, ref syncnode.BlobRef) error {
	_, err := p.n.retr.Fetch(ctx, ref, retrieval.Request{Urgency: UrgencyNormal})
	return err
}

var _ custody.Peers = custodyPeers{}

// EvictionReport says what an eviction pass did.
type EvictionReport = custody.Report

// Scrub defaults: the whole store re-verified every 7 days, reading at
// most 16 MiB/s.
const (
	DefaultScrubPeriod  = custody.DefaultScrubPeriod
	DefaultScrubMaxRate = custody.DefaultScrubMaxRate
)

// Evict removes least-recently-used blobs with no shares, among those
// referenced in a syncgroup, until the store is within the node's budget.
// A node that is a server in any group keeps everything, and so does a
// node without a budget.
func (n *Node) Evict() (EvictionReport, error) {
	_, done, err := n.call(context.Background())
	if err != nil {
		return EvictionReport{}, err
	}
	defer done()
	return n.custody.Evict()
}

// Restoring returns the blobs whose copy this node is getting back from
// its peers (a damaged copy, or shares found without a copy).
func (n *Node) Restoring() []syncnode.BlobRef { return n.custody.Restoring() }

// Holding returns, consistently, whether this node holds ref verified and
// its shares of it by group: both are read under the lock that deleting a
// copy and accepting shares take, so they describe one instant.
func (n *Node) Holding(ref syncnode.BlobRef) (held bool, shares map[syncnode.GroupID]int, err error) {
	return n.handoffs.Holding(ref)
}
