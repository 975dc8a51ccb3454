package retrieval

import (
	"context"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
)

// gate admits at most a fixed number of fetches at once; waiting fetches
// are admitted most urgent first, then in arrival order.
type gate struct {
	mu      sync.Mutex
	free    int
	seq     uint64
	waiting []*waiter
}

type waiter struct {
	urgency int
	seq     uint64
	ready   chan struct{}
}

func newGate(n int) *gate { return &gate{free: n} }

// acquire waits for a slot; it fails only when ctx ends.
func (g *gate) acquire(ctx context.Context, urgency int) error {
	g.mu.Lock()
	if g.free > 0 && len(g.waiting) == 0 {
		g.free--
		g.mu.Unlock()
		return nil
	}
	w := &waiter{urgency: urgency, seq: g.seq, ready: make(chan struct{})}
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
		if w.urgency > b.urgency || (w.urgency == b.urgency && w.seq < b.seq) {
			best = i
		}
	}
	w := g.waiting[best]
	g.waiting = append(g.waiting[:best], g.waiting[best+1:]...)
	close(w.ready)
}

// holderSlots bounds the background fetches one likely holder serves at
// once, so that a holder that serves slowly (dripping bytes just above the
// stall limit) holds a few fetch places, never all of them.
type holderSlots struct {
	mu   sync.Mutex
	per  int
	used map[peer.ID]int
	// freed is closed (and replaced) whenever a slot is released.
	freed chan struct{}
}

func newHolderSlots(per int) *holderSlots {
	return &holderSlots{per: max(per, 1), used: map[peer.ID]int{}, freed: make(chan struct{})}
}

// acquire waits for one of p's slots; it fails only when ctx ends.
func (h *holderSlots) acquire(ctx context.Context, p peer.ID) (release func(), err error) {
	for {
		h.mu.Lock()
		freed := h.freed
		h.mu.Unlock()
		if release, ok := h.tryAcquire(p); ok {
			return release, nil
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// tryAcquire takes one of p's slots if one is free.
func (h *holderSlots) tryAcquire(p peer.ID) (release func(), ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.used[p] >= h.per {
		return nil, false
	}
	h.used[p]++
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.used[p]--; h.used[p] == 0 {
			delete(h.used, p)
		}
		close(h.freed)
		h.freed = make(chan struct{})
	}, true
}
