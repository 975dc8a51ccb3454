package retrieval

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// How long a peer's returns start no retries after one that did, while the
// peer serves nothing: returnBase, doubled after every further such
// return, up to returnMax.
const (
	returnBase = 10 * time.Second
	returnMax  = time.Hour
)

// returns paces the retries that a peer's return starts (see holderBack).
// A return that retries the fetches waiting on a peer is followed by a
// pause in which its returns start nothing, ended as soon as the peer
// serves a blob: a holder that comes back and serves is acted on at every
// return, while a member that connects and disconnects over and over and
// serves nothing cannot make a server retry every blob it names at each
// connection — its pause doubles each time. The fetches' own backoff goes
// on regardless. It is pure bookkeeping: the caller passes the time.
type returns struct {
	mu sync.Mutex
	m  map[peer.ID]returnState
}

// returnState is a peer's pacing. A peer has one only after a return of
// it retried fetches and while it has served nothing since.
type returnState struct {
	// next is when p's returns start retries again.
	next time.Time
	// fails counts the returns before the last that retried fetches
	// which p then served none of.
	fails int
}

// may reports whether p's return at now may retry the fetches waiting on
// it.
func (r *returns) may(p peer.ID, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !now.Before(r.m[p].next)
}

// retried records that p's return at now retried fetches.
func (r *returns) retried(p peer.ID, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[peer.ID]returnState{}
	}
	s, seen := r.m[p]
	if seen {
		s.fails++
	}
	s.next = now.Add(min(returnBase<<min(s.fails, 20), returnMax))
	r.m[p] = s
}

// servedBy records that p served a blob: its next return is acted on.
func (r *returns) servedBy(p peer.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, p)
}

// arrivals tells waiting fetches that a peer connected: a holder that was
// gone may be back. wait returns a channel closed at the next connection.
type arrivals struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns a channel that is closed when the next peer connects.
func (a *arrivals) wait() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ch == nil {
		a.ch = make(chan struct{})
	}
	return a.ch
}

// arrived wakes everyone waiting.
func (a *arrivals) arrived() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ch != nil {
		close(a.ch)
		a.ch = nil
	}
}
