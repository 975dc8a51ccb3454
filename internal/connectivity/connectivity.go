// Package connectivity keeps a node reachable by the members of its
// groups: the addresses it publishes in its memberships, what its servers
// saw of it behind a NAT, its relay for its groups' members, LAN discovery
// and renewed hole punches.
package connectivity

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/workgroup"
	"github.com/syncnode/syncnode/syncgroup"
)

// Groups is what connectivity needs of the node's syncgroups: who is in
// them, this node's device type in each, and its membership row's
// addresses.
type Groups interface {
	// Groups lists the groups this node is in.
	Groups() []syncnode.GroupID
	// IsMember reports whether p is a member of g.
	IsMember(p peer.ID, g syncnode.GroupID) bool
	// Members lists g's members.
	Members(g syncnode.GroupID) []syncgroup.Member
	// Spec returns g's spec as it stands.
	Spec(g syncnode.GroupID) (syncgroup.Spec, error)
	// DevType is this node's device type in g.
	DevType(g syncnode.GroupID) (syncnode.DevType, bool)
	// SetAddrs writes addrs into this node's membership row of g and
	// reports whether the row changed.
	SetAddrs(g syncnode.GroupID, addrs []string) (changed bool, err error)
}

// Config configures a Service. Zero fields take the documented defaults.
type Config struct {
	// IOTimeout bounds each dial (default 20 s).
	IOTimeout time.Duration
	// LAN announces the node on its LAN with multicast DNS and connects
	// to the members found there.
	LAN bool
	// RelayMaxReservations bounds the members holding a reservation with
	// this node's relay at once (default 128); RelayMaxCircuits the
	// circuits open to one member at once (default 16).
	RelayMaxReservations, RelayMaxCircuits int
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if c.IOTimeout < 0 || c.RelayMaxReservations < 0 || c.RelayMaxCircuits < 0 {
		return errors.New("connectivity: negative timeout or relay bound")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.IOTimeout == 0 {
		c.IOTimeout = 20 * time.Second
	}
	if c.RelayMaxReservations == 0 {
		c.RelayMaxReservations = 128
	}
	if c.RelayMaxCircuits == 0 {
		c.RelayMaxCircuits = 16
	}
	return c
}

// Service keeps one node reachable. New makes it before the host exists
// (the host takes HostAddrs and RelayCandidates), Start runs the relay
// once the groups are loaded, Follow the address, NAT and LAN watchers.
type Service struct {
	cfg Config
	log *slog.Logger

	h      host.Host
	groups Groups
	// resync runs a round of g with every member: its membership row
	// changed.
	resync func(g syncnode.GroupID)
	// ready is closed by Start: callbacks the host makes before then
	// (relay admission, relay candidates) see no groups.
	ready chan struct{}

	observed observed
	// reach is the last network.Reachability AutoNAT reported (or
	// hintBehindNAT told the host).
	reach atomic.Int32
	// reachHint tells the host's subsystems a reachability AutoNAT has
	// not found yet.
	reachHint event.Emitter
	punches   punches

	relay io.Closer
	lan   io.Closer

	ctx  context.Context
	work *workgroup.Group
}

// New returns a service that is not started yet.
func New(cfg Config, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	work := workgroup.New()
	return &Service{cfg: cfg.withDefaults(), log: log, ready: make(chan struct{}), work: work, ctx: work.Context()}, nil
}

// Start runs this node's relay for the members of the groups it is a
// server in; from then on the host's callbacks see groups. resync is
// called for a group whose membership row changed.
func (s *Service) Start(h host.Host, groups Groups, resync func(g syncnode.GroupID)) error {
	s.h, s.groups, s.resync = h, groups, resync
	if err := s.startRelay(); err != nil {
		return err
	}
	close(s.ready)
	return nil
}

// Follow watches the host's addresses, what identified peers saw of it
// and AutoNAT's verdicts, and starts LAN discovery if configured.
func (s *Service) Follow() error {
	for _, follow := range []func() error{s.followReachability, s.followAddrs, s.followObserved} {
		if err := follow(); err != nil {
			return err
		}
	}
	if s.cfg.LAN {
		// A host with no multicast-capable interface still runs; its
		// members are reached at the addresses membership carries.
		if err := s.startLAN(); err != nil {
			s.log.Warn("LAN discovery off", "err", err)
		}
	}
	s.goRun(s.runPunches)
	return nil
}

// Close stops LAN discovery, the relay and the watchers, and waits for
// them.
func (s *Service) Close() error {
	s.work.Stop()
	var errs []error
	if s.lan != nil {
		errs = append(errs, s.lan.Close())
	}
	if s.relay != nil {
		errs = append(errs, s.relay.Close())
	}
	s.work.Wait()
	return errors.Join(errs...)
}

// goRun runs fn in a goroutine that Close waits for.
func (s *Service) goRun(fn func()) { s.work.Go(fn) }

// started reports whether Start has run.
func (s *Service) started() bool {
	select {
	case <-s.ready:
		return true
	default:
		return false
	}
}

// onEvents hands each event sub delivers to fn, on a goroutine of the
// service's, until it closes; then it closes sub.
func (s *Service) onEvents(sub event.Subscription, fn func(any)) {
	s.goRun(func() {
		defer sub.Close()
		for {
			select {
			case <-s.ctx.Done():
				return
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				fn(e)
			}
		}
	})
}

// SharesGroupWith reports whether p is a member of a group this node is
// in.
func (s *Service) SharesGroupWith(p peer.ID) bool {
	for _, g := range s.groups.Groups() {
		if s.groups.IsMember(p, g) && s.groups.IsMember(s.h.ID(), g) {
			return true
		}
	}
	return false
}

// isServerOfMine reports whether p is a server member of a group this
// node is in.
func (s *Service) isServerOfMine(p peer.ID) bool {
	for _, g := range s.groups.Groups() {
		for _, m := range s.groups.Members(g) {
			if m.Peer == p && m.DevType == syncnode.Server {
				return true
			}
		}
	}
	return false
}

// dial connects to ai within the IOTimeout, logging a failure.
func (s *Service) dial(ai peer.AddrInfo, what string) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.IOTimeout)
	defer cancel()
	if err := s.h.Connect(ctx, ai); err != nil {
		s.log.Debug(what+" unreachable", "peer", ai.ID, "err", err)
	}
}
