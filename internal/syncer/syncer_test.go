package syncer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/syncgroup"
)

var discard = slog.New(slog.DiscardHandler)

type cluster struct {
	t     *testing.T
	mn    mocknet.Mocknet
	hosts []host.Host
	sync  []*Syncer
	gid   syncnode.GroupID
}

// newCluster makes n linked mocknet peers; peer 0 creates a group and
// invites the others (peer 1 as a server), who join.
func newCluster(t *testing.T, n int) *cluster { return newClusterWith(t, n, nil) }

// newClusterWith is newCluster with each syncer's config passed through
// tweak first.
func newClusterWith(t *testing.T, n int, tweak func(*Config)) *cluster {
	return newClusterHooked(t, n, tweak, nil)
}

// newClusterHooked is newClusterWith with syncer i's hooks hooks(i), if
// hooks is set.
func newClusterHooked(t *testing.T, n int, tweak func(*Config), hooks func(i int) Hooks) *cluster {
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	c := &cluster{t: t, mn: mn}
	for range n {
		h, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		c.hosts = append(c.hosts, h)
		cfg := Config{}
		cfg.IOTimeout = 5 * time.Second
		if tweak != nil {
			tweak(&cfg)
		}
		var hk Hooks
		if hooks != nil {
			hk = hooks(len(c.sync))
		}
		s := mustNew(t, h, cfg, discard, hk)
		t.Cleanup(s.Close)
		c.sync = append(c.sync, s)
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	adminKey := c.hosts[0].Peerstore().PrivKey(c.hosts[0].ID())
	g, err := syncgroup.Create("photos", []string{"photos/"}, true, adminKey, syncnode.Normal, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c.gid = g.Spec().ID
	c.sync[0].Add(g)
	for i := 1; i < n; i++ {
		dev := syncnode.Normal
		if i == 1 {
			dev = syncnode.Server
		}
		inv, err := syncgroup.Invite(adminKey, c.gid, c.hosts[i].ID(), dev, time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.sync[i].Join(t.Context(), inv, c.adminFor(c.hosts[i]), nil); err != nil {
			t.Fatal(err)
		}
	}
	// Everyone learns everyone's membership from the admin, which met
	// them all when they joined. A round that fails (a reset stream on a
	// loaded machine) is run again.
	for i := 1; i < n; i++ {
		testkit.WaitFor(t, 10*time.Second, "the condition", func() bool {
			if err := c.round(0, i); err != nil {
				t.Logf("round 0↔%d: %v", i, err)
			}
			return len(c.members(i)) == n
		})
	}
	return c
}

// adminFor tells h where the admin is and returns it, as the one to ask
// for a join.
func (c *cluster) adminFor(h host.Host) []peer.ID {
	h.Peerstore().AddAddrs(c.hosts[0].ID(), c.hosts[0].Addrs(), time.Hour)
	return []peer.ID{c.hosts[0].ID()}
}

func (c *cluster) round(a, b int) error {
	ctx, cancel := context.WithTimeout(c.t.Context(), 10*time.Second)
	defer cancel()
	return c.sync[a].SyncWith(ctx, c.gid, c.hosts[b].ID())
}

func (c *cluster) get(i int, key string) (syncgroup.Row, bool) {
	var row syncgroup.Row
	var ok bool
	c.sync[i].With(c.gid, func(g *syncgroup.Group) error { row, ok = g.Rows().Get(key); return nil })
	return row, ok
}

func val(s string) []byte { b, _ := msgpack.Marshal(s); return b }

func TestThreeNodesConvergeOnConcurrentWrites(t *testing.T) {
	c := newCluster(t, 3)
	for i := range c.hosts {
		if n := len(c.members(i)); n != 3 {
			t.Fatalf("node %d sees %d members", i, n)
		}
	}
	// All three write the same key "at once" (no sync in between).
	for i := range 3 {
		if _, err := c.sync[i].Put(c.gid, "photos/cover", val(fmt.Sprint("from ", i))); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		for i := range 3 {
			if err := c.round(i, (i+1)%3); err != nil {
				t.Fatal(err)
			}
		}
	}
	w, _ := c.get(0, "photos/cover")
	for i := 1; i < 3; i++ {
		if g, _ := c.get(i, "photos/cover"); g.Writer != w.Writer || g.Seq != w.Seq {
			t.Fatalf("node %d's winner %s/%d differs from node 0's %s/%d", i, g.Writer, g.Seq, w.Writer, w.Seq)
		}
	}
}

func (c *cluster) members(i int) []syncgroup.Member {
	var ms []syncgroup.Member
	c.sync[i].With(c.gid, func(g *syncgroup.Group) error { ms = g.Members(); return nil })
	return ms
}

func TestWritesArePushedAtOnce(t *testing.T) {
	c := newCluster(t, 3)
	if err := c.mn.ConnectAllButSelf(); err != nil {
		t.Fatal(err)
	}
	c.sync[2].Put(c.gid, "photos/new", val("pushed"))
	testkit.WaitFor(t, 10*time.Second, "the condition", func() bool {
		_, ok0 := c.get(0, "photos/new")
		_, ok1 := c.get(1, "photos/new")
		return ok0 && ok1
	})
}

func TestPartitionAndHeal(t *testing.T) {
	c := newCluster(t, 3)
	// Cut node 2 off from the others.
	for _, i := range []int{0, 1} {
		c.mn.UnlinkPeers(c.hosts[i].ID(), c.hosts[2].ID())
		c.mn.DisconnectPeers(c.hosts[i].ID(), c.hosts[2].ID())
	}
	c.sync[0].Put(c.gid, "photos/a", val("left side"))
	c.sync[2].Put(c.gid, "photos/b", val("right side"))
	c.sync[2].Delete(c.gid, "photos/a") // a delete of a key it has not seen yet
	if err := c.round(0, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.round(0, 2); err == nil {
		t.Fatal("a round crossed the partition")
	}
	for _, i := range []int{0, 1} {
		c.mn.LinkPeers(c.hosts[i].ID(), c.hosts[2].ID())
	}
	for range 2 {
		for i := range 3 {
			if err := c.round(i, (i+1)%3); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 3 {
		if _, ok := c.get(i, "photos/b"); !ok {
			t.Fatalf("node %d lacks photos/b after healing", i)
		}
		a, _ := c.get(i, "photos/a")
		a0, _ := c.get(0, "photos/a")
		if a.Writer != a0.Writer || a.Seq != a0.Seq {
			t.Fatalf("node %d disagrees on photos/a", i)
		}
	}
}

func TestNonMemberAndEjectedGetNothing(t *testing.T) {
	c := newCluster(t, 3)
	c.sync[0].Put(c.gid, "photos/secret", val("for members"))
	// A stranger with a copy of the spec but no invitation.
	stranger, err := c.mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	c.mn.LinkAll()
	ss := mustNew(t, stranger, Config{}, discard, nil)
	defer ss.Close()
	var spec syncgroup.Spec
	c.sync[0].With(c.gid, func(g *syncgroup.Group) error { spec = g.Spec(); return nil })
	sg, _ := syncgroup.NewGroup(spec, stranger.ID(), time.Minute)
	ss.Add(sg)
	if err := ss.SyncWith(t.Context(), c.gid, c.hosts[0].ID()); !errors.Is(err, ErrRefused) {
		t.Fatalf("stranger's round: %v", err)
	}
	if _, ok := sg.Rows().Get("photos/secret"); ok {
		t.Fatal("the stranger got a row")
	}
	// A forged invitation (signed by a non-admin) is refused at join.
	strangerKey := stranger.Peerstore().PrivKey(stranger.ID())
	forged, _ := syncgroup.Invite(strangerKey, c.gid, stranger.ID(), syncnode.Server, time.Now().Add(time.Hour))
	forged.Admin = c.hosts[0].ID()
	if _, err := ss.Join(t.Context(), forged, c.adminFor(stranger), nil); err == nil {
		t.Fatal("forged invitation accepted")
	}
	// The admin ejects node 2; its next round is refused.
	c.sync[0].With(c.gid, func(g *syncgroup.Group) error { _, err := g.Eject(c.hosts[2].ID(), time.Now()); return err })
	// Node 1 learns of the ejection before the new row exists; a member
	// that has not yet heard of it could still relay rows to node 2, since
	// ejection spreads like any other row.
	if err := c.round(1, 0); err != nil {
		t.Fatal(err)
	}
	c.sync[0].Put(c.gid, "photos/after", val("after ejection"))
	if err := c.round(2, 0); !errors.Is(err, ErrRefused) {
		t.Fatalf("ejected member's round: %v", err)
	}
	if _, ok := c.get(2, "photos/after"); ok {
		t.Fatal("the ejected member got a new row")
	}
}

func TestPrioritiesMoveAndDevTypesComeFromMembership(t *testing.T) {
	c := newCluster(t, 3) // node 1 is the server
	srv := c.hosts[1].ID()
	before, _ := c.sync[2].Priority(c.gid)
	if err := c.round(2, 1); err != nil {
		t.Fatal(err)
	}
	after, _ := c.sync[2].Priority(c.gid)
	// At least this round's move toward the server; pushes running beside
	// it (the joins' rows) may have brought node 2 nearer still.
	want := (4*before.Distance + 0 + 1) / 5
	if after.Distance > want+1e-9 || after.Distance < 1 || !after.ServerTime.After(before.ServerTime) {
		t.Fatalf("after a round with the server: %+v (before %+v), want distance at most %v and fresh server time", after, before, want)
	}
	if p, ok := c.sync[2].PeerPriority(c.gid, srv); !ok || p.DevType != syncnode.Server {
		t.Fatalf("server's priority as seen by node 2: %+v %v", p, ok)
	}
	// The server saw node 2 as the normal member it is.
	if p, ok := c.sync[1].PeerPriority(c.gid, c.hosts[2].ID()); !ok || p.DevType != syncnode.Normal {
		t.Fatalf("node 2's priority as seen by the server: %+v %v", p, ok)
	}
	// Node 0 syncs with node 2: it moves a fifth of the way toward node
	// 2's distance plus a hop only if node 2 is nearer a server; otherwise
	// it stays (node 2 answers with its priority as updated by node 0's
	// hello).
	p0, _ := c.sync[0].Priority(c.gid)
	c.round(0, 2)
	p2, _ := c.sync[2].Priority(c.gid)
	got, _ := c.sync[0].Priority(c.gid)
	want = p0.Distance
	if p2.Distance+1 < p0.Distance {
		want = (4*p0.Distance + p2.Distance + 1) / 5
	}
	// Never farther, never nearer than one hop (pushes beside the round
	// may move it nearer the server too).
	if got.Distance > want+1e-9 || got.Distance < 1 {
		t.Fatalf("node 0's distance %v → %v, want at most %v (node 2 at %v)", p0.Distance, got.Distance, want, p2.Distance)
	}
	if s, _ := c.sync[1].Priority(c.gid); s.DevType != syncnode.Server || s.Distance != 0 {
		t.Fatalf("server priority %+v", s)
	}
}

func TestAccessPolicy(t *testing.T) {
	c := newCluster(t, 3) // the group is private
	stranger, _ := c.mn.GenPeer()
	member := c.hosts[2].ID()
	s := c.sync[0]
	if !s.IsMember(member, c.gid) || s.IsMember(stranger.ID(), c.gid) {
		t.Fatal("membership answers wrong")
	}
	if !s.CanSee(member, c.gid) || s.CanSee(stranger.ID(), c.gid) {
		t.Fatal("a private group is visible to a stranger, or hidden from a member")
	}
	if s.MayFetch(stranger.ID(), []syncnode.GroupID{c.gid, "unknown"}) || !s.MayFetch(member, []syncnode.GroupID{c.gid}) {
		t.Fatal("fetch policy wrong")
	}
	if s.MayFetch(member, nil) {
		t.Fatal("a blob of no group is fetchable")
	}
}

// TestReportedPriorityIsClamped: a member that reports itself at distance
// zero (or less, or NaN) and a server time in the future is taken to be at
// one hop, as of now.
func TestReportedPriorityIsClamped(t *testing.T) {
	c := newCluster(t, 3) // node 1 is the server
	s := c.sync[0]
	r, err := s.replica(c.gid)
	if err != nil {
		t.Fatal(err)
	}
	liar := c.hosts[2].ID()
	for _, d := range []float64{0, -3, math.NaN()} {
		r.mu.Lock()
		s.observePriority(r, liar, syncnode.Priority{DevType: syncnode.Server, Distance: d, ServerTime: time.Now().Add(time.Hour)})
		r.mu.Unlock()
		p, ok := s.PeerPriority(c.gid, liar)
		if !ok || p.DevType != syncnode.Normal || p.Distance != 1 || p.ServerTime.After(time.Now()) {
			t.Fatalf("reported distance %v: recorded %+v", d, p)
		}
	}
}

// TestJoinSurvivesAFailedFirstRound: the admin takes the joiner in, then
// its first round with the joiner is cut (a stream reset on a loaded
// machine). The join is done all the same: it reports success, and the
// next round brings the joiner the group's rows.
func TestJoinSurvivesAFailedFirstRound(t *testing.T) {
	c := newCluster(t, 1)
	if _, err := c.sync[0].Put(c.gid, "photos/a", val("a")); err != nil {
		t.Fatal(err)
	}
	h, err := c.mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	joiner := mustNew(t, h, Config{}, discard, nil)
	t.Cleanup(joiner.Close)
	c.hosts[0].SetStreamHandler(p2p.ProtoSync, func(st network.Stream) { st.Reset() })
	adminKey := c.hosts[0].Peerstore().PrivKey(c.hosts[0].ID())
	inv, err := syncgroup.Invite(adminKey, c.gid, h.ID(), syncnode.Normal, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := joiner.Join(t.Context(), inv, c.adminFor(h), nil); err != nil {
		t.Fatalf("a join whose first round failed: %v", err)
	}
	c.hosts[0].SetStreamHandler(p2p.ProtoSync, c.sync[0].handleSync)
	if err := joiner.SyncWith(t.Context(), c.gid, c.hosts[0].ID()); err != nil {
		t.Fatal(err)
	}
	var ok bool
	joiner.With(c.gid, func(g *syncgroup.Group) error { _, ok = g.Rows().Get("photos/a"); return nil })
	if !ok {
		t.Fatal("the joiner lacks the group's row after its next round")
	}
}

// mustNew is New, failing tb on an error.
func mustNew(tb testing.TB, h host.Host, cfg Config, log *slog.Logger, hooks Hooks) *Syncer {
	tb.Helper()
	s, err := New(h, cfg, log, hooks)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// A zero config is the defaults; a negative field is refused.
func TestConfigZeroIsDefault(t *testing.T) {
	d := (Config{}).withDefaults()
	if d.Interval != 30*time.Second || d.IOTimeout != 20*time.Second || d.RoundPeers != 2 || d.Fanout != DefaultFanout {
		t.Fatalf("zero config = %+v", d)
	}
	for _, c := range []Config{{Interval: -1}, {IOTimeout: -1}, {RoundPeers: -1}, {Fanout: -1}} {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("Validate(%+v) = %v, want ErrConfig", c, err)
		}
	}
}

// TestLeaveRemovesTheReplicaLocked: a leave reads where this node's
// writes stood (Store.Remove reads the group) with the group locked, as
// every round and push applies rows to it under that lock. A round or
// push still under way when the leave began would otherwise write the
// group while Remove reads it (found by the race detector in the
// ownership simulation).
func TestLeaveRemovesTheReplicaLocked(t *testing.T) {
	var r *replica
	var unlocked atomic.Bool
	c := newClusterWith(t, 3, func(cfg *Config) {
		db, err := kv.Open(t.TempDir(), discard)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		cfg.Store = lockCheck{syncgroup.NewStore(db), func() {
			if r != nil && r.mu.TryLock() {
				r.mu.Unlock()
				unlocked.Store(true)
			}
		}}
	})
	var err error
	if r, err = c.sync[2].replica(c.gid); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := c.sync[2].Leave(ctx, c.gid, false); err != nil {
		t.Fatal(err)
	}
	if unlocked.Load() {
		t.Fatal("the replica was removed without its lock held")
	}
}

// lockCheck is a store that runs check when a replica is removed.
type lockCheck struct {
	*syncgroup.Store
	check func()
}

func (s lockCheck) Remove(g *syncgroup.Group) error {
	s.check()
	return s.Store.Remove(g)
}

// TestLeaveCutShortFinishesAfterARestart: a stop falls after a leaving
// node's tombstone reached stable storage and before any member was told.
// Once restarted, the node tells them and drops its replica: the members
// do not hold it for a member for good, and it keeps no group it left.
func TestLeaveCutShortFinishesAfterARestart(t *testing.T) {
	db, err := kv.Open(t.TempDir(), discard)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store := syncgroup.NewStore(db)
	made := 0
	c := newClusterWith(t, 3, func(cfg *Config) {
		if made++; made == 3 {
			cfg.Store = store // the leaver's alone
		}
		cfg.Interval = 100 * time.Millisecond
	})
	leaver := c.hosts[2].ID()
	r, err := c.sync[2].replica(c.gid)
	if err != nil {
		t.Fatal(err)
	}
	// The leave as far as stable storage, and no further.
	r.mu.Lock()
	rows, err := r.g.Leave(time.Now())
	if err == nil {
		err = c.sync[2].save(r, rows)
	}
	r.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Sync(); err != nil {
		t.Fatal(err)
	}
	c.sync[2].Close()

	left := &leftHooks{}
	s := mustNew(t, c.hosts[2], Config{IOTimeout: 5 * time.Second, Interval: 100 * time.Millisecond, Store: store}, discard, left)
	defer s.Close()
	loaded, err := store.Load(leaver, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range loaded {
		s.Restore(l.Group, l.Prio)
	}
	s.Run()
	// The hook comes after the replica goes, in the background: it is
	// waited for as well.
	testkit.WaitFor(t, 10*time.Second, "the members to see the leave, the replica to go and the node to be told", func() bool {
		if slices.Contains(s.Groups(), c.gid) || len(left.groups()) == 0 {
			return false
		}
		if held, err := store.Load(leaver, time.Minute); err != nil || len(held) != 0 {
			return false
		}
		var member bool
		c.sync[0].With(c.gid, func(g *syncgroup.Group) error { member = g.IsMember(leaver); return nil })
		return !member
	})
	if got := left.groups(); len(got) != 1 || got[0] != c.gid {
		t.Fatalf("the node was told it left %v, want %s", got, c.gid)
	}
}

// leftHooks records the groups Left is told of.
type leftHooks struct {
	noHooks
	mu   sync.Mutex
	left []syncnode.GroupID
}

func (h *leftHooks) Left(g syncnode.GroupID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.left = append(h.left, g)
}

func (h *leftHooks) groups() []syncnode.GroupID {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.left)
}

// TestCatchUpIsSentOnce: a member far behind catches up in a long round
// while the other side's periodic rounds come due again and again: they
// are skipped instead of sending the same rows beside it. (A periodic
// round already running when the member's own round arrives is not
// skipped: both send.)
func TestCatchUpIsSentOnce(t *testing.T) {
	c := newClusterWith(t, 2, func(cfg *Config) { cfg.Interval = 5 * time.Millisecond })
	const n = 3000
	kvs := make([]syncgroup.KV, n)
	for i := range kvs {
		kvs[i] = syncgroup.KV{Key: fmt.Sprintf("photos/%05d", i), Value: val(strings.Repeat("x", 200))}
	}
	if _, err := c.sync[0].PutAll(c.gid, kvs); err != nil {
		t.Fatal(err)
	}
	before := c.sync[0].Stats().RowsSent
	// The catch-up begins first; the other side's periodic rounds start
	// while it runs.
	r, err := c.sync[0].replica(c.gid)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.round(1, 0) }()
	testkit.WaitFor(t, 10*time.Second, "the catch-up round to begin", func() bool { return r.inRound(c.hosts[1].ID()) })
	c.sync[0].Run()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, ok := c.get(1, kvs[n-1].Key); !ok {
		t.Fatal("the round did not bring the rows")
	}
	if sent := c.sync[0].Stats().RowsSent - before; sent > n+n/10 {
		t.Fatalf("%d rows sent for a catch-up of %d", sent, n)
	}
}

// TestResumedLeaveSparesARejoinedGroup: a leave resumed after a restart
// that finishes after the node joined the group again drops nothing: the
// new replica, and its rows in the store, stay.
func TestResumedLeaveSparesARejoinedGroup(t *testing.T) {
	c := newCluster(t, 2)
	s := c.sync[1]
	old, err := s.replica(c.gid)
	if err != nil {
		t.Fatal(err)
	}
	joined := &replica{g: old.g, peers: map[peer.ID]syncnode.Priority{}}
	s.mu.Lock()
	s.groups[c.gid] = joined
	s.mu.Unlock()
	if err := s.drop(c.gid, old); !errors.Is(err, errReplaced) {
		t.Fatalf("drop of a replaced replica: %v, want errReplaced", err)
	}
	if r, err := s.replica(c.gid); err != nil || r != joined {
		t.Fatalf("the rejoined replica is gone: %v", err)
	}
	s.resumeLeave(c.gid, old) // returns at once: the replica is not the one left
	if r, err := s.replica(c.gid); err != nil || r != joined {
		t.Fatalf("the resumed leave dropped the rejoined replica: %v", err)
	}
}

// TestAdminsNamedOnlyForAGoodInvitation: a member that is no admin names
// where the admins are to a joiner whose invitation an admin signed for
// it, and to no one else: not to a peer presenting another's invitation,
// one expired, or one its own key signed.
func TestAdminsNamedOnlyForAGoodInvitation(t *testing.T) {
	c := newCluster(t, 3)
	member := c.sync[2]
	joiner, err := c.mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	adminKey := c.hosts[0].Peerstore().PrivKey(c.hosts[0].ID())
	good, err := syncgroup.Invite(adminKey, c.gid, joiner.ID(), syncnode.Normal, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	got := member.adminAddrs(good, joiner.ID())
	if len(got) == 0 {
		t.Fatal("no admin named to a joiner with a good invitation")
	}
	for _, a := range got {
		if !strings.HasSuffix(a, "/p2p/"+c.hosts[0].ID().String()) {
			t.Fatalf("%q is not the admin's", a)
		}
	}
	if ids := member.redirected(got, c.hosts[2].ID()); len(ids) != 1 || ids[0] != c.hosts[0].ID() {
		t.Fatalf("the joiner reads %v from %v", ids, got)
	}
	expired, _ := syncgroup.Invite(adminKey, c.gid, joiner.ID(), syncnode.Normal, time.Now().Add(-time.Minute))
	own, _ := syncgroup.Invite(c.hosts[2].Peerstore().PrivKey(c.hosts[2].ID()), c.gid, joiner.ID(), syncnode.Normal, time.Now().Add(time.Hour))
	for name, tc := range map[string]struct {
		inv  syncgroup.Invitation
		from peer.ID
	}{
		"another's invitation": {good, c.hosts[1].ID()},
		"an expired one":       {expired, joiner.ID()},
		"a member's own":       {own, joiner.ID()},
	} {
		if got := member.adminAddrs(tc.inv, tc.from); len(got) != 0 {
			t.Errorf("%s: the admins named: %v", name, got)
		}
	}
	long := []string{"/ip4/1.2.3.4/tcp/1/p2p/" + c.hosts[0].ID().String() + "/" + strings.Repeat("x", 600), "nonsense", "/ip4/1.2.3.4/tcp/1"}
	if ids := member.redirected(long, c.hosts[2].ID()); len(ids) != 0 {
		t.Fatalf("malformed, oversized and unnamed addresses read as %v", ids)
	}
}

// TestARoundSendsManyPages: a member far behind receives thousands of
// rows in one round, read a page at a time, while the sender writes some
// of them again: it ends with every key, each at a version the sender
// wrote, and the next round leaves it with the sender's winners.
func TestARoundSendsManyPages(t *testing.T) {
	c := newCluster(t, 3)
	if err := c.mn.UnlinkPeers(c.hosts[0].ID(), c.hosts[2].ID()); err != nil {
		t.Fatal(err)
	}
	c.mn.DisconnectPeers(c.hosts[0].ID(), c.hosts[2].ID())
	if err := c.mn.UnlinkPeers(c.hosts[1].ID(), c.hosts[2].ID()); err != nil {
		t.Fatal(err)
	}
	c.mn.DisconnectPeers(c.hosts[1].ID(), c.hosts[2].ID())
	const n = 3*sendPage + 100
	var kvs []syncgroup.KV
	for i := range n {
		kvs = append(kvs, syncgroup.KV{Key: fmt.Sprintf("photos/%05d", i), Value: val("first")})
	}
	if _, err := c.sync[0].PutAll(c.gid, kvs); err != nil {
		t.Fatal(err)
	}
	if _, err := c.mn.LinkPeers(c.hosts[0].ID(), c.hosts[2].ID()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.round(2, 0) }()
	for i := 0; i < n; i += 97 {
		if _, err := c.sync[0].Put(c.gid, fmt.Sprintf("photos/%05d", i), val("again")); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var got int
	c.sync[2].With(c.gid, func(g *syncgroup.Group) error { got = len(g.Rows().List("photos/")); return nil })
	if got != n {
		t.Fatalf("%d rows after the round, want %d", got, n)
	}
	if err := c.round(2, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 97 {
		if r, _ := c.get(2, fmt.Sprintf("photos/%05d", i)); string(r.Value) != string(val("again")) {
			t.Fatalf("photos/%05d is %q after the next round", i, r.Value)
		}
	}
}

// TestJoinAnsweredByAMemberThatIsNoAdmin: a member speaks the join
// protocol as if it were an admin, answering with the group's spec as
// created (which every member knows) and writing no admission. The joiner
// finds, in the first round, that no admin admitted it: the join fails
// and leaves no replica behind.
func TestJoinAnsweredByAMemberThatIsNoAdmin(t *testing.T) {
	c := newCluster(t, 3)
	// A change, so that admissions are the chain's (an older group
	// admits on the invitation in the member's own row).
	if _, err := c.sync[0].ChangeSpec(c.gid, syncgroup.Change{Op: syncgroup.SetCopies, N: 2}); err != nil {
		t.Fatal(err)
	}
	if err := c.round(2, 0); err != nil {
		t.Fatal(err)
	}
	liar := c.hosts[2]
	genesis, err := c.sync[2].Genesis(c.gid)
	if err != nil {
		t.Fatal(err)
	}
	liar.SetStreamHandler(p2p.ProtoJoin, func(st network.Stream) {
		defer st.Close()
		var req joinRequest
		if err := p2p.ReadMsg(bufio.NewReader(st), st, &req, maxJoinRequest, time.Second); err != nil {
			st.Reset()
			return
		}
		p2p.WriteMsg(st, joinResponse{Spec: genesis}, time.Second)
	})
	jh, err := c.mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	joiner := mustNew(t, jh, Config{IOTimeout: 5 * time.Second}, discard, nil)
	t.Cleanup(joiner.Close)
	adminKey := c.hosts[0].Peerstore().PrivKey(c.hosts[0].ID())
	inv, err := syncgroup.Invite(adminKey, c.gid, jh.ID(), syncnode.Normal, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	jh.Peerstore().AddAddrs(liar.ID(), liar.Addrs(), time.Hour)
	_, err = joiner.Join(t.Context(), inv, []peer.ID{liar.ID()}, nil)
	if !errors.Is(err, ErrNoAdmin) {
		t.Fatalf("a join a member that is no admin answered: %v", err)
	}
	if len(joiner.Groups()) != 0 {
		t.Fatalf("the joiner keeps a replica: %v", joiner.Groups())
	}
}

// TestCloseWaitsForAHandler: a round a peer opened and has not finished
// (its hello not sent yet) holds Close up only until Close resets it,
// and a handler never runs on once Close has returned.
func TestCloseWaitsForAHandler(t *testing.T) {
	c := newCluster(t, 2)
	st, err := c.hosts[0].NewStream(t.Context(), c.hosts[1].ID(), p2p.ProtoSync)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	time.Sleep(50 * time.Millisecond) // the handler is reading the hello
	start := time.Now()
	c.sync[1].Close()
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Close waited %v on a peer that sent nothing", took)
	}
	if _, done, err := c.sync[1].enter(t.Context()); err == nil {
		done()
		t.Fatal("work entered after Close")
	}
}
