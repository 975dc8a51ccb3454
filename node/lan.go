package node

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
)

// mdnsService is the name syncnode nodes announce themselves under on a
// LAN (multicast DNS); nodes of other programs do not answer to it.
const mdnsService = "_syncnode-lan"

// lanPeers handles the peers multicast DNS finds on the LAN: their
// addresses are kept (so a join by peer ID alone reaches its admin), and a
// member of a group this node is in is connected to at once.
type lanPeers struct{ n *Node }

// HandlePeerFound implements mdns.Notifee.
func (l lanPeers) HandlePeerFound(ai peer.AddrInfo) {
	n := l.n
	if ai.ID == n.h.ID() || len(ai.Addrs) == 0 {
		return
	}
	n.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.AddressTTL)
	if !n.sharesGroupWith(ai.ID) {
		return
	}
	n.goRun(func() {
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.IOTimeout)
		defer cancel()
		if err := n.h.Connect(ctx, ai); err != nil {
			n.log.Debug("member found on the LAN unreachable", "peer", ai.ID, "err", err)
		}
	})
}

// sharesGroupWith reports whether p is a member of a group this node is in.
func (n *Node) sharesGroupWith(p peer.ID) bool {
	for _, g := range n.sync.Groups() {
		if n.sync.IsMember(p, g) && n.sync.IsMember(n.h.ID(), g) {
			return true
		}
	}
	return false
}

// startLAN announces this node on the LAN and listens for the others.
func (n *Node) startLAN() error {
	svc := mdns.NewMdnsService(n.h, mdnsService, lanPeers{n})
	if err := svc.Start(); err != nil {
		return fmt.Errorf("node: LAN discovery: %w", err)
	}
	n.lan = svc
	return nil
}

// awaitAddrs waits, up to timeout, until the peerstore knows an address of
// p: LAN discovery finds it, or it connects.
func (n *Node) awaitAddrs(ctx context.Context, p peer.ID, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for len(n.h.Peerstore().Addrs(p)) == 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("node: no address of %s known, none found on the LAN in %v", p, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// followAddrs publishes this node's addresses in its memberships whenever
// the host's change (an interface came or went, a new listen address):
// the members read them from the membership and reach it there.
func (n *Node) followAddrs() error {
	sub, err := n.h.EventBus().Subscribe(new(event.EvtLocalAddressesUpdated))
	if err != nil {
		return fmt.Errorf("node: address updates: %w", err)
	}
	n.goRun(func() {
		defer sub.Close()
		for {
			select {
			case <-n.ctx.Done():
				return
			case _, ok := <-sub.Out():
				if !ok {
					return
				}
				n.publishAddrs()
			}
		}
	})
	return nil
}

// publishAddrs writes this node's current addresses into its membership of
// every group where they changed.
func (n *Node) publishAddrs() {
	addrs := n.addrStrings()
	for _, g := range n.sync.Groups() {
		if err := n.sync.SetAddrs(g, addrs); err != nil {
			n.log.Warn("addresses not written into the membership", "group", g, "err", err)
		}
	}
}
