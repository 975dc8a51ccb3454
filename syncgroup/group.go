package syncgroup

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/zeebo/blake3"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/value"
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
	// ErrBadChange reports a change to a group's spec that no one may
	// make: a reserved or oversized prefix, server copies out of range, a
	// malformed peer ID, an unknown operation.
	ErrBadChange = errors.New("syncgroup: malformed change")
)

// Spec describes a syncgroup. Its ID and name are fixed at creation; its
// admins, prefixes and server copies change through the group's chain
// (Group.ChangeSpec).
type Spec struct {
	ID       syncnode.GroupID `msgpack:"i"`
	Name     string           `msgpack:"n"`
	Prefixes []string         `msgpack:"p"`
	Private  bool             `msgpack:"v,omitempty"`
	Admins   []peer.ID        `msgpack:"a"`
	// Copies is how many verified server copies of each blob the group
	// wants before a device may evict its own (0 means 1).
	Copies int `msgpack:"k,omitempty"`
	// Budget bounds what each writer's rows may cost every member (nil,
	// or a zero field: DefaultBudget's). Being the group's, the bound is
	// the same on every member: what one refuses, none holds.
	Budget *Budget `msgpack:"w,omitempty"`
}

// MaxCopies bounds the server copies a group may ask for.
const MaxCopies = 8

// ServerCopies returns how many verified server copies of each blob the
// group wants: Copies, at least 1.
func (s Spec) ServerCopies() int { return max(1, s.Copies) }

// Validate checks the spec's fields.
func (s Spec) Validate() error {
	switch {
	case s.Name == "" || strings.ContainsAny(s.Name, "/\x00"):
		return fmt.Errorf("syncgroup: bad name %q", s.Name)
	case len(s.Prefixes) == 0:
		return errors.New("syncgroup: a group syncs at least one key prefix")
	case len(s.Admins) == 0:
		return errors.New("syncgroup: a group has at least one admin")
	case s.Copies < 0 || s.Copies > MaxCopies:
		return fmt.Errorf("syncgroup: %d server copies asked; from 1 to %d", s.Copies, MaxCopies)
	}
	if s.Budget != nil {
		if err := s.Budget.Validate(); err != nil {
			return err
		}
	}
	for _, p := range s.Prefixes {
		if strings.HasPrefix(p, "\x00") {
			return fmt.Errorf("syncgroup: prefix %q is reserved", p)
		}
	}
	return nil
}

// Hash returns a hash of the spec, as an invitation binds the spec a
// group was created with (Invitation.Genesis).
func (s Spec) Hash() ([]byte, error) {
	b, err := msgpack.Marshal(s)
	if err != nil {
		return nil, err
	}
	h := blake3.Sum256(append([]byte("syncnode genesis v1\x00"), b...))
	return h[:], nil
}

// CheckGenesis checks that s is a group's spec as Create makes it: its
// only admin the creator its ID names. A joiner takes the spec from the
// admin that admits it, which may not be the creator: whatever it says,
// it cannot make itself a founding admin.
func (s Spec) CheckGenesis() error {
	if err := s.Validate(); err != nil {
		return err
	}
	if len(s.Admins) != 1 || string(s.ID) != s.Admins[0].String()+"/"+s.Name {
		return fmt.Errorf("syncgroup: %s is not the spec its creator made: admins %v", s.ID, s.Admins)
	}
	return nil
}

// Covers reports whether key lies under one of the spec's prefixes.
func (s Spec) Covers(key string) bool {
	return slices.ContainsFunc(s.Prefixes, func(p string) bool { return strings.HasPrefix(key, p) })
}

// Group is one device's replica of a syncgroup: its spec, its rows, and the
// membership derived from them.
type Group struct {
	spec Spec
	self peer.ID
	rows *Rows
	// members caches the decoded membership as of rows.memberGen.
	members memberCache
	// chain caches the group's chain of changes as of rows.memberGen.
	chain chain
}

// NewGroup returns an empty replica of spec for device self.
func NewGroup(spec Spec, self peer.ID, maxSkew time.Duration) (*Group, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	g := &Group{spec: spec, self: self, rows: NewRows(self, maxSkew)}
	g.rows.base = DefaultBudget()
	g.rows.groupBudget = func() Budget { return g.gov().head.budget }
	return g, nil
}

// SetCopies sets the server copies a group just created wants (see
// Spec.Copies). The spec does not change once the group has been added
// to a node and members have joined it.
func (g *Group) SetCopies(k int) error {
	spec := g.spec
	spec.Copies = k
	if err := spec.Validate(); err != nil {
		return err
	}
	g.spec = spec
	return nil
}

// SetGroupBudget sets what each writer's rows may cost every member of a
// group just created (see Spec.Budget); as SetCopies, before the group
// has been added to a node.
func (g *Group) SetGroupBudget(b Budget) error {
	spec := g.spec
	spec.Budget = &b
	if b == (Budget{}) {
		spec.Budget = nil
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	g.spec = spec
	g.chain.valid = false
	return nil
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

// Spec returns the group's spec as its chain of changes has made it.
func (g *Group) Spec() Spec {
	h := g.gov().head
	s := g.spec
	s.Admins, s.Prefixes, s.Copies = slices.Clone(h.admins), slices.Clone(h.prefixes), h.copies
	s.Budget = nil
	if h.budget != (Budget{}) {
		b := h.budget
		s.Budget = &b
	}
	return s
}

// ID returns the group's ID. Unlike Spec, it reads nothing that changes,
// so it needs no lock.
func (g *Group) ID() syncnode.GroupID { return g.spec.ID }

// Genesis returns the group's spec as it was created: what a joiner's
// replica starts from, before the chain of changes reaches it.
func (g *Group) Genesis() Spec { return g.spec }

// ChangeSpec makes change c (AddAdmin, RemoveAdmin, AddPrefix,
// RemovePrefix, SetCopies or SetBudget) at the end of the group's chain,
// signed by this device, which must be an admin allowed to make it. Every
// member that learns the change, and any made concurrently, picks the
// same outcome (see the chain).
func (g *Group) ChangeSpec(c Change, now time.Time) (Row, error) {
	if !g.isAdmin(g.self) {
		return Row{}, fmt.Errorf("%w: only an admin changes %s, and this device (%s) is none", ErrNotAllowed, g.spec.ID, g.self)
	}
	switch c.Op {
	case AddAdmin, RemoveAdmin:
		if c.Op == AddAdmin && !g.IsMember(c.Peer) {
			return Row{}, fmt.Errorf("%w: %s is not a member of %s: invite it first", ErrNotMember, c.Peer, g.spec.ID)
		}
		c = Change{Op: c.Op, Peer: c.Peer}
	case AddPrefix, RemovePrefix:
		c = Change{Op: c.Op, Prefix: c.Prefix}
	case SetCopies:
		c = Change{Op: c.Op, N: c.N}
	case SetBudget:
		if c.Budget == nil {
			return Row{}, fmt.Errorf("%w: a budget change names the budget", ErrBadChange)
		}
		b := *c.Budget
		c = Change{Op: c.Op, Budget: &b}
	default:
		return Row{}, fmt.Errorf("syncgroup: %q is no change to a spec", c.Op)
	}
	return g.change(c, now)
}

// Rows returns the replica's rows (data and membership).
func (g *Group) Rows() *Rows { return g.rows }

// Resume returns where this device's writes in the group stand.
func (g *Group) Resume() Resume { return g.rows.resume() }

// ResumeFrom moves this device's sequence and clock past res, as a
// replica made to join again does before its first write.
func (g *Group) ResumeFrom(res Resume) { g.rows.resumeFrom(res) }

// Put writes a row; the key must be under the group's prefixes and this
// device a member.
func (g *Group) Put(key string, value []byte, now time.Time) (Row, error) {
	if err := g.CheckPut(key, value); err != nil {
		return Row{}, err
	}
	return g.rows.Put(key, value, now), nil
}

// CheckPut reports whether Put would accept v at key, changing nothing.
// A value that value.Check refuses is refused with its error, which says
// where the bytes went wrong, and whether they look like JSON.
func (g *Group) CheckPut(key string, v []byte) error {
	if err := g.writable(key); err != nil {
		return err
	}
	if err := value.Check(v); err != nil {
		return fmt.Errorf("syncgroup: value of %q: %w", key, err)
	}
	// This device obeys the budget its peers hold it to.
	return g.rows.fits(Row{Key: key, Value: v, Writer: g.self})
}

// KV is a key and the msgpack value to write there.
type KV struct {
	Key   string
	Value []byte
}

// PutAll writes every row of kvs, in order, or none: each key must be
// under the group's prefixes, each value one CheckPut takes, and the rows
// together within this device's budget. Nothing is written if one is
// refused; the error names it.
func (g *Group) PutAll(kvs []KV, now time.Time) ([]Row, error) {
	rows := make([]Row, 0, len(kvs))
	for i, kv := range kvs {
		if err := g.writable(kv.Key); err != nil {
			return nil, fmt.Errorf("row %d (%q): %w", i+1, kv.Key, err)
		}
		if err := value.Check(kv.Value); err != nil {
			return nil, fmt.Errorf("row %d: syncgroup: value of %q: %w", i+1, kv.Key, err)
		}
		rows = append(rows, Row{Key: kv.Key, Value: kv.Value, Writer: g.self})
	}
	if err := g.rows.fitsAll(rows); err != nil {
		return nil, err
	}
	for i, kv := range kvs {
		rows[i] = g.rows.Put(kv.Key, kv.Value, now)
	}
	return rows, nil
}

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
	if !g.covers(key) {
		return fmt.Errorf("%w: %q in %s", ErrOutsideGroup, key, g.spec.ID)
	}
	if !g.IsMember(g.self) {
		return fmt.Errorf("%w: this device in %s", ErrNotMember, g.spec.ID)
	}
	return nil
}
