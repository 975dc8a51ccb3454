package syncer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

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
	for _, a := range admins {
		if resp, err = s.askJoin(ctx, inv, a, last.TS); err == nil {
			via = a
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", a, err))
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
	if err := s.SyncWith(ctx, g.ID(), via); err != nil {
		s.log.Warn("first round after joining failed; the periodic rounds catch up", "group", g.ID(), "admin", via, "err", err)
	}
	s.With(g.ID(), func(g *syncgroup.Group) error { s.learnAddrs(g); return nil })
	return g.ID(), nil
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
		return resp, err
	case resp.Err != "":
		return resp, fmt.Errorf("%w: %s", ErrRefused, resp.Err)
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
		g.ObserveJoiner(req.TS, time.Now())
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
