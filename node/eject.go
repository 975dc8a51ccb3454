package node

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
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
// has not joined yet); this node must be an admin. An ejection never takes
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
	return n.handoffs.Eject(ctx, g, p, o.Force)
}
