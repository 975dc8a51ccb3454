package syncgroup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

// writeAll has device d write n rows (values i) under photos/, the first
// numbered from.
func (w *world) writeAll(d, from, n int) {
	w.t.Helper()
	for i := from; i < from+n; i++ {
		v, _ := msgpack.Marshal(i)
		w.must(w.devs[d].Put(fmt.Sprintf("photos/%d", i), v, w.tick()))
	}
}

// heldOf counts the data rows of writer held by g.
func heldOf(g *Group, writer peer.ID) int {
	n := 0
	for _, r := range g.Rows().List("photos/") {
		if r.Writer == writer {
			n++
		}
	}
	return n
}

// TestBudgetRaiseLetsTheWriterWriteMore: a writer at the group's budget
// is refused its next row, with the bound named; once an admin raises the
// budget and the writer hears of it, it writes more, and every member,
// bound alike, takes every row.
func TestBudgetRaiseLetsTheWriterWriteMore(t *testing.T) {
	w := newWorld(t, 3)
	admin, writer := w.devs[0], w.ids[1]
	w.all()
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 3}}, w.tick()))
	w.all()
	w.writeAll(1, 0, 3)
	v, _ := msgpack.Marshal("one more")
	if _, err := w.devs[1].Put("photos/more", v, w.tick()); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("a fourth row under a budget of 3: %v", err)
	}
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 6}}, w.tick()))
	w.all()
	w.writeAll(1, 3, 3)
	w.all()
	for i, g := range w.devs {
		if n := heldOf(g, writer); n != 6 {
			t.Fatalf("device %d holds %d of the writer's 6 rows", i, n)
		}
	}
}

// TestBudgetOutlivesARestart: the group's budget is its spec's and its
// chain's, read back with them: a replica reloaded from the store bounds
// writers as before.
func TestBudgetOutlivesARestart(t *testing.T) {
	w := newWorld(t, 2)
	w.must(w.devs[0].ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 7, Refs: 9}}, w.tick()))
	w.all()
	db, err := kv.Open(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := NewStore(db).SaveAll(w.devs[1], syncnode.Priority{}); err != nil {
		t.Fatal(err)
	}
	loaded, err := NewStore(db).Load(w.ids[1], 0)
	if err != nil || len(loaded) != 1 {
		t.Fatalf("load: %v, %d groups", err, len(loaded))
	}
	want := Budget{Rows: 7, Bytes: DefaultBudgetBytes, Refs: 9}
	if got := loaded[0].Group.rows.budget(); got != want {
		t.Fatalf("budget after a reload: %+v, want %+v", got, want)
	}
}

// TestBudgetIsTheGroups: only an admin sets the budget, within its
// bounds; a lowered budget keeps what is held and refuses more; a spec
// made with a budget binds a member from its first row; zero fields
// leave the protocol's default.
func TestBudgetIsTheGroups(t *testing.T) {
	w := newWorld(t, 3)
	w.all()
	if _, err := w.devs[1].ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 1 << 20}}, w.tick()); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("a member sets the budget: %v", err)
	}
	// A forged change by a member, at the end of the chain: refused.
	forged := w.forge(1, Change{Op: SetBudget, Budget: &Budget{Rows: 1}}, 100)
	if _, err := w.devs[2].Apply(forged, w.tick()); err == nil {
		t.Fatal("a member's budget change was taken")
	}
	for _, b := range []Budget{{Rows: -1}, {Bytes: MaxBudgetBytes + 1}, {Refs: MaxBudgetRefs + 1}} {
		if _, err := w.devs[0].ChangeSpec(Change{Op: SetBudget, Budget: &b}, w.tick()); !errors.Is(err, ErrBadChange) {
			t.Fatalf("budget %+v: %v", b, err)
		}
	}
	if _, err := w.devs[0].ChangeSpec(Change{Op: SetBudget}, w.tick()); !errors.Is(err, ErrBadChange) {
		t.Fatalf("a budget change without a budget: %v", err)
	}
	for i := range 3 {
		v, _ := msgpack.Marshal(i)
		w.must(w.devs[1].Put(fmt.Sprintf("photos/%d", i), v, w.tick()))
	}
	w.all()
	w.must(w.devs[0].ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 2}}, w.tick()))
	w.all()
	if n := heldOf(w.devs[2], w.ids[1]); n != 3 {
		t.Fatalf("a lowered budget dropped rows: %d held", n)
	}
	v, _ := msgpack.Marshal("more")
	if _, err := w.devs[1].Put("photos/more", v, w.tick()); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("a fourth row with the group's budget at 2: %v", err)
	}
	// Zero fields leave the protocol's default, the same on every member.
	w.must(w.devs[0].ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 100}}, w.tick()))
	w.all()
	for i, g := range w.devs {
		if got, want := g.rows.budget(), (Budget{Rows: 100, Bytes: DefaultBudgetBytes, Refs: DefaultBudgetRefs}); got != want {
			t.Fatalf("device %d's budget: %+v, want %+v", i, got, want)
		}
	}

	// A group created with a budget.
	k, _ := key(t)
	g, err := Create("library", []string{"lib/"}, true, k, syncnode.Normal, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.SetGroupBudget(Budget{Rows: -5}); err == nil {
		t.Fatal("a negative budget at creation was taken")
	}
	if err := g.SetGroupBudget(Budget{Rows: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Put("lib/a", v, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Put("lib/b", v, t0); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("a second row under a spec budget of one: %v", err)
	}
	if b := g.Spec().Budget; b == nil || b.Rows != 1 {
		t.Fatalf("the spec's budget: %+v", b)
	}
}

// TestFitAllAgreesWithApply: FitAll, judging rows before they are
// applied, says of each what Apply then does with it over the budget,
// for random writes of three writers over a small key space (new keys,
// overwrites of their own and of others', tombstones).
func TestFitAllAgreesWithApply(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for round := range 50 {
		dst := NewRows(testPeer(9), time.Minute)
		dst.base = Budget{Rows: 4, Bytes: 900, Refs: 3}
		srcs := []*Rows{NewRows(testPeer(1), time.Minute), NewRows(testPeer(2), time.Minute), NewRows(testPeer(3), time.Minute)}
		var rows []Row
		for i := range 30 {
			src := srcs[rng.IntN(len(srcs))]
			key := fmt.Sprintf("k/%d", rng.IntN(8))
			now := t0.Add(time.Duration(i) * time.Millisecond) // each row beats the ones before
			var row Row
			if rng.IntN(5) == 0 {
				row = src.Delete(key, now)
			} else {
				v, _ := msgpack.Marshal(map[string]any{"x": bytes.Repeat([]byte{1}, rng.IntN(200)), "r": syncnode.RefFromHash([32]byte{byte(rng.IntN(4))})})
				row = src.Put(key, v, now)
			}
			rows = append(rows, row)
		}
		fit := dst.FitAll(rows)
		for i, row := range rows {
			_, err := dst.Apply(row, t0.Add(time.Second))
			if err != nil && !errors.Is(err, ErrOverBudget) {
				t.Fatal(err)
			}
			if got := err == nil; got != fit[i] {
				t.Fatalf("round %d, row %d (%s by %s): FitAll %v, Apply %v", round, i, row.Key, row.Writer, fit[i], err)
			}
		}
	}
}
