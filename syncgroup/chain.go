package syncgroup

import (
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/zeebo/blake3"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/msgpackx"
)

// chainPrefix keys the group's chain of changes: every change to its
// spec (admins, prefixes, server copies) and every admission, ejection
// and readmission an admin makes after the group was created. Each
// change names the one it follows, so the changes form a tree from the
// spec the group was created with, and every replica picks the same path
// through it (see walk): membership and the spec are what that path says,
// whatever order its changes arrived in. The key sorts before every
// membership row (no peer ID's bytes begin with two NULs) and the depth in
// it after them, so Missing sends a change's parent before it, and the
// change that makes a peer an admin before that admin's own rows.
const chainPrefix = memberPrefix + "\x00\x00c/"

// Op is what a change does.
type Op string

// The changes an admin can make.
const (
	// AddAdmin makes Peer an admin, junior to every admin before it.
	AddAdmin Op = "admin+"
	// RemoveAdmin makes Peer an ordinary member again. Only Peer itself
	// or an admin senior to it may, and never the last admin.
	RemoveAdmin Op = "admin-"
	// AddPrefix makes the group sync the keys under Prefix too.
	AddPrefix Op = "prefix+"
	// RemovePrefix stops the group syncing the keys under Prefix: its
	// rows leave the group (kept in the replica, listed and synced no
	// more, their blobs collected as if deleted); never the last prefix.
	RemovePrefix Op = "prefix-"
	// SetCopies sets the verified server copies the group wants (N).
	SetCopies Op = "copies"
	// opAdmit admits Peer with the invitation whose Nonce and DevType
	// it carries.
	opAdmit Op = "admit"
	// opEject ejects Peer: rows it wrote up to UpTo stay valid.
	opEject Op = "eject"
	// opReadmit lets Peer, ejected, join again with the invitation Nonce.
	opReadmit Op = "readmit"
	// opRevoke revokes Peer's admission: it left, and its invitation may
	// not bring it back.
	opRevoke Op = "revoke"
)

// Change is one link of the chain: an op and the change it follows.
type Change struct {
	// Parent is the key of the change this one follows; empty for the
	// first change after the group's creation.
	Parent string  `msgpack:"p,omitempty"`
	Op     Op      `msgpack:"o"`
	Peer   peer.ID `msgpack:"e,omitempty"`
	Prefix string  `msgpack:"x,omitempty"`
	N      int     `msgpack:"n,omitempty"`
	Nonce  []byte  `msgpack:"c,omitempty"`
	// DevType is the device type an admission admits Peer as.
	DevType syncnode.DevType `msgpack:"t,omitempty"`
	UpTo    uint64           `msgpack:"u,omitempty"`
}

// same reports whether c and o make the same change, wherever they sit.
func (c Change) same(o Change) bool {
	c.Parent, o.Parent = "", ""
	return c.Op == o.Op && c.Peer == o.Peer && c.Prefix == o.Prefix && c.N == o.N && string(c.Nonce) == string(o.Nonce) &&
		c.DevType == o.DevType && c.UpTo == o.UpTo
}

// Bounds of a change and of the spec it leads to.
const (
	// MaxChange bounds a change's encoded bytes.
	MaxChange = 2 << 10
	// MaxPrefixes bounds a group's prefixes.
	MaxPrefixes = 64
	// MaxAdmins bounds a group's admins.
	MaxAdmins = 64
)

// ErrLastAdmin reports a change that would leave a group with no admin.
var ErrLastAdmin = errors.New("syncgroup: a group keeps at least one admin")

// chainKey returns the key of value written by w at depth: the depth,
// then a hash of the writer and the change, which no other change
// shares.
func chainKey(depth uint64, w peer.ID, value []byte) string {
	h := blake3.New()
	h.Write([]byte(w))
	h.Write([]byte{0})
	h.Write(value)
	return fmt.Sprintf("%s%016x/%s", chainPrefix, depth, hex.EncodeToString(h.Sum(nil)[:16]))
}

// chainDepth returns the depth a chain key names.
func chainDepth(key string) (uint64, bool) {
	rest, ok := strings.CutPrefix(key, chainPrefix)
	if !ok || len(rest) != 16+1+32 || rest[16] != '/' {
		return 0, false
	}
	d, err := strconv.ParseUint(rest[:16], 16, 64)
	return d, err == nil && d > 0
}

// IsChainKey reports whether key is a change of the group's chain.
func IsChainKey(key string) bool { return strings.HasPrefix(key, chainPrefix) }

// link is one change as a replica holds it.
type link struct {
	key    string
	writer peer.ID
	c      Change
}

// decodeLink checks a chain row's form: its key is the hash of its writer
// and value at one more than its parent's depth, and its value a change.
func decodeLink(row Row) (link, error) {
	depth, ok := chainDepth(row.Key)
	switch {
	case !ok:
		return link{}, fmt.Errorf("syncgroup: malformed change key %q", row.Key)
	case row.Deleted:
		return link{}, fmt.Errorf("%w: a change is never deleted", ErrNotAllowed)
	case len(row.Value) > MaxChange:
		return link{}, fmt.Errorf("syncgroup: change of %d bytes, at most %d", len(row.Value), MaxChange)
	case chainKey(depth, row.Writer, row.Value) != row.Key:
		return link{}, fmt.Errorf("syncgroup: change %q does not hash to its key", row.Key)
	}
	var c Change
	if err := msgpackx.Unmarshal(row.Value, &c); err != nil {
		return link{}, fmt.Errorf("syncgroup: change: %w", err)
	}
	pd := uint64(0)
	if c.Parent != "" {
		if pd, ok = chainDepth(c.Parent); !ok {
			return link{}, fmt.Errorf("syncgroup: change follows malformed key %q", c.Parent)
		}
	}
	if pd+1 != depth {
		return link{}, fmt.Errorf("syncgroup: change at depth %d follows one at depth %d", depth, pd)
	}
	return link{key: row.Key, writer: row.Writer, c: c}, nil
}

// govState is what a path through the chain makes of the group: its
// admins in order of seniority, prefixes, server copies and the
// admissions.
type govState struct {
	admins   []peer.ID
	prefixes []string
	copies   int
	adm      map[peer.ID]admission
}

func (s govState) clone() govState {
	s.admins, s.prefixes = slices.Clone(s.admins), slices.Clone(s.prefixes)
	adm := make(map[peer.ID]admission, len(s.adm))
	for p, a := range s.adm {
		adm[p] = a
	}
	s.adm = adm
	return s
}

// rank is p's seniority among the admins: 0 for the most senior, and
// len(admins) for a peer that is not one.
func (s *govState) rank(p peer.ID) int {
	if i := slices.Index(s.admins, p); i >= 0 {
		return i
	}
	return len(s.admins)
}

// allows reports whether admin w may make change c in state s.
func (s *govState) allows(w peer.ID, c Change) error {
	if !slices.Contains(s.admins, w) {
		return fmt.Errorf("%w: %s is not an admin", ErrNotAllowed, w)
	}
	switch c.Op {
	case AddAdmin:
		switch {
		case c.Peer.Validate() != nil:
			return fmt.Errorf("syncgroup: admin to add: %w", c.Peer.Validate())
		case slices.Contains(s.admins, c.Peer):
			return fmt.Errorf("%w: %s is an admin already", ErrNotAllowed, c.Peer)
		case len(s.admins) >= MaxAdmins:
			return fmt.Errorf("%w: at most %d admins", ErrNotAllowed, MaxAdmins)
		}
	case RemoveAdmin:
		return s.demotable(w, c.Peer)
	case AddPrefix:
		switch {
		case c.Prefix == "" || strings.HasPrefix(c.Prefix, "\x00"):
			return fmt.Errorf("syncgroup: prefix %q is reserved", c.Prefix)
		case slices.Contains(s.prefixes, c.Prefix):
			return fmt.Errorf("%w: the group syncs %q already", ErrNotAllowed, c.Prefix)
		case len(s.prefixes) >= MaxPrefixes:
			return fmt.Errorf("%w: at most %d prefixes", ErrNotAllowed, MaxPrefixes)
		case len(c.Prefix) > 1024:
			return fmt.Errorf("syncgroup: prefix of %d bytes, at most 1024", len(c.Prefix))
		}
	case RemovePrefix:
		switch {
		case !slices.Contains(s.prefixes, c.Prefix):
			return fmt.Errorf("%w: the group does not sync %q", ErrNotAllowed, c.Prefix)
		case len(s.prefixes) == 1:
			return fmt.Errorf("%w: a group syncs at least one prefix", ErrNotAllowed)
		}
	case SetCopies:
		if c.N < 1 || c.N > MaxCopies {
			return fmt.Errorf("syncgroup: %d server copies asked; from 1 to %d", c.N, MaxCopies)
		}
	case opAdmit, opReadmit:
		if len(c.Nonce) == 0 || len(c.Nonce) > 64 || c.Peer.Validate() != nil || c.DevType > syncnode.Leaf {
			return fmt.Errorf("%w: malformed admission of %s", ErrNotAllowed, c.Peer)
		}
	case opEject:
		if err := c.Peer.Validate(); err != nil {
			return fmt.Errorf("syncgroup: peer to eject: %w", err)
		}
		if slices.Contains(s.admins, c.Peer) {
			return s.demotable(w, c.Peer)
		}
	case opRevoke:
		if err := c.Peer.Validate(); err != nil {
			return fmt.Errorf("syncgroup: peer to revoke: %w", err)
		}
	default:
		return fmt.Errorf("syncgroup: unknown change %q", c.Op)
	}
	return nil
}

// demotable reports whether w may take p's admin role away: p is an
// admin, not the last, and w is p or senior to it.
func (s *govState) demotable(w, p peer.ID) error {
	switch {
	case !slices.Contains(s.admins, p):
		return fmt.Errorf("%w: %s is not an admin", ErrNotAllowed, p)
	case len(s.admins) == 1:
		return fmt.Errorf("%w: %s is its only admin; add another first", ErrLastAdmin, p)
	case w != p && s.rank(w) > s.rank(p):
		return fmt.Errorf("%w: %s is senior to %s; only it, or an admin senior to it, removes it", ErrNotAllowed, p, w)
	}
	return nil
}

// apply makes change c, which allows passed, in s.
func (s *govState) apply(c Change) {
	a := s.adm[c.Peer]
	switch c.Op {
	case AddAdmin:
		s.admins = append(s.admins, c.Peer)
		a.Demoted = false
	case RemoveAdmin:
		s.admins = slices.DeleteFunc(s.admins, func(p peer.ID) bool { return p == c.Peer })
		// An admin needs no invitation: taken down, it stays a member
		// by this mark, as by an admission.
		a.Demoted = true
	case AddPrefix:
		s.prefixes = append(s.prefixes, c.Prefix)
		return
	case RemovePrefix:
		s.prefixes = slices.DeleteFunc(s.prefixes, func(p string) bool { return p == c.Prefix })
		return
	case SetCopies:
		s.copies = c.N
		return
	case opAdmit:
		if a.Ejected && string(a.Readmit) != string(c.Nonce) {
			return // banned: only the readmitting invitation lets it in
		}
		a = admission{Nonce: c.Nonce, DevType: c.DevType, Demoted: a.Demoted}
	case opEject:
		s.admins = slices.DeleteFunc(s.admins, func(p peer.ID) bool { return p == c.Peer })
		a.Revoked, a.Ejected, a.Readmit, a.UpTo, a.Demoted = true, true, nil, c.UpTo, false
		if len(c.Nonce) > 0 {
			a.Nonce, a.DevType = c.Nonce, c.DevType
		}
	case opReadmit:
		if !a.Ejected {
			return
		}
		a.Readmit = c.Nonce
	case opRevoke:
		a.Revoked, a.Demoted = true, false
	}
	s.adm[c.Peer] = a
}

// chain is a replica's view of its group's chain: the links it holds,
// and the path every replica holding the same links picks, with the
// state at its end.
type chain struct {
	gen   uint64
	valid bool
	links map[string]link
	kids  map[string][]string
	path  []string
	head  govState
}

// genesis is the state of the group as created.
func (g *Group) genesis() govState {
	return govState{admins: slices.Clone(g.spec.Admins), prefixes: slices.Clone(g.spec.Prefixes), copies: g.spec.Copies, adm: map[peer.ID]admission{}}
}

// legacy returns the admissions that the group's first admins wrote as
// rows of their own, before groups had a chain: they count while the
// chain is empty, and an admin's first change carries them over
// (Migrate).
func (g *Group) legacy() map[peer.ID]admission {
	out := map[peer.ID]admission{}
	for _, row := range g.rows.List(admissionPrefix) {
		if a, ok := decodeAdmission(row); ok && slices.Contains(g.spec.Admins, row.Writer) {
			out[peer.ID(strings.TrimPrefix(row.Key, admissionPrefix))] = a
		}
	}
	return out
}

// gov returns the chain as of the rows now held, computing it again only
// if a membership row changed.
func (g *Group) gov() *chain {
	c := &g.chain
	if c.valid && c.gen == g.rows.memberGen {
		return c
	}
	if c.links == nil {
		c.links = map[string]link{}
	}
	c.kids = map[string][]string{}
	for _, row := range g.rows.List(chainPrefix) {
		l, ok := c.links[row.Key]
		if !ok {
			var err error
			if l, err = decodeLink(row); err != nil {
				continue
			}
			c.links[row.Key] = l
		}
		c.kids[l.c.Parent] = append(c.kids[l.c.Parent], l.key)
	}
	c.head = g.genesis()
	if c.path = c.walk("", &c.head); len(c.path) == 0 {
		c.head.adm = g.legacy()
	}
	c.gen, c.valid = g.rows.memberGen, true
	return c
}

// Migrate returns, on an admin's replica of a group made before groups had
// a chain, the changes that carry its admission rows over to the chain,
// written here; none once the chain has begun.
func (g *Group) Migrate(now time.Time) ([]Row, error) {
	if !g.isAdmin(g.self) || len(g.gov().path) > 0 {
		return nil, nil
	}
	old := g.legacy()
	var out []Row
	for _, p := range slices.Sorted(maps.Keys(old)) {
		a := old[p]
		cs := []Change{{Op: opAdmit, Peer: p, Nonce: a.Nonce, DevType: a.DevType}}
		switch {
		case a.Ejected:
			cs = []Change{{Op: opEject, Peer: p, Nonce: a.Nonce, DevType: a.DevType, UpTo: a.UpTo}}
			if a.Readmit != nil {
				cs = append(cs, Change{Op: opReadmit, Peer: p, Nonce: a.Readmit})
			}
		case a.Revoked:
			cs = append(cs, Change{Op: opRevoke, Peer: p})
		}
		for _, c := range cs {
			if c.Op == opAdmit && len(c.Nonce) == 0 {
				continue
			}
			row, err := g.change(c, now)
			if err != nil {
				return out, err
			}
			out = append(out, row)
		}
	}
	return out, nil
}

// walk follows the chain from key at, in state s, to the end of the
// path every replica picks, and returns the path. Where changes fork,
// the branch whose most senior signer (in the state at the fork) is most
// senior wins, then the one whose first change's key sorts first: an
// admin taken down by a senior one cannot undo it by forking from before,
// and concurrent changes by admins of equal standing resolve alike
// everywhere. The losers' changes are made again by their writers on the
// winning path (Rebase).
func (c *chain) walk(at string, s *govState) []string {
	var path []string
	for {
		var next []string
		for _, k := range c.kids[at] {
			if l := c.links[k]; s.allows(l.writer, l.c) == nil {
				next = append(next, k)
			}
		}
		slices.Sort(next)
		switch len(next) {
		case 0:
			return path
		case 1:
			s.apply(c.links[next[0]].c)
			path, at = append(path, next[0]), next[0]
			continue
		}
		var best []string
		var bestState govState
		bestRank := -1
		for _, k := range next {
			st := s.clone()
			st.apply(c.links[k].c)
			sub := append([]string{k}, c.walk(k, &st)...)
			r := len(s.admins)
			for _, kk := range sub {
				r = min(r, s.rank(c.links[kk].writer))
			}
			if bestRank < 0 || r < bestRank {
				best, bestState, bestRank = sub, st, r
			}
		}
		*s = bestState
		return append(path, best...)
	}
}

// stateAt returns the state after the change at key, which must lie on a
// path of valid changes from the group's creation.
func (g *Group) stateAt(key string) (govState, error) {
	c := g.gov()
	if key == "" {
		return g.genesis(), nil
	}
	if n := len(c.path); n > 0 && c.path[n-1] == key {
		return c.head.clone(), nil
	}
	var up []link
	for k := key; k != ""; {
		l, ok := c.links[k]
		if !ok {
			return govState{}, fmt.Errorf("%w: it follows change %q, not held here", ErrNotAllowed, k)
		}
		up = append(up, l)
		k = l.c.Parent
	}
	s := g.genesis()
	for i := len(up) - 1; i >= 0; i-- {
		if err := s.allows(up[i].writer, up[i].c); err != nil {
			return govState{}, err
		}
		s.apply(up[i].c)
	}
	return s, nil
}

// wasAdmin reports whether p was an admin and gave its role up, or lost
// it, and is still a member by that.
func (g *Group) wasAdmin(p peer.ID) bool {
	a, ok := g.admission(p)
	return ok && a.Demoted
}

// covers reports whether key lies under one of the group's prefixes now.
func (g *Group) covers(key string) bool {
	return slices.ContainsFunc(g.gov().head.prefixes, func(p string) bool { return strings.HasPrefix(key, p) })
}

// checkLink is Check for a change: well formed, following a change held
// here, and allowed to its writer there.
func (g *Group) checkLink(row Row) error {
	l, err := decodeLink(row)
	if err != nil {
		return err
	}
	s, err := g.stateAt(l.c.Parent)
	if err != nil {
		return err
	}
	return s.allows(l.writer, l.c)
}

// change writes c at the end of the winning path, if this device may make
// it there.
func (g *Group) change(c Change, now time.Time) (Row, error) {
	ch := g.gov()
	s := ch.head
	if err := s.allows(g.self, c); err != nil {
		return Row{}, err
	}
	depth := uint64(len(ch.path)) + 1
	c.Parent = ""
	if len(ch.path) > 0 {
		c.Parent = ch.path[len(ch.path)-1]
	}
	b, err := msgpack.Marshal(c)
	if err != nil {
		return Row{}, err
	}
	return g.rows.Put(chainKey(depth, g.self, b), b, now), nil
}

// Rebase returns this device's changes that lost to a concurrent branch,
// made again at the end of the winning path where they still apply, in
// the order they were first made: an admission, a removal or a new prefix
// is not lost to a change another admin made at the same time.
func (g *Group) Rebase(now time.Time) []Row {
	c := g.gov()
	on := make(map[string]bool, len(c.path))
	var done []Change
	for _, k := range c.path {
		on[k] = true
		if l := c.links[k]; l.writer == g.self {
			done = append(done, l.c)
		}
	}
	var lost []link
	for k, l := range c.links {
		if l.writer == g.self && !on[k] {
			lost = append(lost, l)
		}
	}
	slices.SortFunc(lost, func(a, b link) int { return strings.Compare(a.key, b.key) })
	var out []Row
	for _, l := range lost {
		if slices.ContainsFunc(done, l.c.same) {
			continue
		}
		row, err := g.change(l.c, now)
		if err != nil {
			continue // no longer applies where the chain went
		}
		out, done = append(out, row), append(done, l.c)
	}
	return out
}

// ChainTail returns the last n changes of the winning path, oldest first.
func (g *Group) ChainTail(n int) []Row {
	path := g.gov().path
	var out []Row
	for _, k := range path[max(0, len(path)-n):] {
		if row, ok := g.rows.Get(k); ok {
			out = append(out, row)
		}
	}
	return out
}

// ChangeKey returns the key of a change with value, written by w after
// the change at parent ("" for the first): what a change's row is keyed
// by, and nothing else is.
func ChangeKey(parent string, w peer.ID, value []byte) (string, error) {
	depth := uint64(0)
	if parent != "" {
		d, ok := chainDepth(parent)
		if !ok {
			return "", fmt.Errorf("syncgroup: malformed change key %q", parent)
		}
		depth = d
	}
	return chainKey(depth+1, w, value), nil
}
