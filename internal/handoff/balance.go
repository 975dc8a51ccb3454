package handoff

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/holds"
)

// haveWait bounds each question to another server in EnoughElsewhere.
const haveWait = 2 * time.Second

// full reports a server with no room left for another blob (Config.Room).
func (h *Handoffs) full() bool { return h.cfg.Room != nil && !h.cfg.Room() }

// Balanced reports whether this server may leave ref to others: it has no
// room left, and in every group ref was learned through, as many other
// servers as the group wants hold ref verified (those its signpost names
// on their own word, and those that say so when asked). When not, err
// says which server could not be asked: the answer may change once it
// can.
func (h *Handoffs) Balanced(ctx context.Context, ref syncnode.BlobRef) (bool, error) {
	if !h.full() {
		return false, nil
	}
	sp, err := h.book.Get(ref)
	if err != nil || len(sp.SgIDs) == 0 {
		return false, nil
	}
	var unasked error
	for _, g := range sp.Groups() {
		holders := map[peer.ID]bool{}
		for p, l := range sp.Locations {
			if l.IsServer && !l.IsProxy && p != h.self && h.book.IsServerMember(p, []syncnode.GroupID{g}) {
				holders[p] = true
			}
		}
		want := h.book.CopiesWanted(g)
		for _, m := range h.groups.Members(g) {
			if len(holders) >= want {
				break
			}
			if m.DevType != syncnode.Server || m.Peer == h.self || holders[m.Peer] {
				continue
			}
			hctx, cancel := context.WithTimeout(ctx, haveWait)
			r, err := h.fetch.Have(hctx, m.Peer, ref)
			cancel()
			if err == nil && r.Have {
				holders[m.Peer] = true
			} else if err != nil {
				unasked = fmt.Errorf("server %s not asked: %w", m.Peer, err)
			}
		}
		if len(holders) < want {
			return false, unasked
		}
	}
	return true, nil
}

// CopiesShort asks, in every group ref was learned through that wants
// more than one verified server copy, each other server of the group
// whether it holds ref now, and returns the groups where fewer hold it
// than the group wants. A signpost's word is not enough here: a server
// that dropped its copy is named as a location by every node it did not
// tell. One that says it holds none is forgotten as a location of ref. One
// that cannot be asked counts as holding none when strict (a removal the
// user can try again), and as its signpost says otherwise (an eviction,
// which a server away for the night must not stop). It is what a device
// evicting, or anyone removing, its copy must pass first.
func (h *Handoffs) CopiesShort(ctx context.Context, ref syncnode.BlobRef, strict bool) ([]holds.Shortfall, error) {
	sp, err := h.book.Get(ref)
	if errors.Is(err, syncnode.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var short []holds.Shortfall
	for _, g := range sp.Groups() {
		want := h.book.CopiesWanted(g)
		if want <= 1 {
			continue // the shares' move to a server is the proof (ownership)
		}
		var servers []peer.ID
		for _, m := range h.groups.Members(g) {
			if m.DevType == syncnode.Server && m.Peer != h.self {
				servers = append(servers, m.Peer)
			}
		}
		have := h.haveNow(ctx, ref, servers, func(p peer.ID) bool {
			l, ok := sp.Locations[p]
			return !strict && ok && l.IsServer && !l.IsProxy
		})
		if have < want {
			short = append(short, holds.Shortfall{Group: g, Have: have, Want: want})
		}
	}
	return short, nil
}

// CopiesHeld reports whether every group of ref has the verified server
// copies it wants apart from this node's, as a device evicting its copy
// needs: by the signpost first (signposting.Book.CopiesMet), then, in a
// group that wants more than one, by the servers it counts, asked now
// (CopiesShort, not strict), as one may have dropped its copy since.
func (h *Handoffs) CopiesHeld(ctx context.Context, ref syncnode.BlobRef) (bool, error) {
	if ok, err := h.book.CopiesMet(ref); err != nil || !ok {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*haveWait)
	defer cancel()
	short, err := h.CopiesShort(ctx, ref, false)
	return err == nil && len(short) == 0, err
}

// haveNow asks peers at once whether they hold ref, and returns how many
// say so, and of those that cannot be asked, how many away says hold it;
// those that say not are forgotten as locations of ref.
func (h *Handoffs) haveNow(ctx context.Context, ref syncnode.BlobRef, peers []peer.ID, away func(peer.ID) bool) int {
	var mu sync.Mutex
	var wg sync.WaitGroup
	n := 0
	var gone []peer.ID
	for _, p := range peers {
		wg.Go(func() {
			hctx, cancel := context.WithTimeout(ctx, haveWait)
			defer cancel()
			r, err := h.fetch.Have(hctx, p, ref)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && r.Have, err != nil && away(p):
				n++
			case err == nil:
				gone = append(gone, p)
			}
		})
	}
	wg.Wait()
	if len(gone) > 0 {
		h.book.Forget(ref, gone)
	}
	return n
}
