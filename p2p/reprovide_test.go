package p2p

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore/storetest"
	"github.com/syncnode/syncnode/internal/testkit"
)

// countingProvide wraps a DHT's Provide and counts calls per blob.
type countingProvide struct {
	d     *DHT
	mu    sync.Mutex
	calls map[syncnode.BlobRef]int
	total int
}

func (c *countingProvide) provide(ctx context.Context, ref syncnode.BlobRef) error {
	c.mu.Lock()
	c.calls[ref]++
	c.total++
	c.mu.Unlock()
	return c.d.Provide(ctx, ref)
}

func (c *countingProvide) count(ref syncnode.BlobRef) (one, total int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[ref], c.total
}

func testRefs(n int) []syncnode.BlobRef {
	refs := make([]syncnode.BlobRef, n)
	for i := range refs {
		refs[i], _ = storetest.RefOf(fmt.Appendf(nil, "blob %d", i))
	}
	return refs
}

// heldSet is a node's held blobs as a reprovider asks for them.
type heldSet struct {
	mu sync.Mutex
	m  map[syncnode.BlobRef]bool
}

func (h *heldSet) Provided() []syncnode.BlobRef {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Collect(maps.Keys(h.m))
}

func (h *heldSet) Provides(ref syncnode.BlobRef) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[ref]
}

func (h *heldSet) set(ref syncnode.BlobRef, held bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if held {
		h.m[ref] = true
	} else {
		delete(h.m, ref)
	}
}

// runReprovider runs a reprovider of an empty held set with 4 workers
// until the test ends.
func runReprovider(t *testing.T, provide func(context.Context, syncnode.BlobRef) error, ready func() bool, interval time.Duration) (*Reprovider, *heldSet) {
	held := &heldSet{m: map[syncnode.BlobRef]bool{}}
	r := NewReprovider(provide, ready, held, interval, 4, discard)
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	go r.Run(ctx)
	return r, held
}

func TestReproviderProvidesAndForgets(t *testing.T) {
	hs, ds := mesh(t, 3, false)
	cp := &countingProvide{d: ds[0], calls: map[syncnode.BlobRef]int{}}
	r, held := runReprovider(t, cp.provide, nil, 100*time.Millisecond)
	ctx := t.Context()
	refs := testRefs(200)
	for _, ref := range refs {
		held.set(ref, true)
		r.Add(ref)
	}
	// Every blob becomes findable from another node.
	for _, ref := range []syncnode.BlobRef{refs[0], refs[99], refs[199]} {
		testkit.WaitFor(t, 10*time.Second, "the condition", func() bool {
			ps, _ := ds[2].FindProviders(ctx, ref, 3)
			for _, p := range ps {
				if p.ID == hs[0].ID() {
					return true
				}
			}
			return false
		})
	}
	gone := refs[7]
	held.set(gone, false)
	r.Remove(gone)
	before, total := cp.count(gone)
	// Two more full rounds pass without it.
	testkit.WaitFor(t, 20*time.Second, "the condition", func() bool { _, n := cp.count(gone); return n >= total+2*199 })
	if after, _ := cp.count(gone); after != before {
		t.Fatalf("removed blob provided %d more times", after-before)
	}
	if n := len(held.Provided()); n != 199 {
		t.Fatalf("%d held", n)
	}
}

// BenchmarkReprovide provides SYNCNODE_BENCH_PROVIDES blobs (default 10000)
// from one node of a 5-node mesh with 16 workers and reports provides/s
// and the time a round of 1e5 would take at that rate.
func BenchmarkReprovide(b *testing.B) {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("SYNCNODE_BENCH_PROVIDES")); err == nil && v > 0 {
		n = v
	}
	_, ds := mesh(b, 5, false)
	refs := testRefs(n)
	var took time.Duration
	for b.Loop() {
		held := &heldSet{m: map[syncnode.BlobRef]bool{}}
		r := NewReprovider(ds[0].Provide, nil, held, time.Hour, 16, discard)
		for _, ref := range refs {
			held.set(ref, true)
			r.Add(ref)
		}
		start := time.Now()
		ok, failed := r.round(b.Context(), true)
		took += time.Since(start)
		if ok != n || failed != 0 {
			b.Fatalf("provided %d, failed %d", ok, failed)
		}
	}
	rate := float64(n*b.N) / took.Seconds()
	b.ReportMetric(rate, "provides/s")
	b.ReportMetric(1e5/rate, "s-per-1e5")
}

// TestReproviderWaitsForAPeer: blobs added while the DHT knows no peer
// (a device offline) are not tried then, each provide bound to fail;
// once it knows one, every held blob is provided within ReadyPoll, not at
// the next interval hours later. A blob removed meanwhile is not.
func TestReproviderWaitsForAPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ready atomic.Bool
		var mu sync.Mutex
		calls := map[syncnode.BlobRef]int{}
		tries := 0
		provide := func(_ context.Context, ref syncnode.BlobRef) error {
			mu.Lock()
			defer mu.Unlock()
			if !ready.Load() {
				tries++
				return errors.New("failed to find any peer in table")
			}
			calls[ref]++
			return nil
		}
		r, held := runReprovider(t, provide, ready.Load, 2*time.Hour)
		refs := testRefs(10)
		for _, ref := range refs {
			held.set(ref, true)
			r.Add(ref)
			time.Sleep(time.Second)
		}
		held.set(refs[3], false)
		r.Remove(refs[3])
		time.Sleep(time.Minute)
		synctest.Wait()
		mu.Lock()
		if tries != 0 {
			t.Errorf("%d provides tried while the DHT knew no peer", tries)
		}
		mu.Unlock()
		ready.Store(true)
		time.Sleep(ReadyPoll)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		for i, ref := range refs {
			if want := 1; i == 3 && calls[ref] != 0 || i != 3 && calls[ref] != want {
				t.Errorf("blob %d provided %d times once the DHT knew a peer", i, calls[ref])
			}
		}
	})
}
