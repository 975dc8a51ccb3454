package syncgroup

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Usage is what one writer's rows cost a replica: the rows (tombstones
// included) that win their keys, and their bytes.
type Usage struct {
	Rows  int
	Bytes int64
	// Refs counts the blob references in those rows: each may become a
	// fetch queued on every server of the group.
	Refs int
}

// Budget bounds what one writer's rows may cost a replica; a zero field is
// no bound. Membership rows are not counted: they are few and an admin
// writes most of them. As a group's (Spec.Budget, SetBudget), a zero field
// leaves that bound to each member's own default.
type Budget struct {
	Rows  int   `msgpack:"r,omitempty"`
	Bytes int64 `msgpack:"b,omitempty"`
	Refs  int   `msgpack:"f,omitempty"`
}

// ErrOverBudget reports a row refused because its writer's rows would
// cost more than the replica's budget for one writer.
var ErrOverBudget = errors.New("syncgroup: over the writer's budget")

// rowCost is what a row costs a replica: its key, its value and what every
// row carries besides (timestamp, writer, sequence, signature).
func rowCost(row Row) int64 { return int64(len(row.Key)+len(row.Value)) + 128 }

// refCount is how many blob references row names (none when deleted).
func refCount(row Row) int {
	if row.Deleted || len(row.Value) == 0 {
		return 0
	}
	refs, _ := FindRefs(row.Value)
	return len(refs)
}

// Usage returns what writer w's rows cost this replica.
func (r *Rows) Usage(w peer.ID) Usage { return r.usage[w] }

// fits reports whether row, replacing its key's current winner, keeps its
// writer within budget (or costs it nothing more).
func (r *Rows) fits(row Row) error {
	b := r.budget()
	if strings.HasPrefix(row.Key, memberPrefix) || b == (Budget{}) {
		return nil
	}
	u := r.usage[row.Writer]
	rows, bytes, refs := u.Rows+1, u.Bytes+rowCost(row), u.Refs+refCount(row)
	if cur, ok := r.get(row.Key); ok && cur.writer == row.Writer {
		rows, bytes, refs = rows-1, bytes-int64(cur.cost), refs-int(cur.refs)
	}
	// A change that costs no more is always taken: a writer at its budget
	// can still overwrite and delete.
	if (b.Rows > 0 && rows > b.Rows && rows > u.Rows) || (b.Bytes > 0 && bytes > b.Bytes && bytes > u.Bytes) ||
		(b.Refs > 0 && refs > b.Refs && refs > u.Refs) {
		return fmt.Errorf("%w: %s would hold %d rows, %d bytes, %d blob references (at most %d rows, %d bytes, %d references)",
			ErrOverBudget, row.Writer, rows, bytes, refs, b.Rows, b.Bytes, b.Refs)
	}
	return nil
}

// fitsAll is fits for rows, this device's, written in order: the usage
// they lead to must be within budget, or no more than it is now.
func (r *Rows) fitsAll(rows []Row) error {
	b := r.budget()
	if b == (Budget{}) {
		return nil
	}
	start := r.usage[r.self]
	u := start
	pending := map[string]entry{}
	for _, row := range rows {
		if strings.HasPrefix(row.Key, memberPrefix) {
			continue
		}
		old, ok := pending[row.Key]
		if !ok {
			if cur, held := r.get(row.Key); held && cur.writer == r.self {
				old, ok = cur, true
			}
		}
		if ok {
			u.Rows, u.Bytes, u.Refs = u.Rows-1, u.Bytes-int64(old.cost), u.Refs-int(old.refs)
		}
		e := newEntry(row, false)
		u.Rows, u.Bytes, u.Refs = u.Rows+1, u.Bytes+int64(e.cost), u.Refs+int(e.refs)
		pending[row.Key] = e
	}
	if (b.Rows > 0 && u.Rows > b.Rows && u.Rows > start.Rows) || (b.Bytes > 0 && u.Bytes > b.Bytes && u.Bytes > start.Bytes) ||
		(b.Refs > 0 && u.Refs > b.Refs && u.Refs > start.Refs) {
		return fmt.Errorf("%w: %d rows would make %s hold %d rows, %d bytes, %d blob references (at most %d rows, %d bytes, %d references)",
			ErrOverBudget, len(rows), r.self, u.Rows, u.Bytes, u.Refs, b.Rows, b.Bytes, b.Refs)
	}
	return nil
}

// The bounds of each writer's rows in a group whose budget leaves them
// zero: 250,000 rows, 64 MiB (counted with 128 bytes of overhead a row)
// and 500,000 blob references. A photo's row is a few hundred bytes
// naming one blob, so a member may keep some 150,000 photos in such a
// group; the value limit is 256 KiB. They are the protocol's, the same
// on every member: what one refuses, none holds.
const (
	DefaultBudgetRows  = 250_000
	DefaultBudgetBytes = 64 << 20
	DefaultBudgetRefs  = 500_000
)

// DefaultBudget returns the default bounds as a Budget.
func DefaultBudget() Budget {
	return Budget{Rows: DefaultBudgetRows, Bytes: DefaultBudgetBytes, Refs: DefaultBudgetRefs}
}

// Bounds of a group's budget (Spec.Budget, SetBudget).
const (
	MaxBudgetRows  = 1 << 30
	MaxBudgetBytes = 1 << 46
	MaxBudgetRefs  = 1 << 31
)

// Validate checks b as a group's budget: no field negative or past its
// bound.
func (b Budget) Validate() error {
	if b.Rows < 0 || b.Rows > MaxBudgetRows || b.Bytes < 0 || b.Bytes > MaxBudgetBytes || b.Refs < 0 || b.Refs > MaxBudgetRefs {
		return fmt.Errorf("%w: budget of %d rows, %d bytes, %d references per writer; each from 0 (each member's default) to %d, %d and %d",
			ErrBadChange, b.Rows, b.Bytes, b.Refs, MaxBudgetRows, MaxBudgetBytes, MaxBudgetRefs)
	}
	return nil
}

// over returns b, each zero field taken from base.
func (b Budget) over(base Budget) Budget {
	if b.Rows > 0 {
		base.Rows = b.Rows
	}
	if b.Bytes > 0 {
		base.Bytes = b.Bytes
	}
	if b.Refs > 0 {
		base.Refs = b.Refs
	}
	return base
}

// raises reports whether n bounds some field less than b does.
func (b Budget) raises(n Budget) bool {
	up := func(old, now int64) bool { return old > 0 && (now == 0 || now > old) }
	return up(int64(b.Rows), int64(n.Rows)) || up(b.Bytes, n.Bytes) || up(int64(b.Refs), int64(n.Refs))
}

// Mark names one row: its writer and sequence number.
type Mark struct {
	Writer peer.ID `msgpack:"w"`
	Seq    uint64  `msgpack:"s"`
}

// Span is a range of one writer's sequence numbers, both ends included.
type Span struct {
	First uint64 `msgpack:"f"`
	Last  uint64 `msgpack:"l"`
}

// join returns the smallest span covering s and o.
func (s Span) join(o Span) Span {
	return Span{First: min(s.First, o.First), Last: max(s.Last, o.Last)}
}

// Reask is a writer whose rows a replica asks for again after a raise of
// the budget: the chain row whose arrival raised it (By; zero for a raise
// of this node's own default), the last row refused before it (UpTo), and
// the raise's number among this replica's (Epoch).
type Reask struct {
	By    Mark   `msgpack:"b"`
	UpTo  uint64 `msgpack:"u"`
	Epoch uint64 `msgpack:"e"`
}

// Asked is a vector a replica sends a peer, with the number of the last
// raise of its budget when it was taken: the peer's answer covers what
// the replica asked after that raise.
type Asked struct {
	VV    VersionVector
	Epoch uint64
}

// budgets is how a replica bounds each writer's rows. The bound is the
// group's (its spec, then its chain's SetBudget changes), each field it
// leaves zero the protocol's default (base, DefaultBudget for a group). A row refused over the bound
// counts as known (the vector moves past it, so no peer sends it again),
// and refused notes the span of each writer's rows counted known without
// being held: those refused here, and those a peer's vector carried this
// replica's past while the peer said it had refused them. Once the bound
// rises, the vector comes back below each span, so that every peer sends
// those rows again, and until the vector has passed the span again no
// peer's claim raises it (reask) unless it answered a vector sent after
// the raise and comes from the writer itself or knows of the chain row
// that raised the bound (a peer that does not may have refused them too).
type budgets struct {
	base Budget
	// of returns the group's budget; nil for a replica with no group,
	// bound by base alone.
	of      func() Budget
	inForce Budget
	settled bool
	epoch   uint64
	refused map[peer.ID]Span
	reask   map[peer.ID]Reask
}

// BudgetState is what a replica keeps on stable storage of its budget:
// the bound it last applied, the rows of each writer it counts known
// without holding them, the writers whose rows it asks for again after a
// raise, and the number of its last raise.
type BudgetState struct {
	InForce Budget            `msgpack:"b"`
	Refused map[peer.ID]Span  `msgpack:"r,omitempty"`
	Reask   map[peer.ID]Reask `msgpack:"a,omitempty"`
	Epoch   uint64            `msgpack:"e,omitempty"`
}

// SetBudget sets the bound on each writer's rows for the fields the
// group's budget leaves zero (zero fields: no bound). Every member must
// be given the same: a node gives the protocol's default.
func (r *Rows) SetBudget(b Budget) {
	r.budgets.base = b
	r.settleBudget(Mark{})
}

// budget returns the bound in force.
func (r *Rows) budget() Budget {
	if r.budgets.of == nil {
		return r.budgets.base
	}
	return r.budgets.of().over(r.budgets.base)
}

// settleBudget applies a change of the bound, made by the chain row by
// (zero: none): one that rises brings the vector back below every span
// of rows counted known without being held.
func (r *Rows) settleBudget(by Mark) {
	b := &r.budgets
	now := r.budget()
	if b.settled && b.inForce.raises(now) && len(b.refused) > 0 {
		b.epoch++
		if b.reask == nil {
			b.reask = map[peer.ID]Reask{}
		}
		for w, s := range b.refused {
			r.vv[w] = min(r.vv[w], max(s.First, 1)-1)
			b.reask[w] = Reask{By: by, UpTo: max(s.Last, b.reask[w].UpTo), Epoch: b.epoch}
		}
		b.refused = nil
	}
	b.inForce, b.settled = now, true
}

// refusedRow notes row, refused over the budget.
func (r *Rows) refusedRow(row Row) { r.countedUnheld(row.Writer, Span{First: row.Seq, Last: row.Seq}) }

// countedUnheld notes writer w's rows in s as counted known, not held.
func (r *Rows) countedUnheld(w peer.ID, s Span) {
	b := &r.budgets
	if cur, ok := b.refused[w]; ok {
		s = s.join(cur)
	}
	if b.refused == nil {
		b.refused = map[peer.ID]Span{}
	}
	b.refused[w] = s
}

// Refused returns, per writer, the span of its rows this replica counts
// known without holding them, as a sync batch tells them with the vector.
func (r *Rows) Refused() map[peer.ID]Span { return maps.Clone(r.budgets.refused) }

// Ask returns the vector to send a peer, as Asked.
func (r *Rows) Ask() Asked { return Asked{VV: r.VV(), Epoch: r.budgets.epoch} }

// mayAdopt reports whether peer from's claim remote, its answer to asked,
// may raise this replica's vector for writer w: see budgets.
func (r *Rows) mayAdopt(from peer.ID, remote VersionVector, asked *Asked, w peer.ID) bool {
	a, ok := r.budgets.reask[w]
	switch {
	case !ok:
		return true
	case asked == nil || asked.Epoch < a.Epoch:
		return false
	}
	return from == w || a.By != (Mark{}) && remote.Knows(a.By.Writer, a.By.Seq)
}

// reasked notes that the vector moved for writer w: past the rows asked
// for again, the wait ends.
func (r *Rows) reasked(w peer.ID) {
	if a, ok := r.budgets.reask[w]; ok && r.vv[w] >= a.UpTo {
		delete(r.budgets.reask, w)
	}
}

// BudgetState returns what the replica keeps of its budget.
func (r *Rows) BudgetState() BudgetState {
	b := &r.budgets
	return BudgetState{InForce: b.inForce, Refused: maps.Clone(b.refused), Reask: maps.Clone(b.reask), Epoch: b.epoch}
}

// restoreBudget takes back what the replica kept of its budget (nil: a
// replica stored before it kept any).
func (r *Rows) restoreBudget(s *BudgetState) {
	if s == nil {
		return
	}
	b := &r.budgets
	b.inForce, b.settled, b.epoch = s.InForce, true, s.Epoch
	b.refused, b.reask = maps.Clone(s.Refused), maps.Clone(s.Reask)
}
