package retrieval

import (
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// How long a holder stays demoted: a liar is banned for liarBan; a holder
// whose transfers stall, truncate or reset is demoted for faultBase,
// doubled with every further fault up to faultMax. A demoted holder is
// asked only when no other holder has the blob.
const (
	liarBan   = time.Hour
	faultBase = 2 * time.Minute
	faultMax  = time.Hour
)

// reputation remembers holders that misbehaved, so that later fetches
// leave them out. It is pure bookkeeping: the caller passes the time.
type reputation struct {
	mu  sync.Mutex
	bad map[peer.ID]strike
}

type strike struct {
	liar   bool
	faults int
	until  time.Time
}

// lied bans p: it sent bytes that did not verify.
func (r *reputation) lied(p peer.ID, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.bad[p]
	s.liar, s.until = true, now.Add(liarBan)
	r.set(p, s)
}

// faulted demotes p: its transfer stalled, truncated or reset.
func (r *reputation) faulted(p peer.ID, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.bad[p]
	s.faults++
	until := now.Add(min(faultBase<<min(s.faults-1, 10), faultMax))
	if until.After(s.until) {
		s.until = until
	}
	r.set(p, s)
}

// served clears a demotion for faults after p served a whole blob; a ban
// for lying stays until it ends.
func (r *reputation) served(p peer.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.bad[p]; ok && !s.liar {
		delete(r.bad, p)
	}
}

func (r *reputation) set(p peer.ID, s strike) {
	if r.bad == nil {
		r.bad = map[peer.ID]strike{}
	}
	r.bad[p] = s
}

// rank orders holders for a fetch: liars whose ban runs are left out;
// holders demoted for faults are left out too while any other holder
// remains, else kept. Order is otherwise preserved. good reports whether
// any holder in good standing remains.
func (r *reputation) rank(holders []peer.ID, now time.Time) (ranked []peer.ID, good bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var fine, demoted []peer.ID
	for _, p := range holders {
		s, ok := r.bad[p]
		switch {
		case !ok || !now.Before(s.until):
			fine = append(fine, p)
		case !s.liar:
			demoted = append(demoted, p)
		}
	}
	if len(fine) == 0 {
		return demoted, false
	}
	return fine, true
}

// demoted lists the holders demoted or banned at now.
func (r *reputation) demoted(now time.Time) []peer.ID {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []peer.ID
	for p, s := range r.bad {
		if now.Before(s.until) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}
