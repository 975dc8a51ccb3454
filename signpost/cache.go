package signpost

import (
	"container/list"
	"maps"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
)

// CacheSize is how many decoded signposts a Store keeps in memory, the
// most recently used: a blob's signpost is read again and again while a
// row naming it is received, discovered and served, and decoding it from
// the database costs more than the rest of that work together. A decoded
// signpost with its maps takes about a kilobyte: the cache holds the
// blobs being worked on, not a library.
const CacheSize = 4096

// cache is a bounded least-recently-used map of decoded signposts.
// Writers of a ref hold its stripe lock from their read in the database
// to the cache's update, and so does a read that misses: the cache never
// keeps a value older than the database's.
type cache struct {
	mu      sync.Mutex
	entries map[syncnode.BlobRef]*list.Element
	order   list.List // front: the most recently used
	size    int
	stripes [64]sync.Mutex
}

type cached struct {
	ref syncnode.BlobRef
	sp  Signpost
}

// lock takes ref's stripe lock and returns its unlock.
func (c *cache) lock(ref syncnode.BlobRef) func() {
	h := ref.Hash()
	m := &c.stripes[h[0]%byte(len(c.stripes))]
	m.Lock()
	return m.Unlock
}

// lockAll takes the stripe locks of refs, each once, in ascending order,
// and returns their unlock.
func (c *cache) lockAll(refs []syncnode.BlobRef) func() {
	var taken [len(cache{}.stripes)]bool
	for _, ref := range refs {
		h := ref.Hash()
		taken[h[0]%byte(len(c.stripes))] = true
	}
	for i, t := range taken {
		if t {
			c.stripes[i].Lock()
		}
	}
	return func() {
		for i, t := range taken {
			if t {
				c.stripes[i].Unlock()
			}
		}
	}
}

// get returns a copy of ref's cached signpost.
func (c *cache) get(ref syncnode.BlobRef) (Signpost, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[ref]
	if !ok {
		return Signpost{}, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*cached).sp.clone(), true
}

// put caches a copy of sp as ref's signpost; ref's stripe lock is held.
func (c *cache) put(ref syncnode.BlobRef, sp Signpost) {
	sp = sp.clone()
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[ref]; ok {
		e.Value.(*cached).sp = sp
		c.order.MoveToFront(e)
		return
	}
	if c.entries == nil {
		c.entries = map[syncnode.BlobRef]*list.Element{}
	}
	c.entries[ref] = c.order.PushFront(&cached{ref, sp})
	if c.order.Len() > c.size {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.entries, last.Value.(*cached).ref)
	}
}

// clone returns a copy of sp that shares nothing with it.
func (sp Signpost) clone() Signpost {
	out := sp
	if sp.Locations != nil {
		out.Locations = make(map[peer.ID]Location, len(sp.Locations))
		for p, l := range sp.Locations {
			l.Addrs = slices.Clone(l.Addrs)
			out.Locations[p] = l
		}
	}
	out.SgIDs = maps.Clone(sp.SgIDs)
	return out
}
