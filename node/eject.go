package node

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/connectivity"
	"github.com/syncnode/syncnode/internal/handoff"
	"github.com/syncnode/syncnode/syncgroup"
)

// EjectOptions modify EjectMemberWith.
type EjectOptions struct {
	// Force ejects even when some blob that only the member is known to
	// hold could not be fetched first: it is left at risk.
	Force bool
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
// has not joined yet); this node must be an admin (else the error wraps
// syncgroup.ErrNotAllowed, and nothing is asked of p). An ejection never takes
// the group's only copy with it: the blobs p keeps shares of are fetched
// and their shares taken here first, and if one cannot be, or p does not
// answer, the ejection is refused with ErrAtRisk unless o.Force (see
// handoff.Handoffs.Eject for the whole rule).
func (n *Node) EjectMemberWith(ctx context.Context, g syncnode.GroupID, p peer.ID, o EjectOptions) (Ejection, error) {
	ctx, done, err := n.call(ctx)
	if err != nil {
		return Ejection{}, err
	}
	defer done()
	if err := n.mayEject(g, p); err != nil {
		return Ejection{}, err
	}
	return n.handoffs.Eject(ctx, g, p, o.Force)
}

// EjectPlan is what an ejection would do about the group's blobs, found
// without ejecting (see handoff.EjectPlan).
type EjectPlan = handoff.EjectPlan

// PlanEjection returns what EjectMemberWith of p from g would do about
// the blobs p keeps shares of, without ejecting it: which it keeps (or,
// if it does not answer, which only it is known to hold), which this node
// would fetch first, and which no peer it asked holds (at risk: the
// ejection would be refused unless forced). A round with p runs, and p
// is asked what it keeps as any member asks; nothing is fetched and no
// share moves. This node must be an admin, as for the ejection. The
// ejection may still find more at risk: shares p has in escrow with a
// member that does not answer.
func (n *Node) PlanEjection(ctx context.Context, g syncnode.GroupID, p peer.ID) (EjectPlan, error) {
	ctx, done, err := n.call(ctx)
	if err != nil {
		return EjectPlan{}, err
	}
	defer done()
	if err := n.mayEject(g, p); err != nil {
		return EjectPlan{}, err
	}
	// The user asks now: a dial of p that failed a moment ago (back on a
	// new port, say) is tried again.
	connectivity.ClearDialBackoff(n.h, []peer.ID{p})
	return n.handoffs.PlanEject(ctx, g, p)
}

// mayEject refuses an ejection this node may not make: of a group it is
// not in or not an admin of, or of itself.
func (n *Node) mayEject(g syncnode.GroupID, p peer.ID) error {
	spec, err := n.GroupSpec(g)
	if err != nil {
		return err
	}
	if !n.sync.IsAdmin(g, n.h.ID()) {
		return fmt.Errorf("%w: only an admin of %s may eject a member, and this node is not one%s",
			syncgroup.ErrNotAllowed, n.names().GroupName(g), n.names().AskAdmins(spec))
	}
	if p == n.h.ID() {
		return fmt.Errorf("%w: this node cannot eject itself from %s: leave the group instead", syncgroup.ErrNotAllowed, n.names().GroupName(g))
	}
	return nil
}
