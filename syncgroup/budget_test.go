package syncgroup

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

// roundTo applies what device from has that device to lacks, as a round
// of the syncer does: refusals over the budget are final (the vector
// moves past them), the sender vouches for every writer, as a server
// does, and its claim answers the vector sent at the round's start. It
// returns the refusals.
func (w *world) roundTo(from, to int) []error {
	w.t.Helper()
	src, dst := w.devs[from], w.devs[to]
	asked := dst.Rows().VV()
	var errs []error
	for _, row := range missing(w.t, src.Rows(), asked, []string{""}) {
		if _, err := dst.Apply(row, w.tick()); err != nil {
			if !errors.Is(err, ErrOverBudget) {
				w.t.Fatalf("%d → %d: %v", from, to, err)
			}
			errs = append(errs, err)
		}
	}
	dst.Rows().LearnedAnswer(src.Rows().VV(), asked, func(peer.ID) bool { return true })
	return errs
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

// TestBudgetRaiseBringsRefusedRowsBack: a member refuses a writer's rows
// past the group's budget and counts them known; once an admin raises the
// budget, the member's vector comes back below them, a peer that has not
// heard of the raise (and refused them too) cannot talk it past them
// again, and the writer's next round brings them; a member that hears of
// the raise later gets them from that member.
func TestBudgetRaiseBringsRefusedRowsBack(t *testing.T) {
	w := newWorld(t, 4)
	admin, writer := w.devs[0], w.ids[1]
	w.all()
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 3}}, w.tick()))
	w.roundTo(0, 2)
	w.roundTo(0, 3)
	// The writer had not heard of the budget when it wrote.
	for i := range 6 {
		v, _ := msgpack.Marshal(i)
		w.must(w.devs[1].Put(fmt.Sprintf("photos/%d", i), v, w.tick()))
	}
	for _, m := range []int{2, 3} {
		if errs := w.roundTo(1, m); len(errs) != 3 || heldOf(w.devs[m], writer) != 3 {
			t.Fatalf("member %d: %d refusals, %d rows held", m, len(errs), heldOf(w.devs[m], writer))
		}
		if !w.devs[m].Rows().VV().Knows(writer, w.devs[1].Rows().VV()[writer]) {
			t.Fatalf("member %d: the refused rows are not known", m)
		}
	}
	raise := w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 10}}, w.tick()))
	w.roundTo(0, 2)
	if got := w.devs[2].Spec().Budget; got == nil || got.Rows != 10 {
		t.Fatalf("member 2's budget after the raise: %+v", got)
	}
	if w.devs[2].Rows().VV().Knows(writer, w.devs[1].Rows().VV()[writer]) {
		t.Fatal("member 2 still counts the refused rows known after the raise")
	}
	// Member 3 has not heard of the raise: its claim must not count.
	w.roundTo(3, 2)
	if w.devs[2].Rows().VV().Knows(writer, w.devs[1].Rows().VV()[writer]) {
		t.Fatal("a peer that had not heard of the raise talked member 2's vector past the refused rows")
	}
	if errs := w.roundTo(1, 2); len(errs) != 0 || heldOf(w.devs[2], writer) != 6 {
		t.Fatalf("after the writer's round: %d refusals, %d rows held, want 0 and 6", len(errs), heldOf(w.devs[2], writer))
	}
	// Member 3 hears of the raise from member 2, then takes the rows
	// from it.
	w.roundTo(2, 3)
	w.roundTo(2, 3)
	if n := heldOf(w.devs[3], writer); n != 6 {
		t.Fatalf("member 3 holds %d of the writer's rows after the raise, want 6", n)
	}
	if !w.devs[3].Rows().VV().Knows(raise.Writer, raise.Seq) {
		t.Fatal("member 3 did not learn the raise")
	}
}

// TestBudgetRefusalsOutliveARestart: what a member refused, and the
// writers it asks for again after a raise, are on stable storage with its
// vector: a restart between the refusal and the raise, or between the
// raise and the rows, loses none of them.
func TestBudgetRefusalsOutliveARestart(t *testing.T) {
	w := newWorld(t, 3)
	admin, writer := w.devs[0], w.ids[1]
	w.all()
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 2}}, w.tick()))
	w.roundTo(0, 2)
	for i := range 5 {
		v, _ := msgpack.Marshal(i)
		w.must(w.devs[1].Put(fmt.Sprintf("photos/%d", i), v, w.tick()))
	}
	w.roundTo(1, 2)
	reload := func() {
		t.Helper()
		dir := t.TempDir()
		db, err := kv.Open(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if err := NewStore(db).SaveAll(w.devs[2], syncnode.Priority{}); err != nil {
			t.Fatal(err)
		}
		loaded, err := NewStore(db).Load(w.ids[2], 0)
		if err != nil || len(loaded) != 1 {
			t.Fatalf("load: %v, %d groups", err, len(loaded))
		}
		w.devs[2] = loaded[0].Group
	}
	reload()
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 5}}, w.tick()))
	w.roundTo(0, 2)
	reload()
	if w.devs[2].Rows().VV().Knows(writer, 5) {
		t.Fatal("the refused rows are known again after a restart")
	}
	w.roundTo(0, 2) // the admin refused nothing, but did it hear of them?
	w.roundTo(1, 2)
	if n := heldOf(w.devs[2], writer); n != 5 {
		t.Fatalf("member 2 holds %d of the writer's 5 rows", n)
	}
}

// TestBudgetIsTheGroups: only an admin sets the budget, within its
// bounds; a lowered budget keeps what is held and refuses more; a spec
// made with a budget binds a member from its first row; zero fields
// leave each member's own default.
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
	// Zero fields leave the member's own: its default of 1 byte binds.
	w.devs[1].SetBudget(Budget{Bytes: 1})
	w.must(w.devs[0].ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 100}}, w.tick()))
	w.all()
	if _, err := w.devs[1].Put("photos/more", v, w.tick()); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("the member's own byte bound under a group budget of rows only: %v", err)
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
