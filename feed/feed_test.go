package feed_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/feed"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/syncgroup"
)

// rig is one node's store, group and feed, without a network.
type rig struct {
	db    *badger.DB
	store *syncgroup.Store
	log   *feed.Log
	g     *syncgroup.Group
	self  peer.ID
	mu    sync.Mutex
}

func newRig(t *testing.T, cfg feed.Config) *rig {
	t.Helper()
	db, err := kv.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := syncgroup.Create("photos", []string{"k/"}, true, key, syncnode.Normal, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	self, _ := peer.IDFromPrivateKey(key)
	r := &rig{db: db, store: syncgroup.NewStore(db), g: g, self: self}
	if r.log, err = feed.Open(db, self, cfg); err != nil {
		t.Fatal(err)
	}
	r.store.SetJournal(r.log)
	if err := r.store.SaveAll(g, syncnode.Priority{}); err != nil {
		t.Fatal(err)
	}
	if err := r.store.Sync(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) put(t testing.TB, key string, v int) syncgroup.Row {
	b, _ := msgpack.Marshal(v)
	return r.write(t, func() (syncgroup.Row, error) { return r.g.Put(key, b, time.Now()) })
}

func (r *rig) del(t testing.TB, key string) {
	r.write(t, func() (syncgroup.Row, error) { return r.g.Delete(key, time.Now()) })
}

// write saves and syncs the row fn writes, as the syncer does.
func (r *rig) write(t testing.TB, fn func() (syncgroup.Row, error)) syncgroup.Row {
	r.mu.Lock()
	defer r.mu.Unlock()
	row, err := fn()
	if err == nil {
		err = r.store.Save(r.g, []syncgroup.Row{row}, syncnode.Priority{})
	}
	if err == nil {
		err = r.store.Sync()
	}
	if err != nil {
		t.Error(err)
	}
	return row
}

// putMany writes n rows at random keys below keys in one save and sync.
func (r *rig) putMany(t testing.TB, rng *rand.Rand, keys, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var rows []syncgroup.Row
	for i := range n {
		b, _ := msgpack.Marshal(i)
		row, err := r.g.Put(fmt.Sprintf("k/%03d", rng.IntN(keys)), b, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, row)
	}
	if err := r.store.Save(r.g, rows, syncnode.Priority{}); err != nil {
		t.Fatal(err)
	}
	if err := r.store.Sync(); err != nil {
		t.Fatal(err)
	}
}

// state is the live rows of the group: key to value.
func (r *rig) state() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]string{}
	for _, row := range r.g.Rows().List("k/") {
		out[row.Key] = string(row.Value)
	}
	return out
}

func (r *rig) gid() syncnode.GroupID { return r.g.Spec().ID }

func TestWatchReplaysTheStateThenFollows(t *testing.T) {
	t.Parallel()
	r := newRig(t, feed.Config{})
	r.put(t, "k/a", 1)
	r.put(t, "k/b", 2)
	r.put(t, "k/a", 3)
	r.del(t, "k/b")
	r.put(t, "k/c", 4)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	for e, err := range r.log.Watch(ctx, r.gid(), feed.Options{}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s %v", e.Kind, e.Key, e.Initial))
		if e.Kind == feed.CaughtUp {
			go r.put(t, "k/d", 5)
		}
		if e.Key == "k/d" {
			if e.Local != true || e.Peer != r.self {
				t.Errorf("own write: local %v, peer %s", e.Local, e.Peer)
			}
			break
		}
	}
	want := []string{
		fmt.Sprintf("member.joined %s true", syncgroup.MemberKey(r.self)),
		"row.put k/a true", "row.put k/c true", "caught-up  false", "row.put k/d false",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events\n got %q\nwant %q", got, want)
	}
}

func TestWatchFromNowAndPrefix(t *testing.T) {
	t.Parallel()
	r := newRig(t, feed.Config{})
	r.put(t, "k/old", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	next, stop := iterPull(r.log.Watch(ctx, r.gid(), feed.Options{Now: true, Prefix: "k/x"}))
	defer stop()
	r.put(t, "k/y", 2)
	r.put(t, "k/x1", 3)
	e, err := next()
	if err != nil || e.Key != "k/x1" || e.Kind != feed.RowPut || e.Initial {
		t.Fatalf("first event %+v, %v; want the put of k/x1", e, err)
	}
}

// TestResumeAtRandomMarkersMissesAndRepeatsNothing kills a watcher at
// random points — in the replay, in the log, at its end — while rows are
// written, and resumes it from the last marker it handled: the state it
// builds from the events is the store's, and no write arrives twice.
func TestResumeAtRandomMarkersMissesAndRepeatsNothing(t *testing.T) {
	t.Parallel()
	seeds, writes := uint64(8), 1500
	if testing.Short() {
		seeds, writes = 3, 500
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 1))
			r := newRig(t, feed.Config{})
			// More keys than a replay page holds, so kills land in the
			// replay's later pages too.
			const keys = 600
			r.putMany(t, rng, keys, 700)
			done := make(chan struct{})
			go func() {
				defer close(done)
				wr := rand.New(rand.NewPCG(seed, 2))
				for i := range writes {
					key := fmt.Sprintf("k/%03d", wr.IntN(keys))
					if wr.IntN(5) == 0 {
						r.del(t, key)
					} else {
						r.put(t, key, 1000+i)
					}
				}
			}()
			state := map[string]string{}
			seen := map[string]bool{}
			var marker feed.Marker
			finished := false
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			for ctx.Err() == nil {
				select {
				case <-done:
					finished = true
				default:
				}
				if finished && fmt.Sprint(state) == fmt.Sprint(r.state()) {
					return
				}
				budget := 1 + rng.IntN(300)
				wctx, wcancel := context.WithTimeout(ctx, 200*time.Millisecond)
				for e, err := range r.log.Watch(wctx, r.gid(), feed.Options{From: marker}) {
					if err != nil {
						t.Fatal(err)
					}
					if e.IsRow() {
						id := fmt.Sprintf("%s/%d", e.Row.Writer, e.Row.Seq)
						if seen[id] {
							t.Fatalf("write %s (%s) delivered twice", id, e.Key)
						}
						seen[id] = true
						if e.Kind == feed.RowPut {
							state[e.Key] = string(e.Row.Value)
						} else {
							delete(state, e.Key)
						}
					}
					marker = e.Marker
					if budget--; budget == 0 {
						break
					}
				}
				wcancel()
			}
			t.Fatalf("watcher's state never matched the store's:\n got %v\nwant %v", state, r.state())
		})
	}
}

func TestExpiredMarker(t *testing.T) {
	t.Parallel()
	r := newRig(t, feed.Config{Retain: 10})
	r.put(t, "k/a", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var marker feed.Marker
	for e, err := range r.log.Watch(ctx, r.gid(), feed.Options{}) {
		if err != nil {
			t.Fatal(err)
		}
		if marker = e.Marker; e.Kind == feed.CaughtUp {
			break
		}
	}
	for i := range 50 {
		r.put(t, "k/a", i)
	}
	if err := r.log.Prune(); err != nil {
		t.Fatal(err)
	}
	for _, err := range r.log.Watch(ctx, r.gid(), feed.Options{From: marker}) {
		if !errors.Is(err, feed.ErrExpired) {
			t.Fatalf("watch from a pruned marker: %v, want ErrExpired", err)
		}
		break
	}
	// A fresh watch still replays the state.
	for e, err := range r.log.Watch(ctx, r.gid(), feed.Options{}) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == feed.CaughtUp {
			break
		}
	}
}

func TestBadMarkers(t *testing.T) {
	t.Parallel()
	r := newRig(t, feed.Config{})
	other := newRig(t, feed.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var foreign feed.Marker
	for e, err := range other.log.Watch(ctx, other.gid(), feed.Options{}) {
		if err != nil {
			t.Fatal(err)
		}
		foreign = e.Marker
		break
	}
	for _, m := range []feed.Marker{"x", foreign, feed.Marker(r.log.ID() + ".p1.0:zz"), feed.Marker(r.log.ID() + ".q1")} {
		for _, err := range r.log.Watch(ctx, r.gid(), feed.Options{From: m}) {
			if !errors.Is(err, feed.ErrBadMarker) {
				t.Errorf("marker %q: %v, want ErrBadMarker", m, err)
			}
			break
		}
	}
}

func TestBlobAndShareEventsFollowTheirGroups(t *testing.T) {
	t.Parallel()
	r := newRig(t, feed.Config{})
	ref := syncnode.RefFromHash([32]byte{1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	next, stop := iterPull(r.log.Watch(ctx, r.gid(), feed.Options{Now: true}))
	defer stop()
	other := syncnode.GroupID("someone/else")
	must(t, r.log.Blob(feed.BlobFetched, ref, 10, []syncnode.GroupID{other}, ""))
	must(t, r.log.Shares(feed.SharesIn, ref, other, 2, ""))
	must(t, r.log.Blob(feed.BlobHeld, ref, 10, nil, "")) // no row names it yet
	must(t, r.log.Blob(feed.BlobFetched, ref, 10, []syncnode.GroupID{other, r.gid()}, ""))
	must(t, r.log.Shares(feed.SharesOut, ref, r.gid(), 2, r.self))
	must(t, r.store.Sync()) // as the node does within moments
	for _, want := range []feed.Kind{feed.BlobFetched, feed.SharesOut} {
		e, err := next()
		if err != nil || e.Kind != want || e.Ref != ref {
			t.Fatalf("event %+v, %v; want %s of %s", e, err, want, ref)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// iterPull returns the watch's events one call at a time.
func iterPull(seq func(func(feed.Event, error) bool)) (func() (feed.Event, error), func()) {
	ch := make(chan struct {
		e   feed.Event
		err error
	})
	quit := make(chan struct{})
	go func() {
		defer close(ch)
		for e, err := range seq {
			select {
			case ch <- struct {
				e   feed.Event
				err error
			}{e, err}:
			case <-quit:
				return
			}
		}
	}()
	return func() (feed.Event, error) {
			v, ok := <-ch
			if !ok {
				return feed.Event{}, errors.New("watch ended")
			}
			return v.e, v.err
		}, func() {
			close(quit)
		}
}

// TestWatchOfManyEventsHoldsMemoryFlat writes many row events (a million
// with SYNCNODE_FEED_EVENTS=1000000), then reads them all through one watch: the heap,
// read as the watch goes, stays within a few MiB of where it began.
func TestWatchOfManyEventsHoldsMemoryFlat(t *testing.T) {
	t.Parallel()
	total := 50_000
	if testing.Short() {
		total = 10_000
	}
	if v, err := strconv.Atoi(os.Getenv("SYNCNODE_FEED_EVENTS")); err == nil {
		total = v // a million: SYNCNODE_FEED_EVENTS=1000000
	}
	r := newRig(t, feed.Config{Retain: 2 * total})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	from := r.log.Now(r.gid(), "")
	func() {
		b, _ := msgpack.Marshal("a photo's row")
		batch := make([]syncgroup.Row, 0, 512)
		for i := 0; i < total; i++ {
			row, err := r.g.Put(fmt.Sprintf("k/%07d", i%100_000), b, time.Now())
			if err != nil {
				t.Error(err)
				return
			}
			if batch = append(batch, row); len(batch) == cap(batch) || i == total-1 {
				if err := r.store.Save(r.g, batch, syncnode.Priority{}); err != nil {
					t.Error(err)
					return
				}
				if err := r.store.Sync(); err != nil {
					t.Error(err)
					return
				}
				batch = batch[:0]
			}
		}
	}()
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	base, peak, n := heap(), uint64(0), 0
	start := time.Now()
	for e, err := range r.log.Watch(ctx, r.gid(), feed.Options{From: from}) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind != feed.RowPut {
			continue
		}
		if n++; n%(total/10) == 0 {
			peak = max(peak, heap())
		}
		if n == total {
			break
		}
	}
	growth := int64(peak) - int64(base)
	t.Logf("%d events read in %v; heap %d MiB at start, at most %+d KiB while reading",
		n, time.Since(start).Round(time.Millisecond), base>>20, growth>>10)
	if growth > 32<<20 {
		t.Fatalf("heap grew %d MiB over %d events", growth>>20, n)
	}
}

// TestWatchBehindEndsWithItsContext: a watcher far behind the log whose
// context ends returns at once instead of reading on.
func TestWatchBehindEndsWithItsContext(t *testing.T) {
	t.Parallel()
	r := newRig(t, feed.Config{})
	from := r.log.Now(r.gid(), "")
	for i := range 2000 {
		r.put(t, fmt.Sprintf("k/%d", i), i)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		n := 0
		for _, err := range r.log.Watch(ctx, r.gid(), feed.Options{From: from}) {
			if err != nil {
				t.Error(err)
			}
			if n++; n == 10 {
				cancel()
			}
		}
		done <- n
	}()
	select {
	case n := <-done:
		if n >= 2000 {
			t.Errorf("the watch read on to %d events after its context ended", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not end with its context")
	}
}

// TestMarkerAfterAPowerCut: a row saved but not yet synced reaches no
// watcher; a power cut then loses it, and its position is handed out
// again at the next opening; a marker from before the cut resumes with the
// new event there, and the lost row was never seen.
func TestMarkerAfterAPowerCut(t *testing.T) {
	t.Parallel()
	r := newRig(t, feed.Config{})
	r.put(t, "k/kept", 1)
	var marker feed.Marker
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	next, stop := iterPull(r.log.Watch(ctx, r.gid(), feed.Options{}))
	for {
		e, err := next()
		if err != nil {
			t.Fatal(err)
		}
		if marker = e.Marker; e.Kind == feed.CaughtUp {
			break
		}
	}
	lost := r.log.Head()
	b, _ := msgpack.Marshal(2)
	row, err := r.g.Put("k/lost", b, time.Now())
	if err == nil {
		err = r.store.Save(r.g, []syncgroup.Row{row}, syncnode.Priority{}) // no sync: the cut comes first
	}
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan feed.Event, 1)
	go func() {
		if e, err := next(); err == nil {
			got <- e
		}
	}()
	select {
	case e := <-got:
		t.Fatalf("a watcher saw %s %q before it was on stable storage", e.Kind, e.Key)
	case <-time.After(300 * time.Millisecond):
	}
	stop()
	// The cut: the entry and its row never reached stable storage.
	err = r.db.Update(func(txn *badger.Txn) error {
		if err := txn.Delete(feedKey(lost + 1)); err != nil {
			return err
		}
		return txn.Delete(append([]byte("rw/"+string(r.gid())+"\x00"), "k/lost"...))
	})
	if err != nil {
		t.Fatal(err)
	}
	reopened, err := feed.Open(r.db, r.self, feed.Config{})
	if err != nil {
		t.Fatal(err)
	}
	r.log = reopened
	r.store.SetJournal(reopened)
	r.put(t, "k/new", 3) // takes the lost entry's position
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	defer wcancel()
	first := ""
	for e, err := range r.log.Watch(wctx, r.gid(), feed.Options{From: marker}) {
		if err != nil {
			t.Fatal(err)
		}
		if e.IsRow() {
			first = e.Key
			break
		}
	}
	if first != "k/new" {
		t.Fatalf("first row after the cut %q, want k/new", first)
	}
}

func feedKey(pos uint64) []byte {
	k := []byte("fe/\x00\x00\x00\x00\x00\x00\x00\x00")
	for i := range 8 {
		k[3+i] = byte(pos >> (56 - 8*i))
	}
	return k
}

// TestRemovedGroupIsAnEvent: when the node drops a group's replica (it
// left, or joins again), its watchers learn it, and what comes back later
// comes as puts after it.
func TestRemovedGroupIsAnEvent(t *testing.T) {
	t.Parallel()
	r := newRig(t, feed.Config{})
	r.put(t, "k/a", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	next, stop := iterPull(r.log.Watch(ctx, r.gid(), feed.Options{Now: true}))
	defer stop()
	if err := r.store.Remove(r.g); err != nil {
		t.Fatal(err)
	}
	must(t, r.store.Sync())
	if e, err := next(); err != nil || e.Kind != feed.GroupRemoved {
		t.Fatalf("event %+v, %v; want group.removed", e, err)
	}
}

// TestQuietWatcherKeepsItsPlace: a watcher of a quiet group, while
// another group writes, gets Progress markers, so it never falls behind
// the log's retention.
func TestQuietWatcherKeepsItsPlace(t *testing.T) {
	t.Parallel()
	r := newRig(t, feed.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	next, stop := iterPull(r.log.Watch(ctx, "quiet/group", feed.Options{Now: true}))
	defer stop()
	rng := rand.New(rand.NewPCG(1, 1))
	for range 5 {
		r.putMany(t, rng, 1000, 1000)
	}
	e, err := next()
	if err != nil || e.Kind != feed.Progress || e.Marker == "" {
		t.Fatalf("event %+v, %v; want progress with a marker", e, err)
	}
}

// A watch whose context ends while it brings the keys already replayed up
// to date hands out nothing more: a row of the next page, carrying the
// page's position, would let a resume skip the updates not yet delivered.
func TestWatchEndingMidReplaySkipsNothingOnResume(t *testing.T) {
	t.Parallel()
	r := newRig(t, feed.Config{})
	for i := range 300 { // more than a replay page
		r.put(t, fmt.Sprintf("k/%03d", i), i)
	}
	state := map[string]string{}
	var marker feed.Marker
	// watch hands the events of one watch from marker to take, and keeps
	// the state they build and the marker of the last.
	watch := func(ctx context.Context, take func(feed.Event) bool) {
		for e, err := range r.log.Watch(ctx, r.gid(), feed.Options{From: marker}) {
			must(t, err)
			if e.Kind == feed.RowPut {
				state[e.Key] = string(e.Row.Value)
			}
			marker = e.Marker
			if !take(e) {
				break
			}
		}
	}
	// The replay up to the first row, then stop.
	watch(t.Context(), func(e feed.Event) bool { return e.Kind != feed.RowPut })
	// Two updates of that row, which the next page must deliver from the
	// log before its own rows.
	r.put(t, "k/000", 1000)
	r.put(t, "k/000", 1001)
	// The consumer's context ends as the first update arrives; it keeps
	// what the watch still hands it.
	ctx, cancel := context.WithCancel(t.Context())
	watch(ctx, func(feed.Event) bool { cancel(); return true })
	// Resume to the end: the state built must be the store's.
	ctx, stop := context.WithTimeout(t.Context(), 10*time.Second)
	defer stop()
	watch(ctx, func(e feed.Event) bool { return e.Kind != feed.CaughtUp })
	want := r.state()
	if got := state["k/000"]; got != want["k/000"] {
		t.Fatalf("after the resume k/000 = %q, the store has %q: an update was skipped", got, want["k/000"])
	}
	if fmt.Sprint(state) != fmt.Sprint(want) {
		t.Fatal("the state built from the events is not the store's")
	}
}
