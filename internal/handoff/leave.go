package handoff

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/syncer"
)

// Leave leaves group g (through the membership's leave), after handing
// every share this node holds in g to a member (a server first, else any
// member but a leaf), who fetches the blob from it first if needed. If a
// blob's shares could be handed to no one, it refuses with ErrAtRisk and
// the blobs, unless force: then it leaves and returns the blobs left at
// risk. It also refuses (ErrAtRisk) when no other member answers a round:
// rows written here may have reached none of them. Once it has left,
// shares of g pin nothing here.
func (h *Handoffs) Leave(ctx context.Context, g syncnode.GroupID, force bool) (atRisk []syncnode.BlobRef, err error) {
	// From now on this node takes no shares in g, and offers all it has.
	h.shares.Leaving(g, true)
	defer h.shares.Leaving(g, false)
	held := h.handOffAll(ctx, g)
	// Whatever is still here has no one else to keep it; a hand-off still
	// in escrow (its taker did not settle) is not done either.
	atRisk = h.sharesIn(g)
	if pending, err := h.ledger.AllPending(); err == nil {
		for _, t := range pending {
			if t.Group == g && !slices.Contains(atRisk, t.Ref) {
				atRisk = append(atRisk, t.Ref)
			}
		}
	}
	if len(atRisk) > 0 && !force {
		return atRisk, fmt.Errorf("%w: %d of the %d blobs whose shares this node holds in %s could be handed to no member (first %s); leave with force to leave them at risk",
			ErrAtRisk, len(atRisk), max(len(held), len(atRisk)), g, atRisk[0])
	}
	if err := h.groups.Leave(ctx, g, force); err != nil {
		if errors.Is(err, syncer.ErrNoMemberReached) {
			return atRisk, fmt.Errorf("%w: %v; leave with force to drop them", ErrAtRisk, err)
		}
		return atRisk, err
	}
	// The shares left in g are dropped by the node when the syncer tells
	// it of the leave (DropShares), as after a leave a stop cut short.
	if len(atRisk) > 0 {
		h.log.Warn("left a group with blobs at risk", "group", g, "blobs", len(atRisk), "first", atRisk[0])
		for _, ref := range atRisk {
			h.note(ref, fmt.Sprintf("left %s by force with this blob at risk: no member took its shares", g))
		}
	}
	return atRisk, nil
}

// handOffAll hands every share this node holds in g to a member before
// it leaves (the shares service marked as leaving g): servers first, then
// the members that are not leaves. It returns the blobs it held shares of.
func (h *Handoffs) handOffAll(ctx context.Context, g syncnode.GroupID) (held []syncnode.BlobRef) {
	held = h.sharesIn(g)
	if len(held) == 0 {
		return nil
	}
	var servers, others []peer.ID
	for _, m := range h.groups.Members(g) {
		switch {
		case m.Peer == h.self || m.DevType == syncnode.Leaf:
		case m.DevType == syncnode.Server:
			servers = append(servers, m.Peer)
		default:
			others = append(others, m.Peer)
		}
	}
	cands := append(servers, others...)
	// A round with each candidate first: it takes over only blobs that
	// rows it knows reference, and rows written here may not have reached
	// it yet.
	for _, p := range cands {
		if err := h.groups.SyncWith(ctx, g, p); err != nil {
			h.log.Info("no round before handing off", "group", g, "peer", p, "err", err)
		}
	}
	for _, ref := range held {
		for _, p := range cands {
			if _, err := h.shares.AskLeaving(ctx, p, ref, g); err != nil {
				h.log.Info("hand-off before leaving not taken", "blob", ref, "group", g, "peer", p, "err", err)
			}
			if sh, err := h.ledger.Shares(ref); err == nil && sh[g] == 0 {
				h.note(ref, fmt.Sprintf("handed its shares in %s to %s before leaving", g, p))
				break
			}
		}
	}
	return held
}

// sharesIn returns the blobs this node holds shares of in group g.
func (h *Handoffs) sharesIn(g syncnode.GroupID) []syncnode.BlobRef {
	var out []syncnode.BlobRef
	h.ledger.Scan(func(ref syncnode.BlobRef, sh map[syncnode.GroupID]int) error {
		if sh[g] > 0 {
			out = append(out, ref)
		}
		return nil
	})
	return out
}

// DropShares drops this node's shares in group g, which it left: they pin
// nothing here any more.
func (h *Handoffs) DropShares(g syncnode.GroupID) {
	for _, ref := range h.sharesIn(g) {
		if err := h.ledger.DropGroup(ref, g); err != nil {
			h.log.Error("shares of a group left not dropped", "blob", ref, "group", g, "err", err)
		}
	}
}
