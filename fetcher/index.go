package fetcher

import (
	"hash/maphash"

	"github.com/syncnode/syncnode"
)

// refIndex maps queued refs to their slab ids: an open-addressing table
// with linear probing and backward-shift deletion, so no tombstones pile
// up. An entry is 8 bytes, the low 32 bits of the ref's seeded hash and
// the id, so a probe reads one cache line and touches the slab only to
// confirm a match. The seed is secret per index: refs come from rows that
// members write, and a member who could choose refs that collide would
// turn every lookup into a scan.
type refIndex struct {
	seed  maphash.Seed
	slots []entry // len is a power of two, or 0
	n     int
}

// entry is a table slot; id1 is the slab id plus one, 0 for an empty slot.
type entry struct {
	tag uint32
	id1 int32
}

// minSlots is the table's size when it first holds a ref.
const minSlots = 64

func (x *refIndex) hash(ref syncnode.BlobRef) uint32 {
	if x.seed == (maphash.Seed{}) {
		x.seed = maphash.MakeSeed()
	}
	return uint32(maphash.Comparable(x.seed, ref))
}

// find returns the slot holding ref, or the empty slot where probing for
// it stopped, and whether ref is there. items confirms a tag match.
func (x *refIndex) find(ref syncnode.BlobRef, items *slab) (pos int, found bool) {
	if len(x.slots) == 0 {
		return 0, false
	}
	tag := x.hash(ref)
	mask := len(x.slots) - 1
	for i := int(tag) & mask; ; i = (i + 1) & mask {
		e := x.slots[i]
		if e.id1 == 0 {
			return i, false
		}
		if e.tag == tag && items.at(e.id1-1).ref == ref {
			return i, true
		}
	}
}

// lookup returns the slab id of ref.
func (x *refIndex) lookup(ref syncnode.BlobRef, items *slab) (int32, bool) {
	i, ok := x.find(ref, items)
	if !ok {
		return 0, false
	}
	return x.slots[i].id1 - 1, true
}

// add indexes ref under the slab id that alloc returns, unless ref is
// indexed already; it reports whether ref was added. One probe does both.
func (x *refIndex) add(ref syncnode.BlobRef, items *slab, alloc func() int32) bool {
	if 2*(x.n+1) > len(x.slots) {
		x.resize(max(minSlots, 2*len(x.slots)))
	}
	tag := x.hash(ref)
	mask := len(x.slots) - 1
	for i := int(tag) & mask; ; i = (i + 1) & mask {
		e := x.slots[i]
		if e.id1 == 0 {
			x.slots[i] = entry{tag: tag, id1: alloc() + 1}
			x.n++
			return true
		}
		if e.tag == tag && items.at(e.id1-1).ref == ref {
			return false
		}
	}
}

// resize rehashes into size slots; a tag's low bits are its home slot, so
// no ref is hashed again.
func (x *refIndex) resize(size int) {
	old := x.slots
	x.slots = make([]entry, size)
	mask := size - 1
	for _, e := range old {
		if e.id1 == 0 {
			continue
		}
		i := int(e.tag) & mask
		for x.slots[i].id1 != 0 {
			i = (i + 1) & mask
		}
		x.slots[i] = e
	}
}

// remove deletes ref, reporting whether it was there. The entries after it
// in its probe run shift back over the hole unless that would put one
// before its home slot.
func (x *refIndex) remove(ref syncnode.BlobRef, items *slab) bool {
	i, ok := x.find(ref, items)
	if !ok {
		return false
	}
	mask := len(x.slots) - 1
	for j := (i + 1) & mask; x.slots[j].id1 != 0; j = (j + 1) & mask {
		home := int(x.slots[j].tag) & mask
		// Entry j may fill hole i if its home is not cyclically in (i, j].
		if (i <= j && (home <= i || home > j)) || (i > j && home <= i && home > j) {
			x.slots[i] = x.slots[j]
			i = j
		}
	}
	x.slots[i] = entry{}
	x.n--
	if x.n == 0 {
		x.slots = nil
	} else if 8*x.n < len(x.slots) && len(x.slots) > minSlots {
		x.resize(len(x.slots) / 2)
	}
	return true
}

// ids calls fn with every indexed slab id.
func (x *refIndex) ids(fn func(int32)) {
	for _, e := range x.slots {
		if e.id1 != 0 {
			fn(e.id1 - 1)
		}
	}
}

// slab holds the queue's items in fixed-size chunks, so that growing it
// never copies or clears what it holds.
type slab struct {
	chunks [][]item
	n      int32
}

// chunkBits sets a chunk's size: 4096 items, 192 KiB.
const chunkBits = 12

func (s *slab) at(id int32) *item { return &s.chunks[id>>chunkBits][id&(1<<chunkBits-1)] }

// add returns the id of a new zero item.
func (s *slab) add() int32 {
	if int(s.n)>>chunkBits == len(s.chunks) {
		s.chunks = append(s.chunks, make([]item, 1<<chunkBits))
	}
	s.n++
	return s.n - 1
}
