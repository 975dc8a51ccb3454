package syncgroup

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

// Store keeps syncgroup replicas in badger: per group one record with the
// spec, the version vector and this device's priority, and one record per
// row. Rows and the vector they raise are written in one transaction, so a
// restart never finds a vector that claims rows the store lacks.
//
// Save commits without waiting for stable storage; Sync waits, sharing one
// sync of badger's logs among every save that came before it. A writer
// saves under its group's lock and syncs after releasing it, before the
// row is acknowledged or sent to anyone: after a power cut the store has
// every row that left the node, so a sequence number is never reused.
type Store struct {
	db      *badger.DB
	durable *kv.Durable
	journal Journal

	mu sync.Mutex
	// saved is each group's record as this store last wrote it: a save
	// with no rows that would write it again unchanged (a round that
	// brought nothing) commits nothing, so an idle node neither writes
	// nor syncs each round.
	saved map[syncnode.GroupID]savedRecord
}

// savedRecord is a group's record as last written: encoded without its
// version vector and this device's priority's distance and server time,
// a copy of the vector, and the priority.
type savedRecord struct {
	enc  []byte
	vv   VersionVector
	prio syncnode.Priority
}

// same reports whether the record r and then the record now need no
// write: equal, but for a distance that moved by less than DistanceLag
// and a server time that moved forward by less than ServerTimeLag.
func (r savedRecord) same(now savedRecord) bool {
	return bytes.Equal(r.enc, now.enc) && maps.Equal(r.vv, now.vv) &&
		math.Abs(now.prio.Distance-r.prio.Distance) < DistanceLag &&
		!now.prio.ServerTime.Before(r.prio.ServerTime) && now.prio.ServerTime.Sub(r.prio.ServerTime) < ServerTimeLag
}

// How far this device's stored priority may lag the one in memory before
// a save with nothing else to write writes it. The priority moves on
// every round with a member nearer a server: the distance by a fifth of
// its way to its target, the server time to that round's. A power cut
// may take that much back: the device then counts itself a little
// farther from a server, and its contact with one as older, than it was
// (a lower priority, never a higher one) until its next rounds. Without
// the lag, an idle device would write and sync its group record on every
// round.
const (
	DistanceLag   = 0.05
	ServerTimeLag = 10 * time.Minute
)

// A Journal logs the rows each save makes win, in the save's own
// transaction, so that a reader of the log never misses a row the store
// holds, nor reads one the store lost.
type Journal interface {
	// Commit calls save with the position of the first of n entries,
	// and save commits them; positions are handed out in commit order.
	Commit(n int, save func(first uint64) error) error
	// Put writes, in txn, the entry at pos: row now wins its key in g.
	Put(txn *badger.Txn, pos uint64, g syncnode.GroupID, row Row) error
	// Mark returns where the journal stands; once a sync that began after
	// the call ends, Synced(mark) says that all of it is durable.
	Mark() uint64
	Synced(mark uint64)
	// Removed records that g's replica was removed with its rows.
	Removed(g syncnode.GroupID) error
}

// SetJournal makes every later save log its rows in j. It is called
// once, before the store is used.
func (s *Store) SetJournal(j Journal) { s.journal = j }

// ScanRows calls fn, in key order, with the rows of group g stored in
// txn whose keys are at least from; fn returning false stops it.
func ScanRows(txn *badger.Txn, g syncnode.GroupID, from string, fn func(Row) (bool, error)) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: rowPrefix(g), PrefetchValues: true, PrefetchSize: 64})
	defer it.Close()
	for it.Seek(rowKey(g, from)); it.Valid(); it.Next() {
		var r Row
		err := it.Item().Value(func(v []byte) error { return kv.Decode(kv.KindRow, v, &r) })
		if err != nil {
			return fmt.Errorf("syncgroup: store: row %q of %s: %w", it.Item().Key(), g, err)
		}
		more, err := fn(r)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// NewStore returns a store over db.
func NewStore(db *badger.DB) *Store {
	return &Store{db: db, durable: kv.NewDurable(db), saved: map[syncnode.GroupID]savedRecord{}}
}

// canonical returns rec as savedRecord keeps it, to tell what changed.
func canonical(rec groupRecord) (savedRecord, error) {
	out := savedRecord{vv: maps.Clone(rec.VV), prio: rec.Prio}
	rec.VV, rec.Prio.Distance, rec.Prio.ServerTime = nil, 0, time.Time{}
	var err error
	out.enc, err = msgpack.Marshal(rec)
	return out, err
}

// Sync returns once every save before it is on stable storage; at once
// when they all are.
func (s *Store) Sync() error {
	var mark uint64
	if s.journal != nil {
		mark = s.journal.Mark()
	}
	if err := s.durable.Flush(); err != nil {
		return fmt.Errorf("syncgroup: store: %w", err)
	}
	if s.journal != nil {
		s.journal.Synced(mark)
	}
	return nil
}

type groupRecord struct {
	Spec Spec              `msgpack:"s"`
	VV   VersionVector     `msgpack:"v"`
	Prio syncnode.Priority `msgpack:"p"`
	// Seq is this device's last sequence number, which its vector entry
	// may trail (see Rows.write).
	Seq uint64 `msgpack:"q,omitempty"`
}

func groupKey(id syncnode.GroupID) []byte { return kv.Key(kv.Groups, []byte(id)) }

func rowPrefix(id syncnode.GroupID) []byte {
	return kv.Key(kv.Rows, append([]byte(id), 0))
}

func rowKey(id syncnode.GroupID, key string) []byte {
	return append(rowPrefix(id), key...)
}

// saveChunk bounds the rows written in one transaction; chunkBytes (a
// quarter of badger's transaction size limit, which counts each row
// twice with its journal entry) bounds their bytes.
const saveChunk = 512

// chunkLen returns how many of rows (at least one) fit in a transaction
// of at most limit bytes.
func chunkLen(rows []Row, limit int64) int {
	var size int64
	for i, r := range rows {
		size += int64(len(r.Key)+len(r.Value)+len(r.Sig)+len(r.PubKey)) + 160
		if i == saveChunk || i > 0 && size > limit {
			return i
		}
	}
	return len(rows)
}

// Save writes rows of group g (the versions that now win their keys), its
// version vector and this device's priority in it. The group record is
// written with the last rows, after all the others: a crash in between
// leaves rows ahead of the vector, which the next round merely resends,
// never a vector that claims rows the store lacks.
func (s *Store) Save(g *Group, rows []Row, prio syncnode.Priority) error {
	id := g.spec.ID
	rec := groupRecord{Spec: g.spec, VV: g.rows.VV(), Prio: prio, Seq: g.rows.seq}
	same, err := canonical(rec)
	if err != nil {
		return fmt.Errorf("syncgroup: store %s: %w", id, err)
	}
	s.mu.Lock()
	last, ok := s.saved[id]
	s.mu.Unlock()
	if ok && len(rows) == 0 && last.same(same) {
		return nil
	}

	limit := s.db.MaxBatchSize() / 4
	for {
		n := chunkLen(rows, limit)
		chunk, last := rows[:n], n == len(rows)
		rows = rows[n:]
		save := func(first uint64) error {
			return s.durable.Commit(func(txn *badger.Txn) error {
				for i, r := range chunk {
					if err := kv.Set(txn, rowKey(id, r.Key), kv.KindRow, r); err != nil {
						return err
					}
					if s.journal != nil {
						if err := s.journal.Put(txn, first+uint64(i), id, r); err != nil {
							return err
						}
					}
				}
				if last {
					return kv.Set(txn, groupKey(id), kv.KindGroup, rec)
				}
				return nil
			})
		}
		var err error
		if s.journal != nil && len(chunk) > 0 {
			err = s.journal.Commit(len(chunk), save)
		} else {
			err = save(0)
		}
		if err != nil {
			return fmt.Errorf("syncgroup: store %s: %w", id, err)
		}
		g.rows.Stored(chunk, s.loader(id))
		if last {
			s.mu.Lock()
			s.saved[id] = same
			s.mu.Unlock()
			return nil
		}
	}
}

// scanFrom is how many sorted keys a load reads with one iterator, which
// walks from each key to the next, rather than looking each up alone.
const scanFrom = 32

// scanRows reads the rows of group id at keys, sorted, into out with one
// iterator: it steps to the next key when it is near, and seeks it
// otherwise.
func scanRows(txn *badger.Txn, id syncnode.GroupID, keys []string, out []Row) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: rowPrefix(id), PrefetchValues: true, PrefetchSize: 64})
	defer it.Close()
	it.Seek(rowKey(id, keys[0]))
	for i, k := range keys {
		want := rowKey(id, k)
		for step := 0; it.Valid() && bytes.Compare(it.Item().Key(), want) < 0; step++ {
			if step == 8 {
				it.Seek(want)
				break
			}
			it.Next()
		}
		if !it.Valid() || !bytes.Equal(it.Item().Key(), want) {
			return fmt.Errorf("syncgroup: store: row %q of %s: %w", k, id, syncnode.ErrNotFound)
		}
		if err := it.Item().Value(func(v []byte) error { return kv.Decode(kv.KindRow, v, &out[i]) }); err != nil {
			return fmt.Errorf("syncgroup: store: row %q of %s: %w", k, id, err)
		}
	}
	return nil
}

// loader returns a function that reads rows of group id back by key, as
// Rows.Stored wants.
func (s *Store) loader(id syncnode.GroupID) func(keys []string) ([]Row, error) {
	return func(keys []string) ([]Row, error) {
		out := make([]Row, len(keys))
		err := s.db.View(func(txn *badger.Txn) error {
			if len(keys) >= scanFrom && slices.IsSorted(keys) {
				return scanRows(txn, id, keys, out)
			}
			for i, k := range keys {
				if err := kv.Get(txn, rowKey(id, k), kv.KindRow, &out[i]); err != nil {
					return fmt.Errorf("syncgroup: store: row %q of %s: %w", k, id, err)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}

// SaveAll writes every row of g, as when a group is created or joined.
func (s *Store) SaveAll(g *Group, prio syncnode.Priority) error {
	keys := make([]string, 0, g.rows.rows.Len())
	g.rows.rows.Ascend(func(it item) bool {
		keys = append(keys, it.key)
		return true
	})
	rows, err := g.rows.whole(keys)
	if err != nil {
		return fmt.Errorf("syncgroup: store %s: %w", g.spec.ID, err)
	}
	return s.Save(g, rows, prio)
}

// Remove deletes g's replica and rows, as when this device leaves it or
// joins it again after an ejection. Where this device's writes stood is
// kept (see Resume), on stable storage before anything is deleted.
func (s *Store) Remove(g *Group) error {
	id := g.spec.ID
	s.mu.Lock()
	delete(s.saved, id)
	s.mu.Unlock()
	res, err := s.Resumed(id)
	if err != nil {
		return err
	}
	res = res.Max(g.Resume())
	err = s.durable.Update(func(txn *badger.Txn) error { return kv.Set(txn, departedKey(id), kv.KindDeparted, res) })
	if err == nil {
		err = s.durable.Flush()
	}
	if err == nil {
		err = s.db.DropPrefix(rowPrefix(id))
	}
	if err == nil && s.journal != nil {
		err = s.journal.Removed(id)
	}
	if err == nil {
		err = s.durable.Update(func(txn *badger.Txn) error { return txn.Delete(groupKey(id)) })
	}
	// Again: a save that ran meanwhile wrote a record now deleted.
	s.mu.Lock()
	delete(s.saved, id)
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("syncgroup: store: removing %s: %w", id, err)
	}
	return nil
}

func departedKey(id syncnode.GroupID) []byte { return kv.Key(kv.Departed, []byte(id)) }

// Resumed returns where this device's writes in group id stood when it
// last removed a replica of it; the zero Resume if it never did.
func (s *Store) Resumed(id syncnode.GroupID) (Resume, error) {
	var res Resume
	err := s.db.View(func(txn *badger.Txn) error { return kv.Get(txn, departedKey(id), kv.KindDeparted, &res) })
	if errors.Is(err, syncnode.ErrNotFound) {
		return Resume{}, nil
	}
	if err != nil {
		return Resume{}, fmt.Errorf("syncgroup: store: %s: %w", id, err)
	}
	return res, nil
}

// Loaded is one group read back from the store.
type Loaded struct {
	Group *Group
	Prio  syncnode.Priority
}

// Load reads back every stored group for device self.
func (s *Store) Load(self peer.ID, maxSkew time.Duration) ([]Loaded, error) {
	var out []Loaded
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: kv.Groups})
		defer it.Close()
		var recs []groupRecord
		for it.Rewind(); it.Valid(); it.Next() {
			var rec groupRecord
			err := it.Item().Value(func(b []byte) error { return kv.Decode(kv.KindGroup, b, &rec) })
			if err != nil {
				return fmt.Errorf("syncgroup: group %q: %w", bytes.TrimPrefix(it.Item().Key(), kv.Groups), err)
			}
			recs = append(recs, rec)
		}
		for _, rec := range recs {
			g, err := NewGroup(rec.Spec, self, maxSkew)
			if err != nil {
				return err
			}
			g.rows.load = s.loader(rec.Spec.ID)
			rit := txn.NewIterator(badger.IteratorOptions{Prefix: rowPrefix(rec.Spec.ID), PrefetchValues: true, PrefetchSize: 100})
			for rit.Rewind(); rit.Valid(); rit.Next() {
				var r Row
				err := rit.Item().Value(func(b []byte) error { return kv.Decode(kv.KindRow, b, &r) })
				if err != nil {
					rit.Close()
					return fmt.Errorf("syncgroup: row of %s: %w", rec.Spec.ID, err)
				}
				g.rows.restoreRow(r)
			}
			rit.Close()
			g.rows.restore(rec.VV, rec.Seq)
			out = append(out, Loaded{Group: g, Prio: rec.Prio})
		}
		return nil
	})
	return out, err
}

// restore ends the refill of an empty replica from the store, once its
// rows are back (restoreRow): the vector is the stored one, this device's
// sequence continues from its vector entry and its clock from the newest
// timestamp seen.
func (r *Rows) restore(vv VersionVector, seq uint64) {
	if vv != nil {
		r.vv = vv
	}
	// The stored vector was this replica's own, made of what it had seen.
	for w, s := range r.vv {
		r.seen[w] = max(r.seen[w], s)
	}
	r.seq = max(seq, r.vv[r.self], r.seen[r.self])
}
