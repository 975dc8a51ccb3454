package custody

import (
	"bytes"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/syncnode/syncnode"
)

// lruShards is how many sorted runs the LRU table keeps: at a million
// blobs each holds some 250, so an insertion moves a few KiB.
const lruShards = 4096

// lru records, for each blob held, when it was last used and its size,
// and the total of those sizes. A blob enters it once put or fetched (at
// open, every blob held), so one missing from it is being put or fetched.
//
// It is built for a million blobs: entries of 48 bytes with no pointer,
// in runs sorted by ref (the ref's first 12 bits pick the run) that grow
// by an eighth at a time, some 52 bytes a blob in all that the garbage
// collector never scans. A map took 117 to 151.
type lru struct {
	mu    sync.Mutex
	runs  [lruShards][]lruEntry
	n     int
	bytes int64
}

// lruEntry is a blob's last use, in Unix nanoseconds, and its size.
type lruEntry struct {
	ref  [syncnode.HashSize]byte
	at   int64
	size int64
}

func (e lruEntry) lastUse() time.Time { return time.Unix(0, e.at) }

// unixNano is t in Unix nanoseconds, held within what they can say
// (1678 to 2262): a file's time from a broken clock is not wrapped round
// to the other end of the order.
func unixNano(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// find returns ref's run, its index there (or where it goes) and whether
// it is there. The caller holds mu.
func (l *lru) find(ref syncnode.BlobRef) (run int, i int, ok bool) {
	h := ref.Hash()
	run = int(h[0])<<4 | int(h[1])>>4
	i, ok = slices.BinarySearchFunc(l.runs[run], h, func(e lruEntry, h [syncnode.HashSize]byte) int {
		return bytes.Compare(e.ref[:], h[:])
	})
	return run, i, ok
}

// set enters or updates ref; keep says whether an entry there stays as
// it is.
func (l *lru) set(ref syncnode.BlobRef, t time.Time, size int64, keep bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	run, i, ok := l.find(ref)
	r := l.runs[run]
	switch {
	case ok && keep:
	case ok:
		l.bytes += size - r[i].size
		r[i].at, r[i].size = unixNano(t), size
	default:
		if len(r) == cap(r) {
			r = slices.Grow(r, len(r)/8+4)
		}
		l.runs[run] = slices.Insert(r, i, lruEntry{ref: ref.Hash(), at: unixNano(t), size: size})
		l.n++
		l.bytes += size
	}
}

func (l *lru) touch(ref syncnode.BlobRef, t time.Time, size int64) { l.set(ref, t, size, false) }

// know enters ref unless it is known already.
func (l *lru) know(ref syncnode.BlobRef, t time.Time, size int64) { l.set(ref, t, size, true) }

func (l *lru) get(ref syncnode.BlobRef) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	run, i, ok := l.find(ref)
	if !ok {
		return time.Time{}, false
	}
	return l.runs[run][i].lastUse(), true
}

func (l *lru) forget(ref syncnode.BlobRef) {
	l.mu.Lock()
	defer l.mu.Unlock()
	run, i, ok := l.find(ref)
	if !ok {
		return
	}
	l.bytes -= l.runs[run][i].size
	l.runs[run] = slices.Delete(l.runs[run], i, i+1)
	l.n--
	if r := l.runs[run]; cap(r) > 64 && len(r) < cap(r)/2 {
		l.runs[run] = slices.Clone(r) // a run that shrank gives its memory back
	}
}

// total returns the bytes of the blobs in the table.
func (l *lru) total() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bytes
}

// held returns how many blobs the table knows and their bytes.
func (l *lru) held() (int, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n, l.bytes
}

// each calls fn for every entry, with mu held.
func (l *lru) each(fn func(e lruEntry)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.runs {
		for _, e := range r {
			fn(e)
		}
	}
}

// items returns the table's blobs for planEviction.
func (l *lru) items() []evictItem {
	items := make([]evictItem, 0, l.len())
	l.each(func(e lruEntry) {
		items = append(items, evictItem{Ref: syncnode.RefFromHash(e.ref), Size: e.size, LastUse: e.lastUse()})
	})
	return items
}

// refs returns the table's blobs.
func (l *lru) refs() []syncnode.BlobRef {
	out := make([]syncnode.BlobRef, 0, l.len())
	l.each(func(e lruEntry) { out = append(out, syncnode.RefFromHash(e.ref)) })
	return out
}

func (l *lru) len() int {
	n, _ := l.held()
	return n
}
