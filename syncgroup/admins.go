package syncgroup

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/msgpackx"
)

// grantPrefix keys the admins' grants of the admin role, one per peer,
// under the membership prefix so that they sync with it. No peer ID's
// bytes begin with "\x00g".
const grantPrefix = memberPrefix + "\x00g/"

// GrantKey is the key of the row in which an admin makes p an admin, or
// no longer one.
func GrantKey(p peer.ID) string { return grantPrefix + string(p) }

// reserved reports a key under the membership prefix that is no member's
// own row: an admission or a grant. (An Ed25519 peer ID's bytes begin
// with "\x00$": only the letter after the NUL tells them apart.)
func reserved(key string) bool {
	return strings.HasPrefix(key, admissionPrefix) || strings.HasPrefix(key, grantPrefix)
}

// grant is an admin's word on p's role: an admin or not. The last
// written wins (concurrent grants and removals resolve alike on every
// member, by their timestamps); a peer with no grant row is an admin if
// the spec made it one at creation.
type grant struct {
	Admin bool `msgpack:"a"`
	// UpTo is, in a removal, the highest sequence number of the admin's
	// rows the remover had seen: what it wrote up to there, it wrote as
	// an admin, and stays valid for everyone whatever order the rows
	// arrive in.
	UpTo uint64 `msgpack:"u,omitempty"`
}

// Admins returns the group's admins now: the members that the spec made
// admins at creation or a grant since, less those a grant made admins no
// more, in ID order. An admin that left or was ejected is none.
func (g *Group) Admins() []peer.ID { return slices.Clone(g.membership().admins) }

// IsAdmin reports whether p is an admin now.
func (g *Group) IsAdmin(p peer.ID) bool { return slices.Contains(g.membership().admins, p) }

// mayAdminister reports whether w may have written, as its row seq,
// what only admins write: it is an admin now; or it was one when it wrote
// the row (a grant that made it no admin, or its exit, records the last
// of its rows written before); or it is an admin whose own row has not
// arrived here yet (the rows that admit members sync before it).
func (g *Group) mayAdminister(w peer.ID, seq uint64) bool {
	if g.IsAdmin(w) {
		return true
	}
	gr, granted := g.grantOf(w)
	if granted && !gr.Admin {
		return seq <= gr.UpTo
	}
	if !granted && !slices.Contains(g.spec.Admins, w) {
		return false
	}
	if upTo, out := g.exitOf(w); out {
		return seq <= upTo
	}
	return true
}

// grantOf returns the grant row's word on p, if there is one.
func (g *Group) grantOf(p peer.ID) (grant, bool) {
	row, ok := g.rows.Get(GrantKey(p))
	if !ok || row.Deleted {
		return grant{}, false
	}
	var gr grant
	if msgpackx.Unmarshal(row.Value, &gr) != nil {
		return grant{}, false
	}
	return gr, true
}

// admins derives the admins from the members and the grant rows.
func (g *Group) admins(members map[peer.ID]Member) []peer.ID {
	var out []peer.ID
	for p := range members {
		admin := slices.Contains(g.spec.Admins, p)
		if gr, ok := g.grantOf(p); ok {
			admin = gr.Admin
		}
		if admin {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// SetAdmin makes p an admin of the group, or no longer one; only an admin
// may, p must be a member, and the group keeps at least one admin.
func (g *Group) SetAdmin(p peer.ID, admin bool, now time.Time) (Row, error) {
	switch {
	case !g.IsAdmin(g.self):
		return Row{}, fmt.Errorf("%w: only an admin names or removes admins", ErrNotAllowed)
	case !g.IsMember(p):
		return Row{}, fmt.Errorf("%w: %s is no member of %s", ErrNotAllowed, p, g.spec.Name)
	case g.IsAdmin(p) == admin:
		return Row{}, nil
	case !admin && len(g.membership().admins) == 1:
		return Row{}, fmt.Errorf("%w: %s is the last admin of %s: name another first", ErrNotAllowed, p, g.spec.Name)
	}
	gr := grant{Admin: admin}
	if !admin {
		gr.UpTo = g.rows.seen[p]
	}
	b, err := msgpack.Marshal(gr)
	if err != nil {
		return Row{}, err
	}
	return g.rows.Put(GrantKey(p), b, now), nil
}

// MayLeave refuses the leave of the last admin of a group that has other
// members: it names another admin first, or the group could never admit
// anyone again.
func (g *Group) MayLeave() error {
	m := g.membership()
	if len(m.admins) == 1 && m.admins[0] == g.self && len(m.list) > 1 {
		return fmt.Errorf("%w: this node is the last admin of %s: name another first (syncnode sg admin add)", ErrNotAllowed, g.spec.Name)
	}
	return nil
}

// Issuers returns the peers whose invitations admit a joiner now: the
// admins, and the creating admins whose own rows have not arrived yet.
func (g *Group) Issuers() []peer.ID {
	out := g.Admins()
	for _, p := range g.spec.Admins {
		if !slices.Contains(out, p) && g.mayAdminister(p, math.MaxUint64) {
			out = append(out, p)
		}
	}
	return out
}

// CheckCreator reports whether spec, received for group id from a peer
// that is not the invitation's issuer, names as its one creating admin
// the peer the group's ID names (an ID is "CREATOR/NAME").
func CheckCreator(spec Spec, id syncnode.GroupID) error {
	creator, name, ok := strings.Cut(string(id), "/")
	switch {
	case spec.ID != id:
		return fmt.Errorf("%w: a spec for %s, not %s", ErrInvitation, spec.ID, id)
	case !ok || len(spec.Admins) != 1 || spec.Admins[0].String() != creator || spec.Name != name:
		return fmt.Errorf("%w: the spec's admins are not the group's creator", ErrInvitation)
	}
	return nil
}
