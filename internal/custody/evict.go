package custody

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
)

// evictItem is one stored blob as the eviction plan sees it.
type evictItem struct {
	Ref     syncnode.BlobRef
	Size    int64
	LastUse time.Time
}

// planEviction picks the least-recently-used blobs that pinned does not
// hold (shares in some group, a fetch in flight, the user's pin: never
// evicted) until the total size is within budget. It returns them and the
// bytes still over budget after evicting them, which pinned blobs account
// for. pinned is
// asked only of the blobs the plan reaches, oldest first: a pass that frees
// a few blobs checks a few, however many the node holds.
func planEviction(items []evictItem, budget int64, pinned func(syncnode.BlobRef) bool) (evict []syncnode.BlobRef, over int64) {
	var total int64
	for _, it := range items {
		total += it.Size
	}
	if total <= budget {
		return nil, 0
	}
	order := slices.Clone(items)
	slices.SortFunc(order, func(a, b evictItem) int {
		if c := a.LastUse.Compare(b.LastUse); c != 0 {
			return c
		}
		return bytes.Compare(a.Ref.Bytes(), b.Ref.Bytes())
	})
	for _, it := range order {
		if total <= budget {
			break
		}
		if pinned(it.Ref) {
			continue
		}
		evict = append(evict, it.Ref)
		total -= it.Size
	}
	return evict, max(total-budget, 0)
}

// Report says what an eviction pass did.
type Report struct {
	// Stored is the bytes held before the pass, Budget the limit (0: none).
	Stored, Budget int64
	// Evicted are the blobs removed.
	Evicted []syncnode.BlobRef
	// PinnedOver is the bytes still over budget because the blobs that
	// would go next are pinned: by ownership shares, by work in progress,
	// or by the user.
	PinnedOver int64
	// UserPinned is the bytes held of blobs the user pinned here: they
	// count towards the budget and are never evicted, so they alone may
	// keep the node over it.
	UserPinned int64
}

// Evict removes least-recently-used blobs with no shares, among those
// referenced in a syncgroup and not pinned by the user, until the store
// is within the budget. It lists the store: blobs the LRU table does not
// know (being put or fetched) count towards the total and stay. A node
// that keeps everything (Rules.KeepsAll) keeps everything, and so does one
// without a budget: its report counts the blobs the LRU table knows, and
// lists nothing.
func (c *Custody) Evict() (Report, error) {
	_, done, err := c.work.Enter(context.Background())
	if err != nil {
		return Report{}, err
	}
	defer done()
	c.evictMu.Lock()
	defer c.evictMu.Unlock()
	if c.cfg.BlobBudget <= 0 || c.rules.KeepsAll() {
		return c.keepAllReport(), nil
	}
	var items []evictItem
	unknown := map[syncnode.BlobRef]bool{}
	err = c.blobs.List(func(i blobstore.Info) error {
		last, known := c.lru.get(i.Ref)
		if !known {
			unknown[i.Ref] = true
		}
		items = append(items, evictItem{Ref: i.Ref, Size: i.Size, LastUse: last})
		return nil
	})
	if err != nil {
		return Report{Budget: c.cfg.BlobBudget}, err
	}
	return c.evict(items, true, func(ref syncnode.BlobRef) bool { return unknown[ref] })
}

// keepAllReport is the report of a pass that evicts nothing, from the LRU
// table and the user's pins rather than a listing of the store: at a
// million blobs, listing took seconds to say that nothing goes.
func (c *Custody) keepAllReport() Report {
	rep := Report{Budget: c.cfg.BlobBudget}
	_, rep.Stored = c.Held()
	for _, ref := range c.userPins.refs() {
		if i, err := c.blobs.Stat(ref); err == nil {
			rep.UserPinned += i.Size
		}
	}
	if h := c.Hooks.EvictPass.Load(); h != nil {
		(*h)(false, 0)
	}
	return rep
}

// EvictSoon runs an eviction pass in the background if the blobs held are
// over the budget, planned from the LRU table rather than a listing of the
// store: after a put or a fetch, a node under its budget does nothing, and
// one over it checks only the oldest blobs. Passes asked for while one
// waits to start are one pass, and a pass that finds the node within its
// budget once it may start does nothing.
func (c *Custody) EvictSoon() {
	if c.cfg.BlobBudget <= 0 || c.lru.total() <= c.cfg.BlobBudget || !c.evictQueued.CompareAndSwap(false, true) {
		return
	}
	c.work.Go(func() {
		c.evictQueued.Store(false)
		c.evictMu.Lock()
		defer c.evictMu.Unlock()
		// A pass that ran while this one waited may have done its work.
		if c.lru.total() <= c.cfg.BlobBudget {
			return
		}
		if _, err := c.evict(c.lru.items(), false, func(syncnode.BlobRef) bool { return false }); err != nil {
			c.log.Error("eviction pass failed", "err", err)
		}
	})
}

// evict runs one eviction pass over items, listed from the store or not,
// with c.evictMu held since they were gathered; held marks blobs to keep
// besides those with shares, pins or a fetch in flight.
func (c *Custody) evict(items []evictItem, listed bool, held func(syncnode.BlobRef) bool) (Report, error) {
	rep := Report{Budget: c.cfg.BlobBudget}
	for _, it := range items {
		rep.Stored += it.Size
		if c.userPins.pinned(it.Ref) {
			rep.UserPinned += it.Size
		}
	}
	if c.cfg.BlobBudget <= 0 || c.rules.KeepsAll() {
		return rep, nil
	}
	var errs []error
	checked := 0
	evict, over := planEviction(items, c.cfg.BlobBudget, func(ref syncnode.BlobRef) bool {
		checked++
		// What this node knows first: MayEvict may ask servers.
		if held(ref) || c.rules.Busy(ref) || c.pins.pinned(ref) || c.userPins.pinned(ref) {
			return true
		}
		mayEvict, err := c.rules.MayEvict(ref)
		if err != nil {
			errs = append(errs, err)
		}
		return !mayEvict
	})
	rep.PinnedOver = over
	for _, ref := range evict {
		if c.evictOne(ref) {
			rep.Evicted = append(rep.Evicted, ref)
			c.log.Info("evicted", "blob", ref)
		}
	}
	switch {
	case rep.UserPinned > c.cfg.BlobBudget:
		c.log.Warn("over budget: the blobs the user pinned here alone exceed it", "over", over, "budget", c.cfg.BlobBudget,
			"user_pinned", rep.UserPinned)
	case over > 0:
		c.log.Warn("over budget: the blobs left are pinned by shares, work in progress or the user", "over", over,
			"budget", c.cfg.BlobBudget, "user_pinned", rep.UserPinned)
	}
	c.evictions.Add(int64(len(rep.Evicted)))
	if h := c.Hooks.EvictPass.Load(); h != nil {
		(*h)(listed, checked)
	}
	return rep, errors.Join(errs...)
}

// evictOne deletes ref if it may still be evicted. The check and the
// deletion hold ref's lock, which accepting and granting shares take too:
// shares never arrive between them.
func (c *Custody) evictOne(ref syncnode.BlobRef) bool {
	unlock := c.locks.lock(ref)
	defer unlock()
	if c.pins.pinned(ref) || c.userPins.pinned(ref) || c.rules.Busy(ref) {
		return false
	}
	if ok, err := c.rules.MayEvict(ref); err != nil || !ok {
		return false
	}
	if h := c.Hooks.BeforeDelete.Load(); h != nil {
		(*h)(ref)
	}
	if err := c.Delete(ref); errors.Is(err, syncnode.ErrNotFound) {
		c.lru.forget(ref) // gone already (a read touched it after its deletion)
		return false
	} else if err != nil {
		c.log.Error("eviction failed", "blob", ref, "err", err)
		return false
	}
	return true
}
