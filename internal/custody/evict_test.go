package custody

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
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

// TestKnowKeepsALaterUse: the walk after an open enters a blob with its
// file's time only if no use since the open entered it; the bytes held
// count each blob once.
func TestKnowKeepsALaterUse(t *testing.T) {
	l := &lru{}
	var h [syncnode.HashSize]byte
	a := syncnode.RefFromHash(h)
	h[0] = 1
	b := syncnode.RefFromHash(h)
	now, old := time.Unix(2000, 0), time.Unix(1000, 0)
	l.touch(a, now, 10)
	l.know(a, old, 10)
	l.know(b, old, 5)
	if at, _ := l.get(a); !at.Equal(now) {
		t.Fatalf("a's last use %v, want the use since the open %v", at, now)
	}
	if at, ok := l.get(b); !ok || !at.Equal(old) {
		t.Fatalf("b's last use %v %v, want its file's time", at, ok)
	}
	if l.total() != 15 {
		t.Fatalf("bytes held %d, want 15", l.total())
	}
}

// TestLRUTableIsSmall: the table of last uses costs at most 64 bytes of
// heap a blob (a million blobs in well under the 256 MiB a node of a
// million photos may use in all), and holds no pointer for the garbage
// collector to follow.
func TestLRUTableIsSmall(t *testing.T) {
	const n = 1_000_000
	l := &lru{}
	now := time.Now()
	var h [syncnode.HashSize]byte
	per := float64(testkit.HeapGrowth(func() {
		for i := range n {
			binary.LittleEndian.PutUint64(h[:], uint64(i))
			l.touch(syncnode.RefFromHash(h), now.Add(time.Duration(i)), int64(i))
		}
	})) / n
	t.Logf("%.1f bytes of heap a blob", per)
	if per > 64 {
		t.Fatalf("%.0f bytes of heap a blob, want at most 64", per)
	}
	if at, ok := l.get(syncnode.RefFromHash(h)); !ok || !at.Equal(now.Add(n-1)) {
		t.Fatalf("last use %v %v", at, ok)
	}
	runtime.KeepAlive(l)
}

// TestLRUTimeFromABrokenClock: a last use far in the future (a file's time
// from a broken clock) stays the newest, and one far in the past the
// oldest, rather than wrapping round.
func TestLRUTimeFromABrokenClock(t *testing.T) {
	l := &lru{}
	r := func(i byte) syncnode.BlobRef { return syncnode.RefFromHash([32]byte{i}) }
	l.touch(r(1), time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), 1)
	l.touch(r(2), time.Now(), 1)
	l.touch(r(3), time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), 1)
	evict, _ := planEviction(l.items(), 1, func(syncnode.BlobRef) bool { return false })
	if want := []syncnode.BlobRef{r(3), r(2)}; !slices.Equal(evict, want) {
		t.Fatalf("evicted %v, want the oldest first and the future one kept: %v", evict, want)
	}
}

type evictAll struct{}

func (evictAll) MayEvict(syncnode.BlobRef) (bool, error) { return true, nil }
func (evictAll) KeepsAll() bool                          { return false }
func (evictAll) Busy(syncnode.BlobRef) bool              { return false }
func (evictAll) Wanted(syncnode.BlobRef) bool            { return false }

// TestQueuedEvictionUnderBudgetDoesNothing: two blobs arrive while a pass
// runs; each asks for a pass, and the first one to run brings the node
// within its budget. The second finds nothing to do and is no pass: it
// neither plans nor counts (a flaky count of passes in the node's tests
// came from such empty passes).
func TestQueuedEvictionUnderBudgetDoesNothing(t *testing.T) {
	const size = 1 << 10
	store := blobstore.NewMem()
	c, err := New(Config{BlobBudget: 2 * size, ScrubPeriod: -1}, store, nil, evictAll{}, noPeers{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	passes := 0
	hook := func(bool, int) { passes++ }
	c.Hooks.EvictPass.Store(&hook)
	put := func(i int) {
		info, err := store.Put(t.Context(), bytes.NewReader(testkit.RandomBytes(size, uint64(i))), syncnode.BlobRef{})
		if err != nil {
			t.Fatal(err)
		}
		c.Know(info.Ref, time.Unix(int64(1000+i), 0), info.Size)
	}
	put(0)
	put(1)
	// A pass holds the lock; two more blobs arrive, each asking for a
	// pass once the one before has started waiting.
	c.evictMu.Lock()
	for i := 2; i < 4; i++ {
		put(i)
		c.EvictSoon()
		testkit.WaitFor(t, 5*time.Second, "the pass waiting", func() bool { return !c.evictQueued.Load() })
	}
	c.evictMu.Unlock()
	c.Close()
	if passes != 1 {
		t.Fatalf("%d eviction passes, want 1: the second found the node within budget", passes)
	}
	if _, held := c.Held(); held > 2*size {
		t.Fatalf("%d bytes held, budget %d", held, 2*size)
	}
}
