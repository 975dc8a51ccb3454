package node

import (
	"slices"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
)

func TestPlanEvictionLRUSkipsPinned(t *testing.T) {
	t0 := time.Unix(1000, 0)
	r := func(i byte) syncnode.BlobRef { return syncnode.RefFromHash([32]byte{i}) }
	items := []evictItem{
		{Ref: r(1), Size: 40, LastUse: t0.Add(3)},
		{Ref: r(2), Size: 30, LastUse: t0.Add(1), Pinned: true},
		{Ref: r(3), Size: 20, LastUse: t0.Add(2)},
		{Ref: r(4), Size: 10, LastUse: t0.Add(4)},
	}
	cases := []struct {
		budget int64
		evict  []syncnode.BlobRef
		over   int64
	}{
		{100, nil, 0},
		{90, []syncnode.BlobRef{r(3)}, 0},                   // oldest unpinned first
		{50, []syncnode.BlobRef{r(3), r(1)}, 0},             // pinned r(2) skipped
		{30, []syncnode.BlobRef{r(3), r(1), r(4)}, 0},       // only the pinned one left
		{10, []syncnode.BlobRef{r(3), r(1), r(4)}, 30 - 10}, // over budget, pinned by shares
	}
	for _, c := range cases {
		ev, over := planEviction(items, c.budget)
		if !slices.Equal(ev, c.evict) || over != c.over {
			t.Errorf("budget %d: evict %v over %d, want %v over %d", c.budget, ev, over, c.evict, c.over)
		}
	}
}
