package node

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/connectivity"
	"github.com/syncnode/syncnode/internal/retrieval"
	"github.com/syncnode/syncnode/signpost"
	"github.com/syncnode/syncnode/syncgroup"
)

// groupView is the node's syncgroups as the parts below it see them:
// who is in each, this node's device type there, its membership row.
type groupView struct{ n *Node }

// Groups lists the groups this node is in.
func (v groupView) Groups() []syncnode.GroupID { return v.n.sync.Groups() }

// IsMember reports whether p is a member of g.
func (v groupView) IsMember(p peer.ID, g syncnode.GroupID) bool { return v.n.sync.IsMember(p, g) }

// Members lists g's members.
func (v groupView) Members(g syncnode.GroupID) []syncgroup.Member { return v.n.Members(g) }

// DevType is this node's device type in g.
func (v groupView) DevType(g syncnode.GroupID) (syncnode.DevType, bool) { return v.n.DevType(g) }

// SetAddrs writes addrs into this node's membership row of g.
func (v groupView) SetAddrs(g syncnode.GroupID, addrs []string) (bool, error) {
	return v.n.sync.SetAddrs(g, addrs)
}

var _ connectivity.Groups = groupView{}

// Reachability is what AutoNAT found of this node, and the relays it
// holds reservations with.
type Reachability = connectivity.Reachability

// Reachability returns what this node knows of its reachability.
func (n *Node) Reachability() Reachability { return n.conn.Reachability() }

// directory is the node's signposts and groups as retrieval asks them
// where blobs are.
type directory struct{ n *Node }

// Signpost returns ref's signpost.
func (d directory) Signpost(ref syncnode.BlobRef) (signpost.Signpost, error) {
	return d.n.signposts.Get(ref)
}

// Learn merges the signpost a peer that lacks ref answered with.
func (d directory) Learn(from peer.ID, ref syncnode.BlobRef, sp *signpost.Signpost) {
	d.n.learnFromHolder(from, ref, sp)
}

// Forget drops peers that lied about ref from its signpost.
func (d directory) Forget(ref syncnode.BlobRef, peers []peer.ID) {
	_, err := d.n.signposts.Update(ref, func(sp *signpost.Signpost) {
		for _, p := range peers {
			delete(sp.Locations, p)
		}
	})
	if err != nil {
		d.n.log.Error("signpost not updated", "blob", ref, "err", err)
	}
}

// MembersOf lists the other members of groups, servers first.
func (d directory) MembersOf(groups []syncnode.GroupID) []peer.ID { return d.n.membersOf(groups) }

// Public reports whether a blob of groups may be looked up in the DHT.
func (d directory) Public(groups []syncnode.GroupID) bool { return d.n.public(groups) }

var _ retrieval.Directory = directory{}

// keeper is the node's custody of copies as retrieval commits a fetch.
type keeper struct{ n *Node }

// Receive marks ref, durably before the copy can become visible, as got
// from a peer (not its origin), while its bytes arrive. The commit holds
// the blob's lock, which accepting and granting shares take too: no share
// lands on the copy between its becoming visible and its directory entry
// reaching stable storage, where a power loss would leave the shares
// without the copy.
func (k keeper) Receive(ref syncnode.BlobRef) func(commit func() (blobstore.Info, error)) (blobstore.Info, error) {
	n := k.n
	marked := make(chan error, 1)
	go func() { marked <- n.ledger.MarkFetched(ref) }()
	return func(commit func() (blobstore.Info, error)) (blobstore.Info, error) {
		if err := <-marked; err != nil {
			return blobstore.Info{}, err
		}
		unlock := n.locks.lock(ref)
		defer unlock()
		info, err := commit()
		if h := n.hook.inCommit.Load(); h != nil && err == nil {
			(*h)(ref)
		}
		return info, err
	}
}

// Fetched records that this node now holds ref.
func (k keeper) Fetched(ref syncnode.BlobRef, size int64) { k.n.fetched(ref, size) }

var _ retrieval.Keeper = keeper{}
