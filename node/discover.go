package node

import (
	"errors"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/syncer"
	"github.com/syncnode/syncnode/signpost"
	"github.com/syncnode/syncnode/syncgroup"
)

// hooks is the node's part in sync.
type hooks struct{ n *Node }

var _ syncer.Hooks = hooks{}

// Applied records the blob refs of rows a peer sent.
func (h hooks) Applied(g syncnode.GroupID, rows []syncgroup.Row, from peer.ID) {
	h.n.records.Met(g, from)
	if slices.ContainsFunc(rows, func(r syncgroup.Row) bool { return strings.HasPrefix(r.Key, syncgroup.MembershipPrefix) }) {
		h.n.handoffs.MembershipChanged(g)
	}
	for _, r := range rows {
		if r.Deleted {
			continue
		}
		refs, err := syncgroup.FindRefs(r.Value)
		if err != nil {
			h.n.log.Warn("row with a bad blob ref", "group", g, "key", r.Key, "writer", r.Writer, "err", err)
		}
		if len(refs) == 0 {
			continue
		}
		if err := h.n.discover(g, r.Key, r.Writer, from, refs); err != nil {
			h.n.log.Error("signposts not recorded", "group", g, "key", r.Key, "err", err)
		}
	}
}

// Signposts returns what peer to may learn of refs' signposts.
func (h hooks) Signposts(to peer.ID, g syncnode.GroupID, refs []syncnode.BlobRef) []syncer.SignpostEntry {
	var out []syncer.SignpostEntry
	for _, ref := range refs {
		if f, ok := h.n.book.For(to, ref); ok {
			out = append(out, syncer.SignpostEntry{Ref: ref, Signpost: f.ToWire()})
		}
	}
	return out
}

// Learn merges the signposts a member sent and queues, on a server, the
// blobs it lacks.
func (h hooks) Learn(from peer.ID, g syncnode.GroupID, sps []syncer.SignpostEntry) {
	n := h.n
	for _, e := range sps {
		sp, err := e.Signpost.Signpost()
		if err != nil {
			n.log.Info("bad signpost from peer", "peer", from, "group", g, "err", err)
			continue
		}
		if merged, ok := n.book.Merge(from, e.Ref, &sp); ok {
			n.wantIfServer(e.Ref, merged.Groups())
		}
	}
}

// Synced hands blobs off after a round with member p of g: a leaf asks a
// non-leaf, and any device asks a server, to take the blobs of g it holds
// shares of. A device's shares so reach a server within a round of
// meeting one (I6), whoever relayed the row and whoever fetched from whom.
func (h hooks) Synced(g syncnode.GroupID, p peer.ID) {
	h.n.records.Met(g, p)
	h.n.holderBack(p)
	h.n.handoffs.AfterRound(g, p)
}

// Pushed hands blobs off after member p of g took a push of rows from
// this node, as after a round: p is online and a member.
func (h hooks) Pushed(g syncnode.GroupID, p peer.ID) {
	h.n.records.Met(g, p)
	h.n.handoffs.AfterRound(g, p)
}

// holderBack retries at once the server fetcher's queued blobs whose
// signposts name p as a holder (not as a relay), which has just connected
// or completed a round: a holder that returns is not left waiting out a
// backoff earned while it was away. Returns are paced (see returns): one
// whose retries p served none of is followed by a pause in which p's
// returns retry nothing.
func (n *Node) holderBack(p peer.ID) {
	if n.fetcher.Len() == 0 || !n.retr.MayRetry(p) {
		return
	}
	n.goRun(func() {
		var refs []syncnode.BlobRef
		for _, ref := range n.fetcher.Queued(maxRetryScan) {
			if sp, err := n.signposts.Get(ref); err == nil {
				// A peer that only relayed the row holds nothing: its
				// return is no reason to try again.
				if l, ok := sp.Locations[p]; ok && !l.IsProxy {
					refs = append(refs, ref)
				}
			}
		}
		if k := n.fetcher.RetryNow(refs); k > 0 {
			n.retr.Retried(p)
			n.log.Info("holder back: queued fetches retried now", "peer", p, "blobs", k)
		}
	})
}

// maxRetryScan bounds the queued blobs looked at when a holder returns.
const maxRetryScan = 4096

// discover records blob refs found in a row of group g at key, written by
// writer and received from from (this node, for a local write): the groups
// of this node that cover key join the signposts, the writer and the
// sender become locations (the sender as a proxy if it did not write the
// row), the creator that holds the blob grants itself its shares, and a
// server queues the blobs it lacks.
func (n *Node) discover(g syncnode.GroupID, key string, writer, from peer.ID, refs []syncnode.BlobRef) error {
	groups := n.book.Covering(g, key)
	self := n.h.ID()
	var errs []error
	for _, ref := range refs {
		before, err := n.book.Get(ref)
		if err != nil && !errors.Is(err, syncnode.ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		// Shares first: the signpost's groups make a blob evictable, and
		// its origin's copy must be pinned before that. A writer that
		// fetched the blob is granted shares in the groups its row brings
		// the ref into.
		fresh := newGroups(before, groups)
		introduced := func(gg syncnode.GroupID) bool { return writer == self && slices.Contains(fresh, gg) }
		if err := n.handoffs.GrantCreator(ref, groups, introduced); err != nil {
			errs = append(errs, err)
		}
		holds := n.holds(ref)
		if err := n.book.Record(g, groups, writer, from, ref, holds); err != nil {
			errs = append(errs, err)
			continue
		}
		if holds {
			n.announce(ref)
		} else {
			n.wantIfServer(ref, groups)
		}
	}
	return errors.Join(errs...)
}

// announce provides a held blob in the DHT if a public group of this node
// references it (see signposting.Book.Announced).
func (n *Node) announce(ref syncnode.BlobRef) {
	if n.book.Announced(ref) {
		n.reprov.Add(ref)
	}
}

// wantIfServer queues ref in the server fetcher if this node is a server
// in one of groups and lacks the blob.
func (n *Node) wantIfServer(ref syncnode.BlobRef, groups []syncnode.GroupID) {
	if n.book.IsServerIn(groups) && !n.holds(ref) {
		if err := n.fetcher.Enqueue(ref); err != nil {
			n.log.Debug("not queued", "blob", ref, "err", err)
		}
	}
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
