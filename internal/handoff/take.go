package handoff

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/shares"
	"github.com/syncnode/syncnode/signpost"
)

// takes gathers the share takes this node asks of each peer, so that the
// takes of many blobs from one holder travel together: while one batch is
// on its way, the next gathers, and each goes in three requests (challenge,
// offer, settle) whatever its size, instead of three per blob. A server
// catching up on a device's blobs asks for their shares in batches.
type takes struct {
	h *Handoffs

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
		t.h.work.Go(func() { t.drain(p) })
	}
	select {
	case r := <-tk.done:
		return r.res, r.err
	case <-ctx.Done():
		return shares.Result{}, ctx.Err()
	case <-t.h.ctx.Done():
		return shares.Result{}, t.h.ctx.Err()
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
		res, errs := t.h.shares.TakeAll(t.h.ctx, p, items)
		for i, tk := range batch {
			if errs[i] == nil {
				t.h.moved(tk.item.Ref, tk.item.Group, p, res[i].Taken, true)
			}
			tk.done <- takeResult{res[i], errs[i]}
		}
	}
}

// TakeShares asks the peers that may hold shares of ref for them, in each
// group of the signpost this node is in: holders (the peers this node
// fetched from, and extra), and the signpost's locations that are not
// servers — proxies included, since a member that relayed a row may hold
// the blob and its shares too. It fails if a holder could not be asked,
// so that a caller retries later; a proxy that cannot be reached is only
// logged (it hands its shares off itself when it next syncs with a server).
// Unless waitAll, only the extra holders (the peers just fetched from,
// which have just answered) are waited for: the others are asked in the
// background, so that a user's fetch never waits on a device that is gone.
func (h *Handoffs) TakeShares(ctx context.Context, ref syncnode.BlobRef, extra []peer.ID, waitAll bool) error {
	unpin := h.copies.Pin(ref)
	defer unpin()
	sp, err := h.book.Get(ref)
	if err != nil {
		return err
	}
	type cand struct {
		p      peer.ID
		holder bool
	}
	var cands []cand
	seen := map[peer.ID]bool{h.self: true}
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
		if !h.groups.IsMember(h.self, g) || h.serverKeeps(ctx, ref, sp, g) {
			continue
		}
		for _, c := range cands {
			if !h.groups.IsMember(c.p, g) {
				continue
			}
			if !waitAll && !slices.Contains(extra, c.p) {
				h.work.Go(func() { h.take(h.ctx, ref, g, c.p) })
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := h.take(ctx, ref, g, c.p); err != nil && c.holder {
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
func (h *Handoffs) serverKeeps(ctx context.Context, ref syncnode.BlobRef, sp signpost.Signpost, g syncnode.GroupID) bool {
	if me, err := h.groups.Priority(g); err != nil || me.DevType == syncnode.Server {
		return false
	}
	for p, l := range sp.Locations {
		if l.IsServer && p != h.self {
			if pp, ok := h.groups.PeerPriority(g, p); ok && pp.DevType == syncnode.Server {
				return true
			}
		}
	}
	// The signpost may not know yet: the connected servers are asked.
	for _, m := range h.groups.Members(g) {
		if m.DevType != syncnode.Server || m.Peer == h.self || !h.connected(m.Peer) {
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		r, err := h.fetch.Have(hctx, m.Peer, ref)
		cancel()
		if err == nil && r.Have {
			return true
		}
	}
	return false
}

// take asks p for its shares of ref in g, and logs what came of it.
func (h *Handoffs) take(ctx context.Context, ref syncnode.BlobRef, g syncnode.GroupID, p peer.ID) error {
	res, err := h.takes.Take(ctx, p, ref, g)
	switch {
	case err != nil:
		h.log.Debug("shares not taken", "blob", ref, "group", g, "peer", p, "err", err)
	case res.Taken > 0:
		h.log.Info("took ownership shares", "blob", ref, "group", g, "from", p, "shares", res.Taken, "holder keeps", res.HolderKeeps)
	}
	return err
}
