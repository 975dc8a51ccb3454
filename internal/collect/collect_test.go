package collect_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/collect"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/ownership"
	"github.com/syncnode/syncnode/signpost"
	"github.com/syncnode/syncnode/syncgroup"
)

const grace = time.Hour

var self, other = newID(), newID()

func newID() peer.ID {
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		panic(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return id
}

// groups are rows by group and key, and members by group.
type groups struct {
	rows    map[syncnode.GroupID]map[string][]byte
	members map[syncnode.GroupID][]peer.ID
	// afterRows, if not nil, runs once a pass has read the rows.
	afterRows func()
}

func (g *groups) Groups() []syncnode.GroupID {
	var out []syncnode.GroupID
	for id := range g.rows {
		out = append(out, id)
	}
	return out
}

// RowsFrom pages through g's rows two at a time, whatever limit asks, so
// that every pass reads several pages; afterRows runs after the last.
func (g *groups) RowsFrom(id syncnode.GroupID, _, start string, limit int) ([]syncgroup.Row, string, error) {
	keys := slices.Sorted(maps.Keys(g.rows[id]))
	var out []syncgroup.Row
	for _, k := range keys {
		if k < start {
			continue
		}
		if len(out) == min(limit, 2) {
			return out, k, nil
		}
		out = append(out, syncgroup.Row{Key: k, Value: g.rows[id][k]})
	}
	if g.afterRows != nil {
		g.afterRows()
	}
	return out, "", nil
}

func (g *groups) Members(id syncnode.GroupID) []syncgroup.Member {
	var out []syncgroup.Member
	for _, p := range g.members[id] {
		out = append(out, syncgroup.Member{Peer: p})
	}
	return out
}

// copies are the copies held, with the user's pins and work pins.
type copies struct {
	mu          sync.Mutex
	locks       map[syncnode.BlobRef]*sync.Mutex
	held, user  map[syncnode.BlobRef]bool
	work, fetch map[syncnode.BlobRef]bool
	// down makes Delete fail, as an object store that is down.
	down bool
	// partial holds the blobs a fetch cut short left to resume.
	partial map[syncnode.BlobRef]bool
}

// Lock takes ref's own lock, as custody's are: one per blob.
func (c *copies) Lock(ref syncnode.BlobRef) func() {
	c.mu.Lock()
	if c.locks == nil {
		c.locks = map[syncnode.BlobRef]*sync.Mutex{}
	}
	l := c.locks[ref]
	if l == nil {
		l = &sync.Mutex{}
		c.locks[ref] = l
	}
	c.mu.Unlock()
	l.Lock()
	return l.Unlock
}
func (c *copies) Pinned(ref syncnode.BlobRef) bool { return c.work[ref] }
func (c *copies) UserPinned(ref syncnode.BlobRef) (bool, time.Time) {
	return c.user[ref], time.Time{}
}
func (c *copies) Delete(ref syncnode.BlobRef) error {
	if c.down {
		return errors.New("store: 503")
	}
	if !c.held[ref] {
		return syncnode.ErrNotFound
	}
	delete(c.held, ref)
	return nil
}

func (c *copies) DropPartial(ref syncnode.BlobRef) error {
	delete(c.partial, ref)
	return nil
}

type rig struct {
	t      *testing.T
	db     *badger.DB
	now    time.Time
	g      *groups
	c      *copies
	ledger *ownership.Ledger
	sps    *signpost.Store
	col    *collect.Collector
	cfg    collect.Config // what open passes besides the grace and the clock
}

const g1, g2 = syncnode.GroupID("g1"), syncnode.GroupID("g2")

func newRig(t *testing.T) *rig {
	db, err := kv.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r := &rig{t: t, db: db, now: time.Unix(1_000_000, 0),
		g: &groups{rows: map[syncnode.GroupID]map[string][]byte{g1: {}, g2: {}},
			members: map[syncnode.GroupID][]peer.ID{g1: {self, other}, g2: {self}}},
		c: &copies{held: map[syncnode.BlobRef]bool{}, user: map[syncnode.BlobRef]bool{},
			work: map[syncnode.BlobRef]bool{}, fetch: map[syncnode.BlobRef]bool{}},
		ledger: ownership.NewLedger(db), sps: signpost.NewStore(db)}
	r.open()
	return r
}

// open starts a collector on the rig's database, as a node's open does.
func (r *rig) open() {
	var err error
	cfg := r.cfg
	cfg.Grace, cfg.Now = grace, func() time.Time { return r.now }
	r.col, err = collect.New(cfg, collect.Deps{
		Self: self, DB: r.db, Groups: r.g, Signposts: r.sps, Ledger: r.ledger, Custody: r.c,
		Busy: func(ref syncnode.BlobRef) bool { return r.c.fetch[ref] }})
	if err != nil {
		r.t.Fatal(err)
	}
}

// blob makes a held blob that a row of g references, with the creator's
// shares here.
func (r *rig) blob(i byte, g syncnode.GroupID, key string) syncnode.BlobRef {
	ref := syncnode.RefFromHash([32]byte{i, 7})
	r.c.held[ref] = true
	r.refer(g, key, ref)
	if _, err := r.ledger.GrantCreator(ref, g, true); err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.sps.Update(ref, func(sp *signpost.Signpost) { sp.AddGroup(g) }); err != nil {
		r.t.Fatal(err)
	}
	return ref
}

func (r *rig) refer(g syncnode.GroupID, key string, ref syncnode.BlobRef) {
	v, err := msgpack.Marshal(map[string]any{"blob": ref})
	if err != nil {
		r.t.Fatal(err)
	}
	r.g.rows[g][key] = v
}

// pass advances the clock by d, counts a round with another member, and
// makes a pass.
func (r *rig) pass(d time.Duration) {
	r.now = r.now.Add(d)
	r.col.Heard(g1)
	if err := r.col.Pass(context.Background()); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) shares(ref syncnode.BlobRef, g syncnode.GroupID) int {
	sh, err := r.ledger.Shares(ref)
	if err != nil {
		r.t.Fatal(err)
	}
	return sh[g]
}

func TestCollectedAfterTheGrace(t *testing.T) {
	r := newRig(t)
	ref := r.blob(1, g1, "a")
	live := r.blob(2, g1, "b")
	r.pass(time.Minute)
	delete(r.g.rows[g1], "a")
	r.pass(time.Minute) // noted
	r.pass(grace - time.Second)
	if !r.c.held[ref] || r.shares(ref, g1) != ownership.CreatorShares {
		t.Fatal("collected before the grace ran out")
	}
	r.pass(2 * time.Second)
	if r.c.held[ref] || r.shares(ref, g1) != 0 {
		t.Fatalf("not collected after the grace: held %v, shares %d", r.c.held[ref], r.shares(ref, g1))
	}
	if !r.c.held[live] || r.shares(live, g1) != ownership.CreatorShares {
		t.Fatal("a referenced blob was collected")
	}
	if sp, _ := r.sps.Get(ref); len(sp.SgIDs) != 0 {
		t.Fatalf("the signpost still names %v", sp.Groups())
	}
	if st, _ := r.col.State(ref); len(st) != 1 || st[0].Collected.IsZero() {
		t.Fatalf("state %+v does not say the blob was collected", st)
	}
	// A row that names it again grants the creator's shares anew.
	if granted, err := r.ledger.GrantCreator(ref, g1, true); err != nil || !granted {
		t.Fatalf("grant after collection: %v, %v", granted, err)
	}
}

func TestReferencedAgainIsKept(t *testing.T) {
	r := newRig(t)
	ref := r.blob(1, g1, "a")
	r.pass(time.Minute) // seen referenced
	delete(r.g.rows[g1], "a")
	r.pass(time.Minute)
	r.pass(grace / 2)
	r.refer(g1, "other key", ref) // written again within the grace
	r.pass(time.Minute)
	r.pass(2 * grace)
	r.pass(2 * grace)
	if !r.c.held[ref] || r.shares(ref, g1) != ownership.CreatorShares {
		t.Fatal("a blob referenced again within the grace was collected")
	}
}

func TestGraceCountsFromTheOpen(t *testing.T) {
	r := newRig(t)
	ref := r.blob(1, g1, "a")
	r.pass(time.Minute) // seen referenced
	delete(r.g.rows[g1], "a")
	r.pass(time.Minute) // noted
	// Down for two graces: a row naming the blob may be on its way.
	r.now = r.now.Add(2 * grace)
	r.open()
	r.pass(time.Minute)
	if !r.c.held[ref] {
		t.Fatal("collected at once after a restart: the grace counts while the node is up")
	}
	r.pass(grace)
	if r.c.held[ref] {
		t.Fatal("not collected a grace after the restart")
	}
}

func TestCollectionWaitsForARoundAfterTheGrace(t *testing.T) {
	r := newRig(t)
	ref := r.blob(1, g1, "a")
	r.pass(time.Minute) // seen referenced
	delete(r.g.rows[g1], "a")
	r.pass(time.Minute)
	r.col.Heard(g1)
	r.now = r.now.Add(2 * grace) // no round since
	if err := r.col.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !r.c.held[ref] {
		t.Fatal("collected with no round since the grace ran out")
	}
	r.pass(time.Second)
	if r.c.held[ref] {
		t.Fatal("not collected after a round")
	}
}

func TestWhatKeepsACopyAfterCollection(t *testing.T) {
	r := newRig(t)
	user := r.blob(1, g1, "user")
	work := r.blob(2, g1, "work")
	fetch := r.blob(3, g1, "fetch")
	both := r.blob(4, g1, "both")
	r.refer(g2, "both", both)
	r.c.user[user], r.c.work[work], r.c.fetch[fetch] = true, true, true
	r.pass(time.Minute) // seen referenced
	for _, k := range []string{"user", "work", "fetch", "both"} {
		delete(r.g.rows[g1], k)
	}
	r.pass(time.Minute)
	r.pass(grace + time.Second)
	for _, ref := range []syncnode.BlobRef{user, work, fetch, both} {
		if r.shares(ref, g1) != 0 {
			t.Fatalf("%s: shares in g1 not dissolved", ref)
		}
		if !r.c.held[ref] {
			t.Fatalf("%s: copy deleted though something keeps it", ref)
		}
	}
	// Once nothing keeps it, the next pass deletes it... except the one
	// still referenced in g2.
	r.c.user[user], r.c.work[work], r.c.fetch[fetch] = false, false, false
	if _, err := r.sps.Update(both, func(sp *signpost.Signpost) { sp.AddGroup(g2) }); err != nil {
		t.Fatal(err)
	}
	r.pass(time.Minute)
	if !r.c.held[both] {
		t.Fatal("a blob a row of another group references was deleted")
	}
	for _, ref := range []syncnode.BlobRef{user, work, fetch} {
		if r.c.held[ref] {
			t.Fatalf("%s: copy kept after its pins went", ref)
		}
	}
}

func TestSharesInEscrowSettleFirst(t *testing.T) {
	r := newRig(t)
	ref := r.blob(1, g1, "a")
	if _, err := r.ledger.OfferAll(ownership.NewTransferID(), ref, g1, other); err != nil {
		t.Fatal(err)
	}
	delete(r.g.rows[g1], "a")
	r.pass(time.Minute)
	r.pass(grace + time.Second)
	if !r.c.held[ref] {
		t.Fatal("copy deleted with shares in escrow")
	}
	if err := r.ledger.Collect(ref, g1, nil); !errors.Is(err, ownership.ErrInEscrow) {
		t.Fatalf("Collect with shares in escrow: %v", err)
	}
}

// TestFetchEndingAfterTheCollection: a fetch begun before the blob was
// collected lands its copy after; the next pass deletes it.
func TestFetchEndingAfterTheCollection(t *testing.T) {
	r := newRig(t)
	ref := r.blob(1, g1, "a")
	delete(r.c.held, ref) // not held here yet: being fetched
	r.pass(time.Minute)
	delete(r.g.rows[g1], "a")
	r.pass(time.Minute)
	r.pass(grace + time.Second)
	if r.shares(ref, g1) != 0 {
		t.Fatal("not collected")
	}
	r.c.held[ref] = true // the fetch ends
	if err := r.col.Arrived(ref); err != nil {
		t.Fatal(err)
	}
	r.pass(time.Second)
	if r.c.held[ref] {
		t.Fatal("a copy that landed after the collection is kept for good")
	}
	// A copy of a blob never collected is not touched.
	other := r.blob(2, g1, "b")
	if err := r.col.Arrived(other); err != nil {
		t.Fatal(err)
	}
	r.pass(time.Second)
	if !r.c.held[other] {
		t.Fatal("a fetched copy of a referenced blob was deleted")
	}
}

// TestCollectionDropsAPartialFetch: a fetch cut short left the bytes it
// had to resume; once the blob is collected and its copy (if any)
// deleted, nothing will resume it, and the partial goes too. A blob whose
// copy something keeps, or whose fetch is under way, keeps its partial.
func TestCollectionDropsAPartialFetch(t *testing.T) {
	r := newRig(t)
	cut := r.blob(1, g1, "cut")
	delete(r.c.held, cut) // not held: its fetch was cut short
	held := r.blob(2, g1, "held")
	busy := r.blob(3, g1, "busy")
	delete(r.c.held, busy)
	r.c.fetch[busy] = true // its fetch is under way
	r.c.partial = map[syncnode.BlobRef]bool{cut: true, held: true, busy: true}
	r.pass(time.Minute)
	for _, k := range []string{"cut", "held", "busy"} {
		delete(r.g.rows[g1], k)
	}
	r.pass(time.Minute)
	r.pass(grace + time.Second)
	for _, ref := range []syncnode.BlobRef{cut, held, busy} {
		if r.shares(ref, g1) != 0 {
			t.Fatalf("%s: not collected", ref)
		}
	}
	if r.c.partial[cut] || r.c.partial[held] {
		t.Fatalf("partials left after the collection: %v", r.c.partial)
	}
	if !r.c.partial[busy] {
		t.Fatal("the partial of a fetch under way was dropped")
	}
}

// Unreferenced says what this node's rows say: while the grace runs and
// after the collection, until a row names the blob again.
func TestUnreferencedFollowsTheRows(t *testing.T) {
	r := newRig(t)
	ref := r.blob(1, g1, "a")
	r.pass(time.Minute)
	if r.col.Unreferenced(ref, g1) {
		t.Fatal("a referenced blob is reported unreferenced")
	}
	delete(r.g.rows[g1], "a")
	r.pass(time.Minute)
	if !r.col.Unreferenced(ref, g1) || r.col.Unreferenced(ref, g2) {
		t.Fatal("the grace runs, and Unreferenced does not say so (or says so of another group)")
	}
	r.pass(grace + time.Second)
	if !r.col.Unreferenced(ref, g1) {
		t.Fatal("collected, and Unreferenced does not say so")
	}
	r.refer(g1, "again", ref)
	if _, err := r.sps.Update(ref, func(sp *signpost.Signpost) { sp.AddGroup(g1) }); err != nil {
		t.Fatal(err)
	}
	r.pass(time.Minute)
	if r.col.Unreferenced(ref, g1) {
		t.Fatal("named again, and still reported unreferenced")
	}
}

// TestNeverSeenReferencedIsKept: shares (or a signpost) that came before
// the row that names the blob (a member handed them over on leaving,
// its row still on its way) are not an unreferenced blob: the row may
// arrive any time, and collecting would lose the only copy.
func TestNeverSeenReferencedIsKept(t *testing.T) {
	r := newRig(t)
	ref := r.blob(1, g1, "a")
	delete(r.g.rows[g1], "a") // before any pass saw it: not here yet
	r.pass(time.Minute)
	r.pass(2 * grace)
	r.pass(2 * grace)
	if !r.c.held[ref] || r.shares(ref, g1) != ownership.CreatorShares {
		t.Fatal("a blob whose row this node never saw was collected")
	}
	// The row arrives, and later goes: now it is collected.
	r.refer(g1, "a", ref)
	r.pass(time.Minute)
	delete(r.g.rows[g1], "a")
	r.pass(time.Minute)
	r.pass(grace + time.Second)
	if r.c.held[ref] || r.shares(ref, g1) != 0 {
		t.Fatal("not collected after its row came and went")
	}
}

// TestSharesLandingAfterTheCollection: a take of the shares under way
// (it read the signpost before) lands them after the collection; they
// are collected again a grace later, not pinned for good.
func TestSharesLandingAfterTheCollection(t *testing.T) {
	r := newRig(t)
	ref := r.blob(1, g1, "a")
	r.pass(time.Minute)
	delete(r.g.rows[g1], "a")
	r.pass(time.Minute)
	r.pass(grace + time.Second)
	if r.c.held[ref] || r.shares(ref, g1) != 0 {
		t.Fatal("not collected")
	}
	// The take lands: the copy and the shares are back.
	r.c.held[ref] = true
	if err := r.ledger.Grant(ref, g1, ownership.CreatorShares); err != nil {
		t.Fatal(err)
	}
	r.pass(time.Minute)
	r.pass(grace + time.Second)
	if r.c.held[ref] || r.shares(ref, g1) != 0 {
		t.Fatalf("shares that landed after the collection stay: held %v, %d shares", r.c.held[ref], r.shares(ref, g1))
	}
}

// TestRejoinedMemberCollects: a member out of the group while the blob's
// row went (it left and was invited back) gets only the row's tombstone
// on its return; having seen the row before, it still collects the blob.
func TestRejoinedMemberCollects(t *testing.T) {
	r := newRig(t)
	ref := r.blob(1, g1, "a")
	r.pass(time.Minute) // seen
	rows := r.g.rows[g1]
	delete(r.g.rows, g1) // out of the group
	r.pass(time.Minute)
	delete(rows, "a")
	r.g.rows[g1] = rows // back, the row gone
	r.pass(time.Minute)
	r.pass(grace + time.Second)
	if r.c.held[ref] || r.shares(ref, g1) != 0 {
		t.Fatal("a member that rejoined keeps a blob whose row went while it was out")
	}
}

// TestRowArrivingDuringAPass: a row that names the blob again arrives (or
// is written here) after a pass read the rows and before it collects: the
// blob is kept, shares and copy.
func TestRowArrivingDuringAPass(t *testing.T) {
	r := newRig(t)
	ref := r.blob(1, g1, "a")
	r.pass(time.Minute)
	delete(r.g.rows[g1], "a")
	r.pass(time.Minute)
	r.g.afterRows = func() {
		r.refer(g1, "again", ref)
		if err := r.col.Referenced(ref, []syncnode.GroupID{g1}); err != nil {
			t.Error(err)
		}
		r.g.afterRows = nil
	}
	r.pass(grace + time.Second)
	if !r.c.held[ref] || r.shares(ref, g1) != ownership.CreatorShares {
		t.Fatalf("a blob named again during the pass was collected: held %v, %d shares", r.c.held[ref], r.shares(ref, g1))
	}
}

// TestStoreDownAtTheCollection: the store fails the deletion; a later
// pass, the store back, deletes the copy.
func TestStoreDownAtTheCollection(t *testing.T) {
	r := newRig(t)
	ref := r.blob(1, g1, "a")
	r.pass(time.Minute)
	delete(r.g.rows[g1], "a")
	r.pass(time.Minute)
	r.c.down = true
	r.pass(grace + time.Second)
	if !r.c.held[ref] || r.shares(ref, g1) != 0 {
		t.Fatal("expected the shares gone and the copy kept by the failing store")
	}
	r.c.down = false
	r.pass(time.Minute)
	if r.c.held[ref] {
		t.Fatal("the copy stays after the store came back")
	}
}

// TestRowsArrivingTogetherDuringAPass: rows naming several blobs again
// arrive in one batch while a pass runs (ReferencedAll, a blob named
// twice): none of them is collected, and a blob the batch does not name
// still is.
func TestRowsArrivingTogetherDuringAPass(t *testing.T) {
	r := newRig(t)
	a, b, gone := r.blob(1, g1, "a"), r.blob(2, g1, "b"), r.blob(3, g1, "c")
	r.pass(time.Minute)
	for _, k := range []string{"a", "b", "c"} {
		delete(r.g.rows[g1], k)
	}
	r.pass(time.Minute)
	r.g.afterRows = func() {
		r.refer(g1, "a again", a)
		r.refer(g1, "b again", b)
		r.refer(g1, "a once more", a)
		gs := []syncnode.GroupID{g1}
		if err := r.col.ReferencedAll([]syncnode.BlobRef{a, b, a}, [][]syncnode.GroupID{gs, gs, gs}); err != nil {
			t.Error(err)
		}
		r.g.afterRows = nil
	}
	r.pass(grace + time.Second)
	for _, ref := range []syncnode.BlobRef{a, b} {
		if !r.c.held[ref] || r.shares(ref, g1) != ownership.CreatorShares {
			t.Fatalf("a blob named again during the pass was collected: held %v, %d shares", r.c.held[ref], r.shares(ref, g1))
		}
	}
	r.pass(time.Second)
	if r.c.held[gone] {
		t.Fatal("a blob no row names any more was kept")
	}
}

// failingLedger is the rig's ledger, its Collect failing while fail is
// set, as a full disk would make it.
type failingLedger struct {
	*ownership.Ledger
	fail error
}

func (l *failingLedger) Collect(ref syncnode.BlobRef, g syncnode.GroupID, also func(*badger.Txn) error) error {
	if l.fail != nil {
		return l.fail
	}
	return l.Ledger.Collect(ref, g, also)
}

// TestCollectedMarkedWithTheShares: the mark that a blob was collected
// lands with the dissolution of its shares, in one transaction, so that
// no reader and no power cut finds one without the other (a row naming
// the blob again would then not revive it); a collection that fails
// leaves neither.
func TestCollectedMarkedWithTheShares(t *testing.T) {
	r := newRig(t)
	fl := &failingLedger{Ledger: r.ledger, fail: errors.New("disk full")}
	var err error
	r.col, err = collect.New(collect.Config{Grace: grace, Now: func() time.Time { return r.now }}, collect.Deps{
		Self: self, DB: r.db, Groups: r.g, Signposts: r.sps, Ledger: fl, Custody: r.c,
		Busy: func(ref syncnode.BlobRef) bool { return r.c.fetch[ref] }})
	if err != nil {
		t.Fatal(err)
	}
	ref := r.blob(1, g1, "a")
	r.pass(time.Minute)
	delete(r.g.rows[g1], "a")
	r.pass(time.Minute) // noted
	r.now = r.now.Add(grace + time.Second)
	r.col.Heard(g1)
	r.col.Pass(context.Background()) // the dissolution fails
	if st, _ := r.col.State(ref); len(st) != 1 || !st[0].Collected.IsZero() || r.shares(ref, g1) != ownership.CreatorShares {
		t.Fatalf("after a failed collection: state %+v, shares %d", st, r.shares(ref, g1))
	}
	fl.fail = nil
	r.pass(time.Second)
	if st, _ := r.col.State(ref); len(st) != 1 || st[0].Collected.IsZero() || r.shares(ref, g1) != 0 {
		t.Fatalf("after the collection: state %+v, shares %d", st, r.shares(ref, g1))
	}
}

// TestPassByRangesCollectsAcrossThem: a node that knows enough blobs
// that a pass looks at them range by range of their hash's first byte
// collects unreferenced ones at both ends of every range and keeps the
// rest, as one pass over all of them would.
func TestPassByRangesCollectsAcrossThem(t *testing.T) {
	r := newRig(t)
	r.cfg.PassBatch = 64
	r.open()
	const n = 1000 // 16 ranges of 16 first bytes
	var refs []syncnode.BlobRef
	for i := range n {
		first := byte(i % 256)
		ref := syncnode.RefFromHash([32]byte{first, 9, byte(i >> 8), byte(i)})
		r.c.held[ref] = true
		r.refer(g1, fmt.Sprintf("k%05d", i), ref)
		if _, err := r.sps.Update(ref, func(sp *signpost.Signpost) { sp.AddGroup(g1) }); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}
	r.pass(time.Minute) // seen referenced
	// Unreferenced: the first and last first byte of some ranges, and
	// one inside.
	gone := map[syncnode.BlobRef]bool{}
	for _, i := range []int{0, 15, 16, 127, 128, 239, 240, 255, 300} {
		delete(r.g.rows[g1], fmt.Sprintf("k%05d", i))
		gone[refs[i]] = true
	}
	r.pass(time.Minute) // noted
	r.pass(grace + time.Second)
	for i, ref := range refs {
		if st, err := r.col.State(ref); err != nil {
			t.Fatal(err)
		} else if collected := len(st) == 1 && !st[0].Collected.IsZero(); collected != gone[ref] {
			t.Fatalf("blob %d (first byte %#x): collected %v, want %v", i, ref.Hash()[0], collected, gone[ref])
		}
	}
}

// TestQuietPassesEndAtOnceUntilACommit: once a pass finds nothing to do,
// Run's passes read nothing while nothing is committed to the database
// and the node's groups stay the same.
// A row deleted (committed, as the node's row store does) makes the next
// one read again; passes while the grace runs read every time, and the
// blob is collected once it is over, as without the shortcut.
func TestQuietPassesEndAtOnceUntilACommit(t *testing.T) {
	r := newRig(t)
	ref := r.blob(1, g2, "a") // g2 has no other member: no round to wait for
	reads := 0
	r.g.afterRows = func() { reads++ }
	tick := func(d time.Duration) {
		t.Helper()
		r.now = r.now.Add(d)
		if err := r.col.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	tick(time.Minute) // marks the row seen: not quiet
	tick(time.Minute) // quiet
	quiet := reads
	for range 5 {
		tick(time.Minute)
	}
	if reads != quiet || r.col.Passes() != 7 {
		t.Fatalf("%d passes read rows after a quiet one with nothing committed, %d passes counted", reads-quiet, r.col.Passes())
	}
	// A group joined is committed before the node lists it: a pass that
	// began in between read the database as it is now, without it.
	r.g.rows["g3"] = map[string][]byte{}
	tick(time.Minute)
	if reads == quiet {
		t.Fatal("a pass after a group was added ended without reading")
	}
	delete(r.g.rows, "g3")
	tick(time.Minute)
	tick(time.Minute)
	quiet = reads
	delete(r.g.rows[g2], "a")
	if err := r.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("test/rows"), []byte{1}) }); err != nil {
		t.Fatal(err)
	}
	tick(time.Minute) // finds it unreferenced
	if reads == quiet || !r.col.Unreferenced(ref, g2) {
		t.Fatalf("the pass after a commit did not read the rows (%d reads) or find the blob unreferenced", reads-quiet)
	}
	for range 3 {
		before := reads
		tick(grace / 4)
		if reads == before {
			t.Fatal("a pass with a grace running ended without reading")
		}
	}
	tick(grace / 2)
	if r.c.held[ref] || r.shares(ref, g2) != 0 {
		t.Fatalf("not collected after its grace: held %v, shares %d", r.c.held[ref], r.shares(ref, g2))
	}
}
