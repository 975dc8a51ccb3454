package syncgroup

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/msgpackx"
)

// Errors of group operations.
var (
	// ErrNotMember reports a peer that is not (or no longer) a member.
	ErrNotMember = errors.New("syncgroup: not a member")
	// ErrOutsideGroup reports a key outside the group's prefixes.
	ErrOutsideGroup = errors.New("syncgroup: key outside the group's prefixes")
	// ErrNotAllowed reports a membership change its writer may not make.
	ErrNotAllowed = errors.New("syncgroup: not allowed")
	// ErrAfterExit reports a row its writer wrote after it left the group
	// or after the admin that ejected it had last seen its rows: refused
	// alike by every replica that knows of the exit.
	ErrAfterExit = errors.New("syncgroup: written after its writer left the group")
)

// memberPrefix is the reserved key prefix of membership rows. Keys that
// users write start elsewhere: group prefixes may not begin with NUL. As
// NUL sorts first, Missing sends membership rows before the data rows whose
// writers they admit.
const memberPrefix = "\x00m/"

// MembershipPrefix is the key prefix of the membership rows, which sync
// along with a group's own prefixes.
const MembershipPrefix = memberPrefix

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
}

// ErrUsed reports an invitation that was used already and may not be again.
var ErrUsed = errors.New("syncgroup: invitation already used")

// ErrEjected reports an invitation of a peer that an admin ejected.
var ErrEjected = errors.New("syncgroup: peer ejected")

// MemberKey returns the key of p's membership row.
func MemberKey(p peer.ID) string { return memberPrefix + string(p) }

// Spec describes a syncgroup. It is fixed at creation.
type Spec struct {
	ID       syncnode.GroupID `msgpack:"i"`
	Name     string           `msgpack:"n"`
	Prefixes []string         `msgpack:"p"`
	Private  bool             `msgpack:"v,omitempty"`
	Admins   []peer.ID        `msgpack:"a"`
}

// Validate checks the spec's fields.
func (s Spec) Validate() error {
	switch {
	case s.Name == "" || strings.ContainsAny(s.Name, "/\x00"):
		return fmt.Errorf("syncgroup: bad name %q", s.Name)
	case len(s.Prefixes) == 0:
		return errors.New("syncgroup: a group syncs at least one key prefix")
	case len(s.Admins) == 0:
		return errors.New("syncgroup: a group has at least one admin")
	}
	for _, p := range s.Prefixes {
		if strings.HasPrefix(p, "\x00") {
			return fmt.Errorf("syncgroup: prefix %q is reserved", p)
		}
	}
	return nil
}

// Covers reports whether key lies under one of the spec's prefixes.
func (s Spec) Covers(key string) bool {
	return slices.ContainsFunc(s.Prefixes, func(p string) bool { return strings.HasPrefix(key, p) })
}

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

// Group is one device's replica of a syncgroup: its spec, its rows, and the
// membership derived from them.
type Group struct {
	spec Spec
	self peer.ID
	rows *Rows
	// members caches the decoded membership as of rows.memberGen.
	members memberCache
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
		if strings.HasPrefix(row.Key, admissionPrefix) {
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

// NewGroup returns an empty replica of spec for device self.
func NewGroup(spec Spec, self peer.ID, maxSkew time.Duration) (*Group, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	return &Group{spec: spec, self: self, rows: NewRows(self, maxSkew)}, nil
}

// Create makes a new group whose first admin is the creator (key), with
// the creator as its first member.
func Create(name string, prefixes []string, private bool, key crypto.PrivKey, dev syncnode.DevType, addrs []string, now time.Time) (*Group, error) {
	self, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, err
	}
	spec := Spec{ID: syncnode.GroupID(self.String() + "/" + name), Name: name, Prefixes: prefixes, Private: private, Admins: []peer.ID{self}}
	g, err := NewGroup(spec, self, time.Minute)
	if err != nil {
		return nil, err
	}
	if err := g.SetKey(key); err != nil {
		return nil, err
	}
	if _, err := g.putMember(Member{DevType: dev, Addrs: addrs}, now); err != nil {
		return nil, err
	}
	return g, nil
}

// SetKey gives the replica this device's private key, with which it signs
// every row it writes; a replica without one writes rows no peer accepts.
func (g *Group) SetKey(key crypto.PrivKey) error {
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return err
	}
	if id != g.self {
		return fmt.Errorf("syncgroup: key of %s given to %s's replica", id, g.self)
	}
	gid := g.spec.ID
	g.rows.sign = func(r *Row) { SignRow(key, gid, r) }
	return nil
}

// Spec returns the group's spec.
func (g *Group) Spec() Spec { return g.spec }

// Rows returns the replica's rows (data and membership).
func (g *Group) Rows() *Rows { return g.rows }

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
	if err := inv.Verify(g.self, g.spec.Admins, now); err != nil {
		return Row{}, err
	}
	if inv.Group != g.spec.ID {
		return Row{}, fmt.Errorf("%w: invitation is for %s", ErrInvitation, inv.Group)
	}
	return g.putMember(Member{DevType: inv.DevType, Addrs: addrs, Invitation: &inv}, now)
}

// Resume returns where this device's writes in the group stand.
func (g *Group) Resume() Resume { return g.rows.resume() }

// ResumeFrom moves this device's sequence and clock past res, as a
// replica made to join again does before its first write.
func (g *Group) ResumeFrom(res Resume) { g.rows.resumeFrom(res) }

// Leave removes this device from the group.
func (g *Group) Leave(now time.Time) Row { return g.rows.Delete(memberPrefix+string(g.self), now) }

// Eject removes p from the group; only an admin may. It revokes p's
// admission, so p is no member whatever membership rows it writes, until an
// admin admits it again with a new invitation.
func (g *Group) Eject(p peer.ID, now time.Time) (Row, error) {
	if !slices.Contains(g.spec.Admins, g.self) {
		return Row{}, fmt.Errorf("%w: only an admin ejects", ErrNotAllowed)
	}
	a, _ := g.admission(p)
	if m, ok := g.memberRow(p); ok && m.Invitation != nil {
		a.Nonce, a.DevType = m.Invitation.Nonce, m.Invitation.DevType
	}
	a.Revoked, a.Ejected, a.Readmit = true, true, nil
	a.UpTo = g.rows.seen[p]
	b, err := msgpack.Marshal(a)
	if err != nil {
		return Row{}, err
	}
	return g.rows.Put(admissionKey(p), b, now), nil
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
	if !slices.Contains(g.spec.Admins, g.self) {
		return Row{}, false, fmt.Errorf("%w: only an admin readmits", ErrNotAllowed)
	}
	a, found := g.admission(p)
	if !found || !a.Ejected {
		return Row{}, false, nil
	}
	a.Readmit = nonce
	b, err := msgpack.Marshal(a)
	if err != nil {
		return Row{}, false, err
	}
	return g.rows.Put(admissionKey(p), b, now), true, nil
}

// RevokeLeaver returns, on an admin's replica, the row revoking the
// admission of a member whose own tombstone says it left, so that its
// invitation cannot bring it back; ok is false if there is nothing to
// revoke (not an admin, the member is back or was never admitted, or its
// admission is revoked already).
func (g *Group) RevokeLeaver(p peer.ID, now time.Time) (row Row, ok bool, err error) {
	if !slices.Contains(g.spec.Admins, g.self) || slices.Contains(g.spec.Admins, p) {
		return Row{}, false, nil
	}
	m, found := g.rows.Get(memberPrefix + string(p))
	if !found || !m.Deleted || m.Writer != p {
		return Row{}, false, nil
	}
	a, found := g.admission(p)
	if !found || a.Revoked {
		return Row{}, false, nil
	}
	a.Revoked = true
	b, err := msgpack.Marshal(a)
	if err != nil {
		return Row{}, false, err
	}
	return g.rows.Put(admissionKey(p), b, now), true, nil
}

// LeftMember reports whether row is a member's own tombstone — it left —
// and who.
func LeftMember(row Row) (peer.ID, bool) {
	if !row.Deleted || !strings.HasPrefix(row.Key, memberPrefix) || strings.HasPrefix(row.Key, admissionPrefix) {
		return "", false
	}
	p := peer.ID(strings.TrimPrefix(row.Key, memberPrefix))
	return p, p == row.Writer
}

// Admit records, on an admin's replica, that inv's joiner was let in: the
// caller has checked inv against its own clock. It returns ok false, and
// no row, if that admission is recorded already; ErrUsed if the invitation
// was used before and its admission revoked.
func (g *Group) Admit(inv Invitation, now time.Time) (row Row, ok bool, err error) {
	if !slices.Contains(g.spec.Admins, g.self) {
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
	b, err := msgpack.Marshal(admission{Nonce: inv.Nonce, DevType: inv.DevType})
	if err != nil {
		return Row{}, false, err
	}
	return g.rows.Put(admissionKey(inv.Joiner), b, now), true, nil
}

// admission returns p's admission as recorded, if any.
func (g *Group) admission(p peer.ID) (admission, bool) {
	row, ok := g.rows.Get(admissionKey(p))
	if !ok || row.Deleted {
		return admission{}, false
	}
	var a admission
	if msgpackx.Unmarshal(row.Value, &a) != nil {
		return admission{}, false
	}
	return a, true
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
	if slices.Contains(g.spec.Admins, p) {
		return m, true
	}
	a, ok := g.admission(p)
	if !ok || a.Revoked || m.Invitation == nil || len(a.Nonce) == 0 || !bytes.Equal(a.Nonce, m.Invitation.Nonce) {
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

// Put writes a row; the key must be under the group's prefixes and this
// device a member.
func (g *Group) Put(key string, value []byte, now time.Time) (Row, error) {
	if err := g.CheckPut(key, value); err != nil {
		return Row{}, err
	}
	return g.rows.Put(key, value, now), nil
}

// CheckPut reports whether Put would accept value at key, changing nothing.
func (g *Group) CheckPut(key string, value []byte) error {
	if err := g.writable(key); err != nil {
		return err
	}
	if err := msgpackx.Check(value); err != nil {
		return fmt.Errorf("syncgroup: value of %q is not msgpack: %w", key, err)
	}
	// This device obeys the budget its peers hold it to.
	return g.rows.fits(Row{Key: key, Value: value, Writer: g.self})
}

// SetBudget bounds what the rows of each writer may cost this replica:
// rows beyond it are refused, from peers and from this device alike.
func (g *Group) SetBudget(b Budget) { g.rows.SetBudget(b) }

// Usage returns what writer w's rows cost this replica.
func (g *Group) Usage(w peer.ID) Usage { return g.rows.Usage(w) }

// Delete writes a tombstone at key.
func (g *Group) Delete(key string, now time.Time) (Row, error) {
	if err := g.writable(key); err != nil {
		return Row{}, err
	}
	if err := g.rows.fits(Row{Key: key, Deleted: true, Writer: g.self}); err != nil {
		return Row{}, err
	}
	return g.rows.Delete(key, now), nil
}

func (g *Group) writable(key string) error {
	if !g.spec.Covers(key) {
		return fmt.Errorf("%w: %q in %s", ErrOutsideGroup, key, g.spec.ID)
	}
	if !g.IsMember(g.self) {
		return fmt.Errorf("%w: this device in %s", ErrNotMember, g.spec.ID)
	}
	return nil
}

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
		return false, err
	}
	return g.rows.Apply(row, now)
}

func (g *Group) check(row Row) error {
	if !strings.HasPrefix(row.Key, memberPrefix) {
		if !g.spec.Covers(row.Key) {
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
	admin := slices.Contains(g.spec.Admins, row.Writer)
	if strings.HasPrefix(row.Key, admissionPrefix) {
		if !admin {
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
		if row.Writer != subject && !admin {
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
	if m.Invitation == nil {
		return fmt.Errorf("%w: %s joined without an invitation", ErrNotAllowed, subject)
	}
	if m.Invitation.Group != g.spec.ID || m.Invitation.DevType != m.DevType {
		return fmt.Errorf("%w: %s's invitation does not match its membership", ErrNotAllowed, subject)
	}
	// The invitation must have been valid when the member joined.
	return m.Invitation.Verify(subject, g.spec.Admins, time.Unix(0, row.TS.Wall))
}
