package node

import (
	"context"
	"fmt"
	"iter"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/feed"
)

// Event is one change in a group as Watch delivers it: a row, a member,
// a blob or its shares (see package feed).
type Event = feed.Event

// WatchOptions shape a watch: where it resumes, and which rows it shows.
type WatchOptions = feed.Options

// Marker resumes a watch just after the event that carried it.
type Marker = feed.Marker

// Watch returns the changes of group g in commit order: rows put and
// deleted (here or by members), members joined, left and ejected, blobs
// put, fetched and dropped here, servers that took a blob, and shares
// moved in or out. From the zero marker it replays the group's current
// state first, ending with a CaughtUp event. It runs until ctx ends or
// the node closes (then it yields ErrClosed), and yields an error last
// if it fails: feed.ErrExpired for a watcher that fell further behind
// than the node keeps events (Config.FeedRetain).
//
// Events are read from the node's database as the loop asks for them: a
// watcher that reads slowly holds no memory and slows nothing else.
func (n *Node) Watch(ctx context.Context, g syncnode.GroupID, o WatchOptions) iter.Seq2[Event, error] {
	if o.Now && o.From == "" {
		// From this call, not from the first pull of the iterator.
		o.From = n.feed.Now()
	}
	return func(yield func(Event, error) bool) {
		ctx, done, err := n.call(ctx)
		if err != nil {
			yield(Event{}, err)
			return
		}
		defer done()
		if _, err := n.sync.Spec(g); err != nil {
			yield(Event{}, fmt.Errorf("node: watch: %w", err))
			return
		}
		for e, err := range n.feed.Watch(ctx, g, o) {
			if !yield(e, err) || err != nil {
				return
			}
		}
		if n.ctx.Err() != nil {
			yield(Event{}, ErrClosed)
		}
	}
}

// blobEvent records a blob event in the feed.
func (n *Node) blobEvent(kind feed.Kind, ref syncnode.BlobRef, size int64, p peer.ID) {
	if err := n.feed.Blob(kind, ref, size, n.book.GroupsOf(ref), p); err != nil {
		n.log.Error("blob event not recorded", "blob", ref, "kind", kind, "err", err)
	}
}

// sharesMoved records shares that moved in the feed: in from p, or out
// to p, which is a copy on a server when p is a server of g.
func (n *Node) sharesMoved(ref syncnode.BlobRef, g syncnode.GroupID, p peer.ID, count int, in bool) {
	kind := feed.SharesOut
	if in {
		kind = feed.SharesIn
	}
	err := n.feed.Shares(kind, ref, g, count, p)
	if err == nil && !in && n.book.IsServerMember(p, []syncnode.GroupID{g}) {
		err = n.feed.Blob(feed.ServerCopy, ref, 0, []syncnode.GroupID{g}, p)
	}
	if err != nil {
		n.log.Error("share event not recorded", "blob", ref, "group", g, "err", err)
	}
}

// pruneFeed drops the events beyond the feed's retention, every minute.
func (n *Node) pruneFeed() {
	for n.work.Sleep(feedPrunePeriod) {
		if err := n.feed.Prune(); err != nil {
			n.log.Error("feed not pruned", "err", err)
		}
	}
}
