package node

import (
	"bytes"
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
	// Pinned blobs (shares in some group, or a fetch in flight) are never
	// evicted.
	Pinned bool
}

// planEviction picks the least-recently-used unpinned blobs to evict until
// the total size is within budget. It returns them and the bytes still over
// budget after evicting them, which pinned blobs account for.
func planEviction(items []evictItem, budget int64) (evict []syncnode.BlobRef, over int64) {
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
		if it.Pinned {
			continue
		}
		evict = append(evict, it.Ref)
		total -= it.Size
	}
	return evict, max(total-budget, 0)
}

// lru records when each blob was last used.
type lru struct {
	mu   sync.Mutex
	used map[syncnode.BlobRef]time.Time
}

func (l *lru) touch(ref syncnode.BlobRef, t time.Time) {
	l.mu.Lock()
	l.used[ref] = t
	l.mu.Unlock()
}

func (l *lru) get(ref syncnode.BlobRef) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.used[ref]
	return t, ok
}

func (l *lru) forget(ref syncnode.BlobRef) {
	l.mu.Lock()
	delete(l.used, ref)
	l.mu.Unlock()
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
// referenced in a syncgroup, until the store is within the node's budget. A node that is a server in any group keeps
// everything, and so does a node without a budget.
func (n *Node) Evict() (EvictionReport, error) {
	n.evictMu.Lock()
	defer n.evictMu.Unlock()
	rep := EvictionReport{Budget: n.cfg.BlobBudget}
	if n.cfg.BlobBudget <= 0 || n.isServerIn(n.sync.Groups()) {
		return rep, nil
	}
	var items []evictItem
	err := n.blobs.List(func(i blobstore.Info) error {
		rep.Stored += i.Size
		mayEvict, err := n.mayEvict(i.Ref)
		if err != nil {
			return err
		}
		last, known := n.lru.get(i.Ref)
		// A blob not yet in the LRU table is being put or fetched.
		items = append(items, evictItem{Ref: i.Ref, Size: i.Size, LastUse: last,
			Pinned: !mayEvict || !known || n.inFlight(i.Ref) || n.pins.pinned(i.Ref)})
		return nil
	})
	if err != nil {
		return rep, err
	}
	evict, over := planEviction(items, n.cfg.BlobBudget)
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
	return rep, nil
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
	if err := n.deleteCopy(ref); err != nil {
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
	n.flights.mu.Lock()
	defer n.flights.mu.Unlock()
	_, ok := n.flights.m[ref]
	return ok
}
