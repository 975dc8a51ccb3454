package node

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/connectivity"
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
