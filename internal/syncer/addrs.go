package syncer

import (
	"strings"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/syncnode/syncnode/syncgroup"
)

// learnMemberAddrs puts the members' addresses in the peerstore again if
// rows, just applied to r, change a membership: a member that moved is
// reachable at its new addresses. A connection to a member from an IP
// address its membership named before and names no longer is closed: the
// member left that address, and the connection is dead however long TCP
// takes to tell.
func (s *Syncer) learnMemberAddrs(r *replica, rows []syncgroup.Row) {
	for _, row := range rows {
		if !strings.HasPrefix(row.Key, syncgroup.MembershipPrefix) {
			continue
		}
		r.mu.Lock()
		left := s.learnAddrs(r.g)
		r.mu.Unlock()
		s.closeLeft(left)
		return
	}
}

// closeLeft closes connections to members from addresses they left.
func (s *Syncer) closeLeft(conns []network.Conn) {
	for _, c := range conns {
		s.log.Info("connection to a member from an address it left closed", "peer", c.RemotePeer(), "remote", c.RemoteMultiaddr())
		c.Close()
	}
}

// ipsOf returns the IP addresses of multiaddr strings.
func ipsOf(addrs []string) map[string]bool {
	out := map[string]bool{}
	for _, a := range addrs {
		if m, err := ma.NewMultiaddr(a); err == nil {
			if ip, err := manet.ToIP(m); err == nil {
				out[ip.String()] = true
			}
		}
	}
	return out
}

// learnAddrs puts the members' addresses in the peerstore, and returns the
// connections to members from IP addresses their membership named when
// last read here and names no longer.
func (s *Syncer) learnAddrs(g *syncgroup.Group) (left []network.Conn) {
	for _, m := range g.Members() {
		if m.Peer == s.h.ID() {
			continue
		}
		for _, a := range m.Addrs {
			if addr, err := ma.NewMultiaddr(a); err == nil {
				s.h.Peerstore().AddAddr(m.Peer, addr, peerstore.PermanentAddrTTL)
			}
		}
		now := ipsOf(m.Addrs)
		s.mu.Lock()
		before := s.memberIPs[m.Peer]
		s.memberIPs[m.Peer] = now
		s.mu.Unlock()
		for _, c := range s.h.Network().ConnsToPeer(m.Peer) {
			ip, err := manet.ToIP(c.RemoteMultiaddr())
			if err == nil && before[ip.String()] && !now[ip.String()] {
				left = append(left, c)
			}
		}
	}
	return left
}
