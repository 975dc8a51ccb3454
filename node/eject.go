package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/syncgroup"
)

// EjectOptions modify EjectMemberWith.
type EjectOptions struct {
	// Force ejects even when some blob that only the member is known to
	// hold could not be fetched first: it is left at risk.
	Force bool
}

// Ejection is what an ejection did about the blobs that rows of the group
// reference and that, as far as the admin knew, only the ejected member
// held.
type Ejection struct {
	// OnlyHolder are those blobs.
	OnlyHolder []syncnode.BlobRef
	// Kept are those the admin fetched and now keeps for the group: it
	// holds them verified with the group's two shares.
	Kept []syncnode.BlobRef
	// AtRisk are those it could not fetch.
	AtRisk []syncnode.BlobRef
}

// ejectWait bounds the fetches EjectMember runs before it ejects.
const ejectWait = time.Minute

// EjectMember is EjectMemberWith without force, its fetches bounded by a
// minute.
func (n *Node) EjectMember(g syncnode.GroupID, p peer.ID) error {
	ctx, cancel := context.WithTimeout(n.ctx, ejectWait)
	defer cancel()
	_, err := n.EjectMemberWith(ctx, g, p, EjectOptions{})
	return err
}

// EjectMemberWith removes p from group g (a member, or a peer invited that
// has not joined yet); this node must be an admin. An
// ejection never takes the group's only copy with it: first this node
// fetches every blob that rows of g reference and that, as far as it
// knows, only p holds, while p still serves the group. If some cannot be
// fetched it refuses (ErrAtRisk, naming them) unless o.Force. Once p is
// out, this node takes the group's two shares of every blob it fetched
// so (p's shares, if p still counts them, pin nothing in the group any
// more), and p is told of its ejection, so that it stops pinning them.
func (n *Node) EjectMemberWith(ctx context.Context, g syncnode.GroupID, p peer.ID, o EjectOptions) (Ejection, error) {
	var e Ejection
	e.OnlyHolder = n.onlyHeldBy(g, p)
	for _, ref := range e.OnlyHolder {
		// Pinned until its shares are here: a node over its budget
		// would evict a copy it holds no shares of yet.
		unpin := n.pins.pin(ref)
		defer unpin()
		if _, err := n.fetch(ctx, ref, PriorityHigh, []peer.ID{p}, nil, 0); err != nil {
			n.log.Warn("a blob only an ejected member held could not be fetched", "blob", ref, "group", g, "peer", p, "err", err)
			e.AtRisk = append(e.AtRisk, ref)
			continue
		}
		e.Kept = append(e.Kept, ref)
	}
	if len(e.AtRisk) > 0 && !o.Force {
		return e, fmt.Errorf("%w: %d of the %d blobs that only %s is known to hold in %s could not be fetched (first %s); eject with force to leave them at risk",
			ErrAtRisk, len(e.AtRisk), len(e.OnlyHolder), p, g, e.AtRisk[0])
	}
	if err := n.sync.Eject(g, p); err != nil {
		return e, err
	}
	var errs []error
	for _, ref := range e.Kept {
		if err := n.keepForGroup(ref, g); err != nil {
			errs = append(errs, err)
		}
	}
	return e, errors.Join(errs...)
}

// onlyHeldBy returns the blobs that live rows of g reference and that,
// as far as this node knows, only member p keeps: this node does not hold
// them, no other server of g is known to hold them (a server's own word),
// and p is a server known to hold them or wrote the row that references
// them (a writer keeps its blob, with its shares, until a server has it).
// Copies that other members hold without shares do not count: they may go
// at any time.
func (n *Node) onlyHeldBy(g syncnode.GroupID, p peer.ID) []syncnode.BlobRef {
	rows, err := n.ListRows(g, "")
	if err != nil {
		return nil
	}
	var out []syncnode.BlobRef
	seen := map[syncnode.BlobRef]bool{}
	for _, r := range rows {
		refs, _ := syncgroup.FindRefs(r.Value)
		for _, ref := range refs {
			if seen[ref] {
				continue
			}
			seen[ref] = true
			if n.holds(ref) {
				continue
			}
			byP, byOther := r.Writer == p, false
			if sp, err := n.signposts.Get(ref); err == nil {
				for q, l := range sp.Locations {
					switch {
					case !l.IsServer:
					case q == p:
						byP = true
					case n.sync.IsMember(q, g):
						byOther = true
					}
				}
			}
			if byP && !byOther {
				out = append(out, ref)
			}
		}
	}
	slices.SortFunc(out, func(a, b syncnode.BlobRef) int { return bytes.Compare(a.Bytes(), b.Bytes()) })
	return out
}

// keepForGroup gives this node, which fetched ref from a member that was
// its only known holder and is now ejected, the group's shares of it: the
// ejected member held them, and they pin nothing in g any more.
func (n *Node) keepForGroup(ref syncnode.BlobRef, g syncnode.GroupID) error {
	return n.withCopy(ref, func(held bool) error {
		if !held {
			return fmt.Errorf("node: %s was fetched and is gone again: %w", ref, syncnode.ErrNotFound)
		}
		sh, err := n.ledger.Shares(ref)
		if err != nil {
			return err
		}
		if need := ownership.CreatorShares - sh[g]; need > 0 {
			if err := n.ledger.Grant(ref, g, need); err != nil {
				return err
			}
		}
		n.noteHandoff(ref, fmt.Sprintf("kept for %s: its only known holder was ejected", g))
		return nil
	})
}

// ejected is run when this node learns that an admin ejected it from g:
// the shares it holds there pin nothing any more, and the group is no
// longer synced.
func (n *Node) ejected(g syncnode.GroupID) {
	n.log.Warn("ejected from a group by an admin; its shares here are dropped", "group", g)
	n.ledger.Scan(func(ref syncnode.BlobRef, sh map[syncnode.GroupID]int) error {
		if sh[g] > 0 {
			if err := n.ledger.DropGroup(ref, g); err != nil {
				n.log.Error("shares of a group this node was ejected from not dropped", "blob", ref, "group", g, "err", err)
			}
		}
		return nil
	})
}
