// Package fetcher runs background blob fetches: a min-heap of blobs ordered
// by next attempt time with an index for dedupe, exponential backoff with
// jitter, bounded concurrency, attempt counts persisted after every
// attempt, and the periodic scan that is the safety net behind event-driven
// enqueues. It does not know what fetching a blob means: it calls a func.
package fetcher

import (
	"cmp"
	"slices"
	"time"

	"github.com/syncnode/syncnode"
)

// item is one queued blob, kept in the queue's slab.
type item struct {
	ref      syncnode.BlobRef
	next     int64 // next attempt, Unix nanoseconds
	attempts int32
	gen      uint32 // bumped when the slab entry is freed
}

// slot is a heap entry: the due time, the slab index and the generation it
// was pushed with. A slot whose generation no longer matches its slab entry
// was removed and is skipped (lazy deletion), so sifting touches only the
// heap array.
type slot struct {
	next int64
	id   int32
	gen  uint32
}

// arity is the heap's fan-out: a 4-ary heap is half as deep as a binary one
// and a node's children share a cache line.
const arity = 4

// Queue is a min-heap of blobs on next attempt time with an index for
// dedupe. It is pure data: no goroutines, no clock. Entries live in a slab
// without pointers, so a million queued blobs cost the garbage collector
// nothing to scan, and the index (refIndex) is a flat table of 8-byte
// entries. The zero Queue is ready to use.
type Queue struct {
	heap  []slot
	items slab
	free  []int32
	index refIndex
}

func (q *Queue) lookup(ref syncnode.BlobRef) (int32, bool) { return q.index.lookup(ref, &q.items) }

// Len returns the number of queued blobs.
func (q *Queue) Len() int { return q.index.n }

// Contains reports whether ref is queued.
func (q *Queue) Contains(ref syncnode.BlobRef) bool {
	_, ok := q.lookup(ref)
	return ok
}

// Push queues ref for an attempt at next, carrying its attempt count. It
// returns false, changing nothing, if ref is already queued.
func (q *Queue) Push(ref syncnode.BlobRef, next time.Time, attempts int) bool {
	var id int32
	alloc := func() int32 {
		if n := len(q.free); n > 0 {
			id, q.free = q.free[n-1], q.free[:n-1]
		} else {
			id = q.items.add()
		}
		return id
	}
	if !q.index.add(ref, &q.items, alloc) {
		return false
	}
	it := q.items.at(id)
	it.ref, it.next, it.attempts = ref, next.UnixNano(), int32(attempts)
	q.heap = append(grow(q.heap), slot{next: it.next, id: id, gen: it.gen})
	q.up(len(q.heap) - 1)
	return true
}

// grow doubles a full slice's capacity: append alone grows large slices
// by a quarter at a time, and for a queue of a million blobs those copies
// cost more than the heap's work.
func grow[S ~[]E, E any](s S) S {
	if len(s) < cap(s) {
		return s
	}
	return slices.Grow(s, max(len(s), 64))
}

// top drops removed slots from the head and reports whether a live one is
// left there.
func (q *Queue) top() bool {
	for len(q.heap) > 0 {
		s := q.heap[0]
		if q.items.at(s.id).gen == s.gen {
			return true
		}
		q.popSlot()
	}
	return false
}

// Peek returns the blob with the earliest next attempt.
func (q *Queue) Peek() (ref syncnode.BlobRef, next time.Time, ok bool) {
	if !q.top() {
		return syncnode.BlobRef{}, time.Time{}, false
	}
	it := q.items.at(q.heap[0].id)
	return it.ref, time.Unix(0, it.next), true
}

// Pop removes and returns the blob with the earliest next attempt.
func (q *Queue) Pop() (ref syncnode.BlobRef, next time.Time, attempts int, ok bool) {
	if !q.top() {
		return syncnode.BlobRef{}, time.Time{}, 0, false
	}
	id := q.popSlot().id
	it := *q.items.at(id)
	q.release(id)
	return it.ref, time.Unix(0, it.next), int(it.attempts), true
}

// Next returns when ref is next due and its attempt count.
func (q *Queue) Next(ref syncnode.BlobRef) (next time.Time, attempts int, ok bool) {
	id, ok := q.lookup(ref)
	if !ok {
		return time.Time{}, 0, false
	}
	it := q.items.at(id)
	return time.Unix(0, it.next), int(it.attempts), true
}

// Remove drops ref from the queue, reporting whether it was queued.
func (q *Queue) Remove(ref syncnode.BlobRef) bool {
	id, ok := q.lookup(ref)
	if !ok {
		return false
	}
	q.release(id)
	if len(q.heap) > 2*q.Len()+64 {
		q.compact()
	}
	return true
}

// release frees slab entry id; its heap slot goes stale.
func (q *Queue) release(id int32) {
	it := q.items.at(id)
	q.index.remove(it.ref, &q.items)
	it.ref = syncnode.BlobRef{}
	it.gen++
	q.free = append(q.free, id)
}

// compact rebuilds the heap from live slots once stale ones dominate.
func (q *Queue) compact() {
	live := q.heap[:0]
	for _, s := range q.heap {
		if q.items.at(s.id).gen == s.gen {
			live = append(live, s)
		}
	}
	clear(q.heap[len(live):])
	q.heap = live
	for i := len(q.heap)/arity + 1; i >= 0; i-- {
		q.down(i)
	}
}

func (q *Queue) popSlot() slot {
	s := q.heap[0]
	last := len(q.heap) - 1
	q.heap[0] = q.heap[last]
	q.heap = q.heap[:last]
	if last > 0 {
		q.down(0)
	}
	return s
}

func (q *Queue) up(i int) {
	s := q.heap[i]
	for i > 0 {
		p := (i - 1) / arity
		if q.heap[p].next <= s.next {
			break
		}
		q.heap[i] = q.heap[p]
		i = p
	}
	q.heap[i] = s
}

func (q *Queue) down(i int) {
	n := len(q.heap)
	if i >= n {
		return
	}
	s := q.heap[i]
	for {
		l := arity*i + 1
		if l >= n {
			break
		}
		m := l
		for c := l + 1; c < l+arity && c < n; c++ {
			if q.heap[c].next < q.heap[m].next {
				m = c
			}
		}
		if q.heap[m].next >= s.next {
			break
		}
		q.heap[i] = q.heap[m]
		i = m
	}
	q.heap[i] = s
}

// Refs returns up to max queued refs, soonest next attempt first.
func (q *Queue) Refs(max int) []syncnode.BlobRef {
	ids := make([]int32, 0, q.Len())
	q.index.ids(func(id int32) { ids = append(ids, id) })
	slices.SortFunc(ids, func(a, b int32) int { return cmp.Compare(q.items.at(a).next, q.items.at(b).next) })
	out := make([]syncnode.BlobRef, 0, min(max, len(ids)))
	for _, id := range ids[:min(max, len(ids))] {
		out = append(out, q.items.at(id).ref)
	}
	return out
}
