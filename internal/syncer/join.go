package syncer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/syncgroup"
)

// Join presents inv to each of admins in turn (the admin that issued it
// if none are given) until one admits (any admin admits with any admin's
// invitation; a member that is none refuses), receives the group's spec,
// joins, and runs a first round with the admin that let it in.
func (s *Syncer) Join(ctx context.Context, inv syncgroup.Invitation, adminAddrs []ma.Multiaddr, addrs []string, admins ...peer.ID) (syncnode.GroupID, error) {
	ctx, done, err := s.enter(ctx)
	if err != nil {
		return "", err
	}
	defer done()
	if len(adminAddrs) > 0 {
		s.h.Peerstore().AddAddrs(inv.Admin, adminAddrs, peerstore.PermanentAddrTTL)
	}
	var resp joinResponse
	var errs []error
	admin := inv.Admin
	tried := map[peer.ID]bool{s.h.ID(): true}
	if len(admins) == 0 {
		admins = []peer.ID{inv.Admin}
	}
	for _, p := range admins {
		if tried[p] {
			continue
		}
		tried[p] = true
		if resp, err = s.askToJoin(ctx, p, inv); err == nil {
			admin = p
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", p, err))
	}
	if err != nil {
		return "", fmt.Errorf("syncer: join: %w", errors.Join(errs...))
	}
	if admin != inv.Admin {
		// Not the issuer's word: the spec must at least name as its
		// admin the creator the group's ID names (what joins rests on),
		// and the answerer must turn out to be an admin below.
		if err := syncgroup.CheckCreator(resp.Spec, inv.Group); err != nil {
			return "", fmt.Errorf("%w: from %s: %v", ErrRefused, admin, err)
		}
	}
	g, err := syncgroup.NewGroup(resp.Spec, s.h.ID(), time.Minute)
	if err != nil {
		return "", err
	}
	if err := g.SetKey(s.h.Peerstore().PrivKey(s.h.ID())); err != nil {
		return "", err
	}
	// A replica of a group this node left or was ejected from holds the
	// sequence numbers it used: the new one starts past them.
	res, err := s.retire(g.Spec().ID)
	if err != nil {
		return "", err
	}
	g.ResumeFrom(res)
	if _, err := g.Join(inv, addrs, time.Now()); err != nil {
		return "", err
	}
	if err := s.Add(g); err != nil {
		return "", err
	}
	// The join is done: the admin wrote the admission and the replica is
	// here. A first round that fails (a stream reset under load) is made
	// up by the periodic ones; failing the join for it would leave the
	// caller in the group believing it is not, with its invitation spent.
	roundErr := s.SyncWith(ctx, g.Spec().ID, admin)
	if admin != inv.Admin {
		// The rows of the first round say whether it is an admin.
		var ok bool
		s.With(g.Spec().ID, func(g *syncgroup.Group) error { ok = g.IsAdmin(admin); return nil })
		if !ok {
			s.retire(g.Spec().ID)
			return "", fmt.Errorf("%w: %s let this node in, and its rows do not show it an admin of the group (round: %v)", ErrRefused, admin, roundErr)
		}
	}
	if roundErr != nil {
		s.log.Warn("first round after joining failed; the periodic rounds catch up", "group", g.Spec().ID, "admin", admin, "err", roundErr)
	}
	s.With(g.Spec().ID, func(g *syncgroup.Group) error { s.learnAddrs(g); return nil })
	return g.Spec().ID, nil
}

// askToJoin presents inv to p and returns its answer: an error if p
// cannot be reached or refuses.
func (s *Syncer) askToJoin(ctx context.Context, p peer.ID, inv syncgroup.Invitation) (joinResponse, error) {
	var resp joinResponse
	err := p2p.Exchange(ctx, s.h, p, p2p.ProtoJoin, func(st network.Stream) error {
		defer st.Close()
		// The admin judges the invitation, not where it was reached.
		if err := p2p.WriteMsg(st, joinRequest{Invitation: inv.WithoutAddrs()}, s.cfg.IOTimeout); err != nil {
			st.Reset()
			return err
		}
		if err := p2p.ReadMsg(bufio.NewReader(st), st, &resp, p2p.MaxFrame, s.cfg.IOTimeout); err != nil {
			st.Reset()
			return err
		}
		return nil
	})
	if err == nil && resp.Err != "" {
		err = fmt.Errorf("%w: %s", ErrRefused, resp.Err)
	}
	return resp, err
}

// retire removes the replica of group id that this node may still hold
// (it was ejected: its replica stays until it joins again) and returns
// where its writes there stood, counting those of any replica removed
// before.
func (s *Syncer) retire(id syncnode.GroupID) (syncgroup.Resume, error) {
	var res syncgroup.Resume
	if s.cfg.Store != nil {
		var err error
		if res, err = s.cfg.Store.Resumed(id); err != nil {
			return res, err
		}
	}
	s.mu.Lock()
	r, ok := s.groups[id]
	delete(s.groups, id)
	s.mu.Unlock()
	if !ok {
		return res, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	res = res.Max(r.g.Resume())
	if s.cfg.Store != nil {
		if err := s.cfg.Store.Remove(r.g); err != nil {
			return res, err
		}
	}
	return res, nil
}

func (s *Syncer) handleJoin(st network.Stream) {
	defer st.Close()
	from := st.Conn().RemotePeer()
	var req joinRequest
	if err := p2p.ReadMsg(bufio.NewReader(st), st, &req, maxJoinRequest, s.cfg.IOTimeout); err != nil {
		st.Reset()
		return
	}
	var resp joinResponse
	// The invitation is judged by this admin's clock, and used once: the
	// admission this admin writes is what makes the joiner a member.
	_, err := s.write(req.Invitation.Group, func(g *syncgroup.Group) (syncgroup.Row, error) {
		// Any admin admits with an invitation of any admin's: the
		// issuer may be away.
		if !g.IsAdmin(s.h.ID()) {
			return syncgroup.Row{}, fmt.Errorf("%w: this node is no admin of the group", syncgroup.ErrNotAllowed)
		}
		if err := req.Invitation.Verify(from, g.Issuers(), time.Now()); err != nil {
			return syncgroup.Row{}, err
		}
		resp.Spec = g.Spec()
		row, fresh, err := g.Admit(req.Invitation, time.Now())
		if err == nil && !fresh {
			err = errNothingWritten
		}
		return row, err
	})
	if errors.Is(err, errNothingWritten) {
		err = nil
	}
	if err != nil {
		s.log.Info("join refused", "peer", from, "group", req.Invitation.Group, "err", err)
		resp.Err = refusal
	}
	p2p.WriteMsg(st, resp, s.cfg.IOTimeout)
}
