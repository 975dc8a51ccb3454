package connectivity

import (
	"fmt"

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
type lanPeers struct{ s *Service }

// HandlePeerFound implements mdns.Notifee.
func (l lanPeers) HandlePeerFound(ai peer.AddrInfo) {
	s := l.s
	if ai.ID == s.h.ID() || len(ai.Addrs) == 0 {
		return
	}
	s.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.AddressTTL)
	if !s.SharesGroupWith(ai.ID) {
		return
	}
	s.goRun(func() { s.dial(ai, "member found on the LAN") })
}

// startLAN announces this node on the LAN and listens for the others.
func (s *Service) startLAN() error {
	svc := mdns.NewMdnsService(s.h, mdnsService, lanPeers{s})
	if err := svc.Start(); err != nil {
		return fmt.Errorf("connectivity: LAN discovery: %w", err)
	}
	s.lan = svc
	return nil
}
