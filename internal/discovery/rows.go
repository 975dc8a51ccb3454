package discovery

import (
	"errors"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/signposting"
	"github.com/syncnode/syncnode/internal/syncer"
	"github.com/syncnode/syncnode/signpost"
	"github.com/syncnode/syncnode/syncgroup"
)

// Rows records the blob refs of rows that member from sent in group g.
func (d *Discovery) Rows(g syncnode.GroupID, rows []syncgroup.Row, from peer.ID) {
	var found []rowRefs
	for _, r := range rows {
		if r.Deleted {
			continue
		}
		refs, err := syncgroup.FindRefs(r.Value)
		if err != nil {
			d.log.Warn("row with a bad blob ref", "group", g, "key", r.Key, "writer", r.Writer, "err", err)
		}
		if len(refs) > 0 {
			found = append(found, rowRefs{r.Key, r.Writer, refs})
		}
	}
	if err := d.discover(g, from, found); err != nil {
		d.log.Error("signposts not recorded", "group", g, "rows", len(found), "err", err)
	}
}

// rowRefs are the blob refs found in the row at key that writer wrote.
type rowRefs struct {
	key    string
	writer peer.ID
	refs   []syncnode.BlobRef
}

// Tell returns what peer to may learn of refs' signposts, as a sync batch
// carries them.
func (d *Discovery) Tell(to peer.ID, refs []syncnode.BlobRef) []syncer.SignpostEntry {
	seen := d.book.ForAll(to, refs)
	var out []syncer.SignpostEntry
	for _, ref := range refs {
		if f, ok := seen[ref]; ok {
			out = append(out, syncer.SignpostEntry{Ref: ref, Signpost: f.ToWire()})
		}
	}
	return out
}

// Learn merges the signposts member from sent in group g and queues, on a
// server, the blobs it lacks.
func (d *Discovery) Learn(from peer.ID, g syncnode.GroupID, sps []syncer.SignpostEntry) {
	refs := make([]syncnode.BlobRef, 0, len(sps))
	got := make([]signpost.Signpost, 0, len(sps))
	for _, e := range sps {
		sp, err := e.Signpost.Signpost()
		if err != nil {
			d.log.Info("bad signpost from peer", "peer", from, "group", g, "err", err)
			continue
		}
		refs, got = append(refs, e.Ref), append(got, sp)
	}
	kept, merged := d.book.MergeAll(from, refs, got)
	for i, ref := range kept {
		d.wantIfServer(ref, merged[i].Groups())
	}
}

// HolderBack retries at once the server fetcher's queued blobs whose
// signposts name p as a holder (not as a relay), which has just connected
// or completed a round: a holder that returns is not left waiting out a
// backoff earned while it was away. Returns are paced (see returns): one
// whose retries p served none of is followed by a pause in which p's
// returns retry nothing.
func (d *Discovery) HolderBack(p peer.ID) {
	if d.fetcher.Len() == 0 || !d.retr.MayRetry(p) {
		return
	}
	d.work.Go(func() {
		var refs []syncnode.BlobRef
		for _, ref := range d.fetcher.Queued(maxRetryScan) {
			if sp, err := d.book.Get(ref); err == nil {
				// A peer that only relayed the row holds nothing: its
				// return is no reason to try again.
				if l, ok := sp.Locations[p]; ok && !l.IsProxy {
					refs = append(refs, ref)
				}
			}
		}
		if k := d.fetcher.RetryNow(refs); k > 0 {
			d.retr.Retried(p)
			d.log.Info("holder back: queued fetches retried now", "peer", p, "blobs", k)
		}
	})
}

// maxRetryScan bounds the queued blobs looked at when a holder returns.
const maxRetryScan = 4096

// Discover records blob refs found in a row of group g at key, written by
// writer and received from from (this node, for a local write): the groups
// of this node that cover key join the signposts, the writer and the
// sender become locations (the sender as a proxy if it did not write the
// row), the creator that holds the blob grants itself its shares, and a
// server queues the blobs it lacks.
func (d *Discovery) Discover(g syncnode.GroupID, key string, writer, from peer.ID, refs []syncnode.BlobRef) error {
	return d.discover(g, from, []rowRefs{{key, writer, refs}})
}

// discover is Discover for the refs of many rows from one peer, their
// signposts written in few transactions.
func (d *Discovery) discover(g syncnode.GroupID, from peer.ID, rows []rowRefs) error {
	self := d.self
	var errs []error
	covering := make([][]syncnode.GroupID, len(rows))
	var refs []syncnode.BlobRef
	var named [][]syncnode.GroupID
	for i, row := range rows {
		covering[i] = d.book.Covering(g, row.key)
		for _, ref := range row.refs {
			refs, named = append(refs, ref), append(named, covering[i])
		}
	}
	// Collection first: from here a pass that read the rows before
	// collects nothing of these blobs (see collect.Collector.Referenced).
	if d.refd != nil && len(refs) > 0 {
		if err := d.refd(refs, named); err != nil {
			errs = append(errs, err)
		}
	}
	var found []signposting.Found
	for i, row := range rows {
		groups := covering[i]
		for _, ref := range row.refs {
			// Shares next: the signpost's groups make a blob evictable,
			// and its origin's copy must be pinned before that. A writer
			// that fetched the blob is granted shares in the groups its
			// row brings the ref into: the signpost is read for that
			// alone, once, and only for this node's own rows.
			var fresh []syncnode.GroupID
			read := false
			introduced := func(gg syncnode.GroupID) bool {
				if row.writer != self {
					return false
				}
				if !read {
					read = true
					// Unread, the signpost grants nothing as introduced.
					if before, err := d.book.Get(ref); err == nil || errors.Is(err, syncnode.ErrNotFound) {
						fresh = newGroups(before, groups)
					} else {
						errs = append(errs, err)
					}
				}
				return slices.Contains(fresh, gg)
			}
			held, err := d.handoffs.GrantCreator(ref, groups, introduced)
			if err != nil {
				errs = append(errs, err)
			}
			found = append(found, signposting.Found{Groups: groups, Writer: row.writer, From: from, Ref: ref, Holds: held})
		}
	}
	if err := d.book.RecordAll(g, found); err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, f := range found {
		if f.Holds {
			d.Announce(f.Ref)
		} else {
			d.wantIfServer(f.Ref, f.Groups)
		}
	}
	return errors.Join(errs...)
}

// Announce provides a held blob in the DHT if a public group of this node
// references it (see signposting.Book.Announced).
func (d *Discovery) Announce(ref syncnode.BlobRef) {
	if d.book.Announced(ref) {
		d.announcer.Add(ref)
	}
}

// wantIfServer queues ref in the server fetcher if this node is a server
// in one of groups and lacks the blob.
func (d *Discovery) wantIfServer(ref syncnode.BlobRef, groups []syncnode.GroupID) {
	if d.book.IsServerIn(groups) && !d.holds(ref) {
		if err := d.fetcher.Enqueue(ref); err != nil {
			d.log.Debug("not queued", "blob", ref, "err", err)
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

// rediscoverPage is how many rows rediscover reads at a time.
const rediscoverPage = 1024

// rediscover walks the stored rows once at start, a page at a time, and
// records the blob refs whose signposts do not name the row's group yet.
func (d *Discovery) rediscover() {
	for _, g := range d.groups.Groups() {
		for start := ""; ; {
			rows, next, err := d.groups.RowsFrom(g, "", start, rediscoverPage)
			if err != nil {
				d.log.Error("rediscovery stopped: a row cannot be read", "group", g, "from", start, "err", err)
				break
			}
			for _, r := range rows {
				if d.ctx.Err() != nil {
					return
				}
				d.rediscoverRow(g, r)
			}
			if next == "" {
				break
			}
			start = next
		}
	}
}

// rediscoverRow is rediscover for one row of group g.
func (d *Discovery) rediscoverRow(g syncnode.GroupID, r syncgroup.Row) {
	refs, _ := syncgroup.FindRefs(r.Value)
	var missing []syncnode.BlobRef
	for _, ref := range refs {
		if sp, err := d.book.Get(ref); err != nil || !slices.Contains(sp.Groups(), g) {
			missing = append(missing, ref)
		}
	}
	if len(missing) > 0 {
		if err := d.Discover(g, r.Key, r.Writer, r.Writer, missing); err != nil {
			d.log.Error("rediscovery failed", "group", g, "key", r.Key, "err", err)
		}
	}
}

// Provided is what a node provides in the DHT (p2p.Held): the blobs it
// holds that a public group of its references (signposting.Book.Announced).
type Provided struct {
	Book *signposting.Book
	// HeldRefs lists the blobs held; Holds reports one.
	HeldRefs func() []syncnode.BlobRef
	Holds    func(syncnode.BlobRef) bool
}

// Provided lists the held blobs to provide again.
func (p Provided) Provided() []syncnode.BlobRef {
	return slices.DeleteFunc(p.HeldRefs(), func(ref syncnode.BlobRef) bool { return !p.Book.Announced(ref) })
}

// Provides reports whether ref is held and to be provided.
func (p Provided) Provides(ref syncnode.BlobRef) bool { return p.Holds(ref) && p.Book.Announced(ref) }
