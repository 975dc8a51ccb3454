package handoff

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/shares"
)

// reclaimQueue holds the recovered blobs waiting for reclaim, each with
// when to try it next: one worker takes them in turn, so that a store of
// many recovered blobs costs neither a goroutine each nor a flood of
// requests.
type reclaimQueue struct {
	mu      sync.Mutex
	pending map[syncnode.BlobRef]reclaimTry
	wake    chan struct{}
}

type reclaimTry struct {
	next  time.Time
	delay time.Duration
}

// add queues ref, to be tried now unless it is queued already.
func (q *reclaimQueue) add(ref syncnode.BlobRef) {
	q.mu.Lock()
	if q.pending == nil {
		q.pending, q.wake = map[syncnode.BlobRef]reclaimTry{}, make(chan struct{}, 1)
	}
	if _, ok := q.pending[ref]; !ok {
		q.pending[ref] = reclaimTry{}
	}
	wake := q.wake
	q.mu.Unlock()
	select {
	case wake <- struct{}{}:
	default:
	}
}

// due returns a blob whose try is due, or how long until the next one
// (zero and false when none waits), and the channel that signals adds.
func (q *reclaimQueue) due(now time.Time) (ref syncnode.BlobRef, ok bool, wait time.Duration, wake <-chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.pending == nil {
		q.pending, q.wake = map[syncnode.BlobRef]reclaimTry{}, make(chan struct{}, 1)
	}
	wait = -1
	for r, t := range q.pending {
		if !t.next.After(now) {
			return r, true, 0, q.wake
		}
		if d := t.next.Sub(now); wait < 0 || d < wait {
			wait = d
		}
	}
	return ref, false, wait, q.wake
}

// done ends ref's reclaim, or (failed) sets its next try after a delay
// doubling from a second to a minute.
func (q *reclaimQueue) done(ref syncnode.BlobRef, failed bool, now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !failed {
		delete(q.pending, ref)
		return
	}
	t := q.pending[ref]
	t.delay = min(max(2*t.delay, time.Second), time.Minute)
	t.next = now.Add(t.delay)
	q.pending[ref] = t
}

// runReclaims settles, one at a time, the shares of the blobs this node
// held when its database was lost (see reclaim).
func (h *Handoffs) runReclaims() {
	for {
		ref, ok, wait, wake := h.reclaims.due(time.Now())
		if ok {
			h.reclaims.done(ref, h.reclaim(ref) != nil, time.Now())
			continue
		}
		var timer *time.Timer
		var fire <-chan time.Time
		if wait >= 0 {
			timer = time.NewTimer(wait)
			fire = timer.C
		}
		select {
		case <-h.ctx.Done():
		case <-wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if h.ctx.Err() != nil {
			return
		}
	}
}

// reclaim settles the shares of a blob this node held when its database
// was lost. It asks every other member of each group the signpost names
// whether it keeps shares of the blob there; where none does, the
// group's shares were here and are taken back (the copy is pinned until
// then), and where one does, this node takes none: a server that lost
// its database never counts shares twice. A member that does not answer
// holds the reclaim back (the caller tries again later).
func (h *Handoffs) reclaim(ref syncnode.BlobRef) error {
	orphaned, err := h.orphanedIn(ref)
	if err == nil {
		var granted []syncnode.GroupID
		if granted, err = h.ledger.Reclaim(ref, orphaned); err == nil {
			note := "held when the database was lost; another member keeps its shares"
			if len(granted) > 0 {
				note = fmt.Sprintf("held when the database was lost; no member keeps its shares in %v, kept for them here", granted)
			}
			h.note(ref, note)
			h.log.Info("recovered blob reclaimed", "blob", ref, "granted in", granted)
			return nil
		}
	}
	h.log.Info("recovered blob not reclaimed yet", "blob", ref, "err", err)
	return err
}

// orphanedIn returns the groups of ref's signpost, this node a member,
// where no other member keeps shares of ref; an error if one of them did
// not answer.
func (h *Handoffs) orphanedIn(ref syncnode.BlobRef) ([]syncnode.GroupID, error) {
	sp, err := h.book.Get(ref)
	if err != nil {
		return nil, err
	}
	var out []syncnode.GroupID
	for _, g := range sp.Groups() {
		if !h.groups.IsMember(h.self, g) {
			continue
		}
		kept := false
		for _, m := range h.groups.Members(g) {
			if m.Peer == h.self {
				continue
			}
			ctx, cancel := context.WithTimeout(h.ctx, h.cfg.IOTimeout)
			keeps, refused, err := h.shares.KeepsOrRefused(ctx, m.Peer, []shares.Item{{Ref: ref, Group: g}})
			cancel()
			if err == nil && refused[0] {
				// Not yet knowing this node a member again, say.
				err = errors.New("refused")
			}
			if err != nil {
				return nil, fmt.Errorf("handoff: does %s keep shares of %s: %w", m.Peer, ref, err)
			}
			kept = kept || keeps[0]
		}
		if !kept {
			out = append(out, g)
		}
	}
	return out, nil
}

// Revive is told of a blob that groups collected and a row then named
// again. If this node holds it and no shares of it in one of them, its
// shares are reclaimed as after a lost database: where no member keeps
// shares of it, this node takes the creator's (several holders doing so at once give the group more than
// two, never fewer), and the copy is pinned until the members have
// answered. It reports whether this node holds the blob; if not, the
// caller tells it again once a copy arrives.
func (h *Handoffs) Revive(ref syncnode.BlobRef, groups []syncnode.GroupID) (held bool, err error) {
	marked := false
	err = h.withCopy(ref, func(ok bool) error {
		held = ok
		if !ok {
			return nil
		}
		marked, err = h.ledger.Revive(ref, groups)
		return err
	})
	if marked && err == nil {
		h.log.Info("blob named again after its collection: its shares are reclaimed", "blob", ref)
		h.reclaims.add(ref)
	}
	return held, err
}
