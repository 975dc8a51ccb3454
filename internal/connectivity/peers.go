package connectivity

import (
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode/p2p"
)

// Conn is one connection to a peer.
type Conn struct {
	// Remote is the address at the other end.
	Remote ma.Multiaddr
	// Relayed reports a connection through a circuit relay, and Relay
	// names the relay (if its address does).
	Relayed bool
	Relay   peer.ID
}

// ConnectedPeer is a peer connected now and its connections.
type ConnectedPeer struct {
	ID    peer.ID
	Conns []Conn
}

// Peers returns the peers h is connected to now, in ID order.
func Peers(h host.Host) []ConnectedPeer {
	nw := h.Network()
	var out []ConnectedPeer
	for _, p := range nw.Peers() {
		cp := ConnectedPeer{ID: p}
		for _, c := range nw.ConnsToPeer(p) {
			relay, relayed := p2p.RelayOf(c)
			cp.Conns = append(cp.Conns, Conn{Remote: c.RemoteMultiaddr(), Relayed: relayed, Relay: relay})
		}
		out = append(out, cp)
	}
	slices.SortFunc(out, func(a, b ConnectedPeer) int { return strings.Compare(string(a.ID), string(b.ID)) })
	return out
}
