package custody

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/kv"
)

// userPins are the blobs the user asked this node to keep whatever its
// budget: one record each in the database (table kv.UserPins), on stable
// storage before a pin returns, and a copy in memory that eviction reads.
// A user pin is not an ownership share: it moves nothing between nodes
// and counts for nothing in a group.
type userPins struct {
	db      *badger.DB
	durable *kv.Durable

	// writing serialises pins and unpins, so that memory follows the
	// database in the same order; mu guards m alone, so eviction never
	// waits for a sync.
	writing sync.Mutex
	mu      sync.Mutex
	m       map[syncnode.BlobRef]time.Time
}

// userPinRecord is a stored user pin.
type userPinRecord struct {
	// At is when the user pinned the blob (Unix nanoseconds).
	At int64 `msgpack:"a"`
}

func userPinKey(ref syncnode.BlobRef) []byte {
	h := ref.Hash()
	return kv.Key(kv.UserPins, h[:])
}

// load reads every stored user pin.
func (u *userPins) load(db *badger.DB) error {
	u.db, u.durable, u.m = db, kv.NewDurable(db), map[syncnode.BlobRef]time.Time{}
	return db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: kv.UserPins, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			key := it.Item().Key()
			var rec userPinRecord
			if err := it.Item().Value(func(b []byte) error { return kv.Decode(kv.KindUserPin, b, &rec) }); err != nil {
				return fmt.Errorf("custody: user pin %x: %w", key, err)
			}
			if len(key) != len(kv.UserPins)+syncnode.HashSize {
				return fmt.Errorf("custody: user pin key %x: %w", key, syncnode.ErrCorruptRecord)
			}
			var h [syncnode.HashSize]byte
			copy(h[:], key[len(kv.UserPins):])
			u.m[syncnode.RefFromHash(h)] = time.Unix(0, rec.At)
		}
		return nil
	})
}

func (u *userPins) pinned(ref syncnode.BlobRef) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	_, ok := u.m[ref]
	return ok
}

// refs returns the pinned blobs.
func (u *userPins) refs() []syncnode.BlobRef {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Collect(maps.Keys(u.m))
}

// ErrNoDatabase reports a user pin asked of a custody opened without a
// database to keep it in.
var ErrNoDatabase = errors.New("custody: no database for user pins")

// UserPin pins ref here for the user: eviction never drops its copy,
// whatever the budget, until UserUnpin. The pin is on stable storage
// when UserPin returns. Pinning a blob pinned already changes nothing.
func (c *Custody) UserPin(ref syncnode.BlobRef) error {
	u := &c.userPins
	if u.db == nil {
		return ErrNoDatabase
	}
	if u.pinned(ref) {
		return nil
	}
	u.writing.Lock()
	defer u.writing.Unlock()
	if u.pinned(ref) {
		return nil
	}
	now := time.Now()
	err := u.durable.Update(func(txn *badger.Txn) error {
		return kv.Set(txn, userPinKey(ref), kv.KindUserPin, userPinRecord{At: now.UnixNano()})
	})
	if err != nil {
		return fmt.Errorf("custody: pin %s: %w", ref, err)
	}
	u.mu.Lock()
	u.m[ref] = now
	u.mu.Unlock()
	return nil
}

// UserUnpin drops the user's pin of ref, on stable storage when it
// returns, and reports whether there was one. The copy is then as any
// other: shares, work in progress and the other rules still keep it, and
// the budget may evict it.
func (c *Custody) UserUnpin(ref syncnode.BlobRef) (bool, error) {
	u := &c.userPins
	if u.db == nil {
		return false, nil
	}
	u.writing.Lock()
	defer u.writing.Unlock()
	if !u.pinned(ref) {
		return false, nil
	}
	if err := u.durable.Update(func(txn *badger.Txn) error { return txn.Delete(userPinKey(ref)) }); err != nil {
		return false, fmt.Errorf("custody: unpin %s: %w", ref, err)
	}
	u.mu.Lock()
	delete(u.m, ref)
	u.mu.Unlock()
	return true, nil
}

// UserPinned reports whether the user pinned ref here, and when.
func (c *Custody) UserPinned(ref syncnode.BlobRef) (bool, time.Time) {
	u := &c.userPins
	u.mu.Lock()
	defer u.mu.Unlock()
	at, ok := u.m[ref]
	return ok, at
}

// UserPinCount returns how many blobs the user pinned here.
func (c *Custody) UserPinCount() int {
	u := &c.userPins
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.m)
}

// UserPins returns the blobs the user pinned here, in ref order.
func (c *Custody) UserPins() []syncnode.BlobRef {
	u := &c.userPins
	u.mu.Lock()
	out := make([]syncnode.BlobRef, 0, len(u.m))
	for ref := range u.m {
		out = append(out, ref)
	}
	u.mu.Unlock()
	slices.SortFunc(out, func(a, b syncnode.BlobRef) int { return bytes.Compare(a.Bytes(), b.Bytes()) })
	return out
}

// restoreUserPinned queues for restoring every user-pinned blob whose copy
// is not here (lost with the disk, or pinned before a fetch that a stop
// cut short): the user asked for it to be kept here.
func (c *Custody) restoreUserPinned() {
	for _, ref := range c.UserPins() {
		if !blobstore.Holds(c.blobs, ref) {
			c.log.Warn("a blob the user pinned here is not held; fetching it again", "blob", ref)
			c.Restore(ref)
		}
	}
}
