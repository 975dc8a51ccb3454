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
// does, and its claim answers the vector sent at the round's start, with
// the rows it counts known without holding them. It returns the
// refusals.
func (w *world) roundTo(from, to int) []error {
	w.t.Helper()
	asked := w.devs[to].Rows().Ask()
	errs := w.answer(from, to, asked)
	return errs
}

// answer applies from's answer to asked at device to, and its claim.
func (w *world) answer(from, to int, asked Asked) []error {
	w.t.Helper()
	src, dst := w.devs[from], w.devs[to]
	var errs []error
	for _, row := range missing(w.t, src.Rows(), asked.VV, []string{""}) {
		if dst.Rows().Known(row) {
			continue // as the syncer's read-ahead drops them
		}
		if _, err := dst.Apply(row, w.tick()); err != nil {
			if !errors.Is(err, ErrOverBudget) {
				w.t.Fatalf("%d → %d: %v", from, to, err)
			}
			errs = append(errs, err)
		}
	}
	dst.Rows().LearnedAnswer(w.ids[from], src.Rows().VV(), src.Rows().Refused(), &asked, func(peer.ID) bool { return true })
	return errs
}

// writeAll has device d write n rows (values i) under photos/.
func (w *world) writeAll(d, n int) {
	w.t.Helper()
	for i := range n {
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
	w.writeAll(1, 6)
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
	w.writeAll(1, 5)
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

// TestBudgetRaiseReachesAMemberThatTookAServersVector: a member that
// never saw a writer's refused rows, because it took the vector of a
// server that had refused them, asks for them again after a raise all
// the same: the server's vector came with the rows it counted without
// holding them.
func TestBudgetRaiseReachesAMemberThatTookAServersVector(t *testing.T) {
	w := newWorld(t, 4)
	const server, member = 2, 3
	admin, writer := w.devs[0], w.ids[1]
	w.all()
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 3}}, w.tick()))
	w.roundTo(0, server)
	w.roundTo(0, member)
	w.writeAll(1, 6)
	w.roundTo(1, server)
	// The writer changes a row the server holds: that costs no more, and
	// the member sees a row of the writer's past the refused ones.
	v, _ := msgpack.Marshal("edited")
	w.must(w.devs[1].Put("photos/0", v, w.tick()))
	w.roundTo(1, server)
	w.roundTo(server, member)
	if n := heldOf(w.devs[member], writer); n != 3 {
		t.Fatalf("the member holds %d of the writer's rows, want 3", n)
	}
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 10}}, w.tick()))
	for _, d := range []int{server, member} {
		w.roundTo(0, d)
	}
	w.roundTo(1, server)
	w.roundTo(server, member)
	w.roundTo(server, member)
	if n := heldOf(w.devs[member], writer); n != 6 {
		t.Fatalf("the member holds %d of the writer's 6 rows after the raise", n)
	}
}

// TestBudgetRaiseMidRoundTakesNoOldClaim: a round asks with a vector;
// meanwhile a raise arrives: the answer to the vector sent before the
// raise, which counted the refused rows known, does not carry the vector
// past the rows the raise brings back, and the next round brings them.
func TestBudgetRaiseMidRoundTakesNoOldClaim(t *testing.T) {
	w := newWorld(t, 4)
	const holder, member = 2, 3
	admin, writer := w.devs[0], w.ids[1]
	w.all()
	w.writeAll(1, 6)
	w.roundTo(1, holder) // before any budget: the holder keeps all six
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 3}}, w.tick()))
	w.roundTo(0, member)
	w.roundTo(holder, member)
	if n := heldOf(w.devs[member], writer); n != 3 {
		t.Fatalf("the member holds %d of the writer's rows, want 3", n)
	}
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 10}}, w.tick()))
	w.roundTo(0, holder)
	asked := w.devs[member].Rows().Ask() // a round with the holder begins
	w.roundTo(0, member)                 // the raise arrives meanwhile
	w.answer(holder, member, asked)      // the round's answer
	if w.devs[member].Rows().VV().Knows(writer, 6) {
		t.Fatal("an answer to a vector sent before the raise carried the member's past the refused rows")
	}
	w.roundTo(holder, member)
	if n := heldOf(w.devs[member], writer); n != 6 {
		t.Fatalf("the member holds %d of the writer's 6 rows after the raise", n)
	}
}
