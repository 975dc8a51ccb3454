package syncer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/syncgroup"
)

// ErrNoAdmin reports a join that none of the peers asked admitted.
var ErrNoAdmin = errors.New("syncer: join: no admin admitted this node")

// Join presents inv to an admin of its group: the one that issued it,
// else each of admins in turn (any admin admits with any admin's
// invitation), receives the group's spec as created, joins, and runs a
// first round with the admin that admitted it.
func (s *Syncer) Join(ctx context.Context, inv syncgroup.Invitation, admins []peer.ID, addrs []string) (syncnode.GroupID, error) {
	ctx, done, err := s.enter(ctx)
	if err != nil {
		return "", err
	}
	defer done()
	var resp joinResponse
	var via peer.ID
	var errs []error
	last := s.lastResume(inv.Group)
	// The issuer was dialled before the join (it admits almost always):
	// a redirect to it, when it is not among admins, would wait again on
	// a peer that did not answer.
	asked := map[peer.ID]bool{inv.Admin: !slices.Contains(admins, inv.Admin)}
	redirects := 0
	for i := 0; i < len(admins); i++ {
		a := admins[i]
		if asked[a] {
			continue
		}
		asked[a] = true
		if resp, err = s.askJoin(ctx, inv, a, last.TS); err == nil {
			via = a
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", a, err))
		// A member that is no admin names the admins it knows: one the
		// invitation could not name (made an admin since) may admit.
		for _, p := range s.redirected(resp.Admins, a) {
			if !asked[p] && !slices.Contains(admins, p) && redirects < maxRedirects {
				admins, redirects = append(admins, p), redirects+1
			}
		}
	}
	if via == "" {
		return "", fmt.Errorf("%w: %w", ErrNoAdmin, errors.Join(errs...))
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
	res, err := s.retire(g.ID())
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
	err = s.SyncWith(ctx, g.ID(), via)
	if errors.Is(err, ErrRefused) || err == nil && !s.IsMember(s.h.ID(), g.ID()) {
		// via refuses this node the round, or the round brought the
		// chain as via has it and no admission of this node in it: via
		// answered as an admin without being one (a peer a redirect or
		// an invitation named). An admin that admits never does either.
		if _, rerr := s.retire(g.ID()); rerr != nil {
			s.log.Error("replica of a join no admin made not removed", "group", g.ID(), "err", rerr)
		}
		return "", fmt.Errorf("%w: %s answered the join, but did not admit this node to %s (%v)", ErrNoAdmin, via, g.ID(), err)
	}
	if err != nil {
		s.log.Warn("first round after joining failed; the periodic rounds catch up", "group", g.ID(), "admin", via, "err", err)
	}
	s.With(g.ID(), func(g *syncgroup.Group) error { s.learnAddrs(g); return nil })
	return g.ID(), nil
}

// redirected reads the admins' addresses a refusal from peer from
// carries: each a multiaddr of at most MaxInvitationAddrLen bytes ending
// in its peer's ID, the first maxRedirects only. They are hints: the
// peer dialled must still prove its ID, and admit.
func (s *Syncer) redirected(addrs []string, from peer.ID) []peer.ID {
	var out []peer.ID
	for _, a := range addrs[:min(len(addrs), maxRedirects)] {
		if len(a) > syncgroup.MaxInvitationAddrLen {
			continue
		}
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			continue
		}
		tr, id := peer.SplitAddr(m)
		if id == "" || tr == nil || id == s.h.ID() {
			continue
		}
		s.h.Peerstore().AddAddrs(id, []ma.Multiaddr{tr}, peerstore.AddressTTL)
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	if len(out) > 0 {
		s.log.Info("join redirected to the group's admins", "by", from, "admins", out)
	}
	return out
}

// adminAddrs returns where the admins of g other than this node can be
// reached, for a joiner from whose invitation (inv) an admin issued: a
// member that is no admin refuses the join, and names them instead.
// Nothing for an invitation that does not verify.
func (s *Syncer) adminAddrs(inv syncgroup.Invitation, from peer.ID) []string {
	var out []string
	s.With(inv.Group, func(g *syncgroup.Group) error {
		admins := g.Spec().Admins
		if inv.Verify(from, admins, time.Now()) != nil {
			return nil
		}
		for _, a := range admins {
			if a == s.h.ID() {
				continue
			}
			var addrs []ma.Multiaddr
			if m, ok := g.Member(a); ok {
				for _, x := range m.Addrs {
					if addr, err := ma.NewMultiaddr(x); err == nil {
						addrs = append(addrs, addr)
					}
				}
			}
			addrs = append(addrs, s.h.Peerstore().Addrs(a)...)
			for _, addr := range addrs[:min(len(addrs), 4)] {
				tr, _ := peer.SplitAddr(addr)
				if tr == nil {
					continue
				}
				full := tr.Encapsulate(ma.StringCast("/p2p/" + a.String())).String()
				if len(out) < maxRedirects && len(full) <= syncgroup.MaxInvitationAddrLen && !slices.Contains(out, full) {
					out = append(out, full)
				}
			}
		}
		return nil
	})
	return out
}

// askJoin presents inv to admin and returns its answer.
func (s *Syncer) askJoin(ctx context.Context, inv syncgroup.Invitation, admin peer.ID, last syncgroup.Timestamp) (joinResponse, error) {
	var resp joinResponse
	err := p2p.Exchange(ctx, s.h, admin, p2p.ProtoJoin, func(st network.Stream) error {
		defer st.Close()
		// The admin judges the invitation, not where it was reached.
		if err := p2p.WriteMsg(st, joinRequest{Invitation: inv.WithoutAddrs(), TS: last}, s.cfg.IOTimeout); err != nil {
			st.Reset()
			return err
		}
		if err := p2p.ReadMsg(bufio.NewReader(st), st, &resp, p2p.MaxFrame, s.cfg.IOTimeout); err != nil {
			st.Reset()
			return err
		}
		return nil
	})
	switch {
	case err != nil:
		return joinResponse{}, err
	case resp.Err != "":
		return joinResponse{Admins: resp.Admins}, fmt.Errorf("%w: %s", ErrRefused, resp.Err)
	case resp.Spec.ID != inv.Group:
		return resp, fmt.Errorf("%w: the spec of %s given for %s", ErrRefused, resp.Spec.ID, inv.Group)
	}
	if err := resp.Spec.CheckGenesis(); err != nil {
		return resp, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	if len(inv.Genesis) > 0 {
		if h, err := resp.Spec.Hash(); err != nil || !bytes.Equal(h, inv.Genesis) {
			return resp, fmt.Errorf("%w: %s answered with a spec of %s that is not the one the invitation names", ErrRefused, admin, inv.Group)
		}
	}
	return resp, nil
}

// lastResume returns where this node's writes in group id stood in its
// earlier memberships, changing nothing (see retire).
func (s *Syncer) lastResume(id syncnode.GroupID) syncgroup.Resume {
	var res syncgroup.Resume
	if s.cfg.Store != nil {
		res, _ = s.cfg.Store.Resumed(id)
	}
	if r, err := s.replica(id); err == nil {
		r.mu.Lock()
		res = res.Max(r.g.Resume())
		r.mu.Unlock()
	}
	return res
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
	done, ok := s.handling(st)
	if !ok {
		return
	}
	defer done()
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
		// Any admin's invitation, as long as its issuer is an admin now.
		if err := req.Invitation.Verify(from, g.Spec().Admins, time.Now()); err != nil {
			return syncgroup.Row{}, err
		}
		resp.Spec = g.Genesis()
		row, fresh, err := g.AdmitJoiner(req.Invitation, req.TS, time.Now())
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
		resp = joinResponse{Err: refusal}
		if !s.IsAdmin(req.Invitation.Group, s.h.ID()) {
			resp.Admins = s.adminAddrs(req.Invitation, from)
		}
	}
	p2p.WriteMsg(st, resp, s.cfg.IOTimeout)
}
