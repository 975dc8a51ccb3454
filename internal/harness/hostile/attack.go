package hostile

// The hostile member's lies, one kind per step, each well-formed on the
// wire and aimed at one honest node.

import (
	"context"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode/internal/syncer"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/syncgroup"
)

// attack runs one hostile operation against honest node t.
func (s *sim) attack(ctx context.Context, t int) string {
	ctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	a := &strike{s: s, ctx: ctx, t: t, to: s.ids[t], p: s.bad, viaPush: s.rng.IntN(2) == 0, now: time.Now()}
	kinds := []func() string{a.vvLie, a.ownRows, a.replay, a.withhold, a.signposts, a.take, a.shareJunk, a.blobJunk, a.flood, a.rejoin, a.chainLies, a.joinLie}
	return kinds[s.rng.IntN(len(kinds))]()
}

// strike is one attack on node t: the hostile member p sends to its peer
// to, by push or in a round's batch (viaPush), at now.
type strike struct {
	s       *sim
	ctx     context.Context
	t       int
	to      peer.ID
	p       *peerHost
	viaPush bool
	now     time.Time
}

// send delivers rows and signposts by push or in a round's batch.
func (a *strike) send(rows []syncgroup.Row, sps []syncer.SignpostEntry) error {
	prio := bogusPrio()
	if a.viaPush {
		return a.p.push(a.ctx, a.to, pushMsg{Group: a.s.g, Rows: rows, Signposts: sps, Prio: &prio})
	}
	_, err := a.p.round(a.ctx, a.to, a.s.hello(nil), batch{Rows: rows, Signposts: sps, VV: syncgroup.VersionVector{}, Done: true})
	return err
}

// vvLie sends version vectors that lie: huge sequences, invented writers.
func (a *strike) vvLie() string {
	s, p, to, t, ctx := a.s, a.p, a.to, a.t, a.ctx
	vv := syncgroup.VersionVector{}
	for _, id := range s.ids {
		vv[id] = 1<<62 + s.rng.Uint64N(1<<20)
	}
	for range 500 + s.rng.IntN(1500) {
		vv[peer.ID(s.bytes(34))] = s.rng.Uint64()
	}
	n, err := p.round(ctx, to, s.hello(vv), batch{VV: vv, Done: true})
	return fmt.Sprintf("vv-lie: %d writers to %s, %d rows back: %v", len(vv), names[t], n, errString(err))
}

// ownRows sends rows of its own: legal ones and ones no node may store.
func (a *strike) ownRows() string {
	s, p, t, now, viaPush := a.s, a.p, a.t, a.now, a.viaPush
	var rows []syncgroup.Row
	own := func(key string, v []byte, ts int64, jump uint64, legal bool) {
		rows = append(rows, p.sign(key, v, false, syncgroup.Timestamp{Wall: ts}, p.nextSeq(jump)))
		s.note(key, legal)
	}
	k := func() string { return fmt.Sprintf("sim/h/%d", s.rng.Uint32()) }
	v, _ := msgpack.Marshal("mine")
	own(k(), v, now.Add(10*time.Second).UnixNano(), 0, true)
	own(k(), v, 1, 0, true)
	own(k(), v, now.UnixNano(), 1<<40, true)
	own(k(), v, now.Add(time.Hour).UnixNano(), 0, false)
	own(k(), make([]byte, syncer.MaxValue+1+s.rng.IntN(1<<10)), now.UnixNano(), 0, false)
	own(fmt.Sprintf("zzz/%d", s.rng.Uint32()), v, now.UnixNano(), 0, false)
	forged := syncgroup.Row{Key: k(), Value: v, TS: syncgroup.Timestamp{Wall: now.UnixNano()}, Writer: s.ids[s.rng.IntN(numNodes)], Seq: 1 << 30}
	syncgroup.SignRow(p.key, s.g, &forged)
	rows = append(rows, forged)
	s.note(forged.Key, false)
	err := a.send(rows, nil)
	return fmt.Sprintf("own-rows: %d to %s (push %v): %v", len(rows), names[t], viaPush, errString(err))
}

// replay sends genuine rows again, reordered.
func (a *strike) replay() string {
	s, p, t, viaPush := a.s, a.p, a.t, a.viaPush
	p.mu.Lock()
	rows := append([]syncgroup.Row(nil), p.genuine[max(0, len(p.genuine)-64):]...)
	p.mu.Unlock()
	s.rng.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
	err := a.send(rows, nil)
	return fmt.Sprintf("replay: %d genuine rows to %s (push %v): %v", len(rows), names[t], viaPush, errString(err))
}

// withhold sends a writer's last row alone, with a vector claiming all
// before it.
func (a *strike) withhold() string {
	s, p, to, t, ctx := a.s, a.p, a.to, a.t, a.ctx
	p.mu.Lock()
	var last *syncgroup.Row
	w := s.ids[s.rng.IntN(numNodes)]
	for k := range p.genuine {
		if r := p.genuine[k]; r.Writer == w && (last == nil || r.Seq > last.Seq) {
			last = &r
		}
	}
	p.mu.Unlock()
	if last == nil {
		return "withhold: no row of that writer yet"
	}
	s.cut.Heal() // the node cut off meets the hostile member first
	vv := syncgroup.VersionVector{w: last.Seq}
	n, err := p.round(ctx, to, s.hello(nil), batch{Rows: []syncgroup.Row{*last}, VV: vv, Done: true})
	return fmt.Sprintf("withhold: %s's row %d alone, vector %v, to %s (%d rows back): %v", s.name(w), last.Seq, last.Seq, names[t], n, errString(err))
}

// signposts sends signposts naming others as servers, and blobs no row
// names.
func (a *strike) signposts() string {
	s, p, t, now, viaPush := a.s, a.p, a.t, a.now, a.viaPush
	b := s.blobs[s.rng.IntN(len(s.blobs))]
	invented := refOf(s.bytes(64))
	s.invented = append(s.invented, invented)
	ref := b.ref
	if !b.put {
		ref = refOf(s.bytes(32)) // a row naming a blob no one holds
	} else {
		p.mu.Lock()
		p.known[b.ref] = b.data // it fetched it, as a member may
		p.mu.Unlock()
	}
	v, _ := msgpack.Marshal(map[string]any{"photo": ref})
	key := fmt.Sprintf("sim/h/sp%d", s.rng.Uint32())
	row := p.sign(key, v, false, syncgroup.Timestamp{Wall: now.UnixNano()}, p.nextSeq(0))
	s.note(key, true)
	others := []peer.ID{s.ids[phone], s.ids[laptop], p.id()}
	sps := []syncer.SignpostEntry{{Ref: ref, Signpost: fakeLocs(others, s.g)}, {Ref: invented, Signpost: fakeLocs(s.ids[:], s.g)}}
	err := a.send([]syncgroup.Row{row}, sps)
	return fmt.Sprintf("signposts: row naming %s, phone and laptop as servers, and an invented blob, to %s (push %v): %v",
		ref.String()[:12], names[t], viaPush, errString(err))
}

// take takes shares with wrong, replayed or true proofs, and settles
// twice.
func (a *strike) take() string {
	s, p, to, t, ctx := a.s, a.p, a.to, a.t, a.ctx
	b := s.blobs[s.rng.IntN(len(s.blobs))]
	id := ownership.NewTransferID()
	var ch sharesResp
	if err := p.call(ctx, to, p2p.ProtoShares, sharesReq{Op: "challenge", ID: id, Ref: b.ref, Group: s.g}, &ch); err != nil || ch.Err != "" || ch.Nothing {
		return fmt.Sprintf("take: challenge for %s at %s: %v %s nothing %v", b.ref.String()[:12], names[t], errString(err), ch.Err, ch.Nothing)
	}
	kind := s.rng.IntN(3)
	proof := s.bytes(32)
	p.mu.Lock()
	switch {
	case kind == 1 && len(p.proofs) > 0:
		proof = p.proofs[s.rng.IntN(len(p.proofs))]
	case kind == 2 && b.put:
		proof = prove(b.data, ch.Nonce)
		p.known[b.ref] = b.data
	}
	p.proofs = append(p.proofs, proof)
	p.mu.Unlock()
	// An admin's ejecting offer from a member that is none, and any
	// bound on what it can take.
	ejecting := s.rng.IntN(2) == 0
	want := []int{0, 1, 2, 3, -7, 1 << 30}[s.rng.IntN(6)]
	var off sharesResp
	err := p.call(ctx, to, p2p.ProtoShares, sharesReq{Op: "offer", ID: id, Ref: b.ref, Group: s.g, Proof: proof, Ejecting: ejecting, Want: want}, &off)
	if err != nil || off.Transfer == nil || off.Transfer.N == 0 {
		return fmt.Sprintf("take: offer (proof kind %d, ejecting %v, want %d) of %s at %s: %v %s", kind, ejecting, want, b.ref.String()[:12], names[t], errString(err), off.Err)
	}
	settles := s.rng.IntN(3) // never, once, or twice
	for range settles {
		var r sharesResp
		p.call(ctx, to, p2p.ProtoShares, sharesReq{Op: "settle", ID: id, Ref: b.ref, Group: s.g, Accepted: true}, &r)
	}
	return fmt.Sprintf("take: %d shares of %s offered by %s (proof kind %d), settled %d times", off.Transfer.N, b.ref.String()[:12], names[t], kind, settles)
}

// shareJunk settles, voids and resolves others' transfers, and asks for
// blobs no row names.
func (a *strike) shareJunk() string {
	s, p, to, t, ctx := a.s, a.p, a.to, a.t, a.ctx
	b := s.blobs[s.rng.IntN(len(s.blobs))]
	ref := b.ref
	if s.rng.IntN(2) == 0 {
		ref = refOf(s.bytes(48))
		s.invented = append(s.invented, ref)
	}
	var out []string
	for _, op := range []string{"settle", "void", "resolve", "settles", "ask"} {
		req := sharesReq{Op: op, ID: ownership.NewTransferID(), Ref: ref, Group: s.g, Accepted: true, Leaving: s.rng.IntN(2) == 0}
		if op == "settles" {
			for range 40 {
				req.Items = append(req.Items, sharesReq{ID: ownership.NewTransferID(), Ref: ref, Group: s.g, Accepted: true})
			}
		}
		var r sharesResp
		err := p.call(ctx, to, p2p.ProtoShares, req, &r)
		out = append(out, fmt.Sprintf("%s: %v %s", op, errString(err), r.Err))
	}
	return fmt.Sprintf("share-junk: blob %s at %s: %v", ref.String()[:12], names[t], out)
}

// blobJunk asks have and get for invented blobs, huge and negative
// ranges.
func (a *strike) blobJunk() string {
	s, p, to, t, ctx := a.s, a.p, a.to, a.t, a.ctx
	b := s.blobs[s.rng.IntN(len(s.blobs))]
	inv := refOf(s.bytes(40))
	s.invented = append(s.invented, inv)
	var out []string
	for _, q := range []blobReq{{Ref: inv.Bytes()}, {Ref: b.ref.Bytes(), Len: 1 << 62, Tree: true},
		{Ref: b.ref.Bytes(), Off: -1, Len: 10}, {Ref: b.ref.Bytes(), Off: 1 << 40, Len: 1 << 40}, {Ref: []byte("junk")}} {
		var r blobResp
		proto := p2p.ProtoGetBlob
		if s.rng.IntN(2) == 0 {
			proto = p2p.ProtoHaveBlob
		}
		err := p.call(ctx, to, proto, q, &r)
		out = append(out, fmt.Sprintf("%d/%v", r.Code, errString(err)))
	}
	return fmt.Sprintf("blob-junk: at %s: %v", names[t], out)
}

// flood sends a flood of legal rows: the budget a member has.
func (a *strike) flood() string {
	s, p, t, now, viaPush := a.s, a.p, a.t, a.now, a.viaPush
	var rows []syncgroup.Row
	v := s.bytes(1 << 10)
	for range 100 + s.rng.IntN(200) {
		key := fmt.Sprintf("sim/h/f%d", s.rng.Uint32())
		rows = append(rows, p.sign(key, v, false, syncgroup.Timestamp{Wall: now.UnixNano()}, p.nextSeq(0)))
		s.note(key, true)
	}
	err := a.send(rows, nil)
	return fmt.Sprintf("flood: %d rows to %s (push %v): %v", len(rows), names[t], viaPush, errString(err))
}

// rejoin sends its membership row again, newer than any ejection.
func (a *strike) rejoin() string {
	s, p, to, t, ctx, now := a.s, a.p, a.to, a.t, a.ctx, a.now
	p.mu.Lock()
	self := p.self
	p.mu.Unlock()
	self.TS = syncgroup.Timestamp{Wall: now.UnixNano()}
	self.Seq = p.nextSeq(0)
	syncgroup.SignRow(p.key, s.g, &self)
	h := s.hello(nil)
	h.Self = &self
	n, err := p.round(ctx, to, h, batch{VV: syncgroup.VersionVector{}, Done: true})
	return fmt.Sprintf("rejoin: own membership row to %s, %d rows back: %v", names[t], n, errString(err))
}

// chainLies sends changes to the group's chain that a member that is no
// admin may not make, well formed and signed by itself: it makes itself
// an admin, admits a peer of its own, ejects an honest node, removes the
// creator's role, adds a prefix, shrinks every writer's budget to one
// row; on the chain's latest change or on an
// older one (a fork), and one forged as the creator's. By push, in a
// batch, or as the tail of its hello.
func (a *strike) chainLies() string {
	s, p, to, t, ctx := a.s, a.p, a.to, a.t, a.ctx
	p.mu.Lock()
	var links []string
	for _, r := range p.genuine {
		if syncgroup.IsChainKey(r.Key) {
			links = append(links, r.Key)
		}
	}
	p.mu.Unlock()
	parent := ""
	if len(links) > 0 && s.rng.IntN(4) > 0 {
		parent = links[s.rng.IntN(len(links))]
	}
	_, invented := p.id(), peer.ID(s.bytes(8))
	if id, err := peer.IDFromBytes(append([]byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20}, s.bytes(32)...)); err == nil {
		invented = id
	}
	changes := []syncgroup.Change{
		{Op: syncgroup.AddAdmin, Peer: p.id()},
		{Op: "admit", Peer: invented, Nonce: s.bytes(16)},
		{Op: "eject", Peer: s.ids[s.rng.IntN(numNodes)]},
		{Op: syncgroup.RemoveAdmin, Peer: s.ids[phone]},
		{Op: syncgroup.AddPrefix, Prefix: "zzz/"},
		{Op: syncgroup.SetBudget, Budget: &syncgroup.Budget{Rows: 1, Bytes: 1, Refs: 1}}, // would censor every writer
		{Op: syncgroup.AddAdmin, Peer: p.id(), Redo: parent},                             // claims to redo an admin's change
	}
	var rows []syncgroup.Row
	for _, c := range changes {
		c.Parent = parent
		v, _ := msgpack.Marshal(c)
		key, err := syncgroup.ChangeKey(parent, p.id(), v)
		if err != nil {
			return "chain-lies: " + err.Error()
		}
		rows = append(rows, p.sign(key, v, false, syncgroup.Timestamp{Wall: a.now.UnixNano()}, p.nextSeq(0)))
	}
	v, _ := msgpack.Marshal(syncgroup.Change{Parent: parent, Op: syncgroup.AddAdmin, Peer: p.id()})
	key, _ := syncgroup.ChangeKey(parent, s.ids[phone], v)
	forged := syncgroup.Row{Key: key, Value: v, TS: syncgroup.Timestamp{Wall: a.now.UnixNano()}, Writer: s.ids[phone], Seq: 1 << 30}
	syncgroup.SignRow(p.key, s.g, &forged)
	rows = append(rows, forged)
	s.invented = append(s.invented, refOf([]byte(invented)))
	s.intruders = append(s.intruders, invented)
	var err error
	how := "hello"
	switch s.rng.IntN(3) {
	case 0:
		h := s.hello(nil)
		h.Chain = rows
		_, err = p.round(ctx, to, h, batch{VV: syncgroup.VersionVector{}, Done: true})
	default:
		how = "push"
		if !a.viaPush {
			how = "batch"
		}
		err = a.send(rows, nil)
	}
	return fmt.Sprintf("chain-lies: %d changes after %q to %s (%s): %v", len(rows), parent, names[t], how, errString(err))
}

// joinLie asks an admin to admit the hostile member again with its used
// invitation, claiming a last timestamp far ahead (an hour, or ten
// years): the admin's clock must not follow it, or its next rows would be
// refused everywhere as from the future (the freshness checks would see
// it), and the ban of an expelled member must hold.
func (a *strike) joinLie() string {
	s, p, ctx := a.s, a.p, a.ctx
	admin := s.ids[s.rng.IntN(laptop+1)] // phone or laptop: both admins
	ahead := time.Hour
	if s.rng.IntN(2) == 0 {
		ahead = 10 * 365 * 24 * time.Hour
	}
	var resp joinResponse
	err := p.call(ctx, admin, p2p.ProtoJoin, joinRequest{Invitation: s.inv.WithoutAddrs(), TS: syncgroup.Timestamp{Wall: a.now.Add(ahead).UnixNano()}}, &resp)
	if err == nil && resp.Err == "" && s.out {
		s.readmitted = s.name(admin)
	}
	return fmt.Sprintf("join-lie: used invitation, clock %v ahead, to %s: %v %q", ahead, s.name(admin), errString(err), resp.Err)
}

// hello is the hostile member's hello: a lying vector (or none) and a
// priority no member may have.
func (s *sim) hello(vv syncgroup.VersionVector) hello {
	if vv == nil {
		vv = syncgroup.VersionVector{}
	}
	return hello{Group: s.g, VV: vv, Prio: bogusPrio()}
}

// note records a key the hostile member wrote: legal or not, and, once it
// is out, to be stored nowhere.
func (s *sim) note(key string, legal bool) {
	if legal && !s.out {
		s.legal[key] = true
	} else {
		s.illegal[key] = true
	}
}

func (s *sim) name(p peer.ID) string {
	for i, id := range s.ids {
		if id == p {
			return names[i]
		}
	}
	return "the hostile member"
}

// bytes returns n bytes drawn from the schedule.
func (s *sim) bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(s.rng.Uint32())
	}
	return b
}
