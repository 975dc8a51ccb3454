package syncer

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/signpost"
	"github.com/syncnode/syncnode/syncgroup"
)

// A write reaches every member of a group larger than the fanout through
// pushes and relays alone (no rounds run), and the writer sends at most
// Fanout frames plus one per connected server, whatever the group's size.
func TestPushReachesEveryMemberAtFanoutCost(t *testing.T) {
	const n, fanout = 16, 3
	c := newClusterWith(t, n, func(cfg *Config) { cfg.Fanout = fanout })
	if err := c.mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
	// Settle the pushes the joins started before counting.
	time.Sleep(200 * time.Millisecond)
	for k := range 5 {
		w := 2 + k
		before := c.sync[w].Stats().Messages
		key := fmt.Sprintf("photos/%d", k)
		if _, err := c.sync[w].Put(c.gid, key, val("v")); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, 10*time.Second, "the condition", func() bool {
			for i := range n {
				if _, ok := c.get(i, key); !ok {
					return false
				}
			}
			return true
		})
		// The writer's frames: Fanout pushes and one to the server (node
		// 1), and a relay back of nothing (the writer is never a target
		// of its own row's relays).
		testkit.WaitFor(t, 10*time.Second, "the condition", func() bool { return c.sync[w].Stats().Messages-before >= fanout })
		time.Sleep(50 * time.Millisecond)
		if sent := c.sync[w].Stats().Messages - before; sent > fanout+1 {
			t.Fatalf("write %d: the writer sent %d frames for one row; at most %d", k, sent, fanout+1)
		}
	}
}

// A push from a peer that is not a member, or of a row that is not signed
// by its writer, is refused: nothing is applied and nothing relayed.
func TestPushFromStrangerOrForgedRowRefused(t *testing.T) {
	c := newCluster(t, 3)
	stranger, err := c.mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	// The stranger signs a row as itself and pushes it.
	key := stranger.Peerstore().PrivKey(stranger.ID())
	row := syncgroup.Row{Key: "photos/evil", Value: val("x"), TS: syncgroup.Timestamp{Wall: time.Now().UnixNano()}, Writer: stranger.ID(), Seq: 1}
	if err := syncgroup.SignRow(key, c.gid, &row); err != nil {
		t.Fatal(err)
	}
	if err := rawPush(t, stranger, c.hosts[0].ID(), pushMsg{Group: c.gid, Rows: []syncgroup.Row{row}}); err == nil {
		t.Fatal("a stranger's push was taken")
	}
	// A member pushes a row it claims another member wrote.
	forged := syncgroup.Row{Key: "photos/forged", Value: val("x"), TS: syncgroup.Timestamp{Wall: time.Now().UnixNano()}, Writer: c.hosts[2].ID(), Seq: 99}
	if err := syncgroup.SignRow(c.hosts[1].Peerstore().PrivKey(c.hosts[1].ID()), c.gid, &forged); err != nil {
		t.Fatal(err)
	}
	if err := rawPush(t, c.hosts[1], c.hosts[0].ID(), pushMsg{Group: c.gid, Rows: []syncgroup.Row{forged}}); err != nil {
		t.Fatalf("a member's push was not taken (its bad row should be dropped, not the stream): %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	for i := range 3 {
		if _, ok := c.get(i, "photos/evil"); ok {
			t.Fatalf("node %d applied the stranger's row", i)
		}
		if _, ok := c.get(i, "photos/forged"); ok {
			t.Fatalf("node %d applied the forged row", i)
		}
	}
}

// rawPush speaks the push protocol from h to p and returns nil only if p
// answered, having taken every frame.
func rawPush(t *testing.T, h host.Host, p peer.ID, m pushMsg) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	st, err := h.NewStream(ctx, p, p2p.ProtoPush)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := p2p.WriteMsg(st, m, 5*time.Second); err != nil {
		return err
	}
	st.CloseWrite()
	var ack pushAck
	return p2p.ReadMsg(bufio.NewReader(st), st, &ack, maxPushAck, 5*time.Second)
}

// A push exchanges priorities as a round does: the writer learns the
// server's fresh server time from the server's answer, and the server
// learns the writer's priority from the push.
func TestPushExchangesPriorities(t *testing.T) {
	c := newCluster(t, 3) // node 1 is the server
	if err := c.mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := c.sync[2].Put(c.gid, "photos/p", val("v")); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the condition", func() bool {
		p, err := c.sync[2].Priority(c.gid)
		return err == nil && !p.ServerTime.Before(t0)
	})
	testkit.WaitFor(t, 10*time.Second, "the condition", func() bool {
		p, ok := c.sync[1].PeerPriority(c.gid, c.hosts[2].ID())
		return ok && !p.ServerTime.IsZero()
	})
}

// learnOrder is the hooks of TestSignpostsLearntBeforeRowVisible: every
// row comes with a signpost, and Learn reports whether the row it came
// with was already visible to readers of the learning syncer.
type learnOrder struct {
	noHooks
	self *atomic.Pointer[Syncer]
	gid  syncnode.GroupID
	key  string
	late chan<- bool
}

func (h learnOrder) Signposts(to peer.ID, g syncnode.GroupID, refs []syncnode.BlobRef) []SignpostEntry {
	var out []SignpostEntry
	for _, r := range refs {
		out = append(out, SignpostEntry{Ref: r, Signpost: signpost.Wire{Groups: []string{string(g)}}})
	}
	return out
}

func (h learnOrder) Learn(from peer.ID, g syncnode.GroupID, sps []SignpostEntry) {
	visible := false
	h.self.Load().With(g, func(g *syncgroup.Group) error { _, visible = g.Rows().Get(h.key); return nil })
	select {
	case h.late <- visible:
	default:
	}
}

// A reader that sees a row can fetch its blob at once: the signposts sent
// with the row (who holds the blob) are learnt before the row becomes
// visible, whether it came by push or in a round.
func TestSignpostsLearntBeforeRowVisible(t *testing.T) {
	value, err := msgpack.Marshal(map[string]any{"photo": syncnode.RefFromHash([32]byte{1, 2, 3})})
	if err != nil {
		t.Fatal(err)
	}
	for _, how := range []string{"push", "round"} {
		t.Run(how, func(t *testing.T) {
			key := "photos/" + how
			late := make(chan bool, 16)
			selves := make([]atomic.Pointer[Syncer], 3)
			c := newClusterHooked(t, 3, nil, func(i int) Hooks {
				return learnOrder{self: &selves[i], key: key, late: late}
			})
			for i := range selves {
				selves[i].Store(c.sync[i])
			}
			// Pushes go to connected members; a round connects.
			if how == "push" {
				if err := c.mn.ConnectAllButSelf(); err != nil {
					t.Fatal(err)
				}
			} else {
				for _, h := range c.hosts {
					for _, conn := range h.Network().Conns() {
						conn.Close()
					}
				}
			}
			if _, err := c.sync[2].Put(c.gid, key, value); err != nil {
				t.Fatal(err)
			}
			if how == "round" {
				testkit.WaitFor(t, 10*time.Second, "the condition", func() bool { return c.round(0, 2) == nil })
			}
			select {
			case visible := <-late:
				if visible {
					t.Fatal("the row was visible before the signposts sent with it were learnt")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no signposts learnt")
			}
		})
	}
}

// Rows queued for a member leave only if it is still a member when they
// do: a member ejected while they waited in its outbox gets none of them.
func TestQueuedRowsNeverReachAMemberEjectedMeanwhile(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	ejected := c.hosts[2].ID()
	row, err := c.sync[0].Put(c.gid, "photos/before", val("v"))
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the first row at every member", func() bool {
		_, ok := c.get(2, "photos/before")
		return ok
	})
	// The member is ejected, and a row written after it is found in its
	// outbox (queued by a relay that had not yet heard of the ejection).
	if err := c.sync[0].Eject(c.gid, ejected); err != nil {
		t.Fatal(err)
	}
	later, err := c.sync[0].Put(c.gid, "photos/after", val("v"))
	if err != nil {
		t.Fatal(err)
	}
	groups, err := c.sync[0].sendPush(ejected, []pushItem{{g: c.gid, rows: []syncgroup.Row{row, later}}})
	if err != nil || len(groups) > 0 {
		t.Fatalf("rows pushed to the ejected member: groups %v, err %v", groups, err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, ok := c.get(2, "photos/after"); ok {
		t.Fatal("the ejected member got a row written after its ejection")
	}
}

// The value limit binds rows from peers as it binds local writes: a
// member's push of a row it signed with a value over MaxValue is taken
// (its other rows are not lost) but that row is stored by no one.
func TestOversizedRowFromAMemberRefused(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	member := c.hosts[2]
	big, err := msgpack.Marshal(make([]byte, MaxValue))
	if err != nil {
		t.Fatal(err)
	}
	mk := func(key string, value []byte, seq uint64) syncgroup.Row {
		row := syncgroup.Row{Key: key, Value: value, TS: syncgroup.Timestamp{Wall: time.Now().UnixNano()}, Writer: member.ID(), Seq: seq}
		if err := syncgroup.SignRow(member.Peerstore().PrivKey(member.ID()), c.gid, &row); err != nil {
			t.Fatal(err)
		}
		return row
	}
	rows := []syncgroup.Row{mk("photos/huge", big, 100), mk("photos/small", val("ok"), 101)}
	if err := rawPush(t, member, c.hosts[0].ID(), pushMsg{Group: c.gid, Rows: rows}); err != nil {
		t.Fatalf("the push was not taken: %v", err)
	}
	testkit.WaitFor(t, 10*time.Second, "the small row at the admin", func() bool {
		_, ok := c.get(0, "photos/small")
		return ok
	})
	if _, ok := c.get(0, "photos/huge"); ok {
		t.Fatalf("the admin stored a %d-byte value, over the %d-byte limit", len(big), MaxValue)
	}
}

// rawRound runs a round from h with p as a member would, but ends it
// claiming vector claim, whatever h holds.
func rawRound(t *testing.T, h host.Host, p peer.ID, g syncnode.GroupID, claim syncgroup.VersionVector) {
	t.Helper()
	roundSending(t, h, p, g, nil, claim)
}

// A member's claimed vector is a claim: one that says it knows the
// admin's writes up to 2^62 and those of ten thousand invented writers
// makes the member it rounds with neither drop the admin's next write as
// known nor carry the invented writers in its own vector.
func TestClaimedVectorCannotSuppressWrites(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3)
	admin, victim, liar := c.hosts[0].ID(), 1, c.hosts[2]
	claim := syncgroup.VersionVector{admin: 1 << 62}
	for i := range 10000 {
		m, err := mh.Sum(fmt.Appendf(nil, "invented-%d", i), mh.IDENTITY, -1)
		if err != nil {
			t.Fatal(err)
		}
		claim[peer.ID(m)] = 7
	}
	rawRound(t, liar, c.hosts[victim].ID(), c.gid, claim)
	var vv syncgroup.VersionVector
	c.sync[victim].With(c.gid, func(g *syncgroup.Group) error { vv = g.Rows().VV(); return nil })
	if vv[admin] >= 1<<62 || len(vv) > 3 {
		t.Fatalf("the claim was believed: the victim's vector has %d writers, the admin at %d", len(vv), vv[admin])
	}
	if _, err := c.sync[0].Put(c.gid, "photos/after-the-claim", val("v")); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the admin's write at the victim", func() bool {
		_, ok := c.get(victim, "photos/after-the-claim")
		return ok
	})
}

// learnRec records the signposts a syncer learns.
type learnRec struct {
	noHooks
	learnt chan []SignpostEntry
}

func (h learnRec) Learn(from peer.ID, g syncnode.GroupID, sps []SignpostEntry) { h.learnt <- sps }

// A member vouches only for the blobs of the rows it sends: signposts of
// other refs that ride along (ten thousand invented blobs, say) are
// dropped unread, so they queue no fetch and name no group anywhere.
func TestSignpostsOfUnsentRowsDropped(t *testing.T) {
	t.Parallel()
	learnt := make(chan []SignpostEntry, 16)
	c := newClusterHooked(t, 3, nil, func(i int) Hooks { return learnRec{learnt: learnt} })
	member := c.hosts[2]
	real := syncnode.RefFromHash([32]byte{7})
	value, err := msgpack.Marshal(map[string]any{"photo": real})
	if err != nil {
		t.Fatal(err)
	}
	row := syncgroup.Row{Key: "photos/real", Value: value, TS: syncgroup.Timestamp{Wall: time.Now().UnixNano()}, Writer: member.ID(), Seq: 50}
	if err := syncgroup.SignRow(member.Peerstore().PrivKey(member.ID()), c.gid, &row); err != nil {
		t.Fatal(err)
	}
	sp := signpost.Wire{Groups: []string{string(c.gid)}}
	sps := []SignpostEntry{{Ref: real, Signpost: sp}}
	for i := range 10000 {
		sps = append(sps, SignpostEntry{Ref: syncnode.RefFromHash([32]byte{byte(i), byte(i >> 8), 1}), Signpost: sp})
	}
	if err := rawPush(t, member, c.hosts[0].ID(), pushMsg{Group: c.gid, Rows: []syncgroup.Row{row}, Signposts: sps}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-learnt:
		if len(got) != 1 || got[0].Ref != real {
			t.Fatalf("learnt %d signposts with one row that references one blob", len(got))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no signpost learnt")
	}
}

// A member that sends another member's latest row alone, claiming in its
// vector that it sent everything that writer wrote before, hides nothing:
// the writer's earlier rows still reach the victim from an honest round.
func TestWithheldRowsStillArrive(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 4)
	const server, liar, victim = 1, 2, 3
	// The victim is away while the admin writes three rows.
	for i := range 3 {
		if err := c.mn.UnlinkPeers(c.hosts[victim].ID(), c.hosts[i].ID()); err != nil {
			t.Fatal(err)
		}
		c.mn.DisconnectPeers(c.hosts[victim].ID(), c.hosts[i].ID())
	}
	var last syncgroup.Row
	for _, k := range []string{"photos/a", "photos/b", "photos/c"} {
		r, err := c.sync[0].Put(c.gid, k, val(k))
		if err != nil {
			t.Fatal(err)
		}
		last = r
	}
	testkit.WaitFor(t, 10*time.Second, "the rows at the liar and the server", func() bool {
		_, l := c.get(liar, "photos/c")
		_, s := c.get(server, "photos/a")
		return l && s
	})
	// The liar, back in touch with the victim, sends the admin's last
	// row alone and says it sent all of the admin's writes up to it.
	if _, err := c.mn.LinkPeers(c.hosts[victim].ID(), c.hosts[liar].ID()); err != nil {
		t.Fatal(err)
	}
	roundSending(t, c.hosts[liar], c.hosts[victim].ID(), c.gid, []syncgroup.Row{last}, syncgroup.VersionVector{last.Writer: last.Seq})
	if _, ok := c.get(victim, "photos/c"); !ok {
		t.Fatal("the victim did not take the genuine row it was sent")
	}
	// An honest round with the server brings the rows withheld.
	if _, err := c.mn.LinkPeers(c.hosts[victim].ID(), c.hosts[server].ID()); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "the withheld rows at the victim", func() bool {
		if err := c.round(victim, server); err != nil {
			t.Logf("round: %v", err)
		}
		_, a := c.get(victim, "photos/a")
		_, b := c.get(victim, "photos/b")
		return a && b
	})
}

// roundSending runs a sync round from h with p as a member would: it reads
// p's rows and sends rows with claim as its vector.
func roundSending(t *testing.T, h host.Host, p peer.ID, g syncnode.GroupID, rows []syncgroup.Row, claim syncgroup.VersionVector) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	st, err := h.NewStream(ctx, p, p2p.ProtoSync)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := p2p.WriteMsg(st, hello{Group: g, VV: syncgroup.VersionVector{}}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(st)
	for {
		var b batch
		if err := p2p.ReadMsg(br, st, &b, p2p.MaxFrame, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if b.Err != "" {
			t.Fatalf("round refused: %s", b.Err)
		}
		if b.Done {
			break
		}
	}
	if err := p2p.WriteMsg(st, batch{VV: claim, Rows: rows, Done: true}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	st.CloseWrite()
	io.Copy(io.Discard, st)
}

// A signpost riding with an older version of a row, one that the
// receiver's newer version beats (from a member that had not seen the
// delete), or with a row its sender did not sign, is dropped unread: its blob is one the rows here let go, and
// a server would fetch it again and keep it for good.
func TestSignpostsOfSupersededRowsDropped(t *testing.T) {
	t.Parallel()
	learnt := make(chan []SignpostEntry, 16)
	c := newClusterHooked(t, 3, nil, func(i int) Hooks { return learnRec{learnt: learnt} })
	member := c.hosts[2]
	old := syncnode.RefFromHash([32]byte{9})
	value, err := msgpack.Marshal(map[string]any{"photo": old})
	if err != nil {
		t.Fatal(err)
	}
	stale := syncgroup.Row{Key: "photos/gone", Value: value, TS: syncgroup.Timestamp{Wall: time.Now().Add(-time.Minute).UnixNano()}, Writer: member.ID(), Seq: 60}
	if err := syncgroup.SignRow(member.Peerstore().PrivKey(member.ID()), c.gid, &stale); err != nil {
		t.Fatal(err)
	}
	// The receiver's own, newer write of the key: the row is gone.
	if _, err := c.sync[0].Delete(c.gid, "photos/gone"); err != nil {
		t.Fatal(err)
	}
	sps := []SignpostEntry{{Ref: old, Signpost: signpost.Wire{Groups: []string{string(c.gid)}}}}
	if err := rawPush(t, member, c.hosts[0].ID(), pushMsg{Group: c.gid, Rows: []syncgroup.Row{stale}, Signposts: sps}); err != nil {
		t.Fatal(err)
	}
	// A row that is not the member's (signed by another key): refused,
	// and its signpost with it.
	forgedRef := syncnode.RefFromHash([32]byte{11})
	fv, _ := msgpack.Marshal(map[string]any{"photo": forgedRef})
	forged := syncgroup.Row{Key: "photos/forged", Value: fv, TS: syncgroup.Timestamp{Wall: time.Now().UnixNano()}, Writer: member.ID(), Seq: 61}
	if err := syncgroup.SignRow(c.hosts[1].Peerstore().PrivKey(c.hosts[1].ID()), c.gid, &forged); err != nil {
		t.Fatal(err)
	}
	sps = []SignpostEntry{{Ref: forgedRef, Signpost: signpost.Wire{Groups: []string{string(c.gid)}}}}
	rawPush(t, member, c.hosts[0].ID(), pushMsg{Group: c.gid, Rows: []syncgroup.Row{forged}, Signposts: sps})
	// A fresh row after them: its signpost is learnt, theirs not.
	fresh := syncnode.RefFromHash([32]byte{10})
	value, _ = msgpack.Marshal(map[string]any{"photo": fresh})
	row := syncgroup.Row{Key: "photos/new", Value: value, TS: syncgroup.Timestamp{Wall: time.Now().UnixNano()}, Writer: member.ID(), Seq: 62}
	if err := syncgroup.SignRow(member.Peerstore().PrivKey(member.ID()), c.gid, &row); err != nil {
		t.Fatal(err)
	}
	sps = []SignpostEntry{{Ref: fresh, Signpost: signpost.Wire{Groups: []string{string(c.gid)}}}}
	if err := rawPush(t, member, c.hosts[0].ID(), pushMsg{Group: c.gid, Rows: []syncgroup.Row{row}, Signposts: sps}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-learnt:
		if len(got) != 1 || got[0].Ref != fresh {
			t.Fatalf("learnt %v: the signpost of a superseded row was read", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no signpost learnt")
	}
}

// A member past its budget in the group cannot have a server fetch the
// blobs its refused rows name: the signposts sent with a push of ten rows
// under a budget of three, each claiming the group, are learnt for the
// three rows taken only.
func TestSignpostsOfRowsOverBudgetDropped(t *testing.T) {
	t.Parallel()
	learnt := make(chan []SignpostEntry, 16)
	c := newClusterHooked(t, 3, nil, func(i int) Hooks { return learnRec{learnt: learnt} })
	if _, err := c.sync[0].ChangeSpec(c.gid, syncgroup.Change{Op: syncgroup.SetBudget, Budget: &syncgroup.Budget{Rows: 3}}); err != nil {
		t.Fatal(err)
	}
	for len(learnt) > 0 {
		<-learnt
	}
	member := c.hosts[2]
	var rows []syncgroup.Row
	var sps []SignpostEntry
	for i := range 10 {
		ref := syncnode.RefFromHash([32]byte{9, byte(i)})
		value, err := msgpack.Marshal(map[string]any{"photo": ref})
		if err != nil {
			t.Fatal(err)
		}
		row := syncgroup.Row{Key: fmt.Sprintf("photos/over-%d", i), Value: value, TS: syncgroup.Timestamp{Wall: time.Now().UnixNano() + int64(i)}, Writer: member.ID(), Seq: uint64(100 + i)}
		if err := syncgroup.SignRow(member.Peerstore().PrivKey(member.ID()), c.gid, &row); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, row)
		sps = append(sps, SignpostEntry{Ref: ref, Signpost: signpost.Wire{Groups: []string{string(c.gid)}}})
	}
	if err := rawPush(t, member, c.hosts[0].ID(), pushMsg{Group: c.gid, Rows: rows, Signposts: sps}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-learnt:
		if len(got) != 3 {
			t.Fatalf("learnt %d signposts with 10 rows of which the budget takes 3", len(got))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no signpost learnt")
	}
	held := 0
	for i := range 10 {
		if _, ok := c.get(0, fmt.Sprintf("photos/over-%d", i)); ok {
			held++
		}
	}
	if held != 3 {
		t.Fatalf("the admin holds %d of the member's rows, want 3", held)
	}
}
