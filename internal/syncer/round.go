package syncer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/syncgroup"
)

// maxRelayFromRound is the most rows received in one batch of a round
// that are pushed on to other members.
const maxRelayFromRound = 256

// SyncWith runs one round of group id with p.
func (s *Syncer) SyncWith(ctx context.Context, id syncnode.GroupID, p peer.ID) error {
	ctx, done, err := s.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	r, err := s.replica(id)
	if err != nil {
		return err
	}
	defer r.roundBegins(p)()
	return p2p.Exchange(ctx, s.h, p, p2p.ProtoSync, func(st network.Stream) error {
		return s.round(ctx, st, r, id, p)
	})
}

// SyncAll runs a round of group id with each other member in turn, each
// bounded by timeout, and returns the rounds' errors joined.
func (s *Syncer) SyncAll(ctx context.Context, id syncnode.GroupID, timeout time.Duration) error {
	var errs []error
	for _, m := range s.Members(id) {
		if m.Peer == s.h.ID() {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		if err := s.SyncWith(rctx, id, m.Peer); err != nil {
			errs = append(errs, fmt.Errorf("syncer: round of %s with %s: %w", id, m.Peer, err))
		}
		cancel()
	}
	return errors.Join(errs...)
}

// round runs one round of group id with p on st.
func (s *Syncer) round(ctx context.Context, st network.Stream, r *replica, id syncnode.GroupID, p peer.ID) error {
	defer st.Close()
	stop := context.AfterFunc(ctx, func() { st.Reset() })
	defer stop()
	br := bufio.NewReader(st)

	r.mu.Lock()
	h := hello{Group: id, VV: r.g.Rows().VV(), Prio: s.priorityLocked(r)}
	if self, ok := r.g.Rows().Get(syncgroup.MemberKey(s.h.ID())); ok {
		h.Self = &self
	}
	if adm, ok := r.g.Rows().Get(syncgroup.AdmissionKey(s.h.ID())); ok {
		h.Admission = &adm
	}
	h.Chain = r.g.ChainTail(chainTail)
	r.mu.Unlock()
	if err := p2p.WriteMsg(st, h, s.cfg.IOTimeout); err != nil {
		st.Reset()
		return err
	}
	s.messages.Add(1)
	remoteVV, err := s.receive(br, st, r, id, p)
	if err != nil {
		st.Reset()
		return err
	}
	if err := s.send(st, r, id, p, remoteVV, false); err != nil {
		st.Reset()
		return err
	}
	s.hooks.Synced(id, p)
	return nil
}

// settle answers, on this node, what rows just applied changed in the
// membership: an admin revokes the admission of every member whose own
// tombstone is among them (an invitation admits its joiner once), and
// this node's changes that a concurrent branch of the chain beat are made
// again on the winning one.
func (s *Syncer) settle(id syncnode.GroupID, rows []syncgroup.Row) {
	if slices.ContainsFunc(rows, func(r syncgroup.Row) bool { return syncgroup.IsChainKey(r.Key) }) {
		_, err := s.writeAll(id, func(g *syncgroup.Group) ([]syncgroup.Row, error) { return g.Rebase(time.Now()), nil })
		if err != nil {
			s.log.Error("changes that lost to a concurrent branch not made again", "group", id, "err", err)
		}
	}
	for _, row := range rows {
		p, ok := syncgroup.LeftMember(row)
		if !ok {
			continue
		}
		_, err := s.write(id, func(g *syncgroup.Group) (syncgroup.Row, error) {
			r, fresh, err := g.RevokeLeaver(p, time.Now())
			if err == nil && !fresh {
				err = errNothingWritten
			}
			return r, err
		})
		if err != nil && !errors.Is(err, errNothingWritten) {
			s.log.Error("admission of a member that left not revoked", "group", id, "peer", p, "err", err)
		}
	}
}

// send writes the rows the peer (with version vector vv) lacks, in batches;
// the responder's first batch carries its priority (the initiator's went in
// its hello), so each side observes the other once per round.
func (s *Syncer) send(st network.Stream, r *replica, id syncnode.GroupID, to peer.ID, vv syncgroup.VersionVector, withPrio bool) error {
	r.mu.Lock()
	if !r.g.IsMember(to) {
		// Ejected (or gone) since the round began: nothing written from
		// now on reaches it.
		r.mu.Unlock()
		return fmt.Errorf("%w: %s is no longer a member of %s", errPushRefused, to, id)
	}
	keys := r.g.Rows().MissingKeys(vv, append([]string{syncgroup.MembershipPrefix}, r.g.Spec().Prefixes...))
	mine := r.g.Rows().VV()
	prio := s.priorityLocked(r)
	r.mu.Unlock()
	if err := s.flush(); err != nil {
		return err
	}
	// A page of rows at a time, read under the lock: a peer far behind
	// costs one page of memory, not a copy of the group. A key written
	// again since goes as it is now, which the peer takes as any row.
	first := true
	for start := 0; first || start < len(keys); start += sendPage {
		page := keys[start:min(start+sendPage, len(keys))]
		r.mu.Lock()
		rows, err := r.g.Rows().Versions(page)
		r.mu.Unlock()
		if err != nil {
			return fmt.Errorf("syncer: rows of %s for %s: %w", id, to, err)
		}
		parts := batches(rows)
		if len(parts) == 0 {
			parts = [][]syncgroup.Row{nil}
		}
		for i, part := range parts {
			b := batch{VV: mine, Rows: part, Done: start+sendPage >= len(keys) && i == len(parts)-1}
			if first && withPrio {
				b.Prio = &prio
			}
			first = false
			if refs := refsOf(b.Rows); len(refs) > 0 {
				b.Signposts = s.hooks.Signposts(to, id, refs)
			}
			if err := s.writeBatch(st, &b, &b.Signposts); err != nil {
				return err
			}
			s.rowsSent.Add(int64(len(b.Rows)))
		}
	}
	return nil
}

// sendPage is how many rows a round reads at a time for a peer.
const sendPage = 1024

func (s *Syncer) handleSync(st network.Stream) {
	defer st.Close()
	done, ok := s.handling(st)
	if !ok {
		return
	}
	defer done()
	from := st.Conn().RemotePeer()
	br := bufio.NewReader(st)
	var h hello
	if err := p2p.ReadMsg(br, st, &h, maxHello, s.cfg.IOTimeout); err != nil {
		st.Reset()
		return
	}
	r, err := s.replica(h.Group)
	if err != nil {
		// The same refusal as for a known group: whether a group exists
		// here is not a non-member's to learn.
		p2p.WriteMsg(st, batch{Err: refusal}, s.cfg.IOTimeout)
		return
	}
	r.mu.Lock()
	won := s.applyHello(r, h, from)
	member := r.g.IsMember(from)
	var left []network.Conn
	if member {
		left = s.learnAddrs(r.g)
		s.observePriority(r, from, h.Prio)
	}
	r.mu.Unlock()
	s.closeLeft(left)
	if len(won) > 0 {
		s.settle(h.Group, won) // a member leaving says so in its hello
	}
	if !member {
		s.log.Info("sync refused: not a member", "group", h.Group, "peer", from)
		p2p.WriteMsg(st, batch{Err: refusal}, s.cfg.IOTimeout)
		return
	}
	defer r.roundBegins(from)()
	if err := s.send(st, r, h.Group, from, h.VV, true); err != nil {
		st.Reset()
		return
	}
	if _, err := s.receive(br, st, r, h.Group, from); err != nil {
		st.Reset()
		return
	}
	s.hooks.Synced(h.Group, from)
}

// refsOf returns the blob refs in the values of rows, each once.
func refsOf(rows []syncgroup.Row) []syncnode.BlobRef {
	var out []syncnode.BlobRef
	seen := map[syncnode.BlobRef]bool{}
	for _, r := range rows {
		if r.Deleted {
			continue
		}
		refs, _ := syncgroup.FindRefs(r.Value)
		for _, ref := range refs {
			if !seen[ref] {
				seen[ref] = true
				out = append(out, ref)
			}
		}
	}
	return out
}

// priorityLocked returns this node's priority in r's group now. r.mu is held.
func (s *Syncer) priorityLocked(r *replica) syncnode.Priority {
	m, _ := r.g.Member(s.h.ID())
	if m.DevType == syncnode.Server {
		return syncnode.Priority{DevType: syncnode.Server, ServerTime: time.Now()}
	}
	r.prio.DevType = m.DevType
	return r.prio
}

// observe is observePriority with group id's lock taken.
func (s *Syncer) observe(id syncnode.GroupID, from peer.ID, p syncnode.Priority) {
	r, err := s.replica(id)
	if err != nil {
		return
	}
	r.mu.Lock()
	s.observePriority(r, from, p)
	r.mu.Unlock()
}

// observePriority records a member's priority, with its device type taken
// from the membership (never from the message), and moves this node's own
// priority by the distance rule. r.mu is held.
func (s *Syncer) observePriority(r *replica, from peer.ID, p syncnode.Priority) {
	m, ok := r.g.Member(from)
	if !ok {
		return
	}
	p.DevType = m.DevType
	// What a peer reports of itself is clamped to what it can be: a
	// non-server is at least one hop from a server, and no server time
	// lies in the future.
	if p.DevType != syncnode.Server && !(p.Distance >= 1) { // NaN too
		p.Distance = 1
	}
	if now := time.Now(); p.ServerTime.After(now) {
		p.ServerTime = now
	}
	r.peers[from] = p
	r.prio = ownership.Update(s.priorityLocked(r), p, time.Now())
}

// Run runs periodic rounds until Close: every Interval, each group has a
// round with RoundPeers members picked by roundPeers. First it finishes
// the leaves a stop cut short (see resumeLeave).
func (s *Syncer) Run() {
	s.resumeLeaves()
	s.work.Go(func() {
		for {
			t := time.NewTimer(s.cfg.Interval)
			select {
			case <-s.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			for _, id := range s.Groups() {
				r, err := s.replica(id)
				if err != nil {
					continue
				}
				for _, p := range s.roundPeers(id) {
					// A round running with p (a long catch-up, say)
					// brings what this one would: a second would send
					// the same rows again beside it.
					if !r.inRound(p) {
						s.pushTo(id, p)
					}
				}
			}
		}
	})
}

// roundPeers picks the members of group id for a periodic round: a random
// server (when the group has one other than this node) and random others,
// RoundPeers in all. Over a few intervals every member meets every other,
// and a device meets a server every interval: hand-offs and gaps left by
// pushes do not wait for chance.
func (s *Syncer) roundPeers(id syncnode.GroupID) []peer.ID {
	var servers, others []peer.ID
	s.With(id, func(g *syncgroup.Group) error {
		for _, m := range g.Members() {
			switch {
			case m.Peer == s.h.ID():
			case m.DevType == syncnode.Server:
				servers = append(servers, m.Peer)
			default:
				others = append(others, m.Peer)
			}
		}
		return nil
	})
	var out []peer.ID
	if len(servers) > 0 {
		k := rand.IntN(len(servers))
		out = append(out, servers[k])
		servers = slices.Delete(servers, k, k+1)
	}
	rest := append(others, servers...)
	rand.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	return append(out, rest[:min(len(rest), s.cfg.RoundPeers-len(out))]...)
}

// vouches returns whose writes a round with member from may mark as
// known here when from says it sent them all: its own (it is their
// writer), and everyone's when from is a server of g. A member that sends
// a writer's latest row alone, claiming the ones before it, would
// otherwise have this node take them for known and never ask for them: a
// device is believed about its own writes only, and its rounds still
// carry every row; servers, which the admin chose, are believed for all.
func vouches(g *syncgroup.Group, from peer.ID) func(peer.ID) bool {
	if m, ok := g.Member(from); ok && m.DevType == syncnode.Server {
		return nil
	}
	return func(w peer.ID) bool { return w == from }
}

// retryable reports whether err refused a row that a later round may
// take: one from a clock too far ahead, by a writer whose admission has
// not arrived yet, or one a change of the chain on its way may allow
// (syncgroup.ErrUndecided). The vector then stays below it for that
// writer, so that the row comes again. Other refusals (a forged or
// oversized row, one over its writer's budget) are the same in every
// round: the vector moves past them.
func retryable(err error) bool {
	return errors.Is(err, syncgroup.ErrClockSkew) || errors.Is(err, syncgroup.ErrNotMember) || errors.Is(err, syncgroup.ErrUndecided)
}
