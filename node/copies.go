package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/shares"
	"github.com/syncnode/syncnode/signpost"
)

// copies is the node as the share service sees its blobs.
type copies struct{ n *Node }

var _ shares.Copies = copies{}

func (c copies) Holds(ref syncnode.BlobRef) bool { return c.n.holds(ref) }

func (c copies) WithCopy(ref syncnode.BlobRef, fn func(held bool) error) error {
	return c.n.withCopy(ref, fn)
}

func (c copies) Open(ref syncnode.BlobRef) (shares.Blob, error) { return c.n.store.Open(ref) }

// withCopy runs fn with ref locked against deletion, held saying whether
// this node holds it verified.
func (n *Node) withCopy(ref syncnode.BlobRef, fn func(held bool) error) error {
	unlock := n.custody.Lock(ref)
	defer unlock()
	return fn(n.holds(ref))
}

// grantCreator grants this node the creator's shares of ref in each of
// groups it is a member of, if it holds the blob: as the blob's origin in
// every group, otherwise only in the groups where introduced says its own
// row brought the ref in. It runs whichever comes second, the row or the
// bytes, and again at open, so the origin's copy is pinned before any
// signpost makes it evictable.
func (n *Node) grantCreator(ref syncnode.BlobRef, groups []syncnode.GroupID, introduced func(syncnode.GroupID) bool) error {
	return n.withCopy(ref, func(held bool) error {
		if !held {
			return nil
		}
		var errs []error
		for _, g := range groups {
			if !n.sync.IsMember(n.h.ID(), g) {
				continue
			}
			granted, err := n.ledger.GrantCreator(ref, g, introduced != nil && introduced(g))
			if err != nil {
				errs = append(errs, err)
			}
			if granted {
				n.log.Info("creator shares granted", "blob", ref, "group", g)
			}
		}
		if rec, err := n.ledger.Recovered(ref); err == nil && rec {
			n.reclaims.add(ref)
		}
		return errors.Join(errs...)
	})
}

// grantHeld grants the creator's shares of a held blob in the groups its
// signpost names: after a put, and at open for every held blob, since a
// stop may fall between storing the bytes and granting.
func (n *Node) grantHeld(ref syncnode.BlobRef) error {
	sp, err := n.signposts.Get(ref)
	if errors.Is(err, syncnode.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return n.grantCreator(ref, sp.Groups(), nil)
}

// checkOwnership runs at open: held blobs get the creator's shares a stop
// cut short, and shares of a blob with no verified copy here (I3 broken by
// a lost or damaged copy) are reported and the copy is restored.
func (n *Node) checkOwnership() error {
	var errs []error
	err := n.blobs.List(func(i blobstore.Info) error {
		if err := n.grantHeld(i.Ref); err != nil {
			errs = append(errs, err)
		}
		return nil
	})
	errs = append(errs, err)
	err = n.ledger.Scan(func(ref syncnode.BlobRef, sh map[syncnode.GroupID]int) error {
		if !n.holds(ref) {
			n.log.Error("shares held without a verified copy; restoring the copy", "blob", ref, "shares", sh)
			n.custody.Restore(ref)
		}
		return nil
	})
	return errors.Join(append(errs, err)...)
}

// newGroups returns the groups of gs that ref's signpost does not name yet.
func newGroups(sp signpost.Signpost, gs []syncnode.GroupID) []syncnode.GroupID {
	var out []syncnode.GroupID
	for _, g := range gs {
		if _, ok := sp.SgIDs[g]; !ok {
			out = append(out, g)
		}
	}
	return slices.Clip(out)
}

// Holding returns, consistently, whether this node holds ref verified and
// its shares of it by group: both are read under the lock that deleting a
// copy and accepting shares take, so they describe one instant.
func (n *Node) Holding(ref syncnode.BlobRef) (held bool, shares map[syncnode.GroupID]int, err error) {
	err = n.withCopy(ref, func(h bool) error {
		held = h
		var err error
		shares, err = n.ledger.Shares(ref)
		return err
	})
	return held, shares, err
}

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
func (n *Node) runReclaims() {
	for {
		ref, ok, wait, wake := n.reclaims.due(time.Now())
		if ok {
			n.reclaims.done(ref, n.reclaim(ref) != nil, time.Now())
			continue
		}
		var timer *time.Timer
		var fire <-chan time.Time
		if wait >= 0 {
			timer = time.NewTimer(wait)
			fire = timer.C
		}
		select {
		case <-n.ctx.Done():
		case <-wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if n.ctx.Err() != nil {
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
func (n *Node) reclaim(ref syncnode.BlobRef) error {
	orphaned, err := n.orphanedIn(ref)
	if err == nil {
		var granted []syncnode.GroupID
		if granted, err = n.ledger.Reclaim(ref, orphaned); err == nil {
			note := "held when the database was lost; another member keeps its shares"
			if len(granted) > 0 {
				note = fmt.Sprintf("held when the database was lost; no member keeps its shares in %v, kept for them here", granted)
			}
			n.noteHandoff(ref, note)
			n.log.Info("recovered blob reclaimed", "blob", ref, "granted in", granted)
			return nil
		}
	}
	n.log.Info("recovered blob not reclaimed yet", "blob", ref, "err", err)
	return err
}

// orphanedIn returns the groups of ref's signpost, this node a member,
// where no other member keeps shares of ref; an error if one of them did
// not answer.
func (n *Node) orphanedIn(ref syncnode.BlobRef) ([]syncnode.GroupID, error) {
	sp, err := n.signposts.Get(ref)
	if err != nil {
		return nil, err
	}
	var out []syncnode.GroupID
	for _, g := range sp.Groups() {
		if !n.sync.IsMember(n.h.ID(), g) {
			continue
		}
		kept := false
		for _, m := range n.Members(g) {
			if m.Peer == n.h.ID() {
				continue
			}
			ctx, cancel := context.WithTimeout(n.ctx, n.cfg.IOTimeout)
			keeps, refused, err := n.shares.KeepsOrRefused(ctx, m.Peer, []shares.Item{{Ref: ref, Group: g}})
			cancel()
			if err == nil && refused[0] {
				// Not yet knowing this node a member again, say.
				err = errors.New("refused")
			}
			if err != nil {
				return nil, fmt.Errorf("node: does %s keep shares of %s: %w", m.Peer, ref, err)
			}
			kept = kept || keeps[0]
		}
		if !kept {
			out = append(out, g)
		}
	}
	return out, nil
}
