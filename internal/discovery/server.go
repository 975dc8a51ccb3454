package discovery

import (
	"context"
	"errors"
	"fmt"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/fetcher"
	"github.com/syncnode/syncnode/internal/retrieval"
	"github.com/syncnode/syncnode/signpost"
)

// The server fetcher: what a server lacks of its groups' blobs, queued
// and fetched, the shares taken from the devices that hold them.

// balanceTries is how many attempts a server with no room left spends
// looking for other servers' copies of a blob before it fetches the blob
// anyway: a copy too many, never one too few.
const balanceTries = 3

// full reports a server with no room left.
func (d *Discovery) full() bool { return d.room != nil && !d.room() }

// attemptsOf returns the server fetcher's attempts at ref so far.
func (d *Discovery) attemptsOf(ref syncnode.BlobRef) int {
	a, err := d.journal.Attempt(ref)
	if err != nil {
		return 0
	}
	return a.Count
}

// attempt is the server fetcher's attempt at ref: fetch it if not held,
// then take the shares of the devices that hold it. An attempt that could
// not ask every such device fails, to be retried after the backoff. A
// server with no room left fetches no blob that enough other servers
// hold, and looks for them a few times before it fetches one.
func (d *Discovery) attempt(ctx context.Context, ref syncnode.BlobRef, try *fetcher.Try) error {
	switch balanced, err := d.handoffs.Balanced(ctx, ref); {
	case balanced:
		d.log.Info("not fetched: this server has no room left, and enough other servers hold the blob", "blob", ref)
		return nil
	case d.full() && d.attemptsOf(ref) < balanceTries:
		// Another server may hold it and not be known to yet: one that
		// has just joined knows few copies, and a server that has not
		// heard of its membership says "not held" to it. Look again
		// after the backoff before taking a copy the group may not need.
		why := "no other server is known to hold it yet"
		if err != nil {
			why = err.Error()
		}
		return fmt.Errorf("discovery: this server has no room left and looks for other copies before fetching (%s)", why)
	}
	d.attempts.Add(1)
	res, err := d.fetchAndTake(ctx, ref, try.Release)
	try.Tried, try.Holders = peerStrings(res.Tried), peerStrings(res.Holders)
	if errors.Is(err, fetcher.ErrBusy) {
		return err // not an attempt: nothing counted
	}
	if err != nil && ctx.Err() == nil {
		d.failures.Add(1)
	}
	return err
}

// fetchAndTake fetches ref in the background and takes its shares; it
// returns what the fetch tried and found.
func (d *Discovery) fetchAndTake(ctx context.Context, ref syncnode.BlobRef, release func()) (retrieval.Result, error) {
	res, err := d.retr.Fetch(ctx, ref, retrieval.Request{Urgency: retrieval.UrgencyBackground, Background: true})
	if err != nil {
		return res, err
	}
	// The bytes are here: a holder slow to hand over its shares holds up
	// this blob's attempt, not the fetches of the blobs queued behind it.
	release()
	return res, d.handoffs.TakeShares(ctx, ref, res.Holders, true)
}

// scan queues every blob whose signpost names a group where this node is a
// server and that this node lacks — or holds without shares in such a
// group and without a finished attempt, as when a stop cut the share
// transfer short: the safety net behind the queueing done as rows arrive.
func (d *Discovery) scan(ctx context.Context) error {
	want, err := d.serverWork(ctx, func(syncnode.BlobRef) bool { return true })
	for _, ref := range want {
		d.fetcher.Enqueue(ref)
	}
	if d.afterScan != nil {
		d.afterScan()
	}
	return err
}

// serverWork returns the blobs that pass keep and that this node,
// a server in one of their groups, lacks or has not taken shares of.
func (d *Discovery) serverWork(ctx context.Context, keep func(syncnode.BlobRef) bool) ([]syncnode.BlobRef, error) {
	// A node that is a server in none of its groups has no such blob: it
	// reads no signpost (a phone with a large library scans nothing).
	if !d.book.IsServerIn(d.book.Groups()) {
		return nil, nil
	}
	var want []syncnode.BlobRef
	err := d.signposts.Scan(func(ref syncnode.BlobRef, sp signpost.Signpost) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		// keep last: at open it reads the blob's attempt record, which
		// most blobs of a server, held and settled, need not.
		if d.book.IsServerIn(sp.Groups()) && (!d.holds(ref) || d.sharesUnsettled(ref, sp.Groups())) && keep(ref) {
			want = append(want, ref)
		}
		return nil
	})
	return want, err
}

// Requeue puts back in the fetcher's queue, at open, the blobs whose
// attempts failed before the node stopped, each due after the backoff of
// its persisted attempt count: why shows them queued from the start, and
// the count keeps governing their retries. Blobs never attempted wait for
// the first scan or for a sync that brings news of them, so that a node
// just started does not spend attempts before it has met its peers.
func (d *Discovery) Requeue() error {
	want, err := d.serverWork(d.ctx, func(ref syncnode.BlobRef) bool {
		a, err := d.journal.Attempt(ref)
		return err == nil && a.Count > 0
	})
	for _, ref := range want {
		if err := d.fetcher.Enqueue(ref); err != nil {
			return err
		}
	}
	return err
}

// sharesUnsettled reports whether this node, holding ref, has no shares in
// a group of groups where it is a server, and no attempt of its server
// fetcher at ref has finished.
func (d *Discovery) sharesUnsettled(ref syncnode.BlobRef, groups []syncnode.GroupID) bool {
	if e, ok := d.journal.Read(ref); ok && e.Done {
		return false
	}
	sh, err := d.ledger.Shares(ref)
	if err != nil {
		return false
	}
	for _, g := range groups {
		if dev, ok := d.groups.DevType(g); ok && dev == syncnode.Server && sh[g] == 0 {
			return true
		}
	}
	return false
}
