package handoff

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/retrieval"
	"github.com/syncnode/syncnode/internal/shares"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/syncgroup"
)

// Ejection is what an ejection did about the blobs that rows of the group
// reference and that the ejected member kept shares of (by its own word,
// or, when it did not answer, by what the admin knew).
type Ejection struct {
	// Held are those blobs.
	Held []syncnode.BlobRef
	// Kept are those the admin fetched and now keeps for the group: it
	// holds them verified with the group's two shares.
	Kept []syncnode.BlobRef
	// AtRisk are those it could not fetch.
	AtRisk []syncnode.BlobRef
}

// Eject removes p from group g (a member, or a peer invited that
// has not joined yet); this node must be an admin. An ejection never takes
// the group's only copy with it. While p is still a member:
//
//   - if p answers, this node asks it which blobs of g it keeps shares of,
//     fetches those it lacks, and takes all of p's shares of them (p offers
//     them to an admin about to eject it, whatever the priorities say);
//   - if p does not answer, the ejection is refused (ErrAtRisk) unless
//     force: then this node fetches the blobs that, as far as it knows,
//     only p keeps (see onlyHeldBy).
//
// Of the blobs fetched whose shares did not move here (p did not answer,
// or refused), this node takes the group's two shares itself once p is
// out, less those the members that stay say they keep. Shares p has in
// escrow for a member it cannot reach are asked about at that member:
// those it took stay with it, and this node makes up for the rest; if it
// does not answer either, the blob is at risk (refused unless force;
// forced, this node takes the two shares, two too many should that member
// have taken them).
//
// It first runs a sync round with p, so that the rows p wrote are known
// here. If a blob cannot be fetched the ejection is refused (ErrAtRisk,
// naming it) unless force. Once p is out it is told so, and drops whatever
// shares of g it still counts.
func (h *Handoffs) Eject(ctx context.Context, g syncnode.GroupID, p peer.ID, force bool) (Ejection, error) {
	e := &ejection{h: h, g: g, p: p, force: force}
	if !h.groups.IsMember(p, g) {
		// Invited, never joined (or out already): it keeps nothing.
		return e.Ejection, h.groups.Eject(g, p)
	}
	// A round first: the rows p wrote and this node lacks name blobs too.
	err := h.groups.SyncWith(ctx, g, p)
	refs, byP, rerr := h.refsIn(g, p)
	if rerr != nil {
		return e.Ejection, rerr // not even with force: what p keeps is unknown
	}
	var kept []syncnode.BlobRef
	if err == nil {
		kept, err = h.keptBy(ctx, g, p, refs, true)
	}
	if err == nil {
		// Every share p keeps is taken, in one transfer: a group may have
		// them split between p and a server. Should p have made some up,
		// a server holding the group's two later calls them surplus.
		e.Held = kept
		e.keep(ctx, kept, func(held []syncnode.BlobRef) (owed, unknown []syncnode.BlobRef) {
			return h.takeFromEjected(ctx, g, p, held)
		})
	} else {
		if !force {
			return e.Ejection, fmt.Errorf("%w: %s does not answer, so what it keeps in %s cannot be checked (%v); eject with force to go by what this node knows",
				ErrAtRisk, p, g, err)
		}
		h.log.Info("a member to eject does not answer; going by what this node knows", "group", g, "peer", p, "err", err)
		e.Held = h.onlyHeldBy(g, p, refs, byP)
		e.keep(ctx, e.Held, func(held []syncnode.BlobRef) (owed, unknown []syncnode.BlobRef) { return held, nil })
	}
	if len(e.AtRisk) > 0 && !force {
		return e.Ejection, fmt.Errorf("%w: %d of the %d blobs that %s keeps in %s could not be fetched (first %s); eject with force to leave them at risk",
			ErrAtRisk, len(e.AtRisk), len(e.Held), p, g, e.AtRisk[0])
	}
	if err := h.groups.Eject(g, p); err != nil {
		return e.Ejection, err
	}
	return e.Ejection, h.makeUp(ctx, g, p, e.regrant)
}

// ejection is one ejection in progress: what it did so far, and the
// blobs kept without p's shares, made up for once p is out.
type ejection struct {
	Ejection
	h       *Handoffs
	g       syncnode.GroupID
	p       peer.ID
	force   bool
	regrant []syncnode.BlobRef
}

// keep fetches refs, pinned meanwhile, and takes p's shares of those it
// got with took, which returns those whose shares did not move here
// (owed) and those whose outcome is not known.
func (x *ejection) keep(ctx context.Context, refs []syncnode.BlobRef, took func([]syncnode.BlobRef) (owed, unknown []syncnode.BlobRef)) {
	h, g, p, force, e := x.h, x.g, x.p, x.force, &x.Ejection
	var held []syncnode.BlobRef
	for _, ref := range refs {
		// Pinned until its shares are here: a node over its budget
		// would evict a copy it holds no shares of yet.
		unpin := h.copies.Pin(ref)
		defer unpin()
		if _, err := h.fetch.Fetch(ctx, ref, retrieval.Request{Urgency: retrieval.UrgencyHigh, Hints: []peer.ID{p}}); err != nil {
			h.log.Warn("a blob an ejected member kept could not be fetched", "blob", ref, "group", g, "peer", p, "err", err)
			e.AtRisk = append(e.AtRisk, ref)
			continue
		}
		held = append(held, ref)
	}
	owed, unknown := took(held)
	for _, ref := range held {
		if slices.Contains(unknown, ref) {
			h.log.Warn("shares of a member to eject are in escrow with a member that does not answer", "blob", ref, "group", g, "peer", p, "force", force)
			if !force {
				e.AtRisk = append(e.AtRisk, ref)
				continue
			}
			// Forced: made up for here, two too many should that
			// member have taken them and not answer, rather than none.
			owed = append(owed, ref)
		}
		e.Kept = append(e.Kept, ref)
		if slices.Contains(owed, ref) {
			x.regrant = append(x.regrant, ref)
		}
	}
}

// makeUp takes, for each of regrant kept without p's shares, the group's
// two shares less those the members that stay say they keep: a creator
// holding its two, a server holding the group's, a member that took p's
// shares in escrow.
func (h *Handoffs) makeUp(ctx context.Context, g syncnode.GroupID, p peer.ID, regrant []syncnode.BlobRef) error {
	var errs []error
	for _, ref := range regrant {
		want := ownership.CreatorShares
		if others, q := h.othersHold(ctx, g, p, ref); others > 0 {
			want -= others
			h.note(ref, fmt.Sprintf("%d of the shares not taken over from %s: %s and others keep them", min(others, ownership.CreatorShares), p, q))
		}
		if want <= 0 {
			continue
		}
		if err := h.keepForGroup(ref, g, want); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// othersHold returns how many shares of ref in g the members other than
// p and this node say they keep (at most the group's two), and one of
// them; members that do not answer count for none.
func (h *Handoffs) othersHold(ctx context.Context, g syncnode.GroupID, p peer.ID, ref syncnode.BlobRef) (int, peer.ID) {
	total, who := 0, peer.ID("")
	for _, m := range h.groups.Members(g) {
		if m.Peer == p || m.Peer == h.self {
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, h.cfg.IOTimeout)
		held, err := h.shares.HeldBy(hctx, m.Peer, []shares.Item{{Ref: ref, Group: g}})
		cancel()
		if err == nil && held[0] > 0 {
			total += held[0]
			who = m.Peer
		}
	}
	return min(total, ownership.CreatorShares), who
}

// refsIn returns the blobs that live rows of g reference, each once, and
// those of them that rows p wrote reference; an error if a row cannot be
// read (an ejection that went by fewer rows could leave a blob only p
// holds without its shares).
func (h *Handoffs) refsIn(g syncnode.GroupID, p peer.ID) (out []syncnode.BlobRef, byP map[syncnode.BlobRef]bool, err error) {
	seen := map[syncnode.BlobRef]bool{}
	byP = map[syncnode.BlobRef]bool{}
	for start := ""; ; {
		rows, next, err := h.groups.RowsFrom(g, "", start, 1024)
		if err != nil {
			return nil, nil, fmt.Errorf("handoff: the rows of %s: %w", g, err)
		}
		for _, r := range rows {
			refs, _ := syncgroup.FindRefs(r.Value)
			for _, ref := range refs {
				if !seen[ref] {
					seen[ref] = true
					out = append(out, ref)
				}
				if r.Writer == p {
					byP[ref] = true
				}
			}
		}
		if next == "" {
			slices.SortFunc(out, func(a, b syncnode.BlobRef) int { return bytes.Compare(a.Bytes(), b.Bytes()) })
			return out, byP, nil
		}
		start = next
	}
}

// keptBy asks member p which of refs it keeps shares of in g; ejecting,
// as the admin about to eject it (p then accepts no shares in g for a
// while, so that its answer still holds).
func (h *Handoffs) keptBy(ctx context.Context, g syncnode.GroupID, p peer.ID, refs []syncnode.BlobRef, ejecting bool) ([]syncnode.BlobRef, error) {
	items := make([]shares.Item, len(refs))
	for i, ref := range refs {
		items[i] = shares.Item{Ref: ref, Group: g, Ejecting: ejecting}
	}
	keeps, err := h.shares.Keeps(ctx, p, items)
	if err != nil {
		return nil, err
	}
	var out []syncnode.BlobRef
	for i, k := range keeps {
		if k {
			out = append(out, refs[i])
		}
	}
	return out, nil
}

// takeFromEjected takes every share p holds of refs in g, as the admin
// about to eject it. It returns the refs whose shares did not move here
// and count for nothing once p is out (owed: made up for then, less what
// the members that stay keep), and those whose shares are in escrow with
// a member that does not answer: whether it took them is not known.
func (h *Handoffs) takeFromEjected(ctx context.Context, g syncnode.GroupID, p peer.ID, refs []syncnode.BlobRef) (owed, unknown []syncnode.BlobRef) {
	items := make([]shares.Item, len(refs))
	for i, ref := range refs {
		items[i] = shares.Item{Ref: ref, Group: g, Ejecting: true}
	}
	res, errs := h.shares.TakeAll(ctx, p, items)
	for i, r := range res {
		ref := refs[i]
		if errs[i] == nil {
			h.moved(ref, g, p, r.Taken, true)
		}
		switch {
		case errs[i] != nil && len(r.Escrow) > 0:
			// p's shares are in escrow for members p cannot reach: ask
			// them, which fixes the outcome there. What they took they
			// keep (and say so when the make-up is counted).
			known := true
			for _, t := range r.Escrow {
				tctx, cancel := context.WithTimeout(ctx, h.cfg.IOTimeout)
				_, err := h.shares.ResolveAt(tctx, t)
				cancel()
				known = known && err == nil
			}
			if !known {
				unknown = append(unknown, ref)
				continue
			}
			owed = append(owed, ref)
		case errs[i] != nil && strings.Contains(errs[i].Error(), ownership.ErrInEscrow.Error()):
			// In escrow, with no transfer named: whether another member
			// took them is not known.
			unknown = append(unknown, ref)
		case errs[i] != nil:
			// Refused: p's shares count for nothing once it is out.
			h.log.Info("shares of a member to eject not taken", "blob", ref, "group", g, "peer", p, "err", errs[i])
			owed = append(owed, ref)
		case r.Taken > 0 || r.HolderKeeps:
			h.note(ref, fmt.Sprintf("took %d shares in %s from %s before ejecting it", r.Taken, g, p))
		}
	}
	return owed, unknown
}

// onlyHeldBy returns those of refs that, as far as this node knows, only
// member p keeps in g: this node does not hold them, no other server of g
// is known to hold them (a server's own word), and p is a server known to
// hold them or wrote a row that references them (a writer keeps its blob,
// with its shares, until a server has it). Copies that other members hold
// without shares do not count: they may go at any time.
// written holds the refs of the rows p wrote (refsIn).
func (h *Handoffs) onlyHeldBy(g syncnode.GroupID, p peer.ID, refs []syncnode.BlobRef, written map[syncnode.BlobRef]bool) []syncnode.BlobRef {
	var out []syncnode.BlobRef
	for _, ref := range refs {
		if h.holds(ref) {
			continue
		}
		byP, byOther := written[ref], false
		if sp, err := h.book.Get(ref); err == nil {
			for q, l := range sp.Locations {
				switch {
				case !l.IsServer:
				case q == p:
					byP = true
				case h.groups.IsMember(q, g):
					byOther = true
				}
			}
		}
		if byP && !byOther {
			out = append(out, ref)
		}
	}
	return out
}

// keepForGroup gives this node, which fetched ref from a member that was
// its only known holder and is now ejected, want of the group's shares of
// it (counting those it holds): the ejected member held them, and they pin
// nothing in g any more.
func (h *Handoffs) keepForGroup(ref syncnode.BlobRef, g syncnode.GroupID, want int) error {
	return h.withCopy(ref, func(held bool) error {
		if !held {
			return fmt.Errorf("handoff: %s was fetched and is gone again: %w", ref, syncnode.ErrNotFound)
		}
		sh, err := h.ledger.Shares(ref)
		if err != nil {
			return err
		}
		if need := min(want, ownership.CreatorShares) - sh[g]; need > 0 {
			if err := h.ledger.Grant(ref, g, need); err != nil {
				return err
			}
		}
		h.note(ref, fmt.Sprintf("kept for %s: its only known holder was ejected", g))
		return nil
	})
}

// MembershipChanged is run when rows of g's membership arrive: if an
// admin ejected this node from g, the shares it holds there pin nothing
// any more, and the group is no longer synced.
func (h *Handoffs) MembershipChanged(g syncnode.GroupID) {
	if !h.groups.Ejected(g) {
		return
	}
	h.log.Warn("ejected from a group by an admin; its shares here are dropped", "group", g)
	for _, ref := range h.sharesIn(g) {
		if err := h.ledger.DropGroup(ref, g); err != nil {
			h.log.Error("shares of a group this node was ejected from not dropped", "blob", ref, "group", g, "err", err)
		}
	}
}

// EjectPlan is what an ejection of a member would do about the blobs of
// the group, found without ejecting it: a round with the member, its word
// on what it keeps (asked as any member asks, so it does not stop
// accepting shares as it does for an admin about to eject it), and what
// this node and the members it can reach hold. Nothing is fetched and no
// share moves.
type EjectPlan struct {
	// Member is false for a peer invited that has not joined (or is out
	// already): it keeps nothing, and the ejection only bans it.
	Member bool
	// Unanswered, if not empty, is why the member did not answer: the
	// ejection is then refused unless forced, and a forced one goes by
	// what this node knows.
	Unanswered string
	// Held are the blobs that rows of the group reference and that the
	// member keeps shares of, by its word; or, when it does not answer,
	// those that, as far as this node knows, only it keeps (see
	// Handoffs.Eject).
	Held []syncnode.BlobRef
	// Fetch are those of Held this node lacks: the ejection fetches them
	// first, then takes their shares.
	Fetch []syncnode.BlobRef
	// AtRisk are those of Fetch that no peer asked holds (the member
	// included): the ejection would refuse, or, forced, leave them at
	// risk.
	AtRisk []syncnode.BlobRef
}

// PlanEject returns what Eject of p from g would do (see EjectPlan).
func (h *Handoffs) PlanEject(ctx context.Context, g syncnode.GroupID, p peer.ID) (EjectPlan, error) {
	var plan EjectPlan
	if !h.groups.IsMember(p, g) {
		return plan, nil
	}
	plan.Member = true
	err := h.groups.SyncWith(ctx, g, p)
	refs, byP, rerr := h.refsIn(g, p)
	if rerr != nil {
		return plan, rerr
	}
	var kept []syncnode.BlobRef
	if err == nil {
		kept, err = h.keptBy(ctx, g, p, refs, false)
	}
	if err == nil {
		plan.Held = kept
	} else {
		plan.Unanswered = err.Error()
		plan.Held = h.onlyHeldBy(g, p, refs, byP)
	}
	for _, ref := range plan.Held {
		if h.holds(ref) {
			continue
		}
		plan.Fetch = append(plan.Fetch, ref)
		if !h.someoneHas(ctx, g, ref, p, plan.Unanswered == "") {
			plan.AtRisk = append(plan.AtRisk, ref)
		}
	}
	return plan, ctx.Err()
}

// someoneHas reports whether a peer of g says it holds ref: p first if
// askP, then the other members this node is connected to.
func (h *Handoffs) someoneHas(ctx context.Context, g syncnode.GroupID, ref syncnode.BlobRef, p peer.ID, askP bool) bool {
	var peers []peer.ID
	if askP {
		peers = append(peers, p)
	}
	for _, m := range h.groups.Members(g) {
		if m.Peer != p && m.Peer != h.self && h.connected(m.Peer) {
			peers = append(peers, m.Peer)
		}
	}
	for _, q := range peers {
		hctx, cancel := context.WithTimeout(ctx, h.cfg.IOTimeout)
		r, err := h.fetch.Have(hctx, q, ref)
		cancel()
		if err == nil && r.Have {
			return true
		}
	}
	return false
}
