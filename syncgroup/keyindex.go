package syncgroup

import (
	"slices"
	"sort"
	"strings"
)

// runMax is the most items a run of a keyIndex holds.
const runMax = 128

// keyIndex holds a replica's items ordered by key, in sorted runs of at
// most runMax items, themselves in order. A key past the last one starts
// a new run once the last is full, so rows loaded in key order at open,
// or written in key order, fill every run: some 72 bytes a key besides
// the key itself, where a B-tree filled in order kept its nodes half
// empty (173 bytes a key at a million). A key inserted elsewhere splits a
// full run in two.
type keyIndex struct {
	runs [][]item // none empty
	n    int
}

func cmpItemKey(it item, key string) int { return strings.Compare(it.key, key) }

// Len returns how many keys the index holds.
func (x *keyIndex) Len() int { return x.n }

// run returns the run that holds key or would: the last whose first key
// is at most key (the first run for a key before every other).
func (x *keyIndex) run(key string) int {
	i := sort.Search(len(x.runs), func(i int) bool { return x.runs[i][0].key > key })
	return max(i-1, 0)
}

// Get returns key's item.
func (x *keyIndex) Get(key string) (item, bool) {
	if x.n == 0 {
		return item{}, false
	}
	r := x.runs[x.run(key)]
	if i, ok := slices.BinarySearchFunc(r, key, cmpItemKey); ok {
		return r[i], true
	}
	return item{}, false
}

// Set makes it its key's item, replacing the one there was.
func (x *keyIndex) Set(it item) {
	if x.n == 0 {
		x.runs, x.n = [][]item{{it}}, 1
		return
	}
	ri := x.run(it.key)
	r := x.runs[ri]
	i, ok := slices.BinarySearchFunc(r, it.key, cmpItemKey)
	if ok {
		r[i] = it
		return
	}
	x.n++
	switch {
	case len(r) < runMax:
		if len(r) == cap(r) { // grown by doubling to runMax, no further
			r = append(make([]item, 0, min(runMax, 2*len(r))), r...)
		}
		x.runs[ri] = slices.Insert(r, i, it)
	case i == len(r) && ri == len(x.runs)-1:
		// Past the last key: the full run stays full.
		x.runs = append(x.runs, []item{it})
	default:
		right := make([]item, runMax/2, runMax)
		copy(right, r[runMax/2:])
		clear(r[runMax/2:]) // no stale keys or rows kept alive
		left := r[:runMax/2]
		if i <= len(left) {
			left = slices.Insert(left, i, it)
		} else {
			right = slices.Insert(right, i-len(left), it)
		}
		x.runs[ri] = left
		x.runs = slices.Insert(x.runs, ri+1, right)
	}
}

// AscendFrom calls fn for each item from key start on, in order, until
// fn returns false.
func (x *keyIndex) AscendFrom(start string, fn func(item) bool) {
	if x.n == 0 {
		return
	}
	ri := x.run(start)
	i, _ := slices.BinarySearchFunc(x.runs[ri], start, cmpItemKey)
	for ; ri < len(x.runs); ri, i = ri+1, 0 {
		for _, it := range x.runs[ri][i:] {
			if !fn(it) {
				return
			}
		}
	}
}

// Ascend calls fn for each item in order until fn returns false.
func (x *keyIndex) Ascend(fn func(item) bool) { x.AscendFrom("", fn) }
