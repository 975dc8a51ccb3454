package connectivity

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode/p2p"
)

// Hole punching as libp2p runs it: when a relayed connection comes in,
// the peer it reaches tries a direct dial and three hole punches in a
// row, and never again on that connection. A punch that failed once (a
// NAT not yet mapping, a loaded machine missing the synchronised moment)
// would leave two devices on the relay for good. So a node punches again:
// every punchCheck it looks for members of its groups that it reaches only
// through relays, on a connection it dialled at least punchAfter ago and
// that carries no blob transfer, and closes those connections and dials the member again through
// the same relays, which makes the member punch once more. Per member the wait
// before the next try doubles from punchAfter to punchMax, and starts
// over once a direct connection has been seen.
const (
	punchCheck = 5 * time.Second
	punchAfter = 15 * time.Second
	punchMax   = 10 * time.Minute
)

// punches paces the renewed hole punches per peer. It is pure
// bookkeeping: the caller passes the time.
type punches struct {
	mu sync.Mutex
	m  map[peer.ID]punchState
}

type punchState struct {
	next time.Time
	wait time.Duration
}

// due reports whether a relay-only peer is due another punch at now, and
// if so schedules the one after.
func (ps *punches) due(p peer.ID, now time.Time) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.m == nil {
		ps.m = map[peer.ID]punchState{}
	}
	s, ok := ps.m[p]
	if !ok {
		// First seen on relays only: libp2p's own punch had its chance.
		s = punchState{next: now, wait: punchAfter}
	}
	if now.Before(s.next) {
		ps.m[p] = s
		return false
	}
	s.next, s.wait = now.Add(s.wait), min(2*s.wait, punchMax)
	ps.m[p] = s
	return true
}

// direct records that p has a direct connection: its next relay-only
// spell starts the pacing over.
func (ps *punches) direct(p peer.ID) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	delete(ps.m, p)
}

// runPunches punches again, every punchCheck, through the relays of the
// members reached only through them (see punchAfter).
func (s *Service) runPunches() {
	t := time.NewTicker(punchCheck)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.punchAgain(time.Now())
		}
	}
}

func (s *Service) punchAgain(now time.Time) {
	nw := s.h.Network()
	for _, p := range nw.Peers() {
		var relayed []network.Conn
		direct, dialled, busy := false, false, false
		for _, c := range nw.ConnsToPeer(p) {
			if _, ok := p2p.RelayOf(c); !ok {
				direct = true
				break
			}
			relayed = append(relayed, c)
			st := c.Stat()
			dialled = dialled || st.Direction == network.DirOutbound && now.Sub(st.Opened) >= punchAfter
			for _, st := range c.GetStreams() {
				busy = busy || st.Protocol() == p2p.ProtoGetBlob
			}
		}
		if direct {
			s.punches.direct(p)
			continue
		}
		// A connection carrying a blob transfer is left alone: the next
		// check may find it done. (Other streams, the DHT's long-lived
		// ones and short sync rounds, open again on the new connection.)
		if len(relayed) == 0 || !dialled || busy || !s.SharesGroupWith(p) || !s.punches.due(p, now) {
			continue
		}
		s.goRun(func() { s.redialThroughRelays(s.ctx, p, relayed) })
	}
}

// PunchNow has p, a member reached only through relays, punch a hole
// again at once (the relayed connections closed and dialled again), and
// returns once the new relayed connection is up or the dial failed. A
// peer with a direct connection, or none at all, is left alone.
func (s *Service) PunchNow(ctx context.Context, p peer.ID) {
	relayed := s.relayedOnly(p)
	if len(relayed) == 0 || !s.SharesGroupWith(p) {
		return
	}
	s.redialThroughRelays(ctx, p, relayed)
}

// punchAllNow punches again at once with every member reached only
// through relays and carrying no blob transfer: this node's addresses
// changed (it learnt its public one, or a relay reservation), and a punch
// that failed before may work now.
func (s *Service) punchAllNow() {
	for _, p := range s.h.Network().Peers() {
		relayed := s.relayedOnly(p)
		if len(relayed) == 0 || busy(relayed) || !s.SharesGroupWith(p) {
			continue
		}
		s.punches.direct(p) // the pacing starts over from here
		s.goRun(func() { s.redialThroughRelays(s.ctx, p, relayed) })
	}
}

// relayedOnly returns p's connections if all of them cross relays.
func (s *Service) relayedOnly(p peer.ID) []network.Conn {
	conns := s.h.Network().ConnsToPeer(p)
	for _, c := range conns {
		if _, ok := p2p.RelayOf(c); !ok {
			return nil
		}
	}
	return conns
}

// busy reports whether one of conns carries a blob transfer.
func busy(conns []network.Conn) bool {
	for _, c := range conns {
		for _, st := range c.GetStreams() {
			if st.Protocol() == p2p.ProtoGetBlob {
				return true
			}
		}
	}
	return false
}

// redialThroughRelays closes p's relayed connections and dials p again
// through the same relays: p sees a new relayed connection come in and
// punches a hole once more.
func (s *Service) redialThroughRelays(ctx context.Context, p peer.ID, conns []network.Conn) {
	addrs := make([]ma.Multiaddr, 0, len(conns))
	for _, c := range conns {
		addrs = append(addrs, c.RemoteMultiaddr())
		c.Close()
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.IOTimeout)
	defer cancel()
	ctx = network.WithAllowLimitedConn(ctx, "hole punch again")
	if err := s.h.Connect(ctx, peer.AddrInfo{ID: p, Addrs: addrs}); err != nil {
		s.log.Debug("redial through a relay failed", "peer", p, "err", err)
		return
	}
	s.log.Debug("redialled through a relay to punch again", "peer", p)
}
