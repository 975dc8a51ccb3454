package syncgroup

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
)

func testPeer(i int) peer.ID {
	m, _ := mh.Sum(fmt.Appendf(nil, "device-%d", i), mh.IDENTITY, -1)
	return peer.ID(m)
}

var t0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func TestHLC(t *testing.T) {
	c := HLC{MaxSkew: time.Minute}
	a := c.Now(t0)
	b := c.Now(t0) // same physical reading: logical tick
	if b.Compare(a) <= 0 {
		t.Fatalf("not monotonic: %v then %v", a, b)
	}
	if err := c.Observe(Timestamp{Wall: t0.Add(30 * time.Second).UnixNano(), Logical: 3}, t0); err != nil {
		t.Fatal(err)
	}
	if n := c.Now(t0); n.Compare(Timestamp{Wall: t0.Add(30 * time.Second).UnixNano(), Logical: 3}) <= 0 {
		t.Fatalf("after observing a later remote time, Now = %v", n)
	}
	if err := c.Observe(Timestamp{Wall: t0.Add(time.Hour).UnixNano()}, t0); err == nil {
		t.Fatal("accepted a clock an hour ahead")
	}
}

// sync runs one anti-entropy round in both directions between a and b.
func syncPair(t *testing.T, a, b *Rows, now time.Time) {
	t.Helper()
	for _, dir := range [][2]*Rows{{a, b}, {b, a}} {
		from, to := dir[0], dir[1]
		remote := from.VV()
		for _, row := range missing(t, from, to.VV(), []string{""}) {
			if _, err := to.Apply(row, now); err != nil {
				t.Fatal(err)
			}
		}
		to.Learned(remote)
	}
}

func TestConvergenceUnderConcurrentWrites(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 50 {
		n := 3 + trial%3
		reps := make([]*Rows, n)
		for i := range reps {
			reps[i] = NewRows(testPeer(i), time.Minute)
		}
		now := t0
		for range 200 {
			now = now.Add(time.Duration(rng.IntN(3)) * time.Millisecond) // many equal clock readings
			r := reps[rng.IntN(n)]
			key := fmt.Sprint("k", rng.IntN(8))
			switch rng.IntN(5) {
			case 0:
				r.Delete(key, now)
			case 1, 2:
				r.Put(key, []byte{byte(rng.IntN(256))}, now)
			default: // a random pair syncs
				syncPair(t, reps[rng.IntN(n)], reps[rng.IntN(n)], now)
			}
		}
		// Heal: a ring of syncs twice over.
		for range 2 {
			for i := range reps {
				syncPair(t, reps[i], reps[(i+1)%n], now)
			}
		}
		for k := range 8 {
			key := fmt.Sprint("k", k)
			w, wok := reps[0].Get(key)
			for i, r := range reps[1:] {
				g, ok := r.Get(key)
				if ok != wok || g.Writer != w.Writer || g.Seq != w.Seq || !bytes.Equal(g.Value, w.Value) || g.Deleted != w.Deleted {
					t.Fatalf("trial %d: replica %d disagrees on %s: %+v vs %+v", trial, i+1, key, g, w)
				}
			}
		}
	}
}

func TestTombstoneBeatsOlderWrite(t *testing.T) {
	a, b := NewRows(testPeer(1), time.Minute), NewRows(testPeer(2), time.Minute)
	a.Put("x", []byte("old"), t0)
	b.Delete("x", t0.Add(time.Second))
	syncPair(t, a, b, t0.Add(2*time.Second))
	for _, r := range []*Rows{a, b} {
		if row, _ := r.Get("x"); !row.Deleted {
			t.Fatalf("older write beat the tombstone: %+v", row)
		}
		if len(r.List("")) != 0 {
			t.Fatal("deleted row listed")
		}
	}
	// Re-applying the older write (a late push) changes nothing.
	old := Row{Key: "x", Value: []byte("old"), TS: Timestamp{Wall: t0.UnixNano()}, Writer: testPeer(1), Seq: 1}
	if won, _ := b.Apply(old, t0.Add(3*time.Second)); won {
		t.Fatal("a late older write won")
	}
}

func TestMissingSendsOnlyWhatIsUnknown(t *testing.T) {
	a, b := NewRows(testPeer(1), time.Minute), NewRows(testPeer(2), time.Minute)
	for i := range 10 {
		a.Put(fmt.Sprint("photos/", i), []byte{1}, t0)
	}
	a.Put("docs/x", []byte{2}, t0)
	if got := missing(t, a, b.VV(), []string{"photos/"}); len(got) != 10 {
		t.Fatalf("first round sends %d rows, want 10 (prefix filtered)", len(got))
	}
	syncPair(t, a, b, t0)
	if got := missing(t, a, b.VV(), []string{""}); len(got) != 0 {
		t.Fatalf("after sync, %d rows still unknown", len(got))
	}
	a.Put("photos/new", []byte{3}, t0)
	if got := missing(t, a, b.VV(), []string{""}); len(got) != 1 || got[0].Key != "photos/new" {
		t.Fatalf("after one write, Missing = %v", got)
	}
}

type photo struct {
	Title string             `msgpack:"title"`
	Full  syncnode.BlobRef   `msgpack:"full"`
	Thumb []syncnode.BlobRef `msgpack:"thumbs"`
}

func TestFindRefsWithoutSchema(t *testing.T) {
	r1 := syncnode.RefFromHash([32]byte{1})
	r2 := syncnode.RefFromHash([32]byte{2})
	v, err := msgpack.Marshal(map[string]any{"album": []any{photo{Title: "a", Full: r1, Thumb: []syncnode.BlobRef{r2, r1}}}, "n": 3})
	if err != nil {
		t.Fatal(err)
	}
	refs, err := FindRefs(v)
	if err != nil || len(refs) != 2 || refs[0] != r1 || refs[1] != r2 {
		t.Fatalf("FindRefs = %v, %v", refs, err)
	}
	var back photo
	b, _ := msgpack.Marshal(photo{Full: r2})
	if err := msgpack.Unmarshal(b, &back); err != nil || back.Full != r2 {
		t.Fatalf("typed decode: %v %v", back, err)
	}
	if _, err := FindRefs([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}); err == nil {
		t.Fatal("FindRefs accepted garbage")
	}
}

// A device that lost its replica (a wiped database) gets its own rows back
// from a peer by anti-entropy, then writes: the new write's sequence
// number follows the ones it wrote before, so the peer takes it as new
// instead of as a write it already has.
func TestWriteAfterLostStateNeverReusesASequenceNumber(t *testing.T) {
	t.Parallel()
	dev, peerDev := testPeer(1), testPeer(2)
	before := NewRows(dev, time.Minute)
	other := NewRows(peerDev, time.Minute)
	for i := range 3 {
		row := before.Put(fmt.Sprintf("k%d", i), []byte("v"), t0)
		if _, err := other.Apply(row, t0); err != nil {
			t.Fatal(err)
		}
	}
	for _, lost := range []string{"rows back", "vector only"} {
		t.Run(lost, func(t *testing.T) {
			after := NewRows(dev, time.Minute)
			if lost == "rows back" {
				for _, row := range missing(t, other, after.VV(), []string{""}) {
					if _, err := after.Apply(row, t0); err != nil {
						t.Fatal(err)
					}
				}
			}
			after.Learned(other.VV())
			row := after.Put("new", []byte("v"), t0.Add(time.Second))
			if row.Seq != 4 {
				t.Fatalf("the write after recovery has seq %d, want 4", row.Seq)
			}
			if other.Known(row) {
				t.Fatal("the peer takes the new write for one it has")
			}
		})
	}
}

// A writer's rows are held only up to the replica's budget for one
// writer: a row beyond it is refused (and known, so no peer resends it),
// other writers are not affected, a writer at its budget may still
// replace or delete its own rows, membership rows are not counted, and a
// device obeys the budget in its own writes.
func TestWriterBudget(t *testing.T) {
	hog, other := testPeer(1), testPeer(2)
	src := NewRows(hog, time.Minute)
	dst := NewRows(testPeer(9), time.Minute)
	dst.base = Budget{Rows: 10, Bytes: 4 << 10}
	big := bytes.Repeat([]byte{1}, 1000)
	var refused int
	for i := range 8 {
		row := src.Put(fmt.Sprintf("k/%d", i), big, t0)
		if _, err := dst.Apply(row, t0); err != nil {
			if !errors.Is(err, ErrOverBudget) {
				t.Fatal(err)
			}
			refused++
		}
	}
	if u := dst.Usage(hog); u.Bytes > 4<<10 || u.Rows != 8-refused || refused != 5 {
		t.Fatalf("the hog holds %+v here after %d refusals", u, refused)
	}
	if !dst.VV().Knows(hog, 8) {
		t.Fatalf("refused rows are not known: %v", dst.VV())
	}
	// Replacing and deleting its own rows at the budget: allowed.
	if _, err := dst.Apply(src.Put("k/0", []byte{1}, t0), t0); err != nil {
		t.Fatalf("a smaller version of its own row: %v", err)
	}
	if _, err := dst.Apply(src.Delete("k/1", t0), t0); err != nil {
		t.Fatalf("a tombstone of its own row: %v", err)
	}
	// Another writer is not affected; membership rows are not counted.
	o := NewRows(other, time.Minute)
	if _, err := dst.Apply(o.Put("k/other", big, t0), t0); err != nil {
		t.Fatalf("another writer's row: %v", err)
	}
	for i := range 20 {
		if _, err := dst.Apply(src.Put(fmt.Sprintf("%s%d", memberPrefix, i), []byte{1}, t0), t0); err != nil {
			t.Fatalf("membership row %d: %v", i, err)
		}
	}
	// A device obeys its budget in its own writes.
	adminKey, _ := key(t)
	g, err := Create("photos", []string{"photos/"}, true, adminKey, syncnode.Normal, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.SetGroupBudget(Budget{Rows: 2}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		v, _ := msgpack.Marshal(i)
		_, err := g.Put(fmt.Sprintf("photos/%d", i), v, t0)
		if i < 2 && err != nil {
			t.Fatal(err)
		}
		if i == 2 && !errors.Is(err, ErrOverBudget) {
			t.Fatalf("a third own row with a budget of two: %v", err)
		}
	}
}

// A writer's rows name at most the budget's count of blob references
// here (each may become a fetch queued on every server): a row that
// would pass it is refused, one that names fewer still passes, and
// replacing a row frees its references.
func TestWriterRefsBudget(t *testing.T) {
	hog := testPeer(1)
	src := NewRows(hog, time.Minute)
	dst := NewRows(testPeer(9), time.Minute)
	dst.base = Budget{Refs: 5}
	naming := func(n int, salt byte) []byte {
		refs := make([]syncnode.BlobRef, n)
		for i := range refs {
			refs[i] = syncnode.RefFromHash([32]byte{salt, byte(i)})
		}
		v, err := msgpack.Marshal(map[string]any{"photos": refs})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if _, err := dst.Apply(src.Put("k/a", naming(3, 1), t0), t0); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Apply(src.Put("k/b", naming(3, 2), t0), t0); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("three more references over a budget of five: %v", err)
	}
	if _, err := dst.Apply(src.Put("k/c", naming(2, 3), t0), t0); err != nil {
		t.Fatalf("two more references, within the budget: %v", err)
	}
	if _, err := dst.Apply(src.Put("k/a", naming(0, 4), t0), t0); err != nil {
		t.Fatalf("a row replaced by one naming none: %v", err)
	}
	if u := dst.Usage(hog); u.Refs != 2 {
		t.Fatalf("the writer's rows name %d references here, want 2", u.Refs)
	}
	if _, err := dst.Apply(src.Put("k/d", naming(3, 5), t0), t0); err != nil {
		t.Fatalf("references freed by the replacement: %v", err)
	}
}

// TestListFromPagesLikeList: pages of every size, with tombstones, a
// filter and neighbouring prefixes, put together give what List gives,
// and each page ends where the next starts.
func TestListFromPagesLikeList(t *testing.T) {
	r := NewRows(testPeer(1), time.Minute)
	now := time.Unix(1_000_000, 0)
	for i := range 300 {
		now = now.Add(time.Millisecond)
		key := fmt.Sprintf("photos/%03d", (i*7)%300) // out of order
		r.Put(key, []byte{byte(i)}, now)
		if i%11 == 0 {
			r.Delete(key, now.Add(time.Microsecond))
		}
	}
	r.Put("photo", []byte{1}, now)
	r.Put("photos0", []byte{1}, now)
	r.Put("videos/1", []byte{1}, now)
	odd := func(key string) bool { return key[len(key)-1]%2 == 1 }
	for _, keep := range []func(string) bool{nil, odd} {
		var want []Row
		for _, row := range r.List("photos/") {
			if keep == nil || keep(row.Key) {
				want = append(want, row)
			}
		}
		for _, limit := range []int{1, 7, 100, 1000} {
			var got []Row
			for start := ""; ; {
				page, next, err := r.ListFrom("photos/", start, limit, keep)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) > limit {
					t.Fatalf("a page of %d rows, limit %d", len(page), limit)
				}
				got = append(got, page...)
				if next == "" {
					break
				}
				if next <= page[len(page)-1].Key {
					t.Fatalf("the next page starts at %q, before the end of this one", next)
				}
				start = next
			}
			if len(got) != len(want) {
				t.Fatalf("limit %d: %d rows in pages, %d listed", limit, len(got), len(want))
			}
			for i := range got {
				if got[i].Key != want[i].Key {
					t.Fatalf("limit %d: row %d is %q, listed %q", limit, i, got[i].Key, want[i].Key)
				}
			}
		}
	}
}

// BenchmarkListFrom reads a page of 100 rows from a group of 100,000 and,
// in the same run, lists them all (what a page cost before keys were
// kept in order), and reports the ratio.
func BenchmarkListFrom(b *testing.B) {
	r := NewRows(testPeer(1), time.Minute)
	now := time.Unix(1_000_000, 0)
	for i := range 100_000 {
		r.Put(fmt.Sprintf("photos/%07d", i), []byte{1}, now.Add(time.Duration(i)))
	}
	var pageT, listT time.Duration
	for b.Loop() {
		start := time.Now()
		if page, _, _ := r.ListFrom("photos/", "photos/0050000", 100, nil); len(page) != 100 {
			b.Fatal(len(page))
		}
		pageT += time.Since(start)
		start = time.Now()
		r.List("photos/")
		listT += time.Since(start)
	}
	b.ReportMetric(float64(pageT.Microseconds())/float64(b.N), "µs/page")
	b.ReportMetric(float64(listT.Microseconds())/float64(b.N), "µs/list")
	b.ReportMetric(listT.Seconds()/pageT.Seconds(), "list/page")
}

// missing is r.Missing, failing the test (t nil: panicking) on an error.
func missing(t testing.TB, r *Rows, remote VersionVector, prefixes []string) []Row {
	rows, err := r.Missing(remote, prefixes)
	if err != nil && t == nil {
		panic(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return rows
}
