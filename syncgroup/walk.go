package syncgroup

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"
)

// chain is a replica's view of its group's chain: the links it holds,
// and the path every replica holding the same links picks, with the
// state at its end.
type chain struct {
	// gen is the rows' govGen it reflects.
	gen   uint64
	valid bool
	links map[string]link
	kids  map[string][]string
	path  []string
	on    map[string]bool // the keys of path
	head  govState
}

// maxOffPath bounds the changes of one writer that the winning path does
// not take: an honest admin loses few (each is made again on the path),
// and a removed admin forking from where it still was one gets no more
// in than this.
const maxOffPath = 256

// genesis is the state of the group as created.
func (g *Group) genesis() govState {
	s := govState{admins: slices.Clone(g.spec.Admins), prefixes: slices.Clone(g.spec.Prefixes), copies: g.spec.Copies, adm: map[peer.ID]admission{}}
	if g.spec.Budget != nil {
		s.budget = *g.spec.Budget
	}
	return s
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

// gov returns the chain as of the rows now held: extended by one change
// when the only one new since follows the end of the path (the common
// case), else walked again from the start.
func (g *Group) gov() *chain {
	c := &g.chain
	if c.valid && c.gen == g.rows.govGen {
		return c
	}
	if c.valid && c.gen+1 == g.rows.govGen && c.extend(g.rows.lastGov, g.rows) {
		c.gen = g.rows.govGen
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
	b := c.walk("", &c.head)
	slices.Reverse(b.rev)
	c.path, c.on = b.rev, make(map[string]bool, len(b.rev))
	for _, k := range c.path {
		c.on[k] = true
	}
	if len(c.path) == 0 {
		c.head.adm = g.legacy()
	}
	c.gen, c.valid = g.rows.govGen, true
	return c
}

// extend takes the change at key, new, onto the end of the path if it
// follows the path's last change and may be made there: no fork is
// decided otherwise by it (one more signer on the winning side of each).
func (c *chain) extend(key string, rows *Rows) bool {
	row, ok := rows.Get(key)
	if !ok || !IsChainKey(key) || len(c.path) == 0 {
		return false // an admission row of the old kind, or a first change: walk
	}
	l, err := decodeLink(row)
	if err != nil || l.c.Parent != c.path[len(c.path)-1] || c.head.allows(l.writer, l.c) != nil {
		return false
	}
	c.links[key] = l
	c.kids[l.c.Parent] = append(c.kids[l.c.Parent], key)
	c.head.apply(l)
	c.path = append(c.path, key)
	c.on[key] = true
	return true
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

// branch is the winning path below a change: its keys, last first, and
// who signed them.
type branch struct {
	rev     []string
	signers map[peer.ID]bool
}

// walk follows the chain from key at, in state s, to the end of the
// path every replica picks, and returns it (s is then the state at its
// end). Where changes fork, the branch whose signers that were admins at
// the fork are the more senior wins: compared most senior first, and at
// equal seniority the one with more of them; then the one whose first
// change's key sorts first. An admin taken down by a senior one cannot
// undo it by forking from before (the senior signed the other side), an
// admin cannot undo its own change once another has built on it, and
// concurrent changes resolve alike everywhere. The losers' changes are
// made again by their writers on the winning path (Rebase).
func (c *chain) walk(at string, s *govState) branch {
	var seg []string
	signers := map[peer.ID]bool{}
	for {
		var next []string
		for _, k := range c.kids[at] {
			if l := c.links[k]; s.allows(l.writer, l.c) == nil {
				next = append(next, k)
			}
		}
		if len(next) == 0 {
			slices.Reverse(seg)
			return branch{rev: seg, signers: signers}
		}
		if len(next) == 1 {
			l := c.links[next[0]]
			s.apply(l)
			seg, at, signers[l.writer] = append(seg, l.key), l.key, true
			continue
		}
		slices.Sort(next)
		var best branch
		var bestState govState
		var bestRanks []int
		for i, k := range next {
			l := c.links[k]
			st := s.clone()
			st.apply(l)
			sub := c.walk(k, &st)
			sub.rev = append(sub.rev, k)
			sub.signers[l.writer] = true
			ranks := supportOf(s, sub.signers)
			if i == 0 || slices.Compare(ranks, bestRanks) < 0 {
				best, bestState, bestRanks = sub, st, ranks
			}
		}
		*s = bestState
		slices.Reverse(seg)
		best.rev = append(best.rev, seg...)
		maps.Copy(best.signers, signers)
		return best
	}
}

// supportOf returns the ranks, in state s, of the signers that are admins
// there, most senior first, ending in a sentinel: compared as slices, a
// branch with more senior support sorts first, and at equal seniority the
// one with more signers (its next rank is smaller than the sentinel).
func supportOf(s *govState, signers map[peer.ID]bool) []int {
	var out []int
	for w := range signers {
		if r := s.rank(w); r < len(s.admins) {
			out = append(out, r)
		}
	}
	slices.Sort(out)
	return append(out, MaxAdmins+1)
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
		s.apply(up[i])
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
// here, allowed to its writer there, and not one too many of its writer's
// off the path.
func (g *Group) checkLink(row Row) error {
	l, err := decodeLink(row)
	if err != nil {
		return err
	}
	s, err := g.stateAt(l.c.Parent)
	if err != nil {
		return err
	}
	if err := s.allows(l.writer, l.c); err != nil {
		return err
	}
	c := g.gov()
	// Only a writer that is no admin now is held to the bound: an
	// admin's lost races are made again, and refusing one of its changes
	// could split replicas that heard them in other orders.
	if n := len(c.path); !slices.Contains(c.head.admins, l.writer) && ((n == 0 && l.c.Parent != "") || (n > 0 && l.c.Parent != c.path[n-1])) {
		off := 0
		for k, o := range c.links {
			if o.writer == l.writer && !c.on[k] {
				off++
			}
		}
		if off >= maxOffPath {
			return fmt.Errorf("%w: %s has %d changes off the chain's path already", ErrNotAllowed, l.writer, off)
		}
	}
	return nil
}

// change writes c at the end of the winning path, if this device may make
// it there.
func (g *Group) change(c Change, now time.Time) (Row, error) {
	ch := g.gov()
	if err := ch.head.allows(g.self, c); err != nil {
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
// is not lost to a change another admin made at the same time. Each new
// change names the one it makes again (Change.Redo), so none is made
// twice, and a change made on purpose twice (a prefix added, removed and
// added again) is not taken for a repeat.
func (g *Group) Rebase(now time.Time) []Row {
	c := g.gov()
	done := map[string]bool{}
	var lost []link
	for k, l := range c.links {
		switch {
		case l.writer != g.self:
		case c.on[k]:
			done[k] = true
			if l.c.Redo != "" {
				done[l.c.Redo] = true
			}
		default:
			lost = append(lost, l)
		}
	}
	slices.SortFunc(lost, func(a, b link) int { return cmp.Or(cmp.Compare(a.seq, b.seq), strings.Compare(a.key, b.key)) })
	pos := make(map[string]int, len(c.path))
	for i, k := range c.path {
		pos[k] = i
	}
	var out []Row
	for _, l := range lost {
		orig := cmp.Or(l.c.Redo, l.key)
		if done[orig] || done[l.key] || c.superseded(l, pos) {
			continue
		}
		ch := l.c
		ch.Redo = orig
		row, err := g.change(ch, now)
		if err != nil {
			continue // no longer applies where the chain went
		}
		out, done[orig] = append(out, row), true
	}
	return out
}

// superseded reports whether a change made on the path after lost
// change l's branch left it touches what l does (the same prefix, the
// same peer, or the copies): that later change, made knowing the state
// l lost to, decides; l is not made again over it.
func (c *chain) superseded(l link, pos map[string]int) bool {
	from := -1
	for k := l.c.Parent; k != ""; {
		if i, ok := pos[k]; ok {
			from = i
			break
		}
		p, ok := c.links[k]
		if !ok {
			return false
		}
		k = p.c.Parent
	}
	for _, k := range c.path[from+1:] {
		if touchSame(c.links[k].c, l.c) {
			return true
		}
	}
	return false
}

// touchSame reports whether changes a and b change the same thing.
func touchSame(a, b Change) bool {
	target := func(c Change) string {
		switch c.Op {
		case AddPrefix, RemovePrefix:
			return "prefix " + c.Prefix
		case SetCopies:
			return "copies"
		case SetBudget:
			return "budget"
		}
		return "peer " + string(c.Peer)
	}
	return target(a) == target(b)
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
