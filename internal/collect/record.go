package collect

import (
	"errors"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

// record is the stored state of one blob: per group, when this node
// found no live row referencing it, and when it was collected.
type record struct {
	// Seen marks the groups where this node saw a row reference the
	// blob: only those can stop referencing it.
	Seen      map[syncnode.GroupID]bool  `msgpack:"r,omitempty"`
	Since     map[syncnode.GroupID]int64 `msgpack:"s,omitempty"`
	Collected map[syncnode.GroupID]int64 `msgpack:"c,omitempty"`
	// Kept marks a collected blob whose copy something still kept (a
	// pin, work in progress, shares in escrow): later passes delete it
	// once nothing does.
	Kept bool `msgpack:"k,omitempty"`
	// Named is when a row was last seen naming the blob (Referenced): a
	// pass that began before does not collect it.
	Named int64 `msgpack:"n,omitempty"`
	// Revived marks the groups that collected the blob and whose rows
	// named it again, until this node, holding it, had its shares
	// reclaimed (Deps.Revive).
	Revived map[syncnode.GroupID]bool `msgpack:"v,omitempty"`
}

func key(ref syncnode.BlobRef) []byte {
	h := ref.Hash()
	return kv.Key(kv.Unref, h[:])
}

func (c *Collector) load(ref syncnode.BlobRef) (record, error) {
	var r record
	err := c.d.DB.View(func(txn *badger.Txn) error { return kv.Get(txn, key(ref), kv.KindUnref, &r) })
	if errors.Is(err, syncnode.ErrNotFound) {
		err = nil
	}
	return r, err
}

// update reads ref's record, lets fn change it, and writes it back if fn
// reports a change (not synced: a record a power cut takes back only
// makes the grace start again), in one transaction (retried on a conflict, so fn may
// run again): Referenced, a pass and a collection never lose each
// other's writes.
func (c *Collector) update(ref syncnode.BlobRef, fn func(*record) bool) (record, error) {
	var rec record
	err := kv.Update(c.d.DB, func(txn *badger.Txn) error {
		var err error
		rec, err = c.updateIn(txn, ref, fn)
		return err
	})
	return rec, err
}

// updateIn is update in the caller's transaction.
func (c *Collector) updateIn(txn *badger.Txn, ref syncnode.BlobRef, fn func(*record) bool) (record, error) {
	var rec record
	if err := kv.Get(txn, key(ref), kv.KindUnref, &rec); err != nil && !errors.Is(err, syncnode.ErrNotFound) {
		return rec, err
	}
	if !fn(&rec) {
		return rec, nil
	}
	if len(rec.Seen) == 0 && len(rec.Since) == 0 && len(rec.Collected) == 0 && !rec.Kept && rec.Named == 0 {
		return rec, txn.Delete(key(ref))
	}
	return rec, kv.Set(txn, key(ref), kv.KindUnref, rec)
}
