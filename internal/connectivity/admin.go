package connectivity

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode/syncgroup"
)

// ErrAdminUnreachable reports a join that could not reach the admin that
// issued its invitation.
var ErrAdminUnreachable = errors.New("node: the admin that issued the invitation is unreachable")

// ReachAdmin connects, for a join, to the admin that issued inv, else to
// the other members whose addresses it carries (other admins among them:
// any admin admits with any admin's invitation), at the addresses the
// invitation carries and extra (an address without a /p2p/ ID is the
// issuer's), or, with none of the issuer's and LAN discovery on, where the
// LAN says it is. It returns the peers reached, the issuer first: those
// to ask to admit this node.
func (s *Service) ReachAdmin(ctx context.Context, inv syncgroup.Invitation, extra []ma.Multiaddr, timeout time.Duration) ([]peer.ID, error) {
	switch {
	case inv.Joiner != s.h.ID():
		return nil, fmt.Errorf("%w: it names %s, not this node", syncgroup.ErrInvitation, inv.Joiner)
	case inv.Admin == s.h.ID():
		return nil, fmt.Errorf("%w: this node issued it", syncgroup.ErrInvitation)
	}
	hints, err := inv.AddrInfos()
	if err != nil {
		return nil, err
	}
	for _, a := range extra {
		if len(a) == 0 {
			continue
		}
		tr, id := peer.SplitAddr(a)
		if id == "" {
			id = inv.Admin
		}
		hints = append(hints, peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{tr}})
	}
	// Addresses are only where to dial: the issuer first, then the
	// others, which the rounds after the join dial as well.
	order := []peer.ID{inv.Admin}
	var issuerAddrs []ma.Multiaddr
	for _, ai := range hints {
		switch {
		case ai.ID == inv.Admin:
			issuerAddrs = append(issuerAddrs, ai.Addrs...)
		case ai.ID != s.h.ID():
			s.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.AddressTTL)
			if !slices.Contains(order, ai.ID) {
				order = append(order, ai.ID)
			}
		}
	}
	if len(issuerAddrs) == 0 && len(s.h.Peerstore().Addrs(inv.Admin)) == 0 && len(order) == 1 {
		if !s.cfg.LAN {
			return nil, fmt.Errorf("%w: no address of %s: the invitation carries none (an older node issued it) and none was given",
				ErrAdminUnreachable, inv.Admin)
		}
		if err := s.AwaitAddrs(ctx, inv.Admin, timeout); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrAdminUnreachable, err)
		}
	}
	// The addresses come with the invitation: a dial that failed a
	// moment ago (the admin restarted on a new port) must not hold the
	// join back.
	ClearDialBackoff(s.h, order)
	s.h.Peerstore().AddAddrs(inv.Admin, issuerAddrs, peerstore.PermanentAddrTTL)
	return s.dialAll(ctx, order, inv.Admin, timeout)
}

// dialAll connects to every peer of order at once and returns those
// reached: all of order as soon as the issuer is (it admits almost
// always), else, the issuer's dial failed, the others reached once every
// dial has ended.
func (s *Service) dialAll(ctx context.Context, order []peer.ID, issuer peer.ID, timeout time.Duration) ([]peer.ID, error) {
	// All at once: the issuer's answer ends the wait (it admits almost
	// always); else every dial's does, offline peers after timeout.
	type dial struct {
		p   peer.ID
		err error
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan dial, len(order))
	for _, p := range order {
		go func() { done <- dial{p, s.h.Connect(dctx, peer.AddrInfo{ID: p})} }()
	}
	var reached []peer.ID
	var first error
	for range order {
		// The issuer has its whole timeout: a busy one is slow to answer,
		// not gone, and it is the one that admits for sure.
		switch d := <-done; {
		case d.err == nil && d.p == issuer:
			return order, nil
		case d.err == nil:
			reached = append(reached, d.p)
		case d.p == issuer:
			first = d.err
		}
	}
	if len(reached) == 0 {
		return nil, fmt.Errorf("%w: %s: %v (an admin of the group must be online to admit this node: "+
			"try again once one is, or ask an admin for a new invitation)", ErrAdminUnreachable, issuer, first)
	}
	return reached, nil
}
