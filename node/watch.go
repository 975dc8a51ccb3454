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
// than the node keeps events (Config.FeedRetain), feed.ErrBadMarker for
// a marker that is not one of this node's for g and o.Prefix.
//
// Events are read from the node's database as the loop asks for them, and
// only once on stable storage: a watcher that reads slowly holds no
// memory and slows nothing else, and a power cut takes back nothing a
// watcher saw. The loop may call Close.
func (n *Node) Watch(ctx context.Context, g syncnode.GroupID, o WatchOptions) iter.Seq2[Event, error] {
	if g == "" {
		return func(yield func(Event, error) bool) {
			yield(Event{}, fmt.Errorf("node: watch: %w", syncnode.ErrNotFound))
		}
	}
	return n.watch(ctx, g, o)
}

// WatchAll follows the changes of every group, from o.From or from now
// (there is no replay); o.Prefix limits rows as in Watch.
func (n *Node) WatchAll(ctx context.Context, o WatchOptions) iter.Seq2[Event, error] {
	if o.From == "" {
		o.Now = true
	}
	return n.watch(ctx, "", o)
}

// CheckWatch reports whether a watch of g (every group if empty) with o
// would start: the group is known and the marker good.
func (n *Node) CheckWatch(g syncnode.GroupID, o WatchOptions) error {
	if g != "" {
		if _, err := n.sync.Spec(g); err != nil {
			return fmt.Errorf("node: watch: %w", err)
		}
	} else if o.From == "" {
		o.Now = true
	}
	if o.Now && o.From == "" {
		return nil
	}
	return n.feed.Check(g, o)
}

func (n *Node) watch(ctx context.Context, g syncnode.GroupID, o WatchOptions) iter.Seq2[Event, error] {
	if o.Now && o.From == "" {
		// From this call, not from the first pull of the iterator.
		o.From = n.feed.Now(g, o.Prefix)
	}
	return func(yield func(Event, error) bool) {
		if err := n.CheckWatch(g, o); err != nil {
			yield(Event{}, err)
			return
		}
		// The watch holds no slot of the node's: its reads take one each
		// (see feed.Config.Enter), and it ends when Close begins.
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(n.ctx, cancel)()
		for e, err := range n.feed.Watch(ctx, g, o) {
			if n.ctx.Err() != nil {
				break
			}
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

// collected records in the feed that ref was collected in g, and takes
// it out of the server fetcher's queue if no group wants it here.
func (n *Node) collected(ref syncnode.BlobRef, g syncnode.GroupID, deleted bool) {
	if len(n.book.GroupsOf(ref)) == 0 {
		n.disc.Queue().Drop(ref)
	}
	if err := n.feed.Blob(feed.BlobCollected, ref, 0, []syncnode.GroupID{g}, ""); err != nil {
		n.log.Error("blob event not recorded", "blob", ref, "err", err)
	}
}

// enterRead starts a read of the database that Close waits for.
func (n *Node) enterRead() (func(), error) {
	_, done, err := n.call(context.Background())
	return done, err
}
