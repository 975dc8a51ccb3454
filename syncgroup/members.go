package syncgroup

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/msgpackx"
)

// memberPrefix is the reserved key prefix of membership rows. Keys that
// users write start elsewhere: group prefixes may not begin with NUL. As
// NUL sorts first, Missing sends membership rows before the data rows whose
// writers they admit.
const memberPrefix = "\x00m/"

// MembershipPrefix is the key prefix of the membership rows, which sync
// along with a group's own prefixes.
const MembershipPrefix = memberPrefix

// MemberKey returns the key of p's membership row.
func MemberKey(p peer.ID) string { return memberPrefix + string(p) }

// Member is one member of a group as the membership rows record it.
type Member struct {
	Peer    peer.ID          `msgpack:"-"`
	DevType syncnode.DevType `msgpack:"t"`
	Addrs   []string         `msgpack:"a,omitempty"`
	// Name is the device's name as its user set it ("laptop"): shown
	// beside its peer ID, never trusted for anything, and cleaned on
	// reading (CleanName).
	Name string `msgpack:"n,omitempty"`
	// Invitation is the joiner's proof; empty for an admin, who needs none.
	Invitation *Invitation `msgpack:"i,omitempty"`
}

// memberCache is a group's membership, decoded once per change of its
// membership rows.
type memberCache struct {
	gen   uint64
	valid bool
	list  []Member
	by    map[peer.ID]Member
}

// membership returns the current members, decoding them again only if a
// membership row changed since the last call.
func (g *Group) membership() *memberCache {
	c := &g.members
	if c.valid && c.gen == g.rows.memberGen {
		return c
	}
	c.list, c.by = nil, map[peer.ID]Member{}
	for _, row := range g.rows.List(memberPrefix) {
		if strings.HasPrefix(row.Key, admissionPrefix) || IsChainKey(row.Key) {
			continue
		}
		if m, ok := g.decodeMember(peer.ID(strings.TrimPrefix(row.Key, memberPrefix))); ok {
			c.list = append(c.list, m)
			c.by[m.Peer] = m
		}
	}
	c.gen, c.valid = g.rows.memberGen, true
	return c
}

func (g *Group) putMember(m Member, now time.Time) (Row, error) {
	b, err := msgpack.Marshal(m)
	if err != nil {
		return Row{}, err
	}
	return g.rows.Put(memberPrefix+string(g.self), b, now), nil
}

// Join records this device as a member through inv, which an admin issued
// to it. The row it returns is what the other members must learn.
func (g *Group) Join(inv Invitation, addrs []string, now time.Time) (Row, error) {
	// The admin that admitted this device judged the issuer's standing;
	// a replica this new knows the group only as it was created.
	if err := inv.verifySig(g.self, now); err != nil {
		return Row{}, err
	}
	if inv.Group != g.spec.ID {
		return Row{}, fmt.Errorf("%w: invitation is for %s", ErrInvitation, inv.Group)
	}
	// The row keeps the invitation the admin verified: its addresses were
	// the joiner's to dial, and are no one else's business.
	inv = inv.WithoutAddrs()
	return g.putMember(Member{DevType: inv.DevType, Addrs: addrs, Invitation: &inv}, now)
}

// Leave removes this device from the group: it returns the tombstone of
// its membership, after, for an admin, the change giving up its role. The
// last admin may leave only a group with no other member (ErrLastAdmin):
// it names another admin first.
func (g *Group) Leave(now time.Time) ([]Row, error) {
	if err := g.CheckLeave(); err != nil {
		return nil, err
	}
	var out []Row
	if len(g.gov().head.admins) > 1 && g.isAdmin(g.self) {
		row, err := g.change(Change{Op: RemoveAdmin, Peer: g.self}, now)
		if err != nil {
			return nil, err
		}
		out = append(out, row)
	}
	return append(out, g.rows.Delete(memberPrefix+string(g.self), now)), nil
}

// LeftHere reports whether this device left the group: its membership
// row is the tombstone it wrote itself (an ejection is not).
func (g *Group) LeftHere() bool {
	row, ok := g.rows.Get(memberPrefix + string(g.self))
	return ok && row.Deleted && row.Writer == g.self
}

// CheckLeave reports whether this device may leave the group: not as its
// last admin while other members remain (ErrLastAdmin).
func (g *Group) CheckLeave() error {
	// An admin that left (its own removal lost to a concurrent change)
	// is an admin no one reaches: it does not count.
	others := slices.ContainsFunc(g.gov().head.admins, func(p peer.ID) bool { return p != g.self && g.IsMember(p) })
	if !g.isAdmin(g.self) || others {
		return nil
	}
	if slices.ContainsFunc(g.Members(), func(m Member) bool { return m.Peer != g.self }) {
		return fmt.Errorf("%w: this device is the only admin of %s and other members remain; make one of them an admin first (sg admin add)", ErrLastAdmin, g.spec.ID)
	}
	return nil
}

// LeftMember reports whether row is a member's own tombstone — it left —
// and who.
func LeftMember(row Row) (peer.ID, bool) {
	if !row.Deleted || !strings.HasPrefix(row.Key, memberPrefix) || strings.HasPrefix(row.Key, admissionPrefix) || IsChainKey(row.Key) {
		return "", false
	}
	p := peer.ID(strings.TrimPrefix(row.Key, memberPrefix))
	return p, p == row.Writer
}

// memberRow returns p's membership row's value, if live.
func (g *Group) memberRow(p peer.ID) (Member, bool) {
	row, ok := g.rows.Get(memberPrefix + string(p))
	if !ok || row.Deleted {
		return Member{}, false
	}
	var m Member
	if msgpackx.Unmarshal(row.Value, &m) != nil {
		return Member{}, false
	}
	m.Peer, m.Name = p, CleanName(m.Name)
	return m, true
}

// MaxNameLen is the most runes of a device name shown.
const MaxNameLen = 64

// CleanName returns name as it may be shown: control and formatting
// characters dropped, spaces trimmed, at most MaxNameLen runes. A member
// chooses its own name, so a name says nothing a peer ID does not.
func CleanName(name string) string {
	var b strings.Builder
	n := 0
	for _, r := range name {
		if n == MaxNameLen {
			break
		}
		if r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			continue
		}
		b.WriteRune(r)
		n++
	}
	return strings.TrimSpace(b.String())
}

// SetName writes this device's membership row again with name, reporting
// whether it changed anything. The device must be a member.
func (g *Group) SetName(name string, now time.Time) (Row, bool, error) {
	name = CleanName(name)
	return g.updateSelf(func(m *Member) bool {
		if m.Name == name {
			return false
		}
		m.Name = name
		return true
	}, now)
}

// SetAddrs writes this device's membership row again with the addresses
// it is reachable at, reporting whether they changed. The device must be
// a member.
func (g *Group) SetAddrs(addrs []string, now time.Time) (Row, bool, error) {
	return g.updateSelf(func(m *Member) bool {
		if slices.Equal(m.Addrs, addrs) {
			return false
		}
		m.Addrs = slices.Clone(addrs)
		return true
	}, now)
}

// updateSelf rewrites this device's membership row if change reports a
// change to it.
func (g *Group) updateSelf(change func(*Member) bool, now time.Time) (Row, bool, error) {
	m, ok := g.memberRow(g.self)
	if !ok {
		return Row{}, false, fmt.Errorf("%w: %s in %s", ErrNotMember, g.self, g.spec.ID)
	}
	if !change(&m) {
		return Row{}, false, nil
	}
	row, err := g.putMember(m, now)
	return row, err == nil, err
}

// Member returns p's membership, if p is a member: an admin with its own
// membership row, or a peer whose membership row carries the invitation
// an admin admitted it with, not revoked since.
func (g *Group) Member(p peer.ID) (Member, bool) {
	m, ok := g.membership().by[p]
	return m, ok
}

// decodeMember is Member read from the rows.
func (g *Group) decodeMember(p peer.ID) (Member, bool) {
	m, ok := g.memberRow(p)
	if !ok {
		return Member{}, false
	}
	if g.isAdmin(p) {
		return m, true
	}
	a, ok := g.admission(p)
	switch {
	case !ok || a.Revoked:
		return Member{}, false
	case a.Demoted:
		return m, true // a former admin, who needed no invitation
	case m.Invitation == nil || len(a.Nonce) == 0 || !bytes.Equal(a.Nonce, m.Invitation.Nonce) || a.DevType != m.DevType:
		return Member{}, false
	}
	return m, true
}

// IsMember reports whether p is a member.
func (g *Group) IsMember(p peer.ID) bool {
	_, ok := g.Member(p)
	return ok
}

// Members returns the members, sorted by peer ID.
func (g *Group) Members() []Member { return slices.Clone(g.membership().list) }

// MemberChange is what a membership row says happened to a member.
type MemberChange int

// What a membership row records.
const (
	// NoMemberChange: the row is a data row, or an admission that ejects
	// nobody.
	NoMemberChange MemberChange = iota
	// MemberJoined: the member's row is live (it joined, or changed its
	// name or addresses).
	MemberJoined
	// MemberLeft: the member deleted its own row.
	MemberLeft
	// MemberEjected: an admin ejected the member.
	MemberEjected
	// SpecChanged: an admin changed the group's admins, prefixes or
	// server copies (the peer returned is the admin).
	SpecChanged
)

// ChangeOf reports which member row concerns and what it records of it.
func ChangeOf(row Row) (peer.ID, MemberChange) {
	switch {
	case !strings.HasPrefix(row.Key, memberPrefix):
		return "", NoMemberChange
	case IsChainKey(row.Key):
		l, err := decodeLink(row)
		switch {
		case err != nil:
			return "", NoMemberChange
		case l.c.Op == opEject:
			return l.c.Peer, MemberEjected
		case l.c.Op == AddAdmin, l.c.Op == RemoveAdmin, l.c.Op == AddPrefix, l.c.Op == RemovePrefix, l.c.Op == SetCopies, l.c.Op == SetBudget:
			return row.Writer, SpecChanged
		}
		return "", NoMemberChange
	case strings.HasPrefix(row.Key, admissionPrefix):
		var a admission
		// An admission that readmits the peer keeps Ejected (the ban
		// holds for every other invitation) but ejects no one.
		if row.Deleted || msgpackx.Unmarshal(row.Value, &a) != nil || !a.Ejected || a.Readmit != nil {
			return "", NoMemberChange
		}
		return peer.ID(strings.TrimPrefix(row.Key, admissionPrefix)), MemberEjected
	case row.Deleted:
		if p, own := LeftMember(row); own {
			return p, MemberLeft
		}
		return "", NoMemberChange
	}
	return peer.ID(strings.TrimPrefix(row.Key, memberPrefix)), MemberJoined
}
