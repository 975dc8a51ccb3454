package node

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/syncnode/syncnode/p2p"
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

// addrCheck is how often the host's interface addresses are compared with
// those last published: the host's own address events can come minutes
// after an interface changed.
const addrCheck = 2 * time.Second

// followAddrs publishes this node's addresses in its memberships whenever
// they change (an interface came or went, a new listen address): the
// members read them from the membership and reach it there.
func (n *Node) followAddrs() error {
	sub, err := n.h.EventBus().Subscribe(new(event.EvtLocalAddressesUpdated))
	if err != nil {
		return fmt.Errorf("node: address updates: %w", err)
	}
	n.goRun(func() {
		defer sub.Close()
		t := time.NewTicker(addrCheck)
		defer t.Stop()
		last := n.ifaceAddrs()
		for {
			select {
			case <-n.ctx.Done():
				return
			case _, ok := <-sub.Out():
				if !ok {
					return
				}
				n.publishAddrs(true)
			case <-t.C:
				n.chooseObserved()
				if now := n.ifaceAddrs(); !slices.Equal(now, last) {
					last = now
					// The NAT mappings servers saw belong to the old network.
					n.observed.reset()
					n.publishAddrs(true)
				}
			}
		}
	})
	return nil
}

// ifaceAddrs returns the host's listen addresses on its interfaces as
// they are now, sorted.
func (n *Node) ifaceAddrs() []string {
	// Asked of the system each time: the host caches its own answer.
	ifaces, err := manet.InterfaceMultiaddrs()
	if err != nil {
		return nil
	}
	var listen []ma.Multiaddr
	for _, a := range n.h.Network().ListenAddresses() {
		if _, err := manet.ToIP(a); err == nil { // not the relay transport's /p2p-circuit
			listen = append(listen, a)
		}
	}
	as, err := manet.ResolveUnspecifiedAddresses(listen, ifaces)
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.String())
	}
	slices.Sort(out)
	return out
}

// publishAddrs writes this node's current addresses into its membership of
// every group where they changed. Connections from an address the node no
// longer has are closed (they are dead, however long their peers take to
// notice), and the groups whose membership row changed sync at once, so
// the members learn where the node is now; at open (resync false) the
// rounds the node starts anyway carry the rows.
func (n *Node) publishAddrs(resync bool) {
	n.closeStaleConns()
	addrs := n.addrStrings()
	if fresh := n.ifaceAddrs(); len(fresh) > 0 {
		// The host's own list lags an interface change: the interfaces
		// are asked now, beside the relay and observed addresses.
		for _, a := range append(n.h.Addrs(), n.observed.list()...) {
			if p2p.IsRelayAddr(a) || manet.IsPublicAddr(a) {
				fresh = append(fresh, a.String())
			}
		}
		addrs = publishable(fresh)
	}
	for _, g := range n.sync.Groups() {
		changed, err := n.sync.SetAddrs(g, addrs)
		if err != nil {
			n.log.Warn("addresses not written into the membership", "group", g, "err", err)
			continue
		}
		if changed && resync {
			n.goRun(func() { n.syncAll(g) })
		}
	}
}

// closeStaleConns closes the connections whose local IP address is no
// longer one of this host's.
func (n *Node) closeStaleConns() {
	ifaces, err := manet.InterfaceMultiaddrs()
	if err != nil {
		return
	}
	ips := map[string]bool{}
	for _, a := range ifaces {
		if ip, err := manet.ToIP(a); err == nil {
			ips[ip.String()] = true
		}
	}
	for _, c := range n.h.Network().Conns() {
		ip, err := manet.ToIP(c.LocalMultiaddr())
		if err != nil || ip.IsUnspecified() || ips[ip.String()] {
			continue
		}
		n.log.Info("connection from an address this host no longer has closed", "peer", c.RemotePeer(), "local", c.LocalMultiaddr())
		c.Close()
	}
}
