package node

import "github.com/syncnode/syncnode/internal/connectivity"

// Conn is one connection to a peer: Remote is the address at the other
// end; Relayed reports a connection through a circuit relay, and Relay
// names the relay (if its address does).
type Conn = connectivity.Conn

// ConnectedPeer is a peer this node is connected to now, and how.
type ConnectedPeer = connectivity.ConnectedPeer

// Peers returns the peers this node is connected to now, sorted by ID.
func (n *Node) Peers() []ConnectedPeer { return connectivity.Peers(n.h) }
