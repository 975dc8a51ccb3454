package node

import (
	"context"
	"sync"
)

// gate admits at most a fixed number of fetches at once; waiting fetches
// are admitted highest priority first, then in arrival order.
type gate struct {
	mu      sync.Mutex
	free    int
	seq     uint64
	waiting []*waiter
}

type waiter struct {
	prio  int
	seq   uint64
	ready chan struct{}
}

func newGate(n int) *gate { return &gate{free: n} }

// acquire waits for a slot; it fails only when ctx ends.
func (g *gate) acquire(ctx context.Context, prio int) error {
	g.mu.Lock()
	if g.free > 0 && len(g.waiting) == 0 {
		g.free--
		g.mu.Unlock()
		return nil
	}
	w := &waiter{prio: prio, seq: g.seq, ready: make(chan struct{})}
	g.seq++
	g.waiting = append(g.waiting, w)
	g.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		g.mu.Lock()
		defer g.mu.Unlock()
		for i, x := range g.waiting {
			if x == w {
				g.waiting = append(g.waiting[:i], g.waiting[i+1:]...)
				return ctx.Err()
			}
		}
		// Admitted just as ctx ended: hand the slot on.
		g.releaseLocked()
		return ctx.Err()
	}
}

// release frees a slot, admitting the best waiter.
func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseLocked()
}

func (g *gate) releaseLocked() {
	if len(g.waiting) == 0 {
		g.free++
		return
	}
	best := 0
	for i, w := range g.waiting {
		b := g.waiting[best]
		if w.prio > b.prio || (w.prio == b.prio && w.seq < b.seq) {
			best = i
		}
	}
	w := g.waiting[best]
	g.waiting = append(g.waiting[:best], g.waiting[best+1:]...)
	close(w.ready)
}
