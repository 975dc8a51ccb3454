package ownership

import (
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
)

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

// AllPending returns every transfer still in escrow here, for recovery
// after a restart.
func (l *Ledger) AllPending() ([]Transfer, error) {
	var out []Transfer
	err := l.eachRecord(func(r record) { out = append(out, slicesOf(r.Escrow)...) })
	return out, err
}

// Pending returns the transfers of ref still in escrow here.
func (l *Ledger) Pending(ref syncnode.BlobRef) ([]Transfer, error) {
	r, err := l.read(ref)
	return slicesOf(r.Escrow), err
}
