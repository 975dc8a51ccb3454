package node

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
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
// hold (shares in some group, a fetch in flight: never evicted) until the
// total size is within budget. It returns them and the bytes still over
// budget after evicting them, which pinned blobs account for. pinned is
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

// lru records, for each blob held, when it was last used and its size,
// and the total of those sizes. A blob enters it once put or fetched (at
// open, every blob held), so one missing from it is being put or fetched.
type lru struct {
	mu    sync.Mutex
	used  map[syncnode.BlobRef]lruEntry
	bytes int64
}

type lruEntry struct {
	at   time.Time
	size int64
}

func (l *lru) touch(ref syncnode.BlobRef, t time.Time, size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bytes += size - l.used[ref].size
	l.used[ref] = lruEntry{t, size}
}

func (l *lru) get(ref syncnode.BlobRef) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.used[ref]
	return e.at, ok
}

func (l *lru) forget(ref syncnode.BlobRef) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bytes -= l.used[ref].size
	delete(l.used, ref)
}

// total returns the bytes of the blobs in the table.
func (l *lru) total() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bytes
}

// items returns the table's blobs for planEviction.
func (l *lru) items() []evictItem {
	l.mu.Lock()
	defer l.mu.Unlock()
	items := make([]evictItem, 0, len(l.used))
	for ref, e := range l.used {
		items = append(items, evictItem{Ref: ref, Size: e.size, LastUse: e.at})
	}
	return items
}

// EvictionReport says what an eviction pass did.
type EvictionReport struct {
	// Stored is the bytes held before the pass, Budget the limit (0: none).
	Stored, Budget int64
	// Evicted are the blobs removed.
	Evicted []syncnode.BlobRef
	// PinnedOver is the bytes still over budget because the blobs that
	// would go next are pinned by ownership shares.
	PinnedOver int64
}

// Evict removes least-recently-used blobs with no shares, among those
// referenced in a syncgroup, until the store is within the node's budget.
// A node that is a server in any group keeps everything, and so does a
// node without a budget. It lists the store: blobs the LRU table does not
// know (being put or fetched) count towards the total and stay.
func (n *Node) Evict() (EvictionReport, error) {
	_, done, err := n.call(context.Background())
	if err != nil {
		return EvictionReport{}, err
	}
	defer done()
	n.evictMu.Lock()
	defer n.evictMu.Unlock()
	var items []evictItem
	unknown := map[syncnode.BlobRef]bool{}
	err = n.blobs.List(func(i blobstore.Info) error {
		last, known := n.lru.get(i.Ref)
		if !known {
			unknown[i.Ref] = true
		}
		items = append(items, evictItem{Ref: i.Ref, Size: i.Size, LastUse: last})
		return nil
	})
	if err != nil {
		return EvictionReport{Budget: n.cfg.BlobBudget}, err
	}
	return n.evict(items, true, func(ref syncnode.BlobRef) bool { return unknown[ref] })
}

// evictSoon runs an eviction pass in the background if the blobs held are
// over the budget, planned from the LRU table rather than a listing of the
// store: after a put or a fetch, a node under its budget does nothing, and
// one over it checks only the oldest blobs. Passes asked for while one
// waits to start are one pass.
func (n *Node) evictSoon() {
	if n.cfg.BlobBudget <= 0 || n.lru.total() <= n.cfg.BlobBudget || !n.evictQueued.CompareAndSwap(false, true) {
		return
	}
	n.goRun(func() {
		n.evictQueued.Store(false)
		n.evictMu.Lock()
		defer n.evictMu.Unlock()
		if _, err := n.evict(n.lru.items(), false, func(syncnode.BlobRef) bool { return false }); err != nil {
			n.log.Error("eviction pass failed", "err", err)
		}
	})
}

// evict runs one eviction pass over items, listed from the store or not,
// with n.evictMu held since they were gathered; held marks blobs to keep
// besides those with shares, pins or a fetch in flight.
func (n *Node) evict(items []evictItem, listed bool, held func(syncnode.BlobRef) bool) (EvictionReport, error) {
	rep := EvictionReport{Budget: n.cfg.BlobBudget}
	for _, it := range items {
		rep.Stored += it.Size
	}
	if n.cfg.BlobBudget <= 0 || n.isServerIn(n.sync.Groups()) {
		return rep, nil
	}
	var errs []error
	checked := 0
	evict, over := planEviction(items, n.cfg.BlobBudget, func(ref syncnode.BlobRef) bool {
		checked++
		mayEvict, err := n.mayEvict(ref)
		if err != nil {
			errs = append(errs, err)
		}
		return !mayEvict || held(ref) || n.inFlight(ref) || n.pins.pinned(ref)
	})
	rep.PinnedOver = over
	for _, ref := range evict {
		if n.evictOne(ref) {
			rep.Evicted = append(rep.Evicted, ref)
			n.log.Info("evicted", "blob", ref)
		}
	}
	if over > 0 {
		n.log.Warn("over budget, pinned by shares", "over", over, "budget", n.cfg.BlobBudget)
	}
	n.evictions.Add(int64(len(rep.Evicted)))
	if h := n.hook.evictPass.Load(); h != nil {
		(*h)(listed, checked)
	}
	return rep, errors.Join(errs...)
}

// evictOne deletes ref if it may still be evicted. The check and the
// deletion hold ref's lock, which accepting and granting shares take too:
// shares never arrive between them.
func (n *Node) evictOne(ref syncnode.BlobRef) bool {
	unlock := n.locks.lock(ref)
	defer unlock()
	if ok, err := n.mayEvict(ref); err != nil || !ok || n.pins.pinned(ref) || n.inFlight(ref) {
		return false
	}
	if h := n.hook.beforeDelete.Load(); h != nil {
		(*h)(ref)
	}
	if err := n.deleteCopy(ref); errors.Is(err, syncnode.ErrNotFound) {
		n.lru.forget(ref) // gone already (a read touched it after its deletion)
		return false
	} else if err != nil {
		n.log.Error("eviction failed", "blob", ref, "err", err)
		return false
	}
	return true
}

// mayEvict reports whether eviction may drop ref: it must have no shares
// here and be referenced in a syncgroup. A blob no row has referenced
// exists nowhere else; only RemoveBlob, asked for by name, deletes it.
func (n *Node) mayEvict(ref syncnode.BlobRef) (bool, error) {
	ok, err := n.ledger.MayEvict(ref)
	if err != nil || !ok {
		return false, err
	}
	sp, err := n.signposts.Get(ref)
	if errors.Is(err, syncnode.ErrNotFound) {
		return false, nil
	}
	return err == nil && len(sp.SgIDs) > 0, err
}

func (n *Node) inFlight(ref syncnode.BlobRef) bool {
	ok := n.retr.InFlight(ref)
	return ok
}
