// Package netsplit cuts libp2p hosts into sides that cannot reach each
// other, through connection gaters, and heals the cut: network partitions
// for tests and simulations, on loopback.
package netsplit

import (
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Partition is the current cut: which side each peer is on, or none.
// The zero Partition is healed.
type Partition struct {
	mu   sync.Mutex
	side map[peer.ID]int // nil: healed
}

// Allowed reports whether a and b may connect now.
func (p *Partition) Allowed(a, b peer.ID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.side == nil || a == "" || p.side[a] == p.side[b]
}

// Split puts hosts[i] on side[i], and closes every connection across
// sides; from then on the gaters refuse them. A nil host (a node that is
// down) is put on its side when it comes back through its ID in ids.
func (p *Partition) Split(ids []peer.ID, hosts []host.Host, side []int) {
	p.mu.Lock()
	p.side = map[peer.ID]int{}
	for i, id := range ids {
		p.side[id] = side[i]
	}
	p.mu.Unlock()
	for i, h := range hosts {
		if h == nil {
			continue
		}
		for j := range ids {
			if side[i] != side[j] {
				h.Network().ClosePeer(ids[j])
			}
		}
	}
}

// Heal lets every peer reach every other again.
func (p *Partition) Heal() {
	p.mu.Lock()
	p.side = nil
	p.mu.Unlock()
}

// Gater returns a connection gater for one node, refusing peers across the
// partition once SetSelf has named the node.
func (p *Partition) Gater() *Gater { return &Gater{p: p} }

// Gater is one node's libp2p connection gater.
type Gater struct {
	p    *Partition
	self atomic.Value // peer.ID
}

// SetSelf names the gater's node (known only once its host exists).
func (g *Gater) SetSelf(id peer.ID) { g.self.Store(id) }

func (g *Gater) id() peer.ID {
	id, _ := g.self.Load().(peer.ID)
	return id
}

// InterceptPeerDial implements connmgr.ConnectionGater.
func (g *Gater) InterceptPeerDial(p peer.ID) bool { return g.p.Allowed(g.id(), p) }

// InterceptAddrDial implements connmgr.ConnectionGater.
func (g *Gater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.p.Allowed(g.id(), p) }

// InterceptAccept implements connmgr.ConnectionGater: the peer is not
// known yet, so InterceptSecured decides.
func (g *Gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured implements connmgr.ConnectionGater.
func (g *Gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.p.Allowed(g.id(), p)
}

// InterceptUpgraded implements connmgr.ConnectionGater.
func (g *Gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
