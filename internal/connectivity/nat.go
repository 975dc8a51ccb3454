package connectivity

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/p2p"
)

// Reaching members behind NATs. A node learns whether it is reachable
// from outside with AutoNAT, asking its peers to dial it back. One that is
// not holds relay reservations with the servers of its groups (each
// server runs a circuit relay for the members of its groups only), and
// announces the relay addresses in its memberships beside the public
// addresses its servers saw it at. A member that can reach it only
// through a relay connects there; the relayed connection is upgraded to a
// direct one by DCUtR hole punching when the two NATs allow it. Blob
// transfers that still cross a relay follow Config.Relayed.

// maxObservers bounds the peers whose observation of this node is kept.
const maxObservers = 64

// maxObserved bounds the observed addresses a node announces.
const maxObserved = 4

// observed holds the public addresses peers saw this node at: behind a
// NAT, the address of its mapping there. Only what the servers of its
// groups saw is announced, since any member could otherwise make the node
// announce an address of its choosing; a peer's observation is kept
// until then, as identification comes before a join makes it a server
// of this node's.
type observed struct {
	mu  sync.Mutex
	by  map[peer.ID]sighting // the latest observation by each peer
	use []ma.Multiaddr       // what the servers saw, newest first
}

type sighting struct {
	addr ma.Multiaddr
	at   time.Time
}

// add records that p saw this node at a.
func (o *observed) add(p peer.ID, a ma.Multiaddr, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.by == nil {
		o.by = map[peer.ID]sighting{}
	}
	o.by[p] = sighting{a, now}
	for len(o.by) > maxObservers {
		var oldest peer.ID
		for q, s := range o.by {
			if oldest == "" || s.at.Before(o.by[oldest].at) {
				oldest = q
			}
		}
		delete(o.by, oldest)
	}
}

// choose sets the addresses to announce: the newest ones that a peer
// trusted saw, at most maxObserved. It reports whether they changed.
func (o *observed) choose(trusted func(peer.ID) bool) bool {
	o.mu.Lock()
	by := maps.Clone(o.by)
	o.mu.Unlock()
	var ss []sighting // trusted is asked without the lock held
	for p, s := range by {
		if trusted(p) {
			ss = append(ss, s)
		}
	}
	slices.SortFunc(ss, func(x, y sighting) int { return y.at.Compare(x.at) })
	var use []ma.Multiaddr
	for _, s := range ss {
		if len(use) < maxObserved && !slices.ContainsFunc(use, s.addr.Equal) {
			use = append(use, s.addr)
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	changed := !slices.EqualFunc(use, o.use, ma.Multiaddr.Equal)
	o.use = use
	return changed
}

// reset forgets every observation: the node's network changed.
func (o *observed) reset() {
	o.mu.Lock()
	defer o.mu.Unlock()
	clear(o.by)
	o.use = nil
}

// list returns the addresses to announce.
func (o *observed) list() []ma.Multiaddr {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.use)
}

// HostAddrs is the host's address factory: its own addresses and the
// observed ones.
func (s *Service) HostAddrs(addrs []ma.Multiaddr) []ma.Multiaddr {
	return ma.Unique(append(addrs, s.observed.list()...))
}

// relayACL admits to this node's relay only the members of the groups it
// is a server in: a reservation from one of them, a circuit between two.
type relayACL struct{ s *Service }

// AllowReserve implements relay.ACLFilter.
func (a relayACL) AllowReserve(p peer.ID, _ ma.Multiaddr) bool { return a.s.RelaysFor(p) }

// AllowConnect implements relay.ACLFilter.
func (a relayACL) AllowConnect(src peer.ID, _ ma.Multiaddr, dst peer.ID) bool {
	return a.s.RelaysFor(src) && a.s.RelaysFor(dst)
}

// RelaysFor reports whether this node relays for p: p is another member
// of a group this node is a server in.
func (s *Service) RelaysFor(p peer.ID) bool {
	if !s.started() || p == s.h.ID() {
		return false
	}
	for _, g := range s.groups.Groups() {
		if dev, ok := s.groups.DevType(g); ok && dev == syncnode.Server && s.groups.IsMember(p, g) {
			return true
		}
	}
	return false
}

// RelayCandidates yields up to num servers of this node's groups, with the
// addresses their memberships and the peerstore know, to hold relay
// reservations with.
func (s *Service) RelayCandidates(_ context.Context, num int) <-chan peer.AddrInfo {
	out := make(chan peer.AddrInfo, max(num, 0))
	defer close(out)
	if !s.started() {
		return out
	}
	seen := map[peer.ID]bool{s.h.ID(): true}
	for _, g := range s.groups.Groups() {
		for _, m := range s.groups.Members(g) {
			if len(out) == num {
				return out
			}
			if m.DevType != syncnode.Server || seen[m.Peer] {
				continue
			}
			seen[m.Peer] = true
			ai := peer.AddrInfo{ID: m.Peer}
			for _, a := range append(parseAddrs(m.Addrs), s.h.Peerstore().Addrs(m.Peer)...) {
				if !p2p.IsRelayAddr(a) {
					ai.Addrs = append(ai.Addrs, a)
				}
			}
			if len(ai.Addrs) > 0 {
				out <- ai
			}
		}
	}
	return out
}

// startRelay runs this node's circuit relay. Only members of the groups
// it is a server in get through (relayACL), within the resources given.
// Circuits carry no byte or time cap of their own: a capped circuit is a
// "limited" connection on which libp2p opens no stream unless each caller
// asks, and the members' blob transfers over a relay are paced by their
// own Config.Relayed instead.
func (s *Service) startRelay() error {
	res := relayv2.DefaultResources()
	res.Limit = nil
	res.MaxReservations = s.cfg.RelayMaxReservations
	res.MaxCircuits = s.cfg.RelayMaxCircuits
	res.BufferSize = 64 << 10
	r, err := relayv2.New(s.h, relayv2.WithResources(res), relayv2.WithACL(relayACL{s}))
	if err != nil {
		return fmt.Errorf("connectivity: relay: %w", err)
	}
	s.relay = r
	return nil
}

// followObserved records the public addresses the servers of this node's
// groups saw it at when they identify it, and publishes them when new.
func (s *Service) followObserved() error {
	sub, err := s.h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return fmt.Errorf("connectivity: identify events: %w", err)
	}
	s.onEvents(sub, func(e any) {
		id := e.(event.EvtPeerIdentificationCompleted)
		s.noteObserved(id.Peer, id.Conn, id.ObservedAddr)
		s.ChooseObserved()
	})
	return nil
}

// noteObserved records that p saw this node at a over conn. Relayed
// connections and private addresses are ignored.
func (s *Service) noteObserved(p peer.ID, conn network.Conn, a ma.Multiaddr) {
	if a == nil || conn == nil || !manet.IsPublicAddr(a) || p2p.IsRelayAddr(a) {
		return
	}
	if _, relayed := p2p.RelayOf(conn); relayed {
		return
	}
	s.observed.add(p, a, time.Now())
}

// ChooseObserved announces what the servers of this node's groups saw it
// at, publishing the addresses if that changed. It runs on every
// identification and every address check, so a server's observation made
// before the join that made it one counts from then on.
func (s *Service) ChooseObserved() {
	if s.observed.choose(s.isServerOfMine) {
		s.PublishAddrs(true)
	}
	s.hintBehindNAT()
}

// hintBehindNAT tells the host this node is unreachable from outside when
// its servers see it at a public address none of its interfaces has, while
// AutoNAT has no verdict yet: an AutoNAT server holds every failed
// dial-back for its full 15 s timeout (so that it cannot serve as a port
// scanner), and relay reservations wait on the verdict. AutoNAT's own
// verdict, when it comes, replaces the hint; a node wrongly hinted (a
// public host behind a one-to-one NAT) holds a reservation it does not
// need until then.
func (s *Service) hintBehindNAT() {
	// The verdict is read first: the interface check below asks the
	// system, and this runs every address check.
	if s.reachHint == nil || s.reach.Load() != int32(network.ReachabilityUnknown) || !s.seenBehindNAT() {
		return
	}
	if !s.reach.CompareAndSwap(int32(network.ReachabilityUnknown), int32(network.ReachabilityPrivate)) {
		return
	}
	s.log.Info("servers see this node behind a NAT; relay reservations start before AutoNAT's verdict")
	if err := s.reachHint.Emit(event.EvtLocalReachabilityChanged{Reachability: network.ReachabilityPrivate}); err != nil {
		s.log.Debug("reachability hint not sent", "err", err)
	}
}

// seenBehindNAT reports whether the servers of this node's groups see it
// at a public address that is on none of its interfaces.
func (s *Service) seenBehindNAT() bool {
	obs := s.observed.list()
	if len(obs) == 0 {
		return false
	}
	ifaces, err := manet.InterfaceMultiaddrs()
	if err != nil {
		return false
	}
	mine := map[string]bool{}
	for _, a := range ifaces {
		if ip, err := manet.ToIP(a); err == nil {
			mine[ip.String()] = true
		}
	}
	for _, a := range obs {
		if ip, err := manet.ToIP(a); err != nil || mine[ip.String()] {
			return false
		}
	}
	return true
}

// Reachability is what AutoNAT found of this node: reachable from outside
// ("public"), behind a NAT ("private"), or not known yet ("unknown"); and
// the relays it holds reservations with.
type Reachability struct {
	Status string
	Relays []peer.ID
}

// Reachability returns what this node knows of its reachability.
func (s *Service) Reachability() Reachability {
	r := Reachability{Status: "unknown"}
	switch s.reach.Load() {
	case int32(network.ReachabilityPublic):
		r.Status = "public"
	case int32(network.ReachabilityPrivate):
		r.Status = "private"
	}
	seen := map[peer.ID]bool{}
	for _, a := range s.h.Addrs() {
		if relay, ok := p2p.RelayOfAddr(a); ok && relay != "" && !seen[relay] {
			seen[relay] = true
			r.Relays = append(r.Relays, relay)
		}
	}
	return r
}

// followReachability keeps what AutoNAT last said.
func (s *Service) followReachability() error {
	sub, err := s.h.EventBus().Subscribe(new(event.EvtLocalReachabilityChanged))
	if err != nil {
		return fmt.Errorf("connectivity: reachability events: %w", err)
	}
	if s.reachHint, err = s.h.EventBus().Emitter(new(event.EvtLocalReachabilityChanged), eventbus.Stateful); err != nil {
		sub.Close()
		return fmt.Errorf("connectivity: reachability events: %w", err)
	}
	s.onEvents(sub, func(e any) {
		r := e.(event.EvtLocalReachabilityChanged).Reachability
		s.reach.Store(int32(r))
		s.log.Info("reachability", "status", r.String())
	})
	return nil
}
