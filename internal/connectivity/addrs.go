package connectivity

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/syncgroup"
)

// The addresses a node publishes in its memberships, and how they follow
// the network.

// Addrs returns the host's addresses as members record them.
func (s *Service) Addrs() []string {
	var out []string
	for _, a := range s.h.Addrs() {
		out = append(out, a.String())
	}
	return publishable(out)
}

// maxPublished bounds the addresses a membership row carries.
const maxPublished = 16

// publishable returns the addresses worth publishing, once each, best
// first (rankAddrs), at most maxPublished: a relay address names its
// relay, a bare /p2p-circuit does not.
func publishable(as []string) []string {
	as = slices.Compact(slices.Sorted(slices.Values(as)))
	as = slices.DeleteFunc(as, func(s string) bool {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			return true
		}
		relay, circuit := p2p.RelayOfAddr(m)
		return circuit && relay == ""
	})
	as = rankAddrs(as)
	return as[:min(len(as), maxPublished)]
}

// invitationAddrsPerServer bounds the addresses of each other admin and
// server an invitation carries: the best ones, after all of the issuer's.
const invitationAddrsPerServer = 4

// InvitationAddrs returns the addresses an invitation to group g carries
// (see syncgroup.Invitation.Addrs): this node's own, as its memberships
// publish them, then those of g's other admins and of its servers (their
// membership rows', else what the peerstore knows), best first; each ends in its peer's ID, and
// there are at most syncgroup.MaxInvitationAddrs.
func (s *Service) InvitationAddrs(g syncnode.GroupID) []string {
	var out []string
	add := func(p peer.ID, as []string, most int) {
		suffix := "/p2p/" + p.String()
		for _, a := range as {
			if most == 0 || len(out) == syncgroup.MaxInvitationAddrs {
				return
			}
			if m, err := ma.NewMultiaddr(a); err != nil {
				continue
			} else if _, id := peer.SplitAddr(m); id != "" {
				continue // names a peer already: not one of p's own
			}
			if a += suffix; len(a) <= syncgroup.MaxInvitationAddrLen {
				out = append(out, a)
				most--
			}
		}
	}
	add(s.h.ID(), s.Addrs(), syncgroup.MaxInvitationAddrs)
	if s.groups == nil {
		return out
	}
	// The other admins first (any of them admits the joiner), then the
	// servers (which it syncs with afterwards).
	spec, _ := s.groups.Spec(g)
	members := s.groups.Members(g)
	slices.SortStableFunc(members, func(a, b syncgroup.Member) int {
		return cmp.Compare(rankFor(spec, a), rankFor(spec, b))
	})
	for _, m := range members {
		if m.Peer == s.h.ID() || rankFor(spec, m) == 2 {
			continue
		}
		as := publishable(m.Addrs)
		if len(as) == 0 {
			for _, a := range s.h.Peerstore().Addrs(m.Peer) {
				as = append(as, a.String())
			}
			as = publishable(as)
		}
		add(m.Peer, as, invitationAddrsPerServer)
	}
	return out
}

// rankFor orders members for an invitation's addresses: admins (0), then
// servers (1); the others (2) are left out.
func rankFor(spec syncgroup.Spec, m syncgroup.Member) int {
	switch {
	case slices.Contains(spec.Admins, m.Peer):
		return 0
	case m.DevType == syncnode.Server:
		return 1
	}
	return 2
}

// AwaitAddrs waits, up to timeout, until the peerstore knows an address of
// p: LAN discovery finds it, or it connects.
func (s *Service) AwaitAddrs(ctx context.Context, p peer.ID, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for len(s.h.Peerstore().Addrs(p)) == 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("connectivity: no address of %s known, none found on the LAN in %v", p, timeout)
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
func (s *Service) followAddrs() error {
	sub, err := s.h.EventBus().Subscribe(new(event.EvtLocalAddressesUpdated))
	if err != nil {
		return fmt.Errorf("connectivity: address updates: %w", err)
	}
	s.goRun(func() {
		defer sub.Close()
		t := time.NewTicker(addrCheck)
		defer t.Stop()
		last := s.ifaceAddrs()
		for {
			select {
			case <-s.ctx.Done():
				return
			case _, ok := <-sub.Out():
				if !ok {
					return
				}
				s.PublishAddrs(true)
				// A public address or a relay reservation: punch again
				// with the members reached only through relays.
				s.punchAllNow()
			case <-t.C:
				s.ChooseObserved()
				if now := s.ifaceAddrs(); !slices.Equal(now, last) {
					last = now
					// The NAT mappings servers saw belong to the old network.
					s.observed.reset()
					s.PublishAddrs(true)
				}
			}
		}
	})
	return nil
}

// ifaceAddrs returns the host's listen addresses on its interfaces as
// they are now, sorted.
func (s *Service) ifaceAddrs() []string {
	// Asked of the system each time: the host caches its own answer.
	ifaces, err := manet.InterfaceMultiaddrs()
	if err != nil {
		return nil
	}
	var listen []ma.Multiaddr
	for _, a := range s.h.Network().ListenAddresses() {
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

// PublishAddrs writes this node's current addresses into its membership of
// every group where they changed. Connections from an address the node no
// longer has are closed (they are dead, however long their peers take to
// notice), and the groups whose membership row changed sync at once, so
// the members learn where the node is now; at open (resync false) the
// rounds the node starts anyway carry the rows.
func (s *Service) PublishAddrs(resync bool) {
	s.closeStaleConns()
	addrs := s.Addrs()
	if fresh := s.ifaceAddrs(); len(fresh) > 0 {
		// The host's own list lags an interface change: the interfaces
		// are asked now, beside the relay and observed addresses.
		for _, a := range append(s.h.Addrs(), s.observed.list()...) {
			if p2p.IsRelayAddr(a) || manet.IsPublicAddr(a) {
				fresh = append(fresh, a.String())
			}
		}
		addrs = publishable(fresh)
	}
	for _, g := range s.groups.Groups() {
		changed, err := s.groups.SetAddrs(g, addrs)
		if err != nil {
			s.log.Warn("addresses not written into the membership", "group", g, "err", err)
			continue
		}
		if changed && resync {
			s.goRun(func() { s.resync(g) })
		}
	}
}

// closeStaleConns closes the connections whose local IP address is no
// longer one of this host's.
func (s *Service) closeStaleConns() {
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
	for _, c := range s.h.Network().Conns() {
		ip, err := manet.ToIP(c.LocalMultiaddr())
		if err != nil || ip.IsUnspecified() || ips[ip.String()] {
			continue
		}
		s.log.Info("connection from an address this host no longer has closed", "peer", c.RemotePeer(), "local", c.LocalMultiaddr())
		c.Close()
	}
}

// parseAddrs parses the multiaddrs in ss, skipping malformed ones.
func parseAddrs(ss []string) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, s := range ss {
		if m, err := ma.NewMultiaddr(s); err == nil {
			out = append(out, m)
		}
	}
	return out
}

// rankAddrs orders addresses as members should try them, and as they are
// kept when a list is cut: public direct addresses, then relay addresses,
// then private ones, then loopback.
func rankAddrs(as []string) []string {
	rank := func(s string) int {
		m, err := ma.NewMultiaddr(s)
		switch {
		case err != nil:
			return 4
		case p2p.IsRelayAddr(m):
			return 1
		case manet.IsIPLoopback(m):
			return 3
		case manet.IsPublicAddr(m):
			return 0
		}
		return 2
	}
	slices.SortStableFunc(as, func(a, b string) int { return cmp.Compare(rank(a), rank(b)) })
	return as
}

// AddAddrs puts addrs (multiaddr strings; malformed ones are skipped)
// in h's peerstore as p's.
func AddAddrs(h host.Host, p peer.ID, addrs []string) {
	h.Peerstore().AddAddrs(p, parseAddrs(addrs), peerstore.AddressTTL)
}

// ClearDialBackoff lets h dial peers at once again, whatever their recent
// failures: a caller that paces its own tries, or a user who asks now.
func ClearDialBackoff(h host.Host, peers []peer.ID) {
	sw, ok := h.Network().(*swarm.Swarm)
	if !ok {
		return
	}
	for _, p := range peers {
		sw.Backoff().Clear(p)
	}
}

// Connected reports whether h has a connection to p now.
func Connected(h host.Host, p peer.ID) bool {
	return h.Network().Connectedness(p) == network.Connected
}
