package featuretests

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/node"
	"github.com/syncnode/syncnode/syncgroup"
)

var growthHeap = flag.String("growth.heapprofile", "", "TestGrowth: write the heap profile after each reopen to this file (the size appended)")

var growthCPU = flag.String("growth.cpuprofile", "", "TestGrowth: write CPU profiles of each put phase (.put.N), reopen (.open.N) and new member's catch-up (.N) to files named so")

var growthSizes = flag.String("growth.sizes", "", "TestGrowth: the library sizes to measure, comma-separated (default 2000, 500 under -short; CI's long stage runs 10000,100000; 1000000 by hand)")

// growth is one line of TestGrowth's table.
type growth struct {
	blobs                 int
	put                   time.Duration // per blob, with its row
	open                  time.Duration
	heap                  uint64 // after the reopen, over the heap before it
	heapSettled           uint64 // the same once the walk after the open is done, the least of four samples a second apart
	heapPeak              uint64 // the most of those samples
	catchUp               float64
	catchUpTime, evictRun time.Duration
	catchUpCPU            time.Duration // per row, the sender's and the member's together
	walk                  time.Duration // the walk of the store after the open, in the background
}

// TestGrowth measures a node as its photo library grows: 4 KiB blobs, each
// named by a row of one group, put by 8 concurrent callers with rows
// written in batches of 500; then the node reopened (time, and heap
// after it); the walk of its store that follows in the background; an
// eviction pass; and a new member of the group receiving every row (its
// rate, and the CPU a row costs the sender and the member together). It
// prints the table; the targets of a million photos (open
// in 5 s, 256 MiB of heap, 0.5 ms a put, 50,000 rows a second to a new
// member) are printed beside the figures, not asserted.
func TestGrowth(t *testing.T) {
	sizes := []int{2000}
	if testing.Short() {
		sizes = []int{500}
	}
	if *growthSizes != "" {
		sizes = nil
		for _, f := range strings.Split(*growthSizes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				t.Fatalf("-growth.sizes: %q", f)
			}
			sizes = append(sizes, n)
		}
	}
	var lines []growth
	for _, n := range sizes {
		lines = append(lines, measureGrowth(t, n))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n%10s %12s %10s %12s %14s %10s %12s %12s %18s\n", "blobs", "put each", "reopen", "heap after", "to a member", "CPU a row", "eviction", "walk", "heap then (most)")
	for _, l := range lines {
		fmt.Fprintf(&b, "%10d %12s %10s %9.1f MiB %9.0f rows/s %10s %12s %12s %5.1f (%5.1f) MiB\n", l.blobs, l.put.Round(time.Microsecond), l.open.Round(time.Millisecond),
			float64(l.heap)/(1<<20), l.catchUp, l.catchUpCPU.Round(100*time.Nanosecond), l.evictRun.Round(time.Millisecond), l.walk.Round(time.Millisecond), float64(l.heapSettled)/(1<<20), float64(l.heapPeak)/(1<<20))
	}
	fmt.Fprintf(&b, "%10s %12s %10s %12s %14s\n", "target 1M", "≤ 500µs", "≤ 5s", "≤ 256 MiB", "≥ 50000 rows/s")
	t.Log(b.String())
}

// measureGrowth fills a node with n photos and measures it.
func measureGrowth(t *testing.T, n int) growth {
	dir := t.TempDir()
	cfg := config(t, dir)
	a, err := node.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := a.CreateGroupWith(node.GroupOptions{Name: "photos", Prefixes: []string{"photos/"}, DevType: syncnode.Normal, Budget: libraryBudget(n)})
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	g := spec.ID
	stopProfile := func() {}
	if *growthCPU != "" {
		stopProfile = startCPUProfile(t, fmt.Sprintf("%s.put.%d", *growthCPU, n))
	}
	start := time.Now()
	putPhotos(t, a, g, n)
	out := growth{blobs: n, put: time.Since(start) / time.Duration(n)}
	stopProfile()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	stopProfile = func() {}
	if *growthCPU != "" {
		stopProfile = startCPUProfile(t, fmt.Sprintf("%s.open.%d", *growthCPU, n))
	}
	start = time.Now()
	a, err = node.Open(cfg)
	stopProfile()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	out.open = time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if after.HeapAlloc > before.HeapAlloc {
		out.heap = after.HeapAlloc - before.HeapAlloc
	}
	if *growthHeap != "" {
		writeHeapProfile(t, fmt.Sprintf("%s.%d", *growthHeap, n))
	}
	// The walk of the store runs in the background after the open; the
	// eviction pass and the catch-up are measured once it is done.
	waitFor(t, 10*time.Minute, "the walk of the store after the open", func() bool { return !a.Stats().TakingUp })
	out.walk = time.Since(start)
	// Badger's compactions borrow table builders of tens of MiB for a
	// few seconds: the heap is sampled over three, its least the node's
	// own, its most with a compaction under way.
	for i := range 4 {
		if i > 0 {
			time.Sleep(time.Second)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		h := after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc)
		if i == 0 || h < out.heapSettled {
			out.heapSettled = h
		}
		out.heapPeak = max(out.heapPeak, h)
	}
	if *growthHeap != "" {
		writeHeapProfile(t, fmt.Sprintf("%s.settled.%d", *growthHeap, n))
	}
	start = time.Now()
	if _, err := a.Evict(); err != nil {
		t.Fatal(err)
	}
	out.evictRun = time.Since(start)

	m := open(t, config(t, t.TempDir()))
	defer m.Close()
	if *growthCPU != "" {
		stop := startCPUProfile(t, fmt.Sprintf("%s.%d", *growthCPU, n))
		defer stop()
	}
	start, cpu0 := time.Now(), processCPU(t)
	join(t, a, m, g, syncnode.Normal)
	// The last row written comes last; the count is checked once it is
	// there (listing every row each poll would cost the member more than
	// receiving them).
	last := fmt.Sprintf("photos/%07d", n-1)
	waitFor(t, 10*time.Minute, "the new member to receive every row", func() bool {
		if _, ok, err := m.GetRow(g, last); err != nil || !ok {
			return false
		}
		rows, err := m.ListRows(g, "photos/")
		return err == nil && len(rows) == n
	})
	out.catchUpTime = time.Since(start)
	out.catchUpCPU = (processCPU(t) - cpu0) / time.Duration(n)
	out.catchUp = float64(n) / out.catchUpTime.Seconds()
	return out
}

// libraryBudget is the budget per writer of a group holding a library of
// n photos written by one member: raised at the group's creation, as its
// admin would, for a library near or above the default's 250,000 rows
// (zero: the default).
func libraryBudget(n int) syncgroup.Budget {
	if n <= 100_000 {
		return syncgroup.Budget{}
	}
	return syncgroup.Budget{Rows: 2 * n, Bytes: int64(n) << 10, Refs: 2 * n}
}

// putPhotos puts n blobs of 4 KiB by 8 concurrent callers and, by one
// more, their rows in batches of 500, each batch as soon as its blobs are
// stored.
func putPhotos(t *testing.T, a *node.Node, g syncnode.GroupID, n int) {
	const batch = 500
	batches := (n + batch - 1) / batch
	refs := make([]syncnode.BlobRef, n)
	ready := make([]chan struct{}, batches) // closed once the batch's blobs are stored
	left := make([]atomic.Int32, batches)
	for b := range batches {
		ready[b] = make(chan struct{})
		left[b].Store(int32(min(n, (b+1)*batch) - b*batch))
	}
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			data := make([]byte, 4<<10)
			for i := range next {
				binary.LittleEndian.PutUint64(data, uint64(i)+1)
				info, err := a.PutBlob(ctx, bytes.NewReader(data))
				if err != nil {
					cancel(err)
					return
				}
				refs[i] = info.Ref
				if left[i/batch].Add(-1) == 0 {
					close(ready[i/batch])
				}
			}
		})
	}
	wg.Go(func() {
		for b := range batches {
			select {
			case <-ready[b]:
			case <-ctx.Done():
				return
			}
			if err := putPhotoRows(a, g, refs[b*batch:min(n, (b+1)*batch)], b*batch); err != nil {
				cancel(err)
				return
			}
		}
	})
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		t.Fatal(err)
	}
}

// putPhotoRows writes the rows of refs, numbered from first, as one batch.
func putPhotoRows(a *node.Node, g syncnode.GroupID, refs []syncnode.BlobRef, first int) error {
	kvs := make([]syncgroup.KV, 0, len(refs))
	for k, ref := range refs {
		i := first + k
		v, err := msgpack.Marshal(map[string]any{"name": fmt.Sprintf("IMG_%07d.jpg", i), "blob": ref})
		if err != nil {
			return err
		}
		kvs = append(kvs, syncgroup.KV{Key: fmt.Sprintf("photos/%07d", i), Value: v})
	}
	_, err := a.PutRows(g, kvs)
	return err
}

// writeHeapProfile writes the heap profile to path.
func writeHeapProfile(t *testing.T, path string) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	runtime.GC() // the profile is of the last GC but one
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
}

// startCPUProfile starts writing the CPU profile to path; the function
// it returns stops it.
func startCPUProfile(t *testing.T, path string) func() {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		t.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
