package node

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/retrieval"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/signpost"
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

// Fetch priorities: a waiting fetch with a higher priority starts first.
const (
	PriorityBackground = retrieval.PriorityBackground // the server fetcher's
	PriorityNormal     = retrieval.PriorityNormal
	PriorityHigh       = retrieval.PriorityHigh
)

// FetchOptions modify FetchBlob.
type FetchOptions struct {
	// Priority orders this fetch among those waiting to start.
	Priority int
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
var ErrNoHolder = p2p.ErrNoHolder

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
	res, err := n.retr.Fetch(ctx, ref, retrieval.Request{Priority: opts.Priority, Status: opts.Status, WaitForHolder: opts.WaitForHolder})
	if err != nil {
		return res.Info, err
	}
	if err := n.takeShares(ctx, ref, res.Holders, false); err != nil {
		n.log.Info("fetched, but shares not all taken", "blob", ref, "err", err)
	}
	return res.Info, nil
}

// fetched records that this node now holds ref, of size bytes: it
// provides the blob and names itself in the signpost.
func (n *Node) fetched(ref syncnode.BlobRef, size int64) {
	n.announce(ref)
	n.custody.Touch(ref, time.Now(), size)
	defer n.custody.EvictSoon()
	n.book.Held(ref)
}

// takeShares asks the peers that may hold shares of ref for them, in each
// group of the signpost this node is in: holders (the peers this node
// fetched from, and extra), and the signpost's locations that are not
// servers — proxies included, since a member that relayed a row may hold
// the blob and its shares too. It fails if a holder could not be asked,
// so that a caller retries later; a proxy that cannot be reached is only
// logged (it hands its shares off itself when it next syncs with a server).
// Unless waitAll, only the extra holders (the peers just fetched from,
// which have just answered) are waited for: the others are asked in the
// background, so that a user's fetch never waits on a device that is gone.
func (n *Node) takeShares(ctx context.Context, ref syncnode.BlobRef, extra []peer.ID, waitAll bool) error {
	unpin := n.custody.Pin(ref)
	defer unpin()
	sp, err := n.signposts.Get(ref)
	if err != nil {
		return err
	}
	type cand struct {
		p      peer.ID
		holder bool
	}
	var cands []cand
	seen := map[peer.ID]bool{n.h.ID(): true}
	for _, p := range extra {
		if !seen[p] {
			seen[p] = true
			cands = append(cands, cand{p, true})
		}
	}
	for _, l := range sp.Ranked() {
		loc := sp.Locations[l.Peer]
		if !seen[l.Peer] && !loc.IsServer {
			seen[l.Peer] = true
			cands = append(cands, cand{l.Peer, !loc.IsProxy})
		}
	}
	// Each candidate is asked on its own goroutine: one slow or absent
	// device does not hold up the others, nor the fetch slot for long.
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for _, g := range sp.Groups() {
		if !n.sync.IsMember(n.h.ID(), g) || n.serverKeeps(ctx, ref, sp, g) {
			continue
		}
		for _, c := range cands {
			if !n.sync.IsMember(c.p, g) {
				continue
			}
			if !waitAll && !slices.Contains(extra, c.p) {
				n.goRun(func() { n.take(n.ctx, ref, g, c.p) })
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := n.take(ctx, ref, g, c.p); err != nil && c.holder {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// serverKeeps reports whether a device should leave ref's shares in g
// alone: this node is no server of g, and a server of g has said that it
// holds the blob (a location counts as a server's only on its own word).
// The group's shares belong there; a device that took some from a member
// claiming to hold them would only pin its copy.
func (n *Node) serverKeeps(ctx context.Context, ref syncnode.BlobRef, sp signpost.Signpost, g syncnode.GroupID) bool {
	if me, err := n.sync.Priority(g); err != nil || me.DevType == syncnode.Server {
		return false
	}
	for p, l := range sp.Locations {
		if l.IsServer && p != n.h.ID() {
			if pp, ok := n.sync.PeerPriority(g, p); ok && pp.DevType == syncnode.Server {
				return true
			}
		}
	}
	// The signpost may not know yet: the connected servers are asked.
	for _, m := range n.Members(g) {
		if m.DevType != syncnode.Server || m.Peer == n.h.ID() || !n.connected(m.Peer) {
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		r, err := n.retr.Have(hctx, m.Peer, ref)
		cancel()
		if err == nil && r.Have {
			return true
		}
	}
	return false
}

// take asks p for its shares of ref in g, and logs what came of it.
func (n *Node) take(ctx context.Context, ref syncnode.BlobRef, g syncnode.GroupID, p peer.ID) error {
	res, err := n.takes.Take(ctx, p, ref, g)
	switch {
	case err != nil:
		n.log.Debug("shares not taken", "blob", ref, "group", g, "peer", p, "err", err)
	case res.Taken > 0:
		n.log.Info("took ownership shares", "blob", ref, "group", g, "from", p, "shares", res.Taken, "holder keeps", res.HolderKeeps)
	}
	return err
}
