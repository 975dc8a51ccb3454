package syncgroup

import (
	"errors"
	"fmt"
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
// leaves that bound at DefaultBudget's.
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
	cur, ok := r.get(row.Key)
	n := usageWith(u, row, cur, ok)
	if b.exceeded(u, n) {
		return fmt.Errorf("%w: %s would hold %d rows, %d bytes, %d blob references (at most %d rows, %d bytes, %d references)",
			ErrOverBudget, row.Writer, n.Rows, n.Bytes, n.Refs, b.Rows, b.Bytes, b.Refs)
	}
	return nil
}

// usageWith returns usage u of row's writer once row wins its key, whose
// winner was cur (if ok).
func usageWith(u Usage, row Row, cur entry, ok bool) Usage {
	u.Rows, u.Bytes, u.Refs = u.Rows+1, u.Bytes+rowCost(row), u.Refs+refCount(row)
	if ok && cur.writer == row.Writer {
		u.Rows, u.Bytes, u.Refs = u.Rows-1, u.Bytes-int64(cur.cost), u.Refs-int(cur.refs)
	}
	return u
}

// exceeded reports whether a writer's usage going from u to n passes b. A
// change that costs no more is always taken: a writer at its budget can
// still overwrite and delete.
func (b Budget) exceeded(u, n Usage) bool {
	return (b.Rows > 0 && n.Rows > b.Rows && n.Rows > u.Rows) || (b.Bytes > 0 && n.Bytes > b.Bytes && n.Bytes > u.Bytes) ||
		(b.Refs > 0 && n.Refs > b.Refs && n.Refs > u.Refs)
}

// FitAll reports which of rows, applied in order as a sync applies them
// and each winning its key, the budget would take: each is counted
// against its writer's usage as the rows before it leave it. What a peer
// says of a row's blob (its signpost) counts only for a row that will be
// held: a refused row must not have a server fetch the blob it names.
func (r *Rows) FitAll(rows []Row) []bool {
	b := r.budget()
	out := make([]bool, len(rows))
	usage := map[peer.ID]Usage{}
	won := map[string]entry{}
	of := func(w peer.ID) Usage {
		if u, ok := usage[w]; ok {
			return u
		}
		return r.usage[w]
	}
	for i, row := range rows {
		if strings.HasPrefix(row.Key, memberPrefix) || b == (Budget{}) {
			out[i] = true
			continue
		}
		cur, ok := won[row.Key]
		if !ok {
			cur, ok = r.get(row.Key)
		}
		u := of(row.Writer)
		n := usageWith(u, row, cur, ok)
		if b.exceeded(u, n) {
			continue
		}
		out[i] = true
		usage[row.Writer] = n
		if ok && cur.writer != row.Writer {
			o := of(cur.writer)
			o.Rows, o.Bytes, o.Refs = o.Rows-1, o.Bytes-int64(cur.cost), o.Refs-int(cur.refs)
			usage[cur.writer] = o
		}
		won[row.Key] = newEntry(row, false)
	}
	return out
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
		return fmt.Errorf("%w: budget of %d rows, %d bytes, %d references per writer; each from 0 (the default) to %d, %d and %d",
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

// budget returns the bound in force: the group's, each field it leaves
// zero taken from base.
func (r *Rows) budget() Budget {
	if r.groupBudget == nil {
		return r.base
	}
	return r.groupBudget().over(r.base)
}
