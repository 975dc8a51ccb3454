package collect

import (
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/signpost"
)

// collect dissolves this node's shares of ref in g and drops g from its
// signpost; then, if no group of this node still names the blob and
// nothing else keeps it, deletes the copy. It holds ref's lock
// throughout, as accepting or granting shares does.
func (c *Collector) collect(ref syncnode.BlobRef, g syncnode.GroupID, anywhere bool, start, now time.Time) error {
	unlock := c.d.Custody.Lock(ref)
	defer unlock()
	// A row that named the blob since the pass read the rows (written
	// here, or arrived) keeps it: Referenced cleared the grace, or marked
	// the time.
	if rec, err := c.load(ref); err != nil {
		return err
	} else if _, running := rec.Since[g]; !running || rec.Named >= start.UnixNano() {
		return nil
	}
	// The mark that the blob was collected lands in the transaction
	// that dissolves the shares: no reader, and no power cut, finds one
	// without the other, and a row that names the blob again finds the
	// mark and the blob revives. Seen stays: shares a take under way
	// lands after this (it read the signpost before) are collected again
	// a grace later.
	err := c.d.Ledger.Collect(ref, g, func(txn *badger.Txn) error {
		_, err := c.updateIn(txn, ref, func(rec *record) bool {
			delete(rec.Since, g)
			if rec.Collected == nil {
				rec.Collected = map[syncnode.GroupID]int64{}
			}
			rec.Collected[g] = now.UnixNano()
			return true
		})
		return err
	})
	if errors.Is(err, ownership.ErrInEscrow) {
		return nil // settles first; the next pass collects it
	} else if err != nil {
		return err
	}
	sp, err := c.d.Signposts.Update(ref, func(sp *signpost.Signpost) { delete(sp.SgIDs, g) })
	if err != nil {
		return err
	}
	c.collected.Add(1)
	deleted, err := c.dropCopy(ref, sp, anywhere)
	c.d.Log.Info("blob collected: no live row of the group references it", "blob", ref, "group", g, "copy deleted", deleted)
	if c.d.Collected != nil {
		c.d.Collected(ref, g, deleted)
	}
	return err
}

// dropCopy deletes the copy of ref if nothing keeps it: no group of this
// node names it, no row references it, no shares or escrow, no pin, no
// fetch; if one of the last two does, it marks the blob to be tried
// again. The caller holds ref's lock.
func (c *Collector) dropCopy(ref syncnode.BlobRef, sp signpost.Signpost, anywhere bool) (bool, error) {
	if len(sp.SgIDs) > 0 || anywhere {
		return false, c.markKept(ref, false)
	}
	if ok, err := c.d.Ledger.MayEvict(ref); err != nil {
		return false, err
	} else if !ok {
		return false, c.markKept(ref, true) // shares in escrow, or a reclaim to come
	}
	if user, _ := c.d.Custody.UserPinned(ref); user || c.d.Custody.Pinned(ref) || c.d.Busy(ref) {
		return false, c.markKept(ref, true)
	}
	err := c.d.Custody.Delete(ref)
	if err == nil || errors.Is(err, syncnode.ErrNotFound) {
		// A fetch cut short left its bytes so far to resume: nothing
		// will resume it now, and no fetch is under way (Busy).
		if perr := c.d.Custody.DropPartial(ref); perr != nil {
			c.d.Log.Warn("a collected blob's partial fetch not removed", "blob", ref, "err", perr)
		}
	}
	if errors.Is(err, syncnode.ErrNotFound) {
		return false, c.markKept(ref, false)
	}
	if err != nil {
		// The store failed (an object store down): a later pass tries
		// again.
		return false, errors.Join(err, c.markKept(ref, true))
	}
	c.deleted.Add(1)
	return true, c.markKept(ref, false)
}

// markKept records whether a collected blob's copy waits for its pins.
func (c *Collector) markKept(ref syncnode.BlobRef, kept bool) error {
	_, err := c.update(ref, func(rec *record) bool {
		changed := rec.Kept != kept
		rec.Kept = kept
		return changed
	})
	return err
}

// Referenced records that a row of each of groups names ref, as the row
// is written here or arrives: a row that lives shorter than a pass still
// counts as seen, so its blob is collected once the row goes.
func (c *Collector) Referenced(ref syncnode.BlobRef, groups []syncnode.GroupID) error {
	return c.ReferencedAll([]syncnode.BlobRef{ref}, [][]syncnode.GroupID{groups})
}

// ReferencedAll is Referenced for refs[i] named in groups[i], for many
// refs at once: one transaction reads their records and at most one
// writes them, the blobs' locks held throughout (taken in order of
// ref, so two such calls never wait on each other).
func (c *Collector) ReferencedAll(refs []syncnode.BlobRef, groups [][]syncnode.GroupID) error {
	// Under the blobs' locks, which a collection holds from its last look
	// to the deletion: the row comes before it, or after it altogether.
	order := slices.Clone(refs)
	slices.SortFunc(order, compareRefs)
	order = slices.Compact(order)
	for _, ref := range order {
		unlock := c.d.Custody.Lock(ref)
		defer unlock()
	}
	// The common case writes nothing: the blob was seen named in these
	// groups, and no grace, collection or kept copy waits on it, so no
	// pass can act on it before it reads this row.
	var todo []int
	err := c.d.DB.View(func(txn *badger.Txn) error {
		for i, ref := range refs {
			var rec record
			if err := kv.Get(txn, key(ref), kv.KindUnref, &rec); err != nil && !errors.Is(err, syncnode.ErrNotFound) {
				return err
			}
			if !quiet(rec, groups[i]) {
				todo = append(todo, i)
			}
		}
		return nil
	})
	if err != nil || len(todo) == 0 {
		return err
	}
	now := c.cfg.Now().UnixNano()
	return kv.Update(c.d.DB, func(txn *badger.Txn) error {
		for _, i := range todo {
			var rec record
			if err := kv.Get(txn, key(refs[i]), kv.KindUnref, &rec); err != nil && !errors.Is(err, syncnode.ErrNotFound) {
				return err
			}
			for _, g := range groups[i] {
				if rec.Seen == nil {
					rec.Seen = map[syncnode.GroupID]bool{}
				}
				rec.Seen[g] = true
				delete(rec.Since, g)
			}
			rec.Named = now
			if err := kv.Set(txn, key(refs[i]), kv.KindUnref, rec); err != nil {
				return err
			}
		}
		return nil
	})
}

// quiet reports a record with groups all seen named and nothing a pass
// could act on.
func quiet(rec record, groups []syncnode.GroupID) bool {
	for _, g := range groups {
		if !rec.Seen[g] {
			return false
		}
	}
	return len(rec.Since) == 0 && len(rec.Collected) == 0 && !rec.Kept
}

// Unreferenced reports whether this node's own rows found no reference
// to ref in g (the grace runs, or it was collected): a peer's signpost
// that names g for ref is then not believed, since rows, not a peer's
// word, say which groups reference a blob.
func (c *Collector) Unreferenced(ref syncnode.BlobRef, g syncnode.GroupID) bool {
	rec, err := c.load(ref)
	if err != nil {
		return false
	}
	_, since := rec.Since[g]
	_, gone := rec.Collected[g]
	return since || gone
}

// Arrived is told of a copy of ref fetched from a peer. A fetch that
// began before ref was collected here may end after: the copy is marked
// for the next pass, which deletes it unless something keeps it (a row
// that names the blob again, a group, a pin).
//
// A copy of a blob named again after its collection here is told to
// Deps.Revive.
func (c *Collector) Arrived(ref syncnode.BlobRef) error {
	rec, err := c.load(ref)
	if err != nil {
		return err
	}
	if err := c.revive(ref, rec); err != nil {
		return err
	}
	if len(rec.Collected) == 0 || rec.Kept {
		return nil
	}
	return c.markKept(ref, true)
}

// Group is what a blob's record says of one group.
type Group struct {
	Group syncnode.GroupID
	// Since is when this node found no live row of the group referencing
	// the blob; Due when it may collect it (after a round with another
	// member, if the group has one).
	Since, Due time.Time
	// Collected is when it was collected here, if it was.
	Collected time.Time
}

// State returns what ref's record says, group by group.
func (c *Collector) State(ref syncnode.BlobRef) ([]Group, error) {
	rec, err := c.load(ref)
	if err != nil {
		return nil, err
	}
	var out []Group
	for _, g := range slices.Sorted(maps.Keys(rec.Since)) {
		since := time.Unix(0, rec.Since[g])
		out = append(out, Group{Group: g, Since: since, Due: Due(since, c.opened, c.cfg.Grace)})
	}
	for _, g := range slices.Sorted(maps.Keys(rec.Collected)) {
		out = append(out, Group{Group: g, Collected: time.Unix(0, rec.Collected[g])})
	}
	return out, nil
}
