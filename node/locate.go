package node

import (
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/connectivity"
)

// membersOf returns the other members of groups this node is in, servers
// first, each once.
func (n *Node) membersOf(groups []syncnode.GroupID) []peer.ID {
	var servers, others []peer.ID
	seen := map[peer.ID]bool{n.h.ID(): true}
	for _, g := range groups {
		if !n.sync.IsMember(n.h.ID(), g) {
			continue
		}
		for _, m := range n.Members(g) {
			if seen[m.Peer] {
				continue
			}
			seen[m.Peer] = true
			connectivity.AddAddrs(n.h, m.Peer, m.Addrs)
			if m.DevType == syncnode.Server {
				servers = append(servers, m.Peer)
			} else {
				others = append(others, m.Peer)
			}
		}
	}
	return append(servers, others...)
}

// connected reports whether this node has a connection to p.
func (n *Node) connected(p peer.ID) bool {
	return n.h.Network().Connectedness(p) == network.Connected
}
