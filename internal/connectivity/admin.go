package connectivity

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode/syncgroup"
)

// ErrAdminUnreachable reports a join that could not reach the admin that
// issued its invitation.
var ErrAdminUnreachable = errors.New("node: the admin that issued the invitation is unreachable")

// ReachAdmin connects to the admin that issued inv, for a join: at the
// addresses the invitation carries and extra (an address without a /p2p/
// ID is the admin's), or, with none and LAN discovery on, where the LAN
// says it is. The servers' addresses go to the peerstore for the rounds
// after the join. It returns the admin's addresses.
func (s *Service) ReachAdmin(ctx context.Context, inv syncgroup.Invitation, extra []ma.Multiaddr, timeout time.Duration) ([]ma.Multiaddr, error) {
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
	// Addresses are only where to dial: the admin's go to the join, the
	// servers' to the peerstore, for the rounds that follow it.
	var adminAddrs []ma.Multiaddr
	for _, ai := range hints {
		if ai.ID == inv.Admin {
			adminAddrs = append(adminAddrs, ai.Addrs...)
		} else if ai.ID != s.h.ID() {
			s.h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.AddressTTL)
		}
	}
	if len(adminAddrs) == 0 && len(s.h.Peerstore().Addrs(inv.Admin)) == 0 {
		if !s.cfg.LAN {
			return nil, fmt.Errorf("%w: no address of %s: the invitation carries none (an older node issued it) and none was given",
				ErrAdminUnreachable, inv.Admin)
		}
		if err := s.AwaitAddrs(ctx, inv.Admin, timeout); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrAdminUnreachable, err)
		}
	}
	// The admin's addresses come with the invitation: a dial that failed
	// a moment ago (the admin restarted on a new port) must not hold the
	// join back.
	ClearDialBackoff(s.h, []peer.ID{inv.Admin})
	s.h.Peerstore().AddAddrs(inv.Admin, adminAddrs, peerstore.PermanentAddrTTL)
	dctx, cancel := context.WithTimeout(ctx, timeout)
	err = s.h.Connect(dctx, peer.AddrInfo{ID: inv.Admin})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v (only the admin that issued an invitation admits with it, not the group's servers: "+
			"try again once it is online, or ask another admin for a new invitation)", ErrAdminUnreachable, inv.Admin, err)
	}
	return adminAddrs, nil
}
