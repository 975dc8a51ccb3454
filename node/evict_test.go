package node

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/testkit"
)

func TestPlanEvictionLRUSkipsPinned(t *testing.T) {
	t0 := time.Unix(1000, 0)
	r := func(i byte) syncnode.BlobRef { return syncnode.RefFromHash([32]byte{i}) }
	items := []evictItem{
		{Ref: r(1), Size: 40, LastUse: t0.Add(3)},
		{Ref: r(2), Size: 30, LastUse: t0.Add(1)},
		{Ref: r(3), Size: 20, LastUse: t0.Add(2)},
		{Ref: r(4), Size: 10, LastUse: t0.Add(4)},
	}
	cases := []struct {
		budget int64
		evict  []syncnode.BlobRef
		over   int64
		asked  int // pins asked: only of the blobs the plan reaches
	}{
		{100, nil, 0, 0},
		{90, []syncnode.BlobRef{r(3)}, 0, 2},                   // oldest unpinned first
		{50, []syncnode.BlobRef{r(3), r(1)}, 0, 3},             // pinned r(2) skipped
		{30, []syncnode.BlobRef{r(3), r(1), r(4)}, 0, 4},       // only the pinned one left
		{10, []syncnode.BlobRef{r(3), r(1), r(4)}, 30 - 10, 4}, // over budget, pinned by shares
	}
	for _, c := range cases {
		var asked []syncnode.BlobRef
		ev, over := planEviction(items, c.budget, func(ref syncnode.BlobRef) bool {
			asked = append(asked, ref)
			return ref == r(2)
		})
		if !slices.Equal(ev, c.evict) || over != c.over {
			t.Errorf("budget %d: evict %v over %d, want %v over %d", c.budget, ev, over, c.evict, c.over)
		}
		if len(asked) != c.asked {
			t.Errorf("budget %d: pins asked of %v, want of the %d oldest", c.budget, asked, c.asked)
		}
	}
}

// TestEvictionAfterFetchChecksOnlyTheOldest fetches 40 blobs onto a
// device whose budget holds 30. The passes after each fetch are planned
// from the LRU table: none runs while the device is under its budget, and
// each one over it checks the oldest blobs until the device is within
// budget again, not every blob it holds (a phone with thousands of photos
// would otherwise list and check them all after each one).
func TestEvictionAfterFetchChecksOnlyTheOldest(t *testing.T) {
	const size, keep, total = 16 << 10, 30, 40
	nodes, g := meshWith(t, true, func(c *Config) { c.BlobBudget = keep * size }, syncnode.Normal, syncnode.Normal)
	writer, reader := nodes[0], nodes[1]
	var mu sync.Mutex
	var passes, checks []int
	hook := func(listed bool, checked int) {
		if !listed {
			mu.Lock()
			passes = append(passes, len(reader.lru.items()))
			checks = append(checks, checked)
			mu.Unlock()
		}
	}
	reader.hook.evictPass.Store(&hook)
	var refs []syncnode.BlobRef
	for i := range total {
		refs = append(refs, putBlobRow(t, writer, g, fmt.Sprintf("photos/%02d.jpg", i), size, uint64(i)))
	}
	for _, ref := range refs {
		// The row first, so the copy is referenced and evictable.
		testkit.WaitFor(t, 10*time.Second, "the row at the reader", func() bool {
			sp, err := reader.Signpost(ref)
			return err == nil && len(sp.Groups()) > 0
		})
		// A fetch alone takes no shares: the copy is the reader's to evict.
		if _, err := fetchFrom(t.Context(), reader, ref, writer.ID()); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "the reader within its budget", func() bool {
		return reader.lru.total() <= keep*size
	})
	mu.Lock()
	defer mu.Unlock()
	if len(passes) == 0 || len(passes) > total-keep {
		t.Fatalf("%d passes after fetches, want 1 to %d (none under the budget)", len(passes), total-keep)
	}
	// Each pass checks about as many blobs as the device is over its
	// budget (one, or a few when fetches outran the pass): never the 30
	// and more it holds.
	for i, c := range checks {
		if c > keep/3 {
			t.Errorf("pass %d checked %d blobs of %d held, want only the oldest few", i, c, passes[i])
		}
	}
}

func TestUnreferencedBlobIsNeverEvicted(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.BlobBudget = 1
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ref := putBlobOnly(t, n, 64<<10)
	rep, err := n.Evict()
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Evicted) != 0 || !n.HasBlob(ref) || rep.PinnedOver != 64<<10-1 {
		t.Fatalf("a blob no row references was evicted or not reported: %+v", rep)
	}
}
