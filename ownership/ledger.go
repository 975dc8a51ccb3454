package ownership

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"time"

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

// MarkRecovered records that this device held ref when its database was
// lost (see record.Recovered).
func (l *Ledger) MarkRecovered(ref syncnode.BlobRef) error {
	return l.durable.Update(func(txn *badger.Txn) error {
		r, err := load(txn, ref)
		if err != nil {
			return err
		}
		r.Recovered, r.Fetched = true, true
		return store(txn, ref, r)
	})
}

// Recovered reports whether ref is marked recovered and not yet reclaimed.
func (l *Ledger) Recovered(ref syncnode.BlobRef) (bool, error) {
	r, err := l.read(ref)
	return r.Recovered, err
}

// Reclaim ends ref's recovered mark once the members of its groups have
// answered: in each group of orphaned (where none of them keeps shares of
// it), this device takes the group's CreatorShares, as the one keeping the
// copy; elsewhere it takes none. It returns the groups it granted in.
func (l *Ledger) Reclaim(ref syncnode.BlobRef, orphaned []syncnode.GroupID) (granted []syncnode.GroupID, err error) {
	err = l.durable.Update(func(txn *badger.Txn) error {
		granted = nil
		r, err := load(txn, ref)
		if err != nil || !r.Recovered {
			return err
		}
		r.Recovered = false
		for _, g := range orphaned {
			if r.Shares[g] == 0 {
				r.add(g, CreatorShares)
				granted = append(granted, g)
			}
		}
		return store(txn, ref, r)
	})
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

// Offer moves the shares this device offers for transfer id into escrow,
// as OfferCount decides from the two priorities, and returns the transfer
// (N is 0 when nothing is offered). Offering the same id again returns the
// escrowed transfer unchanged.
func (l *Ledger) Offer(id TransferID, ref syncnode.BlobRef, g syncnode.GroupID, self, requester syncnode.Priority, to peer.ID) (Transfer, error) {
	return l.offer(id, ref, g, to, func(held int) int { return OfferCount(self, requester, held) })
}

// OfferCounted is Offer with the count of the shares offered decided by
// count, from the shares held.
func (l *Ledger) OfferCounted(id TransferID, ref syncnode.BlobRef, g syncnode.GroupID, to peer.ID, count func(held int) int) (Transfer, error) {
	return l.offer(id, ref, g, to, func(held int) int { return max(0, min(count(held), held)) })
}

// OfferAll is Offer of every share this device holds of ref in g,
// whatever the two priorities: a device leaving the group gives them all
// to whichever member takes them.
func (l *Ledger) OfferAll(id TransferID, ref syncnode.BlobRef, g syncnode.GroupID, to peer.ID) (Transfer, error) {
	return l.offer(id, ref, g, to, func(held int) int { return held })
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

// offer escrows count(held) of the shares held of ref in g for transfer
// id; see Offer.
func (l *Ledger) offer(id TransferID, ref syncnode.BlobRef, g syncnode.GroupID, to peer.ID, count func(held int) int) (Transfer, error) {
	var t Transfer
	err := l.durable.Update(func(txn *badger.Txn) error {
		r, err := load(txn, ref)
		if err != nil {
			return err
		}
		if e, ok := r.Escrow[id.String()]; ok {
			t = e
			return nil
		}
		t = Transfer{ID: id, Ref: ref, Group: g, N: count(r.Shares[g]), To: to, At: time.Now().UnixNano()}
		if t.N == 0 {
			for _, e := range r.Escrow {
				if e.Group == g && count(e.N) > 0 {
					return fmt.Errorf("%w: %s in %s", ErrInEscrow, ref, g)
				}
			}
			return nil
		}
		r.add(g, -t.N)
		if r.Escrow == nil {
			r.Escrow = map[string]Transfer{}
		}
		r.Escrow[id.String()] = t
		return store(txn, ref, r)
	})
	return t, err
}

// Accept adds the shares of t to this device, which must hold the blob
// verified. Accepting the same transfer twice adds them once; accepting a
// transfer this device has refused fails with ErrTransferClosed.
func (l *Ledger) Accept(t Transfer, holdsVerified bool) error {
	if !holdsVerified {
		return fmt.Errorf("%w: %s", ErrUnverified, t.Ref)
	}
	if t.N <= 0 || t.N > CreatorShares || t.Group == "" {
		return fmt.Errorf("%w: %d shares in group %q", ErrBadTransfer, t.N, t.Group)
	}
	return l.durable.Update(func(txn *badger.Txn) error {
		var rcv received
		err := kv.Get(txn, txKey(t.ID), kv.KindTransfer, &rcv)
		switch {
		case err == nil && rcv.Accepted:
			return nil
		case err == nil:
			return fmt.Errorf("%w: %s", ErrTransferClosed, t.ID)
		case !errors.Is(err, syncnode.ErrNotFound):
			return err
		}
		r, err := load(txn, t.Ref)
		if err != nil {
			return err
		}
		// A group has CreatorShares shares of a blob in all: an offer that
		// would make more of them here is a holder's lie (or a double
		// count), whatever it claims.
		if r.Shares[t.Group]+t.N > CreatorShares {
			return fmt.Errorf("%w: %d shares in group %q on top of the %d held here, over %d", ErrBadTransfer, t.N, t.Group, r.Shares[t.Group], CreatorShares)
		}
		r.add(t.Group, t.N)
		if err := store(txn, t.Ref, r); err != nil {
			return err
		}
		return kv.Set(txn, txKey(t.ID), kv.KindTransfer, received{Accepted: true, T: &t})
	})
}

// Resolve answers a holder that does not know how transfer id ended: true
// if this device accepted it; otherwise it records the transfer as refused,
// so it can never be accepted later, and returns false.
func (l *Ledger) Resolve(id TransferID) (accepted bool, err error) {
	err = l.durable.Update(func(txn *badger.Txn) error {
		var rcv received
		err := kv.Get(txn, txKey(id), kv.KindTransfer, &rcv)
		if err == nil {
			accepted = rcv.Accepted
			return nil
		}
		if !errors.Is(err, syncnode.ErrNotFound) {
			return err
		}
		accepted = false
		return kv.Set(txn, txKey(id), kv.KindTransfer, received{Accepted: false})
	})
	return accepted, err
}

// Settle ends transfer id at the holder: accepted, the escrowed shares are
// gone; otherwise they return. It reports whether this device still has
// shares of the blob (and so keeps it). Settling an unknown id changes
// nothing.
func (l *Ledger) Settle(ref syncnode.BlobRef, id TransferID, accepted bool) (keeps bool, err error) {
	err = l.durable.Update(func(txn *badger.Txn) error {
		r, err := load(txn, ref)
		if err != nil {
			return err
		}
		if e, ok := r.Escrow[id.String()]; ok {
			delete(r.Escrow, id.String())
			if !accepted {
				r.add(e.Group, e.N)
			}
			if err := store(txn, ref, r); err != nil {
				return err
			}
		}
		keeps = !MayEvict(r.Shares, len(r.Escrow))
		return nil
	})
	return keeps, err
}

// Abandon ends transfer id at the holder without its acceptor, which has
// not answered for longer than the holder waits: the escrowed shares
// return here (a lost acceptance must not lose the shares, and a new
// taker must not be refused for ever), and the transfer is kept in
// Voided until the acceptor, back, drops whatever it accepted of it
// (Void), so that the group's shares add up again. It reports whether id
// was in escrow.
func (l *Ledger) Abandon(ref syncnode.BlobRef, id TransferID) (bool, error) {
	found := false
	err := l.durable.Update(func(txn *badger.Txn) error {
		r, err := load(txn, ref)
		if err != nil {
			return err
		}
		e, ok := r.Escrow[id.String()]
		if !ok {
			return nil
		}
		found = true
		delete(r.Escrow, id.String())
		r.add(e.Group, e.N)
		if r.Voided == nil {
			r.Voided = map[string]Transfer{}
		}
		r.Voided[id.String()] = e
		return store(txn, ref, r)
	})
	return found, err
}

// AllVoided returns every transfer abandoned here whose acceptor has not
// yet been told.
func (l *Ledger) AllVoided() ([]Transfer, error) {
	var out []Transfer
	err := l.eachRecord(func(r record) { out = append(out, slicesOf(r.Voided)...) })
	return out, err
}

// Unfinished counts the transfers that wait here for their acceptor: in
// escrow, or abandoned and not yet voided there. One pass over the
// records.
func (l *Ledger) Unfinished() (int, error) {
	n := 0
	err := l.eachRecord(func(r record) { n += len(r.Escrow) + len(r.Voided) })
	return n, err
}

// Told records that the acceptor of abandoned transfer id has dropped it.
func (l *Ledger) Told(ref syncnode.BlobRef, id TransferID) error {
	return l.durable.Update(func(txn *badger.Txn) error {
		r, err := load(txn, ref)
		if err != nil {
			return err
		}
		if _, ok := r.Voided[id.String()]; !ok {
			return nil
		}
		delete(r.Voided, id.String())
		return store(txn, ref, r)
	})
}

// Void answers a holder that abandoned transfer id: if this device
// accepted it from holder, the shares it took are dropped (as many as it
// still has in that group); if it had not, the transfer can never be
// accepted any more. It returns how many shares it dropped. A void from
// anyone but the holder the acceptance recorded fails with
// ErrBadTransfer.
func (l *Ledger) Void(id TransferID, holder peer.ID) (dropped int, err error) {
	err = l.durable.Update(func(txn *badger.Txn) error {
		var rcv received
		err := kv.Get(txn, txKey(id), kv.KindTransfer, &rcv)
		switch {
		case errors.Is(err, syncnode.ErrNotFound):
			return kv.Set(txn, txKey(id), kv.KindTransfer, received{Voided: true})
		case err != nil:
			return err
		case !rcv.Accepted || rcv.T == nil:
			return nil
		case rcv.T.From != holder:
			return fmt.Errorf("%w: %s did not offer transfer %s", ErrBadTransfer, holder, id)
		}
		r, err := load(txn, rcv.T.Ref)
		if err != nil {
			return err
		}
		dropped = min(r.Shares[rcv.T.Group], rcv.T.N)
		r.add(rcv.T.Group, -dropped)
		if err := store(txn, rcv.T.Ref, r); err != nil {
			return err
		}
		rcv.Accepted, rcv.Voided = false, true
		return kv.Set(txn, txKey(id), kv.KindTransfer, rcv)
	})
	return dropped, err
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

// AllPending returns every transfer still in escrow here, for recovery
// after a restart.
func (l *Ledger) AllPending() ([]Transfer, error) {
	var out []Transfer
	err := l.eachRecord(func(r record) { out = append(out, slicesOf(r.Escrow)...) })
	return out, err
}

// Scan calls fn with every blob this device has shares of (or has shares
// of in escrow), in ref order, until fn returns an error, which Scan
// returns.
func (l *Ledger) Scan(fn func(ref syncnode.BlobRef, shares map[syncnode.GroupID]int) error) error {
	return l.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: kv.Shares, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
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

// Pending returns the transfers of ref still in escrow here.
func (l *Ledger) Pending(ref syncnode.BlobRef) ([]Transfer, error) {
	r, err := l.read(ref)
	return slicesOf(r.Escrow), err
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
