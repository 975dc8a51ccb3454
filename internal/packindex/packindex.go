// Package packindex keeps a blob store's pack index (where each packed
// blob is, and each pack's dead bytes) in a node's badger database.
package packindex

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/kv"
)

// Index is a blobstore.PackIndex in a badger database.
type Index struct {
	db      *badger.DB
	durable *kv.Durable
}

var _ blobstore.PackIndex = (*Index)(nil)

// New returns the pack index kept in db.
func New(db *badger.DB) *Index { return &Index{db: db, durable: kv.NewDurable(db)} }

// entry is a packed blob's record.
type entry struct {
	Pack   uint32 `msgpack:"p"`
	Off    int64  `msgpack:"o"`
	Size   int64  `msgpack:"s"`
	Stored int64  `msgpack:"t"`
}

// state is how far the index is built.
type state struct {
	State blobstore.PackState `msgpack:"s"`
}

// State implements blobstore.PackIndex. A damaged record reads as
// PackRebuilding: building again is always safe.
func (x *Index) State() (blobstore.PackState, error) {
	var st state
	err := x.db.View(func(txn *badger.Txn) error { return kv.Get(txn, kv.PackMeta, kv.KindPackMeta, &st) })
	switch {
	case errors.Is(err, syncnode.ErrNotFound):
		return blobstore.PackFresh, nil
	case errors.Is(err, syncnode.ErrCorruptRecord):
		return blobstore.PackRebuilding, nil
	case err != nil:
		return 0, fmt.Errorf("packindex: %w", err)
	}
	return st.State, nil
}

// SetState implements blobstore.PackIndex.
func (x *Index) SetState(s blobstore.PackState) error {
	if err := x.durable.Update(func(txn *badger.Txn) error { return kv.Set(txn, kv.PackMeta, kv.KindPackMeta, state{s}) }); err != nil {
		return fmt.Errorf("packindex: %w", err)
	}
	return nil
}

// dead is a pack's count of dead bytes.
type dead struct {
	Bytes int64 `msgpack:"b"`
}

// chunk bounds the changes of one badger transaction: a batch larger is
// committed in several, made durable together.
const chunk = 1000

func entryKey(ref syncnode.BlobRef) []byte {
	h := ref.Hash()
	return kv.Key(kv.Packed, h[:])
}

func deadKey(n uint32) []byte { return kv.Key(kv.PackDead, binary.BigEndian.AppendUint32(nil, n)) }

// Lookup implements blobstore.PackIndex. A damaged entry (its record
// fails its checksum) is given as in pack 0, which never exists: its
// blob reads as damaged, and a put again or a delete replaces it.
func (x *Index) Lookup(ref syncnode.BlobRef) (blobstore.PackEntry, bool, error) {
	var e entry
	err := x.db.View(func(txn *badger.Txn) error { return kv.Get(txn, entryKey(ref), kv.KindPacked, &e) })
	if errors.Is(err, syncnode.ErrNotFound) {
		return blobstore.PackEntry{}, false, nil
	}
	if errors.Is(err, syncnode.ErrCorruptRecord) {
		return blobstore.PackEntry{Ref: ref}, true, nil
	}
	if err != nil {
		return blobstore.PackEntry{}, false, fmt.Errorf("packindex: %s: %w", ref, err)
	}
	return blobstore.PackEntry{Ref: ref, Pack: e.Pack, Off: e.Off, Size: e.Size, Stored: e.Stored}, true, nil
}

// Apply implements blobstore.PackIndex. A batch of more than chunk
// changes is committed in several transactions and synced once: a crash
// may keep some of them, each change whole. Counts go last, so a crash
// can only leave them low (space reclaimed later), never a pack
// compacted for dead bytes it still holds live (and compaction moves
// every live record first whatever the counts say).
func (x *Index) Apply(b blobstore.PackBatch) error {
	for len(b.Changes) > 0 {
		n := min(len(b.Changes), chunk)
		part := b.Changes[:n]
		b.Changes = b.Changes[n:]
		err := x.durable.Commit(func(txn *badger.Txn) error {
			for _, c := range part {
				k := entryKey(c.Entry.Ref)
				if c.Delete {
					if err := txn.Delete(k); err != nil {
						return err
					}
					continue
				}
				e := c.Entry
				if err := kv.Set(txn, k, kv.KindPacked, entry{Pack: e.Pack, Off: e.Off, Size: e.Size, Stored: e.Stored}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("packindex: %w", err)
		}
	}
	if len(b.Dead) > 0 || len(b.Forget) > 0 {
		err := x.durable.Commit(func(txn *badger.Txn) error {
			for n, add := range b.Dead {
				var d dead // a damaged count starts again from nothing
				if err := kv.Get(txn, deadKey(n), kv.KindPackDead, &d); err != nil && !errors.Is(err, syncnode.ErrNotFound) && !errors.Is(err, syncnode.ErrCorruptRecord) {
					return err
				}
				d.Bytes += add
				if err := kv.Set(txn, deadKey(n), kv.KindPackDead, d); err != nil {
					return err
				}
			}
			for _, n := range b.Forget {
				if err := txn.Delete(deadKey(n)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("packindex: %w", err)
		}
	}
	if err := x.durable.Flush(); err != nil {
		return fmt.Errorf("packindex: %w", err)
	}
	return nil
}

// Each implements blobstore.PackIndex, reading the index a page at a
// time, each in a transaction of its own.
func (x *Index) Each(fn func(blobstore.PackEntry) error) error {
	after := []byte(nil)
	for {
		var page []blobstore.PackEntry
		err := x.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: kv.Packed, PrefetchValues: true, PrefetchSize: 64})
			defer it.Close()
			it.Seek(kv.Packed)
			if after != nil {
				it.Seek(after)
				if it.Valid() && string(it.Item().Key()) == string(after) {
					it.Next()
				}
			}
			for ; it.Valid() && len(page) < chunk; it.Next() {
				item := it.Item()
				ref, err := syncnode.RefFromBytes(item.Key()[len(kv.Packed):])
				if err != nil {
					return fmt.Errorf("%w: pack index key %x", syncnode.ErrCorruptRecord, item.Key())
				}
				var e entry
				err = item.Value(func(v []byte) error { return kv.Decode(kv.KindPacked, v, &e) })
				if errors.Is(err, syncnode.ErrCorruptRecord) {
					e = entry{} // damaged: in pack 0, as Lookup gives it
				} else if err != nil {
					return fmt.Errorf("pack index entry of %s: %w", ref, err)
				}
				page = append(page, blobstore.PackEntry{Ref: ref, Pack: e.Pack, Off: e.Off, Size: e.Size, Stored: e.Stored})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("packindex: %w", err)
		}
		for _, e := range page {
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(page) < chunk {
			return nil
		}
		after = entryKey(page[len(page)-1].Ref)
	}
}

// Dead implements blobstore.PackIndex.
func (x *Index) Dead() (map[uint32]int64, error) {
	out := map[uint32]int64{}
	err := x.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: kv.PackDead, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()[len(kv.PackDead):]
			if len(k) != 4 {
				return fmt.Errorf("%w: pack count key %x", syncnode.ErrCorruptRecord, it.Item().Key())
			}
			var d dead
			err := it.Item().Value(func(v []byte) error { return kv.Decode(kv.KindPackDead, v, &d) })
			if errors.Is(err, syncnode.ErrCorruptRecord) {
				continue // counted again from nothing: compaction comes later
			}
			if err != nil {
				return err
			}
			out[binary.BigEndian.Uint32(k)] = d.Bytes
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("packindex: %w", err)
	}
	return out, nil
}
