package ownership

import (
	"slices"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
)

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
				if r.Created == nil {
					r.Created = map[syncnode.GroupID]bool{}
				}
				r.Created[g] = true // taken once: no creator grant adds more
			}
		}
		if len(granted) == 0 && len(r.Shares) == 0 {
			// Others keep its shares: this copy is a spare, like a
			// fetched one, and no creator grant is due to it.
			r.Fetched = true
		}
		return store(txn, ref, r)
	})
	return granted, err
}

// Revive marks a blob held here that a group collected and a row of it
// then named again, for Reclaim: the group's shares were dissolved on
// every member, and the row that names it again may come from a member
// that does not hold it, which no creator grant can reach. Until the
// members say whether one of them keeps shares of it, the copy is pinned
// as one held when the database was lost is. Nothing is marked where
// this device holds shares of it in every group of groups already (its
// own row named it again, and granted them). It reports whether it
// marked the blob. The caller holds the copy verified, under the lock
// that deleting it takes.
func (l *Ledger) Revive(ref syncnode.BlobRef, groups []syncnode.GroupID) (bool, error) {
	due := func(r record) bool {
		return !r.Recovered && slices.ContainsFunc(groups, func(g syncnode.GroupID) bool { return r.Shares[g] == 0 })
	}
	if r, err := l.read(ref); err != nil || !due(r) {
		return false, err
	}
	marked := false
	err := l.durable.Update(func(txn *badger.Txn) error {
		r, err := load(txn, ref)
		if err != nil || !due(r) {
			return err
		}
		r.Recovered, marked = true, true
		return store(txn, ref, r)
	})
	return marked, err
}
