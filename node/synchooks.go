package node

import (
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/syncer"
	"github.com/syncnode/syncnode/syncgroup"
)

// hooks is the node's part in sync.
type hooks struct{ n *Node }

var _ syncer.Hooks = hooks{}

// Applied records the blob refs of rows a peer sent.
func (h hooks) Applied(g syncnode.GroupID, rows []syncgroup.Row, from peer.ID) {
	h.n.records.Met(g, from)
	if slices.ContainsFunc(rows, func(r syncgroup.Row) bool { return strings.HasPrefix(r.Key, syncgroup.MembershipPrefix) }) {
		h.n.handoffs.MembershipChanged(g)
	}
	h.n.disc.Rows(g, rows, from)
}

// Signposts returns what peer to may learn of refs' signposts.
func (h hooks) Signposts(to peer.ID, g syncnode.GroupID, refs []syncnode.BlobRef) []syncer.SignpostEntry {
	return h.n.disc.Tell(to, refs)
}

// Learn merges the signposts a member sent and queues, on a server, the
// blobs it lacks.
func (h hooks) Learn(from peer.ID, g syncnode.GroupID, sps []syncer.SignpostEntry) {
	h.n.disc.Learn(from, g, sps)
}

// Synced hands blobs off after a round with member p of g: a leaf asks a
// non-leaf, and any device asks a server, to take the blobs of g it holds
// shares of. A device's shares so reach a server within a round of
// meeting one (I6), whoever relayed the row and whoever fetched from whom.
func (h hooks) Synced(g syncnode.GroupID, p peer.ID) {
	h.n.records.Met(g, p)
	h.n.collector.Heard(g)
	h.n.disc.HolderBack(p)
	h.n.handoffs.AfterRound(g, p)
}

// Pushed hands blobs off after member p of g took a push of rows from
// this node, as after a round: p is online and a member.
// Left drops the shares this node held in a group it left, and forgets
// the group's record in an object store: after a leave a stop cut short
// too, which no hand-off follows.
func (h hooks) Left(g syncnode.GroupID) {
	h.n.handoffs.DropShares(g)
	h.n.records.Forget(g)
}

func (h hooks) Pushed(g syncnode.GroupID, p peer.ID) {
	h.n.records.Met(g, p)
	h.n.handoffs.AfterRound(g, p)
}
