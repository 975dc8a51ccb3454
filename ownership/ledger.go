package ownership

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

// Errors of the share-transfer protocol.
var (
	// ErrUnverified reports an accept by a device that does not hold the
	// verified blob.
	ErrUnverified = errors.New("ownership: blob not held verified; shares refused")
	// ErrTransferClosed reports an accept of a transfer the acceptor had
	// already refused.
	ErrTransferClosed = errors.New("ownership: transfer already refused")
	// ErrBadTransfer reports a transfer with a count or group that makes no
	// sense.
	ErrBadTransfer = errors.New("ownership: malformed transfer")

	// ErrInEscrow reports an offer that found nothing to give only because
	// shares of the group are in escrow for another transfer whose outcome
	// is not known yet: ask again later.
	ErrInEscrow = errors.New("ownership: shares in escrow for an unsettled transfer")
)

// TransferID names one share transfer; the acceptor picks it, so a retried
// offer or accept is recognised.
type TransferID [16]byte

// NewTransferID returns a random transfer ID.
func NewTransferID() TransferID {
	var id TransferID
	rand.Read(id[:])
	return id
}

// String returns the ID in hex.
func (id TransferID) String() string { return hex.EncodeToString(id[:]) }

// Transfer is shares of one blob in one group moving from a holder to an
// acceptor.
type Transfer struct {
	ID    TransferID       `msgpack:"i"`
	Ref   syncnode.BlobRef `msgpack:"r"`
	Group syncnode.GroupID `msgpack:"g"`
	N     int              `msgpack:"n"`
	// To is the acceptor, whom the holder asks if it loses track.
	To peer.ID `msgpack:"o,omitempty"`
	// At is when the holder put the shares in escrow (Unix nanoseconds;
	// zero in transfers escrowed before it was kept).
	At int64 `msgpack:"at,omitempty"`
	// From is the holder, as the acceptor records it: only it may void
	// the transfer later.
	From peer.ID `msgpack:"fr,omitempty"`
}

// record is the stored state of one blob's shares on this device.
type record struct {
	Shares map[syncnode.GroupID]int `msgpack:"s,omitempty"`
	// Escrow holds shares offered but not yet settled, by transfer ID.
	Escrow map[string]Transfer `msgpack:"e,omitempty"`
	// Created names the groups in which this device granted itself the
	// creator's shares, so that writing the ref again grants none.
	Created map[syncnode.GroupID]bool `msgpack:"c,omitempty"`
	// Fetched records that this device got the blob from a peer: it is not
	// the blob's origin, whose copy the creator's shares pin.
	Fetched bool `msgpack:"f,omitempty"`
	// Voided holds transfers this device ended without its acceptor
	// (Abandon), by ID, until the acceptor is told to drop what it may
	// have accepted.
	Voided map[string]Transfer `msgpack:"v,omitempty"`
	// Recovered marks a blob this device held when its database was
	// lost: whether it created the blob or held shares of it is not
	// known. It takes no creator shares on its own word, and keeps the
	// copy until Reclaim has asked the group.
	Recovered bool `msgpack:"r,omitempty"`
}

// received records the outcome of a transfer at the acceptor.
type received struct {
	Accepted bool      `msgpack:"a"`
	T        *Transfer `msgpack:"t,omitempty"`
	// Voided records a transfer its holder ended without this device:
	// whatever was accepted of it is no longer held here.
	Voided bool `msgpack:"x,omitempty"`
}

// Ledger stores this device's shares in badger. Every change is one
// transaction, retried on conflict and on stable storage before the call
// returns (a peer may act on it at once), so concurrent offers and accepts neither
// create nor lose a share, and a crash leaves each transfer either in
// escrow at the holder, or accepted or refused at the acceptor.
//
// The protocol: the holder calls Offer, which moves shares into escrow; the
// acceptor verifies the blob and calls Accept; the holder then calls Settle.
// If the holder does not learn the outcome, it asks the acceptor to Resolve
// the transfer (which refuses it if it was not accepted) and settles or
// cancels by the answer.
type Ledger struct {
	db      *badger.DB
	durable *kv.Durable
}

// NewLedger returns a Ledger over an open badger database.
func NewLedger(db *badger.DB) *Ledger { return &Ledger{db: db, durable: kv.NewDurable(db)} }

func shareKey(ref syncnode.BlobRef) []byte {
	h := ref.Hash()
	return kv.Key(kv.Shares, h[:])
}

func txKey(id TransferID) []byte { return kv.Key(kv.Transfers, id[:]) }

func load(txn *badger.Txn, ref syncnode.BlobRef) (record, error) {
	var r record
	err := kv.Get(txn, shareKey(ref), kv.KindShares, &r)
	if errors.Is(err, syncnode.ErrNotFound) {
		return record{}, nil
	}
	if err != nil {
		return record{}, fmt.Errorf("ownership: shares of %s: %w", ref, err)
	}
	return r, nil
}

func store(txn *badger.Txn, ref syncnode.BlobRef, r record) error {
	if len(r.Shares) == 0 && len(r.Escrow) == 0 && len(r.Created) == 0 && !r.Fetched && len(r.Voided) == 0 {
		return txn.Delete(shareKey(ref))
	}
	return kv.Set(txn, shareKey(ref), kv.KindShares, r)
}

func (r *record) add(g syncnode.GroupID, n int) {
	if r.Shares == nil {
		r.Shares = map[syncnode.GroupID]int{}
	}
	r.Shares[g] += n
	if r.Shares[g] == 0 {
		delete(r.Shares, g)
	}
}

// read loads the record of ref in a read-only transaction.
func (l *Ledger) read(ref syncnode.BlobRef) (r record, err error) {
	err = l.db.View(func(txn *badger.Txn) error {
		r, err = load(txn, ref)
		return err
	})
	return r, err
}

// Shares returns this device's shares of ref, by group.
func (l *Ledger) Shares(ref syncnode.BlobRef) (map[syncnode.GroupID]int, error) {
	r, err := l.read(ref)
	return maps.Clone(r.Shares), err
}

// Grant gives this device n shares of ref in group g, as the creator of a
// ref does (CreatorShares).
func (l *Ledger) Grant(ref syncnode.BlobRef, g syncnode.GroupID, n int) error {
	if n <= 0 || g == "" {
		return fmt.Errorf("%w: grant of %d shares in group %q", ErrBadTransfer, n, g)
	}
	return l.durable.Update(func(txn *badger.Txn) error {
		r, err := load(txn, ref)
		if err != nil {
			return err
		}
		r.add(g, n)
		return store(txn, ref, r)
	})
}

// DropGroup forgets the shares this device holds of ref in group g, which
// it has left: a group it is no longer in pins nothing here.
func (l *Ledger) DropGroup(ref syncnode.BlobRef, g syncnode.GroupID) error {
	return l.durable.Update(func(txn *badger.Txn) error {
		r, err := load(txn, ref)
		if err != nil || r.Shares[g] == 0 {
			return err
		}
		delete(r.Shares, g)
		return store(txn, ref, r)
	})
}

// Collect forgets this device's shares of ref in group g, and that it was
// granted the creator's shares there: no live row of g references ref any
// more, so g's shares pin nothing, and a row that references ref again
// grants them anew. Shares of g in escrow make it refuse with
// ErrInEscrow: the transfer settles first. also, if not nil, writes in
// the same transaction what the caller records of the collection, so
// that the two land together or not at all.
func (l *Ledger) Collect(ref syncnode.BlobRef, g syncnode.GroupID, also func(*badger.Txn) error) error {
	return l.durable.Update(func(txn *badger.Txn) error {
		r, err := load(txn, ref)
		if err != nil {
			return err
		}
		for _, t := range r.Escrow {
			if t.Group == g {
				return fmt.Errorf("%w: %s in %s", ErrInEscrow, ref, g)
			}
		}
		if also != nil {
			if err := also(txn); err != nil {
				return err
			}
		}
		if r.Shares[g] == 0 && !r.Created[g] {
			return nil
		}
		delete(r.Shares, g)
		delete(r.Created, g)
		return store(txn, ref, r)
	})
}

// eachRecord calls fn with every shares record.
func (l *Ledger) eachRecord(fn func(record)) error {
	return l.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = kv.Shares
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var r record
			if err := it.Item().Value(func(b []byte) error { return kv.Decode(kv.KindShares, b, &r) }); err != nil {
				return fmt.Errorf("ownership: shares record %x: %w", it.Item().Key(), err)
			}
			fn(r)
		}
		return nil
	})
}

// Scan calls fn with every blob this device has shares of (or has shares
// of in escrow), in ref order, until fn returns an error, which Scan
// returns.
func (l *Ledger) Scan(fn func(ref syncnode.BlobRef, shares map[syncnode.GroupID]int) error) error {
	return l.ScanRange(0, 256, fn)
}

// ScanRange is Scan of the blobs whose hash begins with a byte from lo up
// to hi (exclusive, at most 256).
func (l *Ledger) ScanRange(lo, hi int, fn func(ref syncnode.BlobRef, shares map[syncnode.GroupID]int) error) error {
	return l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: kv.Shares, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Seek(kv.Key(kv.Shares, []byte{byte(lo)})); it.Valid(); it.Next() {
			if k := it.Item().Key(); len(k) > len(kv.Shares) && int(k[len(kv.Shares)]) >= hi {
				break
			}
			var r record
			if err := it.Item().Value(func(b []byte) error { return kv.Decode(kv.KindShares, b, &r) }); err != nil {
				return fmt.Errorf("ownership: shares record %x: %w", it.Item().Key(), err)
			}
			if len(r.Shares) == 0 && len(r.Escrow) == 0 {
				continue
			}
			var h [syncnode.HashSize]byte
			copy(h[:], it.Item().Key()[len(kv.Shares):])
			if err := fn(syncnode.RefFromHash(h), r.Shares); err != nil {
				return err
			}
		}
		return nil
	})
}

// MayEvict reports whether this device may evict ref: no shares in any
// group and none in escrow.
func (l *Ledger) MayEvict(ref syncnode.BlobRef) (bool, error) {
	r, err := l.read(ref)
	return err == nil && !r.Recovered && MayEvict(r.Shares, len(r.Escrow)), err
}

func slicesOf(m map[string]Transfer) []Transfer {
	out := make([]Transfer, 0, len(m))
	for _, t := range m {
		out = append(out, t)
	}
	return out
}
