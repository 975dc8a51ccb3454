package syncgroup

import (
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
)

// entry is what a replica keeps in memory of its key's winning version:
// all that ordering, version vectors and budgets read. The row itself
// (value, signature) stays too until the store holds it (Stored), and is
// then read back from the store when asked for: memory grows with the
// keys a group has, not with its values and signatures. Membership rows,
// few and read at every check, are always kept whole.
type entry struct {
	wall   int64 // the timestamp, its two parts apart: 56 bytes, not 64
	writer peer.ID
	seq    uint64
	// row is the version whole, or nil once the store holds it.
	row     *Row
	logical uint32
	cost    int32 // rowCost: a row is at most a frame
	refs    int32
	deleted bool
}

// ts returns the version's timestamp.
func (e entry) ts() Timestamp { return Timestamp{Wall: e.wall, Logical: e.logical} }

// newEntry returns row's entry, holding the row whole if whole.
func newEntry(row Row, whole bool) entry {
	e := entry{wall: row.TS.Wall, logical: row.TS.Logical, writer: row.Writer, seq: row.Seq, cost: int32(rowCost(row)), refs: int32(refCount(row)), deleted: row.Deleted}
	if whole {
		e.row = &row
	}
	return e
}

// item is a key and its entry, as the replica's ordered index holds them:
// one index, ordered by key, for lookups and pages alike.
type item struct {
	key string
	e   entry
}

// get returns key's entry.
func (r *Rows) get(key string) (entry, bool) {
	it, ok := r.rows.Get(key)
	return it.e, ok
}

// put makes e key's entry.
func (r *Rows) put(key string, e entry) { r.rows.Set(item{key: key, e: e}) }

// Beats reports whether row would win its key here: no version is held,
// or row wins over the one that is (Wins).
func (r *Rows) Beats(row Row) bool {
	cur, ok := r.get(row.Key)
	if !ok {
		return true
	}
	if c := row.TS.Compare(cur.ts()); c != 0 {
		return c > 0
	}
	return row.Writer > cur.writer
}

// Lookup returns the winning version of key (possibly a tombstone), read
// back from the store if it is no longer in memory.
func (r *Rows) Lookup(key string) (Row, bool, error) {
	if _, ok := r.get(key); !ok {
		return Row{}, false, nil
	}
	rows, err := r.whole([]string{key})
	if err != nil {
		return Row{}, false, err
	}
	return rows[0], true, nil
}

// whole returns the winning versions of keys, each held here, whole: from
// memory, or read back from the store in one go.
func (r *Rows) whole(keys []string) ([]Row, error) {
	out := make([]Row, len(keys))
	var away []string
	var at []int
	for i, k := range keys {
		if e, _ := r.get(k); e.row != nil {
			out[i] = *e.row
		} else {
			away, at = append(away, k), append(at, i)
		}
	}
	if len(away) == 0 {
		return out, nil
	}
	if r.load == nil {
		return nil, fmt.Errorf("syncgroup: %d rows neither in memory nor in a store", len(away))
	}
	got, err := r.load(away)
	if err != nil {
		return nil, err
	}
	for j, row := range got {
		e, _ := r.get(away[j])
		if row.Key != away[j] || row.Writer != e.writer || row.Seq != e.seq {
			return nil, fmt.Errorf("%w: the store holds %q by %s #%d, the replica %q by %s #%d",
				syncnode.ErrCorruptRecord, row.Key, row.Writer, row.Seq, away[j], e.writer, e.seq)
		}
		row.Writer = e.writer // the replica's one copy of the ID
		out[at[j]] = row
	}
	return out, nil
}

// Stored tells the replica that the store now holds rows (each the
// version that won its key when saved) and can read them back with load:
// the ones that still win leave memory but for their entries.
func (r *Rows) Stored(rows []Row, load func(keys []string) ([]Row, error)) {
	r.load = load
	for _, row := range rows {
		if strings.HasPrefix(row.Key, memberPrefix) {
			continue
		}
		if e, ok := r.get(row.Key); ok && e.row != nil && e.writer == row.Writer && e.seq == row.Seq {
			e.row = nil
			r.put(row.Key, e)
		}
	}
}

// ListFrom returns up to limit (all, if negative) live rows under prefix
// from key start on, sorted by key, whose keys keep (if not nil) keeps,
// and the key the next page starts at ("" after the last). It reads the
// keys it returns and the one after, not every key, and reads the rows
// the store holds back in one go.
func (r *Rows) ListFrom(prefix, start string, limit int, keep func(key string) bool) (rows []Row, next string, err error) {
	var keys []string
	r.rows.AscendFrom(max(prefix, start), func(it item) bool {
		k := it.key
		if !strings.HasPrefix(k, prefix) {
			return false
		}
		if it.e.deleted || keep != nil && !keep(k) {
			return true
		}
		if len(keys) == limit {
			next = k
			return false
		}
		keys = append(keys, k)
		return true
	})
	rows, err = r.whole(keys)
	if err != nil {
		return nil, "", err
	}
	return rows, next, nil
}

// Missing returns the winning versions under the prefixes that a peer with
// version vector remote does not know, sorted by key.
func (r *Rows) Missing(remote VersionVector, prefixes []string) ([]Row, error) {
	return r.whole(r.MissingKeys(remote, prefixes))
}

// Versions returns the winning versions of keys, each a key this replica
// holds (as MissingKeys gives them), read back from the store in one go
// where they are not in memory.
func (r *Rows) Versions(keys []string) ([]Row, error) { return r.whole(keys) }

// MissingKeys returns the keys under the prefixes whose winning versions
// a peer with version vector remote does not know, sorted: what Missing
// returns, for the caller to read a page at a time (Versions).
func (r *Rows) MissingKeys(remote VersionVector, prefixes []string) []string {
	var keys []string
	r.rows.Ascend(func(it item) bool {
		if remote.Knows(it.e.writer, it.e.seq) {
			return true
		}
		for _, p := range prefixes {
			if strings.HasPrefix(it.key, p) {
				keys = append(keys, it.key)
				break
			}
		}
		return true
	})
	return keys
}

// restoreRow puts back a row read from the store, which holds it: only
// its entry stays in memory (a membership row stays whole).
func (r *Rows) restoreRow(row Row) {
	r.setWhole(row, strings.HasPrefix(row.Key, memberPrefix))
	if row.TS.Compare(r.hlc.last) > 0 {
		r.hlc.last = row.TS
	}
	r.saw(row)
}
