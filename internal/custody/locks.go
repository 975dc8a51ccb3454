package custody

import (
	"sync"

	"github.com/syncnode/syncnode"
)

// blobLocks serialises, per blob, the steps that must not interleave:
// deleting a copy, and accepting or granting shares of it. With them a
// node never holds shares of a blob whose copy it deleted (I3).
type blobLocks struct {
	mu sync.Mutex
	m  map[syncnode.BlobRef]*blobLock
}

type blobLock struct {
	mu    sync.Mutex
	users int
}

// lock locks ref and returns its unlock.
func (b *blobLocks) lock(ref syncnode.BlobRef) func() {
	b.mu.Lock()
	if b.m == nil {
		b.m = map[syncnode.BlobRef]*blobLock{}
	}
	l := b.m[ref]
	if l == nil {
		l = &blobLock{}
		b.m[ref] = l
	}
	l.users++
	b.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		b.mu.Lock()
		if l.users--; l.users == 0 {
			delete(b.m, ref)
		}
		b.mu.Unlock()
	}
}

// pins counts the work that needs a blob's copy to stay (a hand-off being
// taken, shares being taken after a fetch): eviction skips a pinned blob.
type pins struct {
	mu sync.Mutex
	m  map[syncnode.BlobRef]int
}

func (p *pins) pin(ref syncnode.BlobRef) (unpin func()) {
	p.mu.Lock()
	if p.m == nil {
		p.m = map[syncnode.BlobRef]int{}
	}
	p.m[ref]++
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		if p.m[ref]--; p.m[ref] <= 0 {
			delete(p.m, ref)
		}
		p.mu.Unlock()
	}
}

func (p *pins) pinned(ref syncnode.BlobRef) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[ref] > 0
}
