package node

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/testkit"
)

func TestEvictionAfterFetchChecksOnlyTheOldest(t *testing.T) {
	const size, keep, total = 16 << 10, 30, 40
	nodes, g := meshWith(t, true, func(c *Config) { c.BlobBudget = keep * size }, syncnode.Normal, syncnode.Normal)
	writer, reader := nodes[0], nodes[1]
	var mu sync.Mutex
	var passes, checks []int
	hook := func(listed bool, checked int) {
		if !listed {
			mu.Lock()
			held, _ := reader.custody.Held()
			passes = append(passes, held)
			checks = append(checks, checked)
			mu.Unlock()
		}
	}
	reader.custody.Hooks.EvictPass.Store(&hook)
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
		_, bytes := reader.custody.Held()
		return bytes <= keep*size
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

// TestOriginCopyWithoutItsGrantIsNeverEvicted: a device writes a row
// naming a blob before it has the bytes, leaves the group, and then puts
// the blob. It is no member to be granted the creator's shares in, yet
// its signpost still names the group, and its copy is the only one: a
// device over its budget must keep it (seen in the ownership simulation
// after a rejoin whose first round failed).
func TestOriginCopyWithoutItsGrantIsNeverEvicted(t *testing.T) {
	nodes, g := meshWith(t, true, func(c *Config) { c.BlobBudget = 1 }, syncnode.Normal, syncnode.Normal)
	device := nodes[1]
	data := make([]byte, 64<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	ref := testkit.Ref(data)
	v, _ := msgpack.Marshal(map[string]any{"blob": ref})
	if _, err := device.PutRow(g, "photos/first", v); err != nil {
		t.Fatal(err)
	}
	if _, err := device.LeaveGroupWith(t.Context(), g, LeaveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := device.PutBlob(t.Context(), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	rep, err := device.Evict()
	if err != nil {
		t.Fatal(err)
	}
	if !device.HasBlob(ref) || len(rep.Evicted) > 0 {
		t.Fatalf("the only copy of a blob put here, its creator shares never granted, was evicted: %+v", rep)
	}
}

// TestScansNeverListTheStore: the eviction pass after each of the server
// fetcher's scans plans from the LRU table; it never lists the store,
// which at a million photos costs seconds of disk work each time.
func TestScansNeverListTheStore(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t.TempDir())
	cfg.BlobBudget = 1
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	spec, err := n.CreateGroup("photos", []string{"photos/"}, false, syncnode.Normal)
	if err != nil {
		t.Fatal(err)
	}
	// Pinned by the creator's shares: over the budget for good.
	putBlobRow(t, n, spec.ID, "photos/a.jpg", 8<<10, 1)
	var mu sync.Mutex
	var listed, planned int
	hook := func(l bool, _ int) {
		mu.Lock()
		defer mu.Unlock()
		if l {
			listed++
		} else {
			planned++
		}
	}
	n.custody.Hooks.EvictPass.Store(&hook)
	testkit.WaitFor(t, 20*time.Second, "two passes after scans", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return planned+listed >= 2
	})
	mu.Lock()
	defer mu.Unlock()
	if listed > 0 {
		t.Fatalf("%d passes after scans listed the store (%d planned from the table)", listed, planned)
	}
}

// TestEvictWithoutABudgetListsNothing: on a node without a budget (a
// server of a million photos), an eviction pass evicts nothing and says
// so from the LRU table, without listing the store: what it holds, and
// what the user pinned.
func TestEvictWithoutABudgetListsNothing(t *testing.T) {
	t.Parallel()
	n, err := Open(testConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var sizes int64
	var refs []syncnode.BlobRef
	for i := range 3 {
		data := make([]byte, 1000*(i+1))
		data[0] = byte(i)
		info, err := n.PutBlob(t.Context(), bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		sizes += info.Size
		refs = append(refs, info.Ref)
	}
	if err := n.PinBlob(t.Context(), refs[1]); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the walk after the open", func() bool { return !n.Stats().TakingUp })
	// A blob file the node never heard of: a listing would count it, the
	// LRU table does not.
	unseen := []byte("a blob beside the node's")
	h := testkit.Ref(unseen).Hex()
	dir := filepath.Join(n.cfg.DataDir, "blobs", "blobs", h[:2])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, h), unseen, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := n.Evict()
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Evicted) != 0 || rep.Stored != sizes || rep.UserPinned != 2000 {
		t.Fatalf("report %+v, want nothing evicted, %d stored (the store not listed), 2000 pinned", rep, sizes)
	}
}
