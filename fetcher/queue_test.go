package fetcher

import (
	"container/heap"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/syncnode/syncnode"
)

func testRef(i int) syncnode.BlobRef {
	return syncnode.RefFromHash([32]byte{byte(i), byte(i >> 8), byte(i >> 16), byte(i >> 24), 0xee})
}

// mixedRef returns refs of which half share their first 8 bytes with
// others, so refs that differ only past their first bytes are exercised.
func mixedRef(i int) syncnode.BlobRef {
	if i%2 == 0 {
		return testRef(i)
	}
	return syncnode.RefFromHash([32]byte{0: 7, 1: byte(i % 3), 8: byte(i), 9: byte(i >> 8), 31: 1})
}

// TestBlobFetchStateHeap checks the queue against a plain list, kept sorted,
// over a million random pushes, duplicate pushes, pops and removes.
func TestBlobFetchStateHeap(t *testing.T) {
	type ent struct {
		ref  syncnode.BlobRef
		next int64
	}
	rng := rand.New(rand.NewPCG(9, 9))
	var q Queue
	var ref []ent // sorted by next
	base := time.Unix(1_700_000_000, 0)
	find := func(r syncnode.BlobRef) int {
		return slices.IndexFunc(ref, func(e ent) bool { return e.ref == r })
	}
	const ops = 1_000_000
	for i := range ops {
		switch op := rng.IntN(10); {
		case op < 5: // push, sometimes a duplicate
			r := mixedRef(rng.IntN(400))
			next := base.Add(time.Duration(rng.IntN(50)) * time.Millisecond)
			pushed := q.Push(r, next, 0)
			if pushed != (find(r) < 0) {
				t.Fatalf("op %d: Push dedupe = %v with ref present=%v", i, pushed, find(r) >= 0)
			}
			if pushed {
				j, _ := slices.BinarySearchFunc(ref, next.UnixNano(), func(e ent, n int64) int { return int(e.next - n) })
				ref = slices.Insert(ref, j, ent{r, next.UnixNano()})
			}
		case op < 8: // pop
			r, next, _, ok := q.Pop()
			if ok != (len(ref) > 0) {
				t.Fatalf("op %d: Pop ok=%v with %d in the list", i, ok, len(ref))
			}
			if !ok {
				continue
			}
			if next.UnixNano() != ref[0].next {
				t.Fatalf("op %d: popped next %d, want the earliest %d", i, next.UnixNano(), ref[0].next)
			}
			j := find(r)
			if j < 0 || ref[j].next != next.UnixNano() {
				t.Fatalf("op %d: popped %s, not in the list at that time", i, r)
			}
			ref = slices.Delete(ref, j, j+1)
		default: // remove
			r := mixedRef(rng.IntN(400))
			j := find(r)
			if q.Remove(r) != (j >= 0) {
				t.Fatalf("op %d: Remove disagrees", i)
			}
			if j >= 0 {
				ref = slices.Delete(ref, j, j+1)
			}
		}
		if q.Len() != len(ref) {
			t.Fatalf("op %d: Len %d, list %d", i, q.Len(), len(ref))
		}
	}
}

// BenchmarkEnqueuePop1e6 pushes a million blobs with random due times and
// pops them all, reporting bytes of heap per queued blob; the baselines in
// the same run push and pop the same million through container/heap (a
// plain heap of ref and time, with no index for Remove or Next) and sort
// the same timestamps in a slice.
func BenchmarkEnqueuePop1e6(b *testing.B) {
	const n = 1_000_000
	refs := make([]syncnode.BlobRef, n)
	nexts := make([]time.Time, n)
	rng := rand.New(rand.NewPCG(1, 1))
	base := time.Unix(1_700_000_000, 0)
	for i := range refs {
		refs[i] = testRef(i)
		nexts[i] = base.Add(time.Duration(rng.Int64N(int64(time.Hour))))
	}
	var qT, heapT, sortT time.Duration
	var perBlob float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		var q Queue
		for i := range refs {
			q.Push(refs[i], nexts[i], 0)
		}
		qT += time.Since(start)
		runtime.ReadMemStats(&after)
		perBlob = float64(after.HeapAlloc-before.HeapAlloc) / n
		start = time.Now()
		for q.Len() > 0 {
			q.Pop()
		}
		qT += time.Since(start)

		start = time.Now()
		h := &plainHeap{}
		for i := range refs {
			heap.Push(h, plainItem{refs[i], nexts[i]})
		}
		for h.Len() > 0 {
			heap.Pop(h)
		}
		heapT += time.Since(start)

		start = time.Now()
		ts := make([]int64, n)
		for i := range nexts {
			ts[i] = nexts[i].UnixNano()
		}
		slices.Sort(ts)
		sortT += time.Since(start)
	}
	b.ReportMetric(qT.Seconds()/float64(b.N), "s/1e6-push+pop")
	b.ReportMetric(perBlob, "B/queued-blob")
	b.ReportMetric(heapT.Seconds()/float64(b.N), "s/1e6-container-heap")
	b.ReportMetric(qT.Seconds()/heapT.Seconds(), "time-x-container-heap")
	b.ReportMetric(qT.Seconds()/sortT.Seconds(), "time-x-slice-sort")
}

type plainItem struct {
	ref  syncnode.BlobRef
	next time.Time
}

// plainHeap is the textbook container/heap priority queue.
type plainHeap []plainItem

func (h plainHeap) Len() int           { return len(h) }
func (h plainHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h plainHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *plainHeap) Push(x any)        { *h = append(*h, x.(plainItem)) }
func (h *plainHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func TestRefsSoonestFirst(t *testing.T) {
	var q Queue
	t0 := time.Unix(1000, 0)
	refs := []syncnode.BlobRef{syncnode.RefFromHash([32]byte{1}), syncnode.RefFromHash([32]byte{2}), syncnode.RefFromHash([32]byte{3})}
	q.Push(refs[0], t0.Add(3*time.Second), 0)
	q.Push(refs[1], t0.Add(time.Second), 0)
	q.Push(refs[2], t0.Add(2*time.Second), 0)
	if got := q.Refs(2); len(got) != 2 || got[0] != refs[1] || got[1] != refs[2] {
		t.Fatalf("Refs(2) = %v", got)
	}
	if got := q.Refs(10); len(got) != 3 || got[2] != refs[0] {
		t.Fatalf("Refs(10) = %v", got)
	}
}

// TestIndexAgainstMap checks the ref index against a Go map over random
// adds and removes, with the table growing, shrinking and wrapping.
func TestIndexAgainstMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	var x refIndex
	var items slab
	want := map[syncnode.BlobRef]int32{}
	for i := range 300_000 {
		r := testRef(rng.IntN(5000))
		if rng.IntN(3) > 0 && i < 200_000 || rng.IntN(8) == 0 {
			var id int32
			added := x.add(r, &items, func() int32 { id = items.add(); items.at(id).ref = r; return id })
			if _, had := want[r]; added == had {
				t.Fatalf("op %d: add = %v with ref present=%v", i, added, had)
			}
			if added {
				want[r] = id
			}
		} else {
			_, had := want[r]
			if x.remove(r, &items) != had {
				t.Fatalf("op %d: remove disagrees", i)
			}
			delete(want, r)
		}
		if x.n != len(want) {
			t.Fatalf("op %d: %d indexed, want %d", i, x.n, len(want))
		}
	}
	for r, id := range want {
		if got, ok := x.lookup(r, &items); !ok || got != id {
			t.Fatalf("%s: id %d, %v; want %d", r, got, ok, id)
		}
	}
}

// A member chooses the refs its rows carry, so it can make them collide
// in any prefix it likes; queueing and popping such refs costs no more
// than queueing random ones. (A queue keyed on an 8-byte prefix, with the
// refs that shared one in a side table scanned when the first was
// removed, took quadratic time on pairs of refs sharing a prefix, the
// first of each pair due first.)
func TestCollidingRefsCostNoMore(t *testing.T) {
	const n = 20_000
	run := func(ref func(i int) syncnode.BlobRef) time.Duration {
		best := time.Duration(1 << 62)
		for range 3 {
			var q Queue
			start := time.Now()
			for i := range n {
				q.Push(ref(i), time.Unix(int64(i%2), int64(i)), 0)
			}
			for q.Len() > 0 {
				q.Pop()
			}
			best = min(best, time.Since(start))
		}
		return best
	}
	random := run(testRef)
	colliding := run(func(i int) syncnode.BlobRef {
		p := i / 2
		return syncnode.RefFromHash([32]byte{0: byte(p), 1: byte(p >> 8), 2: byte(p >> 16), 31: byte(i % 2)})
	})
	t.Logf("%d refs: random %v, in pairs sharing their first 31 bytes %v", n, random, colliding)
	if colliding > 5*random+10*time.Millisecond {
		t.Fatalf("refs sharing a prefix took %v, random ones %v", colliding, random)
	}
}
