package syncgroup

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode/internal/msgpackx"
)

// Apply merges a row received from a peer after checking that its writer
// signed it (VerifyRow) and was entitled to write it: data rows only under
// the group's prefixes and from members; a membership row only for its own
// writer, carrying a valid invitation (admins need none); a membership
// tombstone only from the member itself or an admin.
func (g *Group) Apply(row Row, now time.Time) (bool, error) {
	if err := VerifyRow(g.spec.ID, row); err != nil {
		return false, err
	}
	return g.applyVerified(row, now)
}

// ApplyVerified is Apply for a row that has passed VerifyRow for this
// group (as VerifyRows checks a batch on every core before the group is
// locked).
func (g *Group) ApplyVerified(row Row, now time.Time) (bool, error) {
	return g.applyVerified(row, now)
}

func (g *Group) applyVerified(row Row, now time.Time) (bool, error) {
	if err := g.check(row); err != nil {
		if g.mayLater(row, err) {
			err = fmt.Errorf("%w: %w", ErrUndecided, err)
		}
		return false, err
	}
	return g.rows.Apply(row, now)
}

// ErrUndecided wraps a refusal that a change of the chain this replica
// holds, on a branch that may yet win or be made again, could undo: the
// row must come again (a sync's vector does not move past it).
var ErrUndecided = errors.New("syncgroup: refused for now")

// mayLater reports whether row, refused with err, could be taken once the
// chain settles: a key outside the prefixes that a change held here
// (winning or not) adds, or the membership of a peer such a change makes
// an admin. A member's word alone never makes a refusal undecided.
func (g *Group) mayLater(row Row, err error) bool {
	c := g.gov()
	// Only a change off the path may yet come onto it (made again, or its
	// branch winning once more of it arrives); one on it is settled.
	off := func(match func(Change) bool) bool {
		for k, l := range c.links {
			if !c.on[k] && match(l.c) {
				return true
			}
		}
		return false
	}
	switch {
	case errors.Is(err, ErrAfterExit):
		// The ejection may lose to a change on its way (its admin removed
		// at the same moment): the member's rows are then its own again.
		// What comes again is bounded: a member once out reaches no one
		// who has heard of it.
		return true
	case errors.Is(err, ErrOutsideGroup):
		return off(func(ch Change) bool { return ch.Op == AddPrefix && strings.HasPrefix(row.Key, ch.Prefix) })
	case errors.Is(err, ErrNotAllowed) && row.Key == MemberKey(row.Writer) && !row.Deleted:
		return off(func(ch Change) bool { return ch.Op == AddAdmin && ch.Peer == row.Writer })
	}
	return false
}

// Check reports whether row's writer may write it here now, as Apply
// judges it (not its signature: see VerifyRow).
func (g *Group) Check(row Row) error { return g.check(row) }

func (g *Group) check(row Row) error {
	if !strings.HasPrefix(row.Key, memberPrefix) {
		if !g.covers(row.Key) {
			return fmt.Errorf("%w: %q", ErrOutsideGroup, row.Key)
		}
		if !g.IsMember(row.Writer) {
			upTo, out := g.exitOf(row.Writer)
			switch {
			case !out:
				return fmt.Errorf("%w: writer %s of %q", ErrNotMember, row.Writer, row.Key)
			case row.Seq > upTo:
				return fmt.Errorf("%w: %q by %s (its row %d; it was out after %d)", ErrAfterExit, row.Key, row.Writer, row.Seq, upTo)
			}
			// Written while its writer was a member: valid for everyone.
		}
		if !row.Deleted {
			if err := msgpackx.Check(row.Value); err != nil {
				return fmt.Errorf("syncgroup: value of %q: %w", row.Key, err)
			}
		}
		return nil
	}
	if IsChainKey(row.Key) {
		return g.checkLink(row)
	}
	admin := g.isAdmin(row.Writer)
	if strings.HasPrefix(row.Key, admissionPrefix) {
		// Rows of a group made before groups had a chain: only its
		// first admins wrote them, and they count until the chain begins.
		if !slices.Contains(g.spec.Admins, row.Writer) {
			return fmt.Errorf("%w: %s may not admit or eject", ErrNotAllowed, row.Writer)
		}
		if !row.Deleted {
			var a admission
			if err := msgpackx.Unmarshal(row.Value, &a); err != nil {
				return fmt.Errorf("syncgroup: admission: %w", err)
			}
		}
		return nil
	}
	subject := peer.ID(strings.TrimPrefix(row.Key, memberPrefix))
	if row.Deleted {
		// A member removes only itself: an admin ejects through the
		// chain, whose order every replica agrees on.
		if row.Writer != subject {
			return fmt.Errorf("%w: %s may not remove %s", ErrNotAllowed, row.Writer, subject)
		}
		return nil
	}
	if row.Writer != subject {
		return fmt.Errorf("%w: %s may not write %s's membership", ErrNotAllowed, row.Writer, subject)
	}
	var m Member
	if err := msgpackx.Unmarshal(row.Value, &m); err != nil {
		return fmt.Errorf("syncgroup: membership of %s: %w", subject, err)
	}
	if admin {
		return nil
	}
	if g.wasAdmin(subject) {
		// A former admin needs no invitation, but its leave ends that
		// too: only an admission since brings it back.
		if g.leftWith(subject, row, nil) {
			return fmt.Errorf("%w: %s, a former admin, left since", ErrUsed, subject)
		}
		return nil
	}
	if m.Invitation == nil {
		return fmt.Errorf("%w: %s joined without an invitation", ErrNotAllowed, subject)
	}
	if g.leftWith(subject, row, m.Invitation.Nonce) {
		// Its leave spent the admission: only an admin's new one, for a
		// new invitation, brings it back. Without this, a leaver could
		// rejoin on its own at every replica the admins' revocation has
		// not reached yet.
		return fmt.Errorf("%w: by %s, who left since", ErrUsed, subject)
	}
	if m.Invitation.Group != g.spec.ID || m.Invitation.DevType != m.DevType {
		return fmt.Errorf("%w: %s's invitation does not match its membership", ErrNotAllowed, subject)
	}
	// The invitation must have been valid when the member joined; its
	// admission, an admin's change, is what makes the member one.
	return m.Invitation.verifySig(subject, time.Unix(0, row.TS.Wall))
}

// leftWith reports whether row, p's own membership row carrying the
// invitation whose nonce is given (nil: a former admin's, which needs
// none), would bring p back after it left: the row held for p is p's own
// tombstone, newer than p's admission (a tombstone older than the
// admission is the leave of an earlier membership), and row is newer
// still.
func (g *Group) leftWith(p peer.ID, row Row, nonce []byte) bool {
	cur, ok := g.rows.Get(memberPrefix + string(p))
	if !ok || !cur.Deleted || cur.Writer != p || row.TS.Compare(cur.TS) <= 0 {
		return false
	}
	a, ok := g.admission(p)
	// An admission from before the chain, or a creator's demotion, has no
	// time to order the leave by: its leaver waits for the admins'
	// revocation, as before.
	return ok && a.At != (Timestamp{}) && (nonce == nil || bytes.Equal(a.Nonce, nonce)) && cur.TS.Compare(a.At) > 0
}

// ApplyOrder returns a copy of rows in the order a sync applies them:
// membership first (the chain first, parents before children), then each
// writer's rows in the order it wrote them.
func ApplyOrder(rows []Row) []Row {
	rows = slices.Clone(rows)
	slices.SortStableFunc(rows, func(a, b Row) int {
		am, bm := strings.HasPrefix(a.Key, memberPrefix), strings.HasPrefix(b.Key, memberPrefix)
		switch {
		case am != bm:
			if am {
				return -1
			}
			return 1
		case am:
			// The chain first, parents before children (its keys sort so).
			ac, bc := IsChainKey(a.Key), IsChainKey(b.Key)
			switch {
			case ac && bc:
				return strings.Compare(a.Key, b.Key)
			case ac != bc && ac:
				return -1
			case ac != bc:
				return 1
			}
			return 0
		case a.Writer != b.Writer:
			return strings.Compare(string(a.Writer), string(b.Writer))
		}
		return cmp.Compare(a.Seq, b.Seq)
	})
	return rows
}
