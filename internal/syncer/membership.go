package syncer

import (
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/syncgroup"
)

// The membership view: what the parts of a node above sync read of its
// groups — specs, members, rows — each under the group's lock, as
// copies. Together with IsMember, CanSee, MayFetch, Priority and
// PeerPriority it is the Membership the node's other parts are given,
// each through the small interface it defines.

// Spec returns group g's spec.
func (s *Syncer) Spec(g syncnode.GroupID) (spec syncgroup.Spec, err error) {
	err = s.With(g, func(gr *syncgroup.Group) error { spec = gr.Spec(); return nil })
	return spec, err
}

// Members returns group g's members (none if g is unknown).
func (s *Syncer) Members(g syncnode.GroupID) []syncgroup.Member {
	var out []syncgroup.Member
	s.With(g, func(gr *syncgroup.Group) error { out = gr.Members(); return nil })
	return out
}

// Member returns p's membership of group g.
func (s *Syncer) Member(g syncnode.GroupID, p peer.ID) (m syncgroup.Member, ok bool) {
	s.With(g, func(gr *syncgroup.Group) error { m, ok = gr.Member(p); return nil })
	return m, ok
}

// DevType returns this node's device type in group g.
func (s *Syncer) DevType(g syncnode.GroupID) (syncnode.DevType, bool) {
	m, ok := s.Member(g, s.h.ID())
	return m.DevType, ok
}

// Rows returns the live rows of group g under prefix that its spec
// covers, sorted by key.
func (s *Syncer) Rows(g syncnode.GroupID, prefix string) ([]syncgroup.Row, error) {
	var out []syncgroup.Row
	err := s.With(g, func(gr *syncgroup.Group) error {
		spec := gr.Spec()
		var err error
		out, _, err = gr.Rows().ListFrom(prefix, "", -1, spec.Covers)
		return err
	})
	return out, err
}

// RowsFrom returns up to limit live rows of group g under prefix that
// its spec covers, from key start on, sorted by key, and the start of the
// next page ("" after the last).
func (s *Syncer) RowsFrom(g syncnode.GroupID, prefix, start string, limit int) (rows []syncgroup.Row, next string, err error) {
	if limit <= 0 {
		return nil, "", fmt.Errorf("syncer: a page of %d rows", limit)
	}
	err = s.With(g, func(gr *syncgroup.Group) error {
		spec := gr.Spec()
		var err error
		rows, next, err = gr.Rows().ListFrom(prefix, start, limit, spec.Covers)
		return err
	})
	return rows, next, err
}

// Ejected reports whether an admin ejected this node from group g: the
// membership bans it and it is no member.
func (s *Syncer) Ejected(g syncnode.GroupID) bool {
	var out bool
	s.With(g, func(gr *syncgroup.Group) error {
		out = gr.Banned(s.h.ID()) && !gr.IsMember(s.h.ID())
		return nil
	})
	return out
}

// NameOf returns the name peer p gave itself in a group this node shares
// with it, or "" if none.
func (s *Syncer) NameOf(p peer.ID) string {
	for _, g := range s.Groups() {
		if m, ok := s.Member(g, p); ok && m.Name != "" {
			return m.Name
		}
	}
	return ""
}

// Genesis returns group g's spec as it was created.
func (s *Syncer) Genesis(g syncnode.GroupID) (spec syncgroup.Spec, err error) {
	err = s.With(g, func(gr *syncgroup.Group) error { spec = gr.Genesis(); return nil })
	return spec, err
}

// ChangeSpec makes change c to group id's spec, as this node (an admin
// allowed to make it), spreads it, and returns the spec it leads to.
func (s *Syncer) ChangeSpec(id syncnode.GroupID, c syncgroup.Change) (syncgroup.Spec, error) {
	if _, err := s.write(id, func(g *syncgroup.Group) (syncgroup.Row, error) { return g.ChangeSpec(c, time.Now()) }); err != nil {
		return syncgroup.Spec{}, err
	}
	return s.Spec(id)
}

// catchUp writes, for a replica just restored, the changes its chain
// still needs from this node: the admissions of a group made before
// groups had a chain, carried over by its admin, and this node's changes
// that lost to a concurrent branch while it was away.
func (s *Syncer) catchUp(id syncnode.GroupID) {
	_, err := s.writeAll(id, func(g *syncgroup.Group) ([]syncgroup.Row, error) {
		rows, err := g.Migrate(time.Now())
		return append(rows, g.Rebase(time.Now())...), err
	})
	if err != nil && !errors.Is(err, ErrClosed) {
		s.log.Error("group's chain not brought up to date", "group", id, "err", err)
	}
}

// Invite issues, signed with this node's key, an invitation for p to join
// group g as dev until expires, carrying addrs (see
// syncgroup.Invitation.Addrs) and the hash of the group's spec as
// created. For a peer an ejection banned, it is the invitation that lifts
// the ban. A group not here is invited to all the same: the admin the
// invitation is shown to decides.
func (s *Syncer) Invite(g syncnode.GroupID, p peer.ID, dev syncnode.DevType, expires time.Time, addrs []string) (syncgroup.Invitation, error) {
	key := s.h.Peerstore().PrivKey(s.h.ID())
	var inv syncgroup.Invitation
	var err error
	if genesis, gerr := s.Genesis(g); gerr == nil {
		inv, err = syncgroup.InviteTo(key, genesis, p, dev, expires, addrs...)
	} else {
		inv, err = syncgroup.Invite(key, g, p, dev, expires, addrs...)
	}
	if err != nil {
		return inv, err
	}
	if err := s.Readmit(g, p, inv.Nonce); err != nil && !errors.Is(err, ErrUnknownGroup) {
		return syncgroup.Invitation{}, err
	}
	return inv, nil
}
