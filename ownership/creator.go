package ownership

import (
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

// GrantCreator gives this device, which holds the blob, CreatorShares
// shares of it in group g, once per group: it reports false, and grants
// nothing, if it did so before (even if the shares have since moved away),
// or if this device fetched the blob from a peer and introduced is false.
// The origin of a blob (the device whose user stored its bytes) is granted
// the shares in every group that references it, whichever came first, the
// row or the bytes; a device that fetched it is granted them only where it
// introduced the ref into a group by writing a row.
func (l *Ledger) GrantCreator(ref syncnode.BlobRef, g syncnode.GroupID, introduced bool) (granted bool, err error) {
	if g == "" {
		return false, fmt.Errorf("%w: grant in no group", ErrBadTransfer)
	}
	// Read first: at open this runs for every held blob, and a grant made
	// before needs no write and no sync.
	if r, err := l.read(ref); err != nil || r.Created[g] || r.Recovered || (r.Fetched && !introduced) {
		return false, err
	}
	// The origin's grant needs no sync of its own: the origin (no
	// durable Fetched mark) is granted again at open and on every
	// discovery, whatever a power loss took, and any transfer of the
	// shares syncs badger's log, the grant in it. A grant for a ref a
	// fetched copy's row introduced is not derived again, so it is synced.
	sync := false
	err = kv.Update(l.db, func(txn *badger.Txn) error {
		r, err := load(txn, ref)
		if err != nil {
			return err
		}
		granted = !r.Created[g] && !r.Recovered && (!r.Fetched || introduced)
		if !granted {
			return nil
		}
		sync = r.Fetched
		if r.Created == nil {
			r.Created = map[syncnode.GroupID]bool{}
		}
		r.Created[g] = true
		r.add(g, CreatorShares)
		return store(txn, ref, r)
	})
	if err == nil && sync {
		err = l.durable.Sync()
	}
	return granted, err
}

// MarkFetched records, before a fetch of ref can make it visible, that this
// device gets the blob from a peer and is not its origin. An origin that
// was granted its shares and fetches its blob back (a lost or damaged copy
// restored) stays the origin.
func (l *Ledger) MarkFetched(ref syncnode.BlobRef) error {
	if r, err := l.read(ref); err != nil || r.Fetched || len(r.Created) > 0 {
		return err
	}
	return l.durable.Update(func(txn *badger.Txn) error {
		r, err := load(txn, ref)
		if err != nil || r.Fetched || len(r.Created) > 0 {
			return err
		}
		r.Fetched = true
		return store(txn, ref, r)
	})
}

// MayEvictCopy reports whether eviction may drop this device's copy of
// ref: MayEvict, and the copy came from a peer or its origin was granted
// the creator's shares in some group. An origin never granted (no row of
// a group it is a member of named the blob since it was put) has no
// reason to think any other device holds the blob. Read once.
func (l *Ledger) MayEvictCopy(ref syncnode.BlobRef) (bool, error) {
	r, err := l.read(ref)
	granted := r.Fetched || len(r.Created) > 0
	return err == nil && !r.Recovered && granted && MayEvict(r.Shares, len(r.Escrow)), err
}
