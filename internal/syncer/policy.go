package syncer

import (
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/signpost"
	"github.com/syncnode/syncnode/syncgroup"
)

var _ signpost.Policy = (*Syncer)(nil)

// IsMember reports whether p is a member of group g here.
func (s *Syncer) IsMember(p peer.ID, g syncnode.GroupID) bool {
	ok := false
	s.With(g, func(gr *syncgroup.Group) error { ok = gr.IsMember(p); return nil })
	return ok
}

// IsAdmin reports whether p is an admin of group g here.
func (s *Syncer) IsAdmin(g syncnode.GroupID, p peer.ID) bool {
	ok := false
	s.With(g, func(gr *syncgroup.Group) error { ok = slices.Contains(gr.Spec().Admins, p); return nil })
	return ok
}

// CanSee reports whether requester may learn of group g: members may, and
// anyone may learn of a group that is not private.
func (s *Syncer) CanSee(requester peer.ID, g syncnode.GroupID) bool {
	ok := false
	s.With(g, func(gr *syncgroup.Group) error {
		ok = !gr.Spec().Private || gr.IsMember(requester)
		return nil
	})
	return ok
}

// MayFetch reports whether requester may fetch a blob learned through
// groups: only if one of them is visible to it. A blob learned through no
// group is fetched by no one but this node.
func (s *Syncer) MayFetch(requester peer.ID, groups []syncnode.GroupID) bool {
	for _, g := range groups {
		if s.CanSee(requester, g) {
			return true
		}
	}
	return false
}
