package ownership

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

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
