package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/shares"
	"github.com/syncnode/syncnode/internal/syncer"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/signpost"
	"github.com/syncnode/syncnode/syncgroup"
)

// hooks is the node's part in sync.
type hooks struct{ n *Node }

var _ syncer.Hooks = hooks{}

// Applied records the blob refs of rows a peer sent.
func (h hooks) Applied(g syncnode.GroupID, rows []syncgroup.Row, from peer.ID) {
	h.n.keepMember(g, from)
	if slices.ContainsFunc(rows, func(r syncgroup.Row) bool { return strings.HasPrefix(r.Key, syncgroup.MembershipPrefix) }) {
		if h.n.isEjected(g) {
			h.n.ejected(g)
		}
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
		sp, err := h.n.signposts.Get(ref)
		if err != nil {
			continue
		}
		f := signpost.Filter(sp, to, h.n.sync)
		if len(f.Locations) == 0 {
			continue
		}
		out = append(out, syncer.SignpostEntry{Ref: ref, Signpost: f.ToWire()})
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
		if merged, ok := n.mergeFrom(from, e.Ref, &sp); ok {
			n.wantIfServer(e.Ref, merged.Groups())
		}
	}
}

// mergeFrom merges a signpost peer from sent into the store. Only groups
// that the sender shares with this node are kept (a peer cannot make this
// node's server fetcher act for a group it is not in), and a location
// naming this node is dropped: this node knows better what it holds. sp
// is left filtered; ok is false if nothing was left to merge.
func (n *Node) mergeFrom(from peer.ID, ref syncnode.BlobRef, sp *signpost.Signpost) (signpost.Signpost, bool) {
	for g := range sp.SgIDs {
		if !n.sync.IsMember(from, g) || !n.sync.IsMember(n.h.ID(), g) {
			delete(sp.SgIDs, g)
		}
	}
	delete(sp.Locations, n.h.ID())
	// A location counts as a server copy only on the server's own word
	// (its signpost naming itself) and only if the membership says it is a
	// server in one of the blob's groups: a member cannot make a blob look
	// safe by naming a server, real or invented, as its holder.
	for p, l := range sp.Locations {
		l.IsServer = p == from && n.isServerMember(p, sp.Groups())
		sp.Locations[p] = l
	}
	if len(sp.SgIDs) == 0 || len(sp.Locations) == 0 {
		return signpost.Signpost{}, false
	}
	merged, err := n.signposts.Merge(ref, *sp)
	if err != nil {
		n.log.Error("signpost not merged", "blob", ref, "err", err)
		return signpost.Signpost{}, false
	}
	return merged, true
}

// Synced hands blobs off after a round with member p of g: a leaf asks a
// non-leaf, and any device asks a server, to take the blobs of g it holds
// shares of. A device's shares so reach a server within a round of
// meeting one (I6), whoever relayed the row and whoever fetched from whom.
func (h hooks) Synced(g syncnode.GroupID, p peer.ID) {
	h.n.keepMember(g, p)
	h.n.holderBack(p)
	h.n.maybeHandoff(g, p)
}

// Pushed hands blobs off after member p of g took a push of rows from
// this node, as after a round: p is online and a member.
func (h hooks) Pushed(g syncnode.GroupID, p peer.ID) {
	h.n.keepMember(g, p)
	h.n.maybeHandoff(g, p)
}

// maybeHandoff starts a hand-off to member p of g if this node hands off
// to p's device type and none to p in g is running.
func (n *Node) maybeHandoff(g syncnode.GroupID, p peer.ID) {
	me, err := n.sync.Priority(g)
	if err != nil {
		return
	}
	them, ok := n.sync.PeerPriority(g, p)
	if !ok || !handsOffTo(me.DevType, them.DevType) {
		return
	}
	// A leaf's shares go to a non-leaf device only while no server of the
	// group is online: a server fetches the blob anyway, and a copy on a
	// device in between would be moved for nothing.
	if them.DevType != syncnode.Server && n.serverOnline(g) {
		return
	}
	k := handoffKey{g, p}
	n.handoffMu.Lock()
	busy := n.handoffs[k]
	n.handoffs[k] = true
	n.handoffMu.Unlock()
	if busy {
		return
	}
	n.goRun(func() {
		defer func() {
			n.handoffMu.Lock()
			delete(n.handoffs, k)
			n.handoffMu.Unlock()
		}()
		n.handoff(g, p)
	})
}

// holderBack retries at once the server fetcher's queued blobs whose
// signposts name p as a holder (not as a relay), which has just connected
// or completed a round: a holder that returns is not left waiting out a
// backoff earned while it was away. Returns are paced (see returns): one
// whose retries p served none of is followed by a pause in which p's
// returns retry nothing.
func (n *Node) holderBack(p peer.ID) {
	if n.fetcher.Len() == 0 || !n.returns.may(p, time.Now()) {
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
			n.returns.retried(p, time.Now())
			n.log.Info("holder back: queued fetches retried now", "peer", p, "blobs", k)
		}
	})
}

// maxRetryScan bounds the queued blobs looked at when a holder returns.
const maxRetryScan = 4096

// serverOnline reports whether this node is connected to a server member
// of g.
func (n *Node) serverOnline(g syncnode.GroupID) bool {
	for _, m := range n.Members(g) {
		if m.DevType == syncnode.Server && m.Peer != n.h.ID() && n.connected(m.Peer) {
			return true
		}
	}
	return false
}

// handsOffTo reports whether a device of type self asks a member of type
// peer to take its shares: a leaf any non-leaf, a non-server a server.
func handsOffTo(self, peer syncnode.DevType) bool {
	return ownership.LeafHandoff(self, peer, 1) > 0 || (peer == syncnode.Server && self != syncnode.Server)
}

type handoffKey struct {
	g syncnode.GroupID
	p peer.ID
}

type handoffRef struct {
	ref syncnode.BlobRef
	p   peer.ID
}

// handoffBackoff spaces the hand-offs of one blob to one peer that failed.
type handoffBackoff struct {
	next  time.Time
	delay time.Duration
}

// maxHandoffs bounds the blobs a device offers to one peer after one round.
const maxHandoffs = 32

// handoff asks p to take the blobs of g this device holds shares of. Each
// hand-off ends with the shares moved, or with them still here and the
// reason in the blob's journal; a blob whose hand-off to p failed is not
// offered to p again before a delay that doubles up to an hour.
func (n *Node) handoff(g syncnode.GroupID, p peer.ID) {
	now := time.Now()
	var refs []syncnode.BlobRef
	err := n.ledger.Scan(func(ref syncnode.BlobRef, sh map[syncnode.GroupID]int) error {
		if sh[g] <= 0 || !n.holds(ref) {
			return nil
		}
		n.handoffMu.Lock()
		b := n.handoffRetry[handoffRef{ref, p}]
		n.handoffMu.Unlock()
		if now.Before(b.next) {
			return nil
		}
		refs = append(refs, ref)
		if len(refs) == maxHandoffs {
			return errStopScan
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		n.log.Error("handoff: shares not listed", "err", err)
		return
	}
	for _, ref := range refs {
		ctx, cancel := context.WithTimeout(n.ctx, n.shares.AskWait()+n.cfg.IOTimeout)
		res, err := n.shares.Ask(ctx, p, ref, g)
		cancel()
		if n.ctx.Err() != nil {
			return
		}
		taken := res.Taken
		k := handoffRef{ref, p}
		switch {
		case err != nil:
			n.noteHandoff(ref, fmt.Sprintf("hand-off to %s in %s failed; shares kept here: %v", p, g, err))
		case res.Surplus:
			n.noteHandoff(ref, fmt.Sprintf("server %s holds the two shares of %s already: the ones here were surplus and are dropped", p, g))
		case taken == 0:
			err = errors.New("took no shares")
			n.noteHandoff(ref, fmt.Sprintf("hand-off to %s in %s: it took no shares; shares kept here", p, g))
		default:
			n.noteHandoff(ref, fmt.Sprintf("handed %d shares in %s to %s", taken, g, p))
			n.log.Info("shares handed off", "peer", p, "blob", ref, "group", g, "shares", taken)
		}
		n.handoffMu.Lock()
		if err != nil {
			b := n.handoffRetry[k]
			b.delay = min(max(2*b.delay, 2*time.Second), time.Hour)
			b.next = time.Now().Add(b.delay)
			n.handoffRetry[k] = b
		} else {
			delete(n.handoffRetry, k)
		}
		n.handoffMu.Unlock()
		if err != nil {
			n.log.Info("handoff failed", "peer", p, "blob", ref, "err", err)
		}
	}
}

var errStopScan = errors.New("stop")

// asked takes a blob a member hands off: fetched from that member if not
// held, then its shares, with the copy pinned against eviction meanwhile.
func (n *Node) asked(ctx context.Context, from peer.ID, ref syncnode.BlobRef, g syncnode.GroupID, leaving bool) (shares.Result, error) {
	me, err := n.sync.Priority(g)
	if err != nil {
		return shares.Result{}, err
	}
	// A server that holds the blob and the group's two shares already
	// says so: the asker's shares are surplus (a member offered shares it
	// never had), and it drops them.
	if me.DevType == syncnode.Server {
		if held, sh, err := n.Holding(ref); err == nil && held && sh[g] >= ownership.CreatorShares {
			return shares.Result{Surplus: true}, nil
		}
	}
	them, ok := n.sync.PeerPriority(g, from)
	if !ok || (!leaving && !handsOffTo(them.DevType, me.DevType)) || (leaving && me.DevType == syncnode.Leaf) {
		// The holder would offer nothing: fetching would only churn.
		return shares.Result{}, fmt.Errorf("node: a %s member hands nothing off to a %s one", them.DevType, me.DevType)
	}
	// Only a blob that a row of g references here: an ask is no way to
	// make a server store (and pin) whatever a member likes.
	if !slices.Contains(n.groupsOf(ref), g) {
		return shares.Result{}, fmt.Errorf("node: no row of %s that this node knows references %s", g, ref)
	}
	unpin := n.pins.pin(ref)
	defer unpin()
	if !n.holds(ref) {
		// In line with the background fetches from the same member: one
		// whose asks drip their bytes in holds a few fetch places, and
		// waits for them, never all of them.
		release, err := n.perHolder.acquire(ctx, from)
		if err != nil {
			return shares.Result{}, fmt.Errorf("node: hand-off from %s waited for a fetch place: %w", from, err)
		}
		_, err = n.fetch(ctx, ref, PriorityNormal, []peer.ID{from}, nil, 0)
		release()
		if err != nil {
			n.noteHandoff(ref, fmt.Sprintf("hand-off from %s not taken: fetch failed: %v", from, err))
			return shares.Result{}, err
		}
	}
	res, err := n.shares.Take(ctx, from, ref, g)
	if err != nil {
		n.noteHandoff(ref, fmt.Sprintf("hand-off from %s not taken: %v", from, err))
		return res, err
	}
	n.noteHandoff(ref, fmt.Sprintf("took %d shares in %s from %s", res.Taken, g, from))
	return res, nil
}

// discover records blob refs found in a row of group g at key, written by
// writer and received from from (this node, for a local write): the groups
// of this node that cover key join the signposts, the writer and the
// sender become locations (the sender as a proxy if it did not write the
// row), the creator that holds the blob grants itself its shares, and a
// server queues the blobs it lacks.
func (n *Node) discover(g syncnode.GroupID, key string, writer, from peer.ID, refs []syncnode.BlobRef) error {
	groups := n.covering(g, key)
	self := n.h.ID()
	var errs []error
	for _, ref := range refs {
		before, err := n.signposts.Get(ref)
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
		if err := n.grantCreator(ref, groups, introduced); err != nil {
			errs = append(errs, err)
		}
		holds := n.holds(ref)
		_, err = n.signposts.Update(ref, func(sp *signpost.Signpost) {
			for _, gg := range groups {
				sp.AddGroup(gg)
			}
			if writer == self {
				if holds {
					sp.AddLocation(self, n.location(g, self, false))
				}
				return
			}
			sp.AddLocation(writer, n.location(g, writer, false))
			if from != writer {
				sp.AddLocation(from, n.location(g, from, true))
			}
		})
		if err != nil {
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
// references it. A blob that only private groups reference is never
// announced: the DHT is open to strangers, and a provider record would
// tell them the ref and who holds it. Members find it through signposts.
func (n *Node) announce(ref syncnode.BlobRef) {
	for _, g := range n.groupsOf(ref) {
		spec, err := n.GroupSpec(g)
		if err == nil && !spec.Private && n.sync.IsMember(n.h.ID(), g) {
			n.reprov.Add(ref)
			return
		}
	}
}

// public reports whether a blob that groups reference may be named in the
// DHT, announced or looked up: no group of this node references it, or a
// public one does. A group whose spec cannot be read counts as private.
func (n *Node) public(groups []syncnode.GroupID) bool {
	if len(groups) == 0 {
		return true
	}
	for _, g := range groups {
		if spec, err := n.GroupSpec(g); err == nil && !spec.Private {
			return true
		}
	}
	return false
}

// covering returns g and this node's other groups whose prefixes cover key.
func (n *Node) covering(g syncnode.GroupID, key string) []syncnode.GroupID {
	out := []syncnode.GroupID{g}
	for _, id := range n.sync.Groups() {
		if id == g {
			continue
		}
		if s, err := n.GroupSpec(id); err == nil && s.Covers(key) && n.sync.IsMember(n.h.ID(), id) {
			out = append(out, id)
		}
	}
	return out
}

// location describes member p of g as a place a blob may be.
func (n *Node) location(g syncnode.GroupID, p peer.ID, proxy bool) signpost.Location {
	l := signpost.Location{WhenSeen: time.Now(), IsProxy: proxy}
	n.sync.With(g, func(gr *syncgroup.Group) error {
		if m, ok := gr.Member(p); ok {
			l.IsServer = m.DevType == syncnode.Server
			l.Addrs = m.Addrs
		}
		return nil
	})
	if p == n.h.ID() {
		l.Addrs = n.addrStrings()
	}
	if len(l.Addrs) > signpost.MaxAddrs {
		l.Addrs = l.Addrs[:signpost.MaxAddrs]
	}
	return l
}

// isServerMember reports whether the membership makes p a server in one
// of groups.
func (n *Node) isServerMember(p peer.ID, groups []syncnode.GroupID) bool {
	for _, g := range groups {
		if pr, ok := n.sync.PeerPriority(g, p); ok && pr.DevType == syncnode.Server {
			return true
		}
	}
	return false
}

// isServerIn reports whether this node is a server in any of groups.
func (n *Node) isServerIn(groups []syncnode.GroupID) bool {
	for _, g := range groups {
		if dev, ok := n.DevType(g); ok && dev == syncnode.Server {
			return true
		}
	}
	return false
}

// wantIfServer queues ref in the server fetcher if this node is a server
// in one of groups and lacks the blob.
func (n *Node) wantIfServer(ref syncnode.BlobRef, groups []syncnode.GroupID) {
	if n.isServerIn(groups) && !n.holds(ref) {
		if err := n.fetcher.Enqueue(ref); err != nil {
			n.log.Debug("not queued", "blob", ref, "err", err)
		}
	}
}

// signpostFor answers a HaveBlob request for a blob this node lacks.
func (n *Node) signpostFor(requester peer.ID, ref syncnode.BlobRef) (signpost.Signpost, bool) {
	sp, err := n.signposts.Get(ref)
	if err != nil {
		return signpost.Signpost{}, false
	}
	f := signpost.Filter(sp, requester, n.sync)
	return f, len(f.Locations) > 0
}

// ErrAccess reports a request for a blob the requester may not fetch.
var ErrAccess = errors.New("node: access denied")

// mayServe decides whether requester may fetch ref from this node: only if
// the blob was learned through a group the requester may see.
func (n *Node) mayServe(requester peer.ID, ref syncnode.BlobRef) error {
	sp, err := n.signposts.Get(ref)
	if err != nil {
		return fmt.Errorf("%w: %s is in no syncgroup shared with %s", ErrAccess, ref, requester)
	}
	if !n.sync.MayFetch(requester, sp.Groups()) {
		return fmt.Errorf("%w: %s may not see the syncgroups of %s", ErrAccess, requester, ref)
	}
	return nil
}

// settled records where shares this node gave away went: the acceptor
// holds the blob verified, so it becomes a location (a server one, if it
// is a server in the group) — how a device learns its blob is safe.
func (n *Node) settled(t ownership.Transfer, accepted bool) {
	if !accepted {
		// Shares that come back to a node the group ejected count for
		// nothing there, and the admin made up for them at the ejection.
		if n.isEjected(t.Group) {
			if err := n.ledger.DropGroup(t.Ref, t.Group); err != nil {
				n.log.Error("shares returned to an ejected node not dropped", "blob", t.Ref, "group", t.Group, "err", err)
			}
		}
		return
	}
	loc := n.location(t.Group, t.To, false)
	if _, err := n.signposts.Update(t.Ref, func(sp *signpost.Signpost) { sp.AddLocation(t.To, loc) }); err != nil {
		n.log.Error("signpost not updated after a transfer", "blob", t.Ref, "err", err)
	}
}
