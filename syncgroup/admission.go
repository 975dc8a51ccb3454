package syncgroup

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/msgpackx"
)

// admissionPrefix keys the admins' admissions, one per admitted peer,
// under the membership prefix so that they sync with it. No peer ID's
// bytes begin with "\x00a".
const admissionPrefix = memberPrefix + "\x00a/"

// admissionKey is where an admin records p's admission.
func admissionKey(p peer.ID) string { return admissionPrefix + string(p) }

// AdmissionKey is the key of the row in which an admin admits p.
func AdmissionKey(p peer.ID) string { return admissionKey(p) }

// admission is an admin's word that a peer joined with an invitation,
// checked against the admin's clock when the join arrived; Revoked, an
// ejection: that invitation admits the peer no more.
type admission struct {
	Nonce   []byte           `msgpack:"n"`
	DevType syncnode.DevType `msgpack:"t"`
	Revoked bool             `msgpack:"r,omitempty"`
	// Ejected bans the peer: no invitation admits it but the one whose
	// nonce Readmit names, issued by an admin after the ejection.
	Ejected bool   `msgpack:"x,omitempty"`
	Readmit []byte `msgpack:"re,omitempty"`
	// UpTo is, in an ejection, the highest sequence number of the
	// member's rows the ejecting admin had seen: rows it wrote up to there
	// were written while it was a member and stay valid for everyone.
	UpTo uint64 `msgpack:"u,omitempty"`
	// Demoted marks an admin that gave up or lost its role: a member
	// still, needing no invitation, until it leaves or is ejected.
	Demoted bool `msgpack:"dm,omitempty"`
	// At is when the admission was written (its change's timestamp): a
	// member's own tombstone older than it is from a membership before.
	At Timestamp `msgpack:"at,omitempty"`
}

// decodeAdmission reads an admission row (live and well formed).
func decodeAdmission(row Row) (admission, bool) {
	var a admission
	if row.Deleted || msgpackx.Unmarshal(row.Value, &a) != nil {
		return admission{}, false
	}
	return a, true
}

// ErrUsed reports an invitation that was used already and may not be again.
var ErrUsed = errors.New("syncgroup: invitation already used")

// ErrEjected reports an invitation of a peer that an admin ejected.
var ErrEjected = errors.New("syncgroup: peer ejected")

// isAdmin reports whether p is an admin now.
func (g *Group) isAdmin(p peer.ID) bool { return slices.Contains(g.gov().head.admins, p) }

// Eject removes p from the group; only an admin may (and only one senior
// to p, if p is an admin). It revokes p's admission, so p is no member
// whatever membership rows it writes, until an admin admits it again
// with a new invitation.
func (g *Group) Eject(p peer.ID, now time.Time) (Row, error) {
	if !g.isAdmin(g.self) {
		return Row{}, fmt.Errorf("%w: only an admin ejects", ErrNotAllowed)
	}
	c := Change{Op: opEject, Peer: p, UpTo: g.rows.seen[p]}
	if a, ok := g.admission(p); ok {
		c.Nonce, c.DevType = a.Nonce, a.DevType
	}
	if m, ok := g.memberRow(p); ok && m.Invitation != nil {
		c.Nonce, c.DevType = m.Invitation.Nonce, m.Invitation.DevType
	}
	return g.change(c, now)
}

// exitOf reports whether p left the group or was ejected, and the last
// sequence number of its rows written while it was a member: the row
// before its own tombstone, or what the ejecting admin had seen of it.
func (g *Group) exitOf(p peer.ID) (upTo uint64, out bool) {
	if a, found := g.admission(p); found && a.Ejected {
		return a.UpTo, true
	}
	if m, found := g.rows.Get(memberPrefix + string(p)); found && m.Deleted && m.Writer == p && m.Seq > 0 {
		return m.Seq - 1, true
	}
	return 0, false
}

// Banned reports whether an ejection bans p from joining again.
func (g *Group) Banned(p peer.ID) bool {
	a, found := g.admission(p)
	return found && a.Ejected
}

// Readmit lets p, banned by an ejection, join again with the invitation
// whose nonce is given, issued after the ejection; ok is false if p is not
// banned (any invitation of its admits it then).
func (g *Group) Readmit(p peer.ID, nonce []byte, now time.Time) (row Row, ok bool, err error) {
	if !g.isAdmin(g.self) {
		return Row{}, false, fmt.Errorf("%w: only an admin readmits", ErrNotAllowed)
	}
	a, found := g.admission(p)
	if !found || !a.Ejected {
		return Row{}, false, nil
	}
	row, err = g.change(Change{Op: opReadmit, Peer: p, Nonce: nonce, DevType: a.DevType}, now)
	return row, err == nil, err
}

// RevokeLeaver returns, on an admin's replica, the change revoking the
// admission of a member whose own tombstone says it left, so that its
// invitation cannot bring it back; ok is false if there is nothing to
// revoke (not an admin, the member is back, is an admin or was never
// admitted, or its admission is revoked already).
func (g *Group) RevokeLeaver(p peer.ID, now time.Time) (row Row, ok bool, err error) {
	if !g.isAdmin(g.self) || g.isAdmin(p) {
		return Row{}, false, nil
	}
	m, found := g.rows.Get(memberPrefix + string(p))
	if !found || !m.Deleted || m.Writer != p {
		return Row{}, false, nil
	}
	a, found := g.admission(p)
	if !found || a.Revoked || m.TS.Compare(a.At) <= 0 {
		// A tombstone older than the admission is the leave of an
		// earlier membership, arriving late: the peer joined again since.
		return Row{}, false, nil
	}
	row, err = g.change(Change{Op: opRevoke, Peer: p}, now)
	return row, err == nil, err
}

// ObserveJoiner moves this replica's clock past ts, the joiner's own last
// timestamp, before its admission: the admission then sorts after every
// row of the joiner's earlier memberships, its leave among them. A ts too
// far ahead is ignored.
func (g *Group) ObserveJoiner(ts Timestamp, now time.Time) {
	if err := g.rows.hlc.Observe(ts, now); err != nil {
		return // too far ahead: not observed, and the admission stands
	}
}

// AdmitJoiner is Admit for a join request that carries the joiner's last
// timestamp in the group: the replica's clock moves past it first
// (ObserveJoiner), and the invitation an admission here holds already is
// refused (ErrUsed) if the joiner wrote in the group since that
// admission: it left, though the leave has not reached this admin yet.
// Without that, the same join asked again would stand here while the
// replicas that hold the leave refuse the joiner's row (Group.Apply).
func (g *Group) AdmitJoiner(inv Invitation, last Timestamp, now time.Time) (row Row, ok bool, err error) {
	if a, found := g.admission(inv.Joiner); found && bytes.Equal(a.Nonce, inv.Nonce) && a.At != (Timestamp{}) && last.Compare(a.At) > 0 {
		return Row{}, false, fmt.Errorf("%w: by %s, who wrote in the group since it was admitted: it left", ErrUsed, inv.Joiner)
	}
	g.ObserveJoiner(last, now)
	return g.Admit(inv, now)
}

// Admit records, on an admin's replica, that inv's joiner was let in: the
// caller has checked inv against its own clock and the group's admins. It
// returns ok false, and no row, if that admission is recorded already;
// ErrUsed if the invitation was used before and its admission revoked.
func (g *Group) Admit(inv Invitation, now time.Time) (row Row, ok bool, err error) {
	if !g.isAdmin(g.self) {
		return Row{}, false, fmt.Errorf("%w: only an admin admits", ErrNotAllowed)
	}
	if len(inv.Nonce) == 0 {
		return Row{}, false, fmt.Errorf("%w: it has no nonce", ErrInvitation)
	}
	a, found := g.admission(inv.Joiner)
	if found && a.Ejected && !bytes.Equal(a.Readmit, inv.Nonce) {
		// Whatever the invitation (one issued before the ejection, a
		// second one never used): the ejection bans the peer.
		return Row{}, false, fmt.Errorf("%w: %s was ejected; only an invitation issued since admits it", ErrEjected, inv.Joiner)
	}
	if found && bytes.Equal(a.Nonce, inv.Nonce) {
		if a.Revoked {
			return Row{}, false, fmt.Errorf("%w: by %s, who was ejected since", ErrUsed, inv.Joiner)
		}
		if row, ok := g.rows.Get(memberPrefix + string(inv.Joiner)); ok && row.Deleted {
			return Row{}, false, fmt.Errorf("%w: by %s, who left since", ErrUsed, inv.Joiner)
		}
		return Row{}, false, nil // the same join, asked again
	}
	row, err = g.change(Change{Op: opAdmit, Peer: inv.Joiner, Nonce: inv.Nonce, DevType: inv.DevType}, now)
	return row, err == nil, err
}

// admission returns p's admission as the chain (or, in a group whose
// chain is empty, its creator's admission rows) records it.
func (g *Group) admission(p peer.ID) (admission, bool) {
	a, ok := g.gov().head.adm[p]
	return a, ok
}
