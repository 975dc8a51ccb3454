package blobproto

import (
	"errors"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// errBusy reports an upload refused for want of a slot or a queue place.
var errBusy = errors.New("blobproto: busy")

// fairSlots shares upload slots among peers: one peer runs at most perPeer
// uploads at once and keeps at most perPeerQueued waiting, so the rest
// stay open to others; a freed slot goes to the waiting peer that runs the
// fewest uploads, the longest-waiting request first among equals.
type fairSlots struct {
	max, perPeer, maxQueued, perPeerQueued int

	mu      sync.Mutex
	running int
	queued  int
	seq     uint64
	peers   map[peer.ID]*peerSlots
}

type peerSlots struct {
	running int
	waiting []*slotWaiter
}

type slotWaiter struct {
	seq     uint64
	granted chan struct{}
}

func newFairSlots(max, perPeer, maxQueued, perPeerQueued int) *fairSlots {
	return &fairSlots{max: max, perPeer: max1(perPeer), maxQueued: maxQueued, perPeerQueued: perPeerQueued,
		peers: map[peer.ID]*peerSlots{}}
}

func max1(n int) int { return max(n, 1) }

func (f *fairSlots) peer(p peer.ID) *peerSlots {
	ps := f.peers[p]
	if ps == nil {
		ps = &peerSlots{}
		f.peers[p] = ps
	}
	return ps
}

// acquire takes a slot for p, waiting up to wait in the queue; errBusy if
// the queue (or p's share of it) is full or the wait ends first.
func (f *fairSlots) acquire(p peer.ID, wait time.Duration) error {
	f.mu.Lock()
	ps := f.peer(p)
	if f.running < f.max && ps.running < f.perPeer && len(ps.waiting) == 0 {
		f.running++
		ps.running++
		f.mu.Unlock()
		return nil
	}
	if f.queued >= f.maxQueued || len(ps.waiting) >= f.perPeerQueued {
		f.forget(p, ps)
		f.mu.Unlock()
		return errBusy
	}
	f.seq++
	w := &slotWaiter{seq: f.seq, granted: make(chan struct{})}
	ps.waiting = append(ps.waiting, w)
	f.queued++
	f.mu.Unlock()

	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-w.granted:
		return nil
	case <-t.C:
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-w.granted: // granted as the wait ended: keep it
		return nil
	default:
	}
	for i, x := range ps.waiting {
		if x == w {
			ps.waiting = append(ps.waiting[:i], ps.waiting[i+1:]...)
			f.queued--
			break
		}
	}
	f.forget(p, ps)
	return errBusy
}

// tryAcquire takes a slot for p only if one is free at once and no
// request of p's waits.
func (f *fairSlots) tryAcquire(p peer.ID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	ps := f.peer(p)
	if f.running < f.max && ps.running < f.perPeer && len(ps.waiting) == 0 {
		f.running++
		ps.running++
		return true
	}
	f.forget(p, ps)
	return false
}

// release returns p's slot and hands it on.
func (f *fairSlots) release(p peer.ID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ps := f.peer(p)
	ps.running--
	f.running--
	f.forget(p, ps)
	f.grant()
}

// grant hands free slots to waiters: each time to the peer with the fewest
// running uploads (below perPeer), its oldest request first.
func (f *fairSlots) grant() {
	for f.running < f.max {
		var best *peerSlots
		for _, ps := range f.peers {
			if len(ps.waiting) == 0 || ps.running >= f.perPeer {
				continue
			}
			if best == nil || ps.running < best.running ||
				(ps.running == best.running && ps.waiting[0].seq < best.waiting[0].seq) {
				best = ps
			}
		}
		if best == nil {
			return
		}
		w := best.waiting[0]
		best.waiting = best.waiting[1:]
		f.queued--
		best.running++
		f.running++
		close(w.granted)
	}
}

// forget drops p's record once it runs and waits for nothing.
func (f *fairSlots) forget(p peer.ID, ps *peerSlots) {
	if ps.running == 0 && len(ps.waiting) == 0 {
		delete(f.peers, p)
	}
}

// counts returns the uploads running and waiting.
func (f *fairSlots) counts() (running, queued int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.running, f.queued
}
