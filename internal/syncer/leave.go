package syncer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/syncgroup"
)

// Leave removes this node from group id. A round with every member
// comes first, so that every row written here reaches at least one of
// them before the replica goes; if none answers, the leave is refused
// (ErrNoMemberReached) unless force, or this node is a member no more.
// Then the membership tombstone is pushed to the members it can reach,
// and the replica is dropped here.
func (s *Syncer) Leave(ctx context.Context, id syncnode.GroupID, force bool) error {
	ctx, done, err := s.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	r, err := s.replica(id)
	if err != nil {
		return err
	}
	members := s.members(id)
	var reached int
	for _, p := range members {
		// A member that refuses the round answered all the same: it
		// holds this node for out, and takes none of its rows any more.
		if err := s.SyncWith(ctx, id, p); err == nil || errors.Is(err, ErrRefused) {
			reached++
		}
	}
	// A node ejected already has nothing to hand on: the rows it wrote
	// while a member are the ones the ejecting admin had seen.
	var ejected bool
	s.With(id, func(g *syncgroup.Group) error {
		ejected = !g.IsMember(s.h.ID())
		return nil
	})
	if len(members) > 0 && reached == 0 && !force && !ejected {
		return fmt.Errorf("%w: none of the %d other members of %s answered, and rows written here may have reached none of them", ErrNoMemberReached, len(members), id)
	}
	r.mu.Lock()
	rows, err := r.g.Leave(time.Now())
	if err == nil {
		err = s.save(r, rows)
	}
	r.mu.Unlock()
	if err != nil {
		return err
	}
	if s.cfg.Store != nil {
		if err := s.cfg.Store.Sync(); err != nil {
			return err
		}
	}
	reached = s.tellLeft(ctx, id, members)
	if err := s.drop(id, r); err != nil {
		return err
	}
	s.hooks.Left(id)
	s.log.Info("left syncgroup", "group", id, "members told", reached)
	return nil
}

// tellLeft runs a round with each of members, which carries this node's
// tombstone, and returns how many answered: a member that refuses the
// round holds this node for out already.
func (s *Syncer) tellLeft(ctx context.Context, id syncnode.GroupID, members []peer.ID) (reached int) {
	for _, p := range members {
		if err := s.SyncWith(ctx, id, p); err == nil || errors.Is(err, ErrRefused) {
			reached++
		}
	}
	return reached
}

// drop forgets r, the replica of group id that this node left, unless
// another replica of id took its place (the node joined the group again):
// then it reports errReplaced and leaves that one alone.
func (s *Syncer) drop(id syncnode.GroupID, r *replica) error {
	s.mu.Lock()
	if s.groups[id] != r {
		s.mu.Unlock()
		return errReplaced
	}
	delete(s.groups, id)
	s.mu.Unlock()
	if s.cfg.Store == nil {
		return nil
	}
	// A round or push that took the replica before it left the map may
	// still apply rows to it: Remove reads it under its lock.
	r.mu.Lock()
	defer r.mu.Unlock()
	return s.cfg.Store.Remove(r.g)
}

// errReplaced reports a replica that a join replaced since it was taken.
var errReplaced = errors.New("syncer: the replica was replaced by a join")

// resumeLeave finishes a leave that a stop cut short after this node's
// tombstone reached stable storage and before the members were told
// (they would hold it for a member for good, and it would keep a replica
// of a group it left): it tells them, again each interval until one
// answers, and then drops the replica.
func (s *Syncer) resumeLeave(id syncnode.GroupID, r *replica) {
	for {
		if cur, err := s.replica(id); err != nil || cur != r {
			return // joined again since: the new membership stands
		}
		members := s.members(id)
		ctx, cancel := context.WithTimeout(s.ctx, 4*s.cfg.IOTimeout)
		reached := s.tellLeft(ctx, id, members)
		cancel()
		if reached > 0 || len(members) == 0 {
			if err := s.drop(id, r); errors.Is(err, errReplaced) {
				return
			} else if err != nil {
				s.log.Error("replica of a group left not dropped", "group", id, "err", err)
				return
			}
			s.hooks.Left(id)
			s.log.Info("leave finished after a restart", "group", id, "members told", reached)
			return
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(s.cfg.Interval):
		}
	}
}

// resumeLeaves starts finishing each leave a stop cut short: a replica
// whose own membership row is this node's tombstone.
func (s *Syncer) resumeLeaves() {
	// The replicas are read without the syncer's lock held: a round takes
	// a replica's lock, then the syncer's.
	s.mu.Lock()
	all := maps.Clone(s.groups)
	s.mu.Unlock()
	for id, r := range all {
		r.mu.Lock()
		left := r.g.LeftHere()
		r.mu.Unlock()
		if left {
			s.work.Go(func() { s.resumeLeave(id, r) })
		}
	}
}
