package syncer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/syncgroup"
)

// Dissemination. A new row travels by push, not by rounds:
//
//   - The writer pushes it to Fanout members: its two neighbours on the
//     ring of connected members ordered by peer ID, and others chosen at
//     random among those it is connected to; and to every connected
//     server of the group (so a server, which fetches every blob, hears of
//     a write in one hop).
//   - A member that receives a row it did not know, verifies it and finds
//     it wins its key pushes it on once, in the same way, to Fanout
//     connected members other than the one it came from and the writer.
//     A row it knew already (by version vector or as its key's winner) is
//     neither checked again nor relayed.
//   - Pushes to one peer go out in order on one stream at a time; rows
//     that queue up meanwhile leave together in one frame.
//
// Cost per write: every member receives the row about Fanout times (once
// new, the rest dropped after a map lookup) and sends it Fanout times, so
// about Fanout messages in and out per member per write whatever the
// group's size; the whole group moves about N × Fanout messages. The
// random picks carry a row across the group in about log(N)/log(Fanout)
// hops; the ring makes sure it reaches every member connected to its ring
// neighbours (a member missed by every random pick still gets it from its
// predecessor, which was reached); members that were away or unreachable
// get it from the periodic rounds. Periodic rounds run with RoundPeers
// members per interval (one of them a server when the group has one), so
// an idle node's work grows with its groups, not with their members.

// DefaultFanout is the number of members a new row is pushed to by each
// member that relays it: the two ring neighbours and one member at random.
// The random pick keeps the spread exponential (about log2(N) hops); every
// pick beyond it adds a duplicate per member per write and little speed.
// Measured with syncnode sim over 50 nodes on two cores, fanout 3 against
// 6 halved the messages (3.6 against 6.8 per write per node), cut the CPU
// per write per node from 3.7 to 2.9 ms and the p50 of the first server
// copy from 650 to 350 ms: a server hears of a write from its writer in
// one hop whatever the fanout, and the duplicates only loaded the mesh.
const DefaultFanout = 3

// pushItem is rows of one group waiting to be pushed to one peer.
type pushItem struct {
	g    syncnode.GroupID
	rows []syncgroup.Row
	// toEjected marks the row that ejects the peer it goes to: the one
	// push a peer that is no member gets, so that it learns it is out.
	toEjected bool
}

// maxOutbox bounds the rows waiting for one peer; beyond it the oldest are
// dropped, for the periodic rounds to carry.
const maxOutbox = 4096

// spread pushes rows of group id, just written here (from empty) or just
// received from member from, to the members chosen by the rule above.
func (s *Syncer) spread(id syncnode.GroupID, rows []syncgroup.Row, from peer.ID) {
	if len(rows) == 0 {
		return
	}
	for _, p := range s.pushTargets(id, rows, from) {
		s.enqueuePush(p, pushItem{g: id, rows: rows})
	}
}

// pushTargets picks the members to push rows to: this node's two
// neighbours on the ring of connected members sorted by peer ID, then
// connected members at random (and members it must dial, when too few are
// connected) up to Fanout in all, plus every connected server when the
// rows were written here. The member they came from and their writer are
// left out: they have them.
func (s *Syncer) pushTargets(id syncnode.GroupID, rows []syncgroup.Row, from peer.ID) []peer.ID {
	self := s.h.ID()
	writer := rows[0].Writer
	for _, r := range rows[1:] {
		if r.Writer != writer {
			writer = ""
		}
	}
	var connected, other, servers []peer.ID
	s.With(id, func(g *syncgroup.Group) error {
		for _, m := range g.Members() {
			if m.Peer == self || m.Peer == from || m.Peer == writer {
				continue
			}
			if s.h.Network().Connectedness(m.Peer) != network.Connected {
				other = append(other, m.Peer)
				continue
			}
			connected = append(connected, m.Peer)
			if m.DevType == syncnode.Server {
				servers = append(servers, m.Peer)
			}
		}
		return nil
	})
	targets := ringNeighbours(self, connected)
	rand.Shuffle(len(connected), func(i, j int) { connected[i], connected[j] = connected[j], connected[i] })
	rand.Shuffle(len(other), func(i, j int) { other[i], other[j] = other[j], other[i] })
	for _, p := range append(connected, other...) {
		if len(targets) >= s.cfg.Fanout {
			break
		}
		if !slices.Contains(targets, p) {
			targets = append(targets, p)
		}
	}
	if from == "" {
		for _, p := range servers {
			if !slices.Contains(targets, p) {
				targets = append(targets, p)
			}
		}
	}
	return targets
}

// ringNeighbours returns self's successor and predecessor on the ring of
// peers (self included) sorted by ID. Every member that takes a new row
// pushes it to both, so the row goes round the ring of connected members
// whatever the random picks missed: a member whose predecessor has the
// row gets it from that predecessor.
func ringNeighbours(self peer.ID, peers []peer.ID) []peer.ID {
	if len(peers) == 0 {
		return nil
	}
	ring := slices.Sorted(slices.Values(peers))
	i, _ := slices.BinarySearch(ring, self)
	succ, pred := ring[i%len(ring)], ring[(i+len(ring)-1)%len(ring)]
	if succ == pred {
		return []peer.ID{succ}
	}
	return []peer.ID{succ, pred}
}

// enqueuePush queues it for p and starts p's sender if it is not running.
func (s *Syncer) enqueuePush(p peer.ID, it pushItem) {
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		return
	}
	ob, running := s.outboxes[p]
	ob = append(ob, it)
	for n := queuedRows(ob); n > maxOutbox && len(ob) > 1; n = queuedRows(ob) {
		ob = ob[1:]
	}
	s.outboxes[p] = ob
	if !running && !s.work.Go(func() { s.drain(p) }) {
		delete(s.outboxes, p)
	}
	s.mu.Unlock()
}

func queuedRows(items []pushItem) int {
	n := 0
	for _, it := range items {
		n += len(it.rows)
	}
	return n
}

// drain sends p's queued rows until none are left.
func (s *Syncer) drain(p peer.ID) {
	for {
		s.mu.Lock()
		items := s.outboxes[p]
		if len(items) == 0 || s.ctx.Err() != nil {
			delete(s.outboxes, p)
			s.mu.Unlock()
			return
		}
		s.outboxes[p] = items[:0:0]
		s.mu.Unlock()
		groups, err := s.sendPush(p, items)
		if err != nil {
			s.log.Debug("push failed", "peer", p, "err", err)
			continue
		}
		for _, g := range groups {
			s.hooks.Pushed(g, p)
		}
	}
}

// sendPush sends items to p on one stream, one frame (or more, for many
// rows) per group, and waits for p to close it: p has then applied them.
func (s *Syncer) sendPush(p peer.ID, items []pushItem) ([]syncnode.GroupID, error) {
	var groups []syncnode.GroupID
	byGroup := map[syncnode.GroupID][]syncgroup.Row{}
	for _, it := range items {
		// Rows leave only for a member: one ejected (or gone) while they
		// waited gets none of them.
		if !s.IsMember(p, it.g) && !it.toEjected {
			continue
		}
		if _, ok := byGroup[it.g]; !ok {
			groups = append(groups, it.g)
		}
		byGroup[it.g] = append(byGroup[it.g], it.rows...)
	}
	if len(groups) == 0 {
		return nil, nil
	}
	if err := s.flush(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(s.ctx, 2*s.cfg.IOTimeout)
	defer cancel()
	var ack pushAck
	err := p2p.Exchange(ctx, s.h, p, p2p.ProtoPush, func(st network.Stream) error {
		stop := context.AfterFunc(ctx, func() { st.Reset() })
		defer stop()
		for _, g := range groups {
			prio, err := s.Priority(g)
			if err != nil {
				continue // left since
			}
			for _, rows := range batches(byGroup[g]) {
				m := pushMsg{Group: g, Rows: rows, Prio: &prio}
				if refs := refsOf(rows); len(refs) > 0 {
					m.Signposts = s.hooks.Signposts(p, g, refs)
				}
				if err := s.writeBatch(st, &m, &m.Signposts); err != nil {
					st.Reset()
					return err
				}
			}
		}
		if err := st.CloseWrite(); err != nil {
			st.Reset()
			return err
		}
		// The receiver answers once it has applied every frame.
		if err := p2p.ReadMsg(bufio.NewReader(st), st, &ack, maxPushAck, s.cfg.IOTimeout); err != nil {
			st.Reset()
			return err
		}
		return st.Close()
	})
	if err != nil {
		return nil, fmt.Errorf("syncer: push to %s: %w", p, err)
	}
	for _, g := range groups {
		if pr, ok := ack.Prios[g]; ok {
			s.observe(g, p, pr)
		}
	}
	return groups, nil
}

// writeBatch encodes m as one frame, without its signposts (*sps) if they
// would make it too large: signposts are hints, rows must go.
func (s *Syncer) writeBatch(st network.Stream, m any, sps *[]SignpostEntry) error {
	enc, err := msgpack.Marshal(m)
	if err == nil && len(enc) > p2p.MaxFrame && *sps != nil {
		*sps = nil
		enc, err = msgpack.Marshal(m)
	}
	if err != nil {
		return err
	}
	if err := p2p.WriteFrame(st, enc, s.cfg.IOTimeout); err != nil {
		return err
	}
	s.messages.Add(1)
	s.bytesSent.Add(int64(len(enc)))
	return nil
}

// batches splits rows into runs of about batchBytes.
func batches(rows []syncgroup.Row) [][]syncgroup.Row {
	var out [][]syncgroup.Row
	for len(rows) > 0 {
		size, k := 0, 0
		for k < len(rows) && (k == 0 || size+len(rows[k].Value)+256 < batchBytes) {
			size += len(rows[k].Value) + 256
			k++
		}
		out = append(out, rows[:k])
		rows = rows[k:]
	}
	return out
}

// errPushRefused ends a push from a peer that is not a member of the group
// it names, or names a group unknown here: the stream is reset either way.
var errPushRefused = errors.New("syncer: push refused")

func (s *Syncer) handlePush(st network.Stream) {
	done, ok := s.handling(st)
	if !ok {
		return
	}
	defer done()
	from := st.Conn().RemotePeer()
	br := bufio.NewReader(st)
	ack := pushAck{Prios: map[syncnode.GroupID]syncnode.Priority{}}
	for {
		var m pushMsg
		err := p2p.ReadMsg(br, st, &m, p2p.MaxFrame, s.cfg.IOTimeout)
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil {
			err = s.applyPush(from, m)
		}
		if err != nil {
			s.log.Debug("push not taken", "peer", from, "err", err)
			st.Reset()
			return
		}
		if prio, err := s.Priority(m.Group); err == nil {
			ack.Prios[m.Group] = prio
		}
	}
	p2p.WriteMsg(st, ack, s.cfg.IOTimeout)
	st.Close()
}

// applyPush applies the rows of a push from member from that are new here,
// and relays those that won their keys.
func (s *Syncer) applyPush(from peer.ID, m pushMsg) error {
	r, err := s.replica(m.Group)
	if err != nil {
		return errPushRefused
	}
	r.applying.Lock()
	r.mu.Lock()
	if !r.g.IsMember(from) {
		r.mu.Unlock()
		r.applying.Unlock()
		return errPushRefused
	}
	if m.Prio != nil {
		s.observePriority(r, from, *m.Prio)
	}
	var fresh []syncgroup.Row
	for _, row := range m.Rows {
		if !r.g.Rows().Known(row) {
			fresh = append(fresh, row)
		}
	}
	r.mu.Unlock()
	if len(fresh) == 0 {
		r.applying.Unlock()
		return nil
	}
	// Signatures once, on every core, outside the group's lock.
	fresh, forged := s.checkSigs(m.Group, fresh)
	r.mu.Lock()
	newer := winners(r.g, fresh)
	r.mu.Unlock()
	// Signposts first: a reader that sees a row can fetch its blob.
	if sps := signpostsFor(m.Signposts, newer); len(sps) > 0 {
		s.hooks.Learn(from, m.Group, sps)
	}
	won, bad, err := s.apply(r, m.Group, fresh, nil, false)
	r.applying.Unlock()
	bad = errors.Join(forged, bad)
	if err != nil {
		return err
	}
	if bad != nil {
		s.log.Warn("pushed rows refused", "group", m.Group, "peer", from, "err", bad)
	}
	if len(won) > 0 {
		s.settle(m.Group, won)
		s.learnMemberAddrs(r, won)
		s.hooks.Applied(m.Group, won, from)
		s.spread(m.Group, won, from)
	}
	return nil
}

// signpostsFor returns the entries of sps for blobs that rows reference:
// a member vouches only for where the blobs of the rows it sends are, so a
// signpost of any other ref (an invented blob, a private one of another
// group) is dropped unread.
func signpostsFor(sps []SignpostEntry, rows []syncgroup.Row) []SignpostEntry {
	if len(sps) == 0 {
		return nil
	}
	refs := map[syncnode.BlobRef]bool{}
	for _, r := range refsOf(rows) {
		refs[r] = true
	}
	var out []SignpostEntry
	for _, e := range sps {
		if refs[e.Ref] {
			out = append(out, e)
			delete(refs, e.Ref) // one entry per blob
		}
	}
	return out
}

// winners returns those of rows that would win their keys in g now, that
// their writer may write (as Apply judges it), that fit their writer's
// budget as apply takes them, and signed: a signpost is read only for the
// refs of those.
// An older version of a row (from a member that has not seen the newer
// one), a forged or a refused one names a blob the rows here may not: its
// signpost would have a server fetch, and keep, a blob no row here names.
// The rows' signatures are checked already (checkSigs). The caller holds
// the replica's lock.
func winners(g *syncgroup.Group, rows []syncgroup.Row) []syncgroup.Row {
	var taken []syncgroup.Row // as apply would take them, the budget aside
	for _, row := range syncgroup.ApplyOrder(rows) {
		if g.Rows().Beats(row) && g.Check(row) == nil {
			taken = append(taken, row)
		}
	}
	fit := g.Rows().FitAll(taken)
	var out []syncgroup.Row
	for i, row := range taken {
		if fit[i] && !row.Deleted && len(refsOf([]syncgroup.Row{row})) > 0 {
			out = append(out, row)
		}
	}
	return out
}

// Push runs a round at once with every member this node is connected to.
// Rounds with one peer never overlap: a Push during a round reruns it.
func (s *Syncer) Push(id syncnode.GroupID) {
	for _, p := range s.members(id) {
		if s.h.Network().Connectedness(p) == network.Connected {
			s.pushTo(id, p)
		}
	}
}

func (s *Syncer) pushTo(id syncnode.GroupID, p peer.ID) {
	k := pushKey{id, p}
	s.mu.Lock()
	if _, running := s.pushing[k]; running {
		s.pushing[k] = true
		s.mu.Unlock()
		return
	}
	s.pushing[k] = false
	s.mu.Unlock()
	started := s.work.Go(func() {
		for {
			ctx, cancel := context.WithTimeout(s.ctx, 4*s.cfg.IOTimeout)
			if err := s.SyncWith(ctx, id, p); err != nil {
				s.log.Debug("push round failed", "group", id, "peer", p, "err", err)
			}
			cancel()
			s.mu.Lock()
			again := s.pushing[k]
			if !again || s.ctx.Err() != nil {
				delete(s.pushing, k)
				s.mu.Unlock()
				return
			}
			s.pushing[k] = false
			s.mu.Unlock()
		}
	})
	if !started {
		s.mu.Lock()
		delete(s.pushing, k)
		s.mu.Unlock()
	}
}
