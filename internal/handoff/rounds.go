package handoff

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/retrieval"
	"github.com/syncnode/syncnode/internal/shares"
	"github.com/syncnode/syncnode/ownership"
)

// AfterRound starts a hand-off to member p of g if this node hands off
// to p's device type and none to p in g is running.
func (h *Handoffs) AfterRound(g syncnode.GroupID, p peer.ID) {
	me, err := h.groups.Priority(g)
	if err != nil {
		return
	}
	them, ok := h.groups.PeerPriority(g, p)
	if !ok || !handsOffTo(me.DevType, them.DevType) {
		return
	}
	// A leaf's shares go to a non-leaf device only while no server of the
	// group is online: a server fetches the blob anyway, and a copy on a
	// device in between would be moved for nothing.
	if them.DevType != syncnode.Server && h.serverOnline(g) {
		return
	}
	k := handoffKey{g, p}
	h.mu.Lock()
	busy := h.running[k]
	h.running[k] = true
	h.mu.Unlock()
	if busy {
		return
	}
	h.work.Go(func() {
		defer func() {
			h.mu.Lock()
			delete(h.running, k)
			h.mu.Unlock()
		}()
		h.handoff(g, p)
	})
}

// serverOnline reports whether this node is connected to a server member
// of g.
func (h *Handoffs) serverOnline(g syncnode.GroupID) bool {
	for _, m := range h.groups.Members(g) {
		if m.DevType == syncnode.Server && m.Peer != h.self && h.connected(m.Peer) {
			return true
		}
	}
	return false
}

// handsOffTo reports whether a device of type self asks a member of type
// peer to take its shares: a leaf any non-leaf, a non-server a server.
func handsOffTo(self, peer syncnode.DevType) bool {
	return ownership.LeafHandoff(self, peer, 1) > 0 || (peer == syncnode.Server && self != syncnode.Server)
}

type handoffKey struct {
	g syncnode.GroupID
	p peer.ID
}

type handoffRef struct {
	ref syncnode.BlobRef
	p   peer.ID
}

// handoffBackoff spaces the hand-offs of one blob to one peer that failed.
type handoffBackoff struct {
	next  time.Time
	delay time.Duration
}

// maxHandoffs bounds the blobs a device offers to one peer after one round.
const maxHandoffs = 32

// handoff asks p to take the blobs of g this device holds shares of. Each
// hand-off ends with the shares moved, or with them still here and the
// reason in the blob's journal; a blob whose hand-off to p failed is not
// offered to p again before a delay that doubles up to an hour.
func (h *Handoffs) handoff(g syncnode.GroupID, p peer.ID) {
	now := time.Now()
	var refs []syncnode.BlobRef
	err := h.ledger.Scan(func(ref syncnode.BlobRef, sh map[syncnode.GroupID]int) error {
		if sh[g] <= 0 || !h.holds(ref) {
			return nil
		}
		h.mu.Lock()
		b := h.retry[handoffRef{ref, p}]
		h.mu.Unlock()
		if now.Before(b.next) {
			return nil
		}
		refs = append(refs, ref)
		if len(refs) == maxHandoffs {
			return errStopScan
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		h.log.Error("handoff: shares not listed", "err", err)
		return
	}
	for _, ref := range refs {
		ctx, cancel := context.WithTimeout(h.ctx, h.shares.AskWait()+h.cfg.IOTimeout)
		res, err := h.shares.Ask(ctx, p, ref, g)
		cancel()
		if h.ctx.Err() != nil {
			return
		}
		taken := res.Taken
		k := handoffRef{ref, p}
		switch {
		case err != nil:
			h.note(ref, fmt.Sprintf("hand-off to %s in %s failed; shares kept here: %v", p, g, err))
		case res.Surplus:
			h.note(ref, fmt.Sprintf("server %s holds the two shares of %s already: the ones here were surplus and are dropped", p, g))
		case taken == 0:
			err = errors.New("took no shares")
			h.note(ref, fmt.Sprintf("hand-off to %s in %s: it took no shares; shares kept here", p, g))
		default:
			h.note(ref, fmt.Sprintf("handed %d shares in %s to %s", taken, g, p))
			h.log.Info("shares handed off", "peer", p, "blob", ref, "group", g, "shares", taken)
		}
		h.mu.Lock()
		if err != nil {
			b := h.retry[k]
			b.delay = min(max(2*b.delay, 2*time.Second), time.Hour)
			b.next = time.Now().Add(b.delay)
			h.retry[k] = b
		} else {
			delete(h.retry, k)
		}
		h.mu.Unlock()
		if err != nil {
			h.log.Info("handoff failed", "peer", p, "blob", ref, "err", err)
		}
	}
}

var errStopScan = errors.New("stop")

// asked takes a blob a member hands off: fetched from that member if not
// held, then its shares, with the copy pinned against eviction meanwhile.
func (h *Handoffs) asked(ctx context.Context, from peer.ID, ref syncnode.BlobRef, g syncnode.GroupID, leaving bool) (shares.Result, error) {
	me, err := h.groups.Priority(g)
	if err != nil {
		return shares.Result{}, err
	}
	// A server that holds the blob and the group's two shares already
	// says so: the asker's shares are surplus (a member offered shares it
	// never had), and it drops them.
	if me.DevType == syncnode.Server {
		if held, sh, err := h.Holding(ref); err == nil && held && sh[g] >= ownership.CreatorShares {
			return shares.Result{Surplus: true}, nil
		}
	}
	them, ok := h.groups.PeerPriority(g, from)
	if !ok || (!leaving && !handsOffTo(them.DevType, me.DevType)) || (leaving && me.DevType == syncnode.Leaf) {
		// The holder would offer nothing: fetching would only churn.
		return shares.Result{}, fmt.Errorf("handoff: a %s member hands nothing off to a %s one", them.DevType, me.DevType)
	}
	// Only a blob that a row of g references here: an ask is no way to
	// make a server store (and pin) whatever a member likes.
	if !slices.Contains(h.book.GroupsOf(ref), g) {
		return shares.Result{}, fmt.Errorf("handoff: no row of %s that this node knows references %s", g, ref)
	}
	if balanced, _ := h.Balanced(ctx, ref); balanced && !h.holds(ref) {
		return shares.Result{}, fmt.Errorf("handoff: this server has no room left, and enough other servers hold %s", ref)
	}
	unpin := h.copies.Pin(ref)
	defer unpin()
	if !h.holds(ref) {
		// In line with the background fetches from the same member: one
		// whose asks drip their bytes in holds a few fetch places, and
		// waits for them, never all of them.
		release, err := h.fetch.HolderSlot(ctx, from)
		if err != nil {
			return shares.Result{}, fmt.Errorf("handoff: hand-off from %s waited for a fetch place: %w", from, err)
		}
		_, err = h.fetch.Fetch(ctx, ref, retrieval.Request{Urgency: retrieval.UrgencyNormal, Hints: []peer.ID{from}})
		release()
		if err != nil {
			h.note(ref, fmt.Sprintf("hand-off from %s not taken: fetch failed: %v", from, err))
			return shares.Result{}, err
		}
	}
	res, err := h.shares.Take(ctx, from, ref, g)
	if err != nil {
		h.note(ref, fmt.Sprintf("hand-off from %s not taken: %v", from, err))
		return res, err
	}
	h.note(ref, fmt.Sprintf("took %d shares in %s from %s", res.Taken, g, from))
	h.moved(ref, g, from, res.Taken, true)
	return res, nil
}

// challenged names a server of g that asked for this node's shares of ref
// a holder of it, on its own word (it asks only holding the blob): how a
// device learns of the second and later server copies its group wants,
// which take no shares from it.
func (h *Handoffs) challenged(from peer.ID, ref syncnode.BlobRef, g syncnode.GroupID) {
	if h.book.IsServerMember(from, []syncnode.GroupID{g}) {
		h.book.Took(ref, g, from)
	}
}

// settled records where shares this node gave away went: the acceptor
// holds the blob verified, so it becomes a location (a server one, if it
// is a server in the group) — how a device learns its blob is safe.
func (h *Handoffs) settled(t ownership.Transfer, accepted bool) {
	if !accepted {
		// Shares that come back to a node the group ejected count for
		// nothing there, and the admin made up for them at the ejection.
		if h.groups.Ejected(t.Group) {
			if err := h.ledger.DropGroup(t.Ref, t.Group); err != nil {
				h.log.Error("shares returned to an ejected node not dropped", "blob", t.Ref, "group", t.Group, "err", err)
			}
		}
		return
	}
	h.book.Took(t.Ref, t.Group, t.To)
	h.moved(t.Ref, t.Group, t.To, t.N, false)
}

// Reserve takes the place of a hand-off to p in g, as a running one does:
// none starts until release is called. ok is false while one runs.
func (h *Handoffs) Reserve(g syncnode.GroupID, p peer.ID) (release func(), ok bool) {
	k := handoffKey{g, p}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.running[k] {
		return nil, false
	}
	h.running[k] = true
	return func() {
		h.mu.Lock()
		delete(h.running, k)
		h.mu.Unlock()
	}, true
}
