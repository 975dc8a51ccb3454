package syncgroup

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/kv"
)

// roundTo applies what device from has that device to lacks, as a round
// of the syncer does: the answer to what device to told it (Ask), rows
// held already dropped, refusals over the budget noted as exceptions, and
// the sender vouched for on every writer, as a server is. It returns the
// refusals.
func (w *world) roundTo(from, to int) []error {
	w.t.Helper()
	return w.answer(from, to, w.devs[to].Rows().Ask())
}

// answer applies from's answer to asked at device to, and its claim.
func (w *world) answer(from, to int, asked Asked) []error {
	w.t.Helper()
	src, dst := w.devs[from], w.devs[to]
	rows, err := src.Rows().whole(src.Rows().MissingKeys(asked.VV, asked.Exc, []string{""}))
	if err != nil {
		w.t.Fatal(err)
	}
	var errs []error
	for _, row := range rows {
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
	dst.Rows().LearnedFrom(src.Rows().VV(), src.Rows().Exceptions(), &asked, func(peer.ID) bool { return true })
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
// past the group's budget; its vector moves past them, but as exceptions
// they come again. Once an admin raises the budget, the next round with
// any peer that holds them brings them; a peer that refused them too (it
// has not heard of the raise) cannot make the member forget them; and a
// member that hears of the raise later gets them from the first.
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
		if n := len(w.devs[m].Rows().Exceptions()[writer]); n != 3 {
			t.Fatalf("member %d: %d exceptions, want 3", m, n)
		}
	}
	// Refused again each round while the budget stands; still excepted.
	if errs := w.roundTo(1, 2); len(errs) != 3 {
		t.Fatalf("a round with the writer: %d refusals, want 3 (the rows come again)", len(errs))
	}
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 10}}, w.tick()))
	w.roundTo(0, 2)
	if got := w.devs[2].Spec().Budget; got == nil || got.Rows != 10 {
		t.Fatalf("member 2's budget after the raise: %+v", got)
	}
	// Member 3 has not heard of the raise and refused the rows too.
	w.roundTo(3, 2)
	if n := len(w.devs[2].Rows().Exceptions()[writer]); n != 3 {
		t.Fatalf("a peer that refused the rows too made member 2 forget %d of its 3 exceptions", 3-n)
	}
	if errs := w.roundTo(1, 2); len(errs) != 0 || heldOf(w.devs[2], writer) != 6 {
		t.Fatalf("after the writer's round: %d refusals, %d rows held, want 0 and 6", len(errs), heldOf(w.devs[2], writer))
	}
	if x := w.devs[2].Rows().Exceptions(); len(x) != 0 {
		t.Fatalf("exceptions left once the rows are held: %v", x)
	}
	// Member 3 hears of the raise from member 2 and takes the rows from
	// it in the same round (the chain comes first).
	w.roundTo(2, 3)
	if n := heldOf(w.devs[3], writer); n != 6 {
		t.Fatalf("member 3 holds %d of the writer's rows after the raise, want 6", n)
	}
}

// TestBudgetRefusalsOutliveARestart: the rows a member refused are on
// stable storage with its vector, as exceptions: a restart between the
// refusal and the raise, or between the raise and the rows, loses none.
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
	if n := len(w.devs[2].Rows().Exceptions()[writer]); n != 3 {
		t.Fatalf("%d exceptions after a restart, want 3", n)
	}
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 5}}, w.tick()))
	w.roundTo(0, 2)
	reload()
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
// server that had refused them, gets them after a raise all the same: the
// server's vector came with its exceptions, which became the member's.
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

// TestRefusedRowCountsOnceItFits: whether a row fits can hang on the
// order rows arrive in: a member that gets a writer's new row before the
// tombstone that made room for it refuses it, and takes it in the next
// round, as every other member holds it.
func TestRefusedRowCountsOnceItFits(t *testing.T) {
	w := newWorld(t, 4)
	const deleter, member = 2, 3
	admin, writer := w.devs[0], w.ids[1]
	w.all()
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 3}}, w.tick()))
	w.all()
	w.writeAll(1, 3)
	w.all()
	// Another member deletes one of the writer's rows: the writer's
	// tombstone is no longer its own, and it has room for one more.
	w.must(w.devs[deleter].Delete("photos/0", w.tick()))
	w.roundTo(deleter, 1)
	v, _ := msgpack.Marshal("new")
	row := w.must(w.devs[1].Put("photos/new", v, w.tick()))
	// The member gets the writer's new row, pushed, before the tombstone.
	if _, err := w.devs[member].Apply(row, w.tick()); !errors.Is(err, ErrOverBudget) {
		t.Fatalf("the writer's new row before the tombstone: %v", err)
	}
	w.roundTo(deleter, member)
	w.roundTo(1, member)
	if _, ok := w.devs[member].Rows().Get("photos/new"); !ok {
		t.Fatal("the row refused before the tombstone that made room for it never came")
	}
	if x := w.devs[member].Rows().Exceptions(); len(x[writer]) != 0 {
		t.Fatalf("exceptions left: %v", x)
	}
}

// TestExceptionOfASupersededRowGoes: a refused row that its writer then
// overwrote is an exception no longer once the writer answers: nothing is
// sent again for it (its new version is refused, or taken, for itself).
func TestExceptionOfASupersededRowGoes(t *testing.T) {
	w := newWorld(t, 3)
	admin, writer := w.devs[0], w.ids[1]
	w.all()
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 2}}, w.tick()))
	w.roundTo(0, 2)
	w.writeAll(1, 3)
	w.roundTo(1, 2)
	x := w.devs[2].Rows().Exceptions()[writer]
	if len(x) != 1 {
		t.Fatalf("%d exceptions, want 1", len(x))
	}
	w.roundTo(0, 1)
	v, _ := msgpack.Marshal("edited")
	w.must(w.devs[1].Put("photos/2", v, w.tick()))
	w.roundTo(1, 2)
	if w.devs[2].Rows().Excepted(writer, x[0]) {
		t.Fatalf("the superseded row %d is still an exception: %v", x[0], w.devs[2].Rows().Exceptions())
	}
}

// TestExceptionsBounded: a writer refused far past its budget leaves at
// most MaxExceptions exceptions with a member.
func TestExceptionsBounded(t *testing.T) {
	r := NewRows(testPeer(9), time.Minute)
	r.SetBudget(Budget{Rows: 1})
	src := NewRows(testPeer(1), time.Minute)
	for i := range MaxExceptions + 100 {
		r.Apply(src.Put(fmt.Sprintf("k/%d", i), []byte{1}, t0), t0)
	}
	if n := len(r.Exceptions()[testPeer(1)]); n != MaxExceptions {
		t.Fatalf("%d exceptions kept, want %d", n, MaxExceptions)
	}
}

// TestExceptionMadeMidRoundStays: a row refused while a round runs (a
// push) was not among the exceptions the round asked with, so the
// answer, which did not send it, does not make the member forget it.
func TestExceptionMadeMidRoundStays(t *testing.T) {
	w := newWorld(t, 4)
	const holder, member = 2, 3
	admin, writer := w.devs[0], w.ids[1]
	w.all()
	w.writeAll(1, 3)
	w.roundTo(1, holder)
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 2}}, w.tick()))
	w.roundTo(0, member)
	w.roundTo(0, holder)
	asked := w.devs[member].Rows().Ask() // a round with the holder begins
	rows := w.devs[1].Rows().List("photos/")
	for _, r := range rows { // the writer's rows arrive by push meanwhile
		w.devs[member].Apply(r, w.tick())
	}
	w.answer(holder, member, asked)
	if n := len(w.devs[member].Rows().Exceptions()[writer]); n != 1 {
		t.Fatalf("%d exceptions after the round, want 1", n)
	}
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 5}}, w.tick()))
	w.roundTo(0, holder)
	w.roundTo(holder, member)
	if n := heldOf(w.devs[member], writer); n != 3 {
		t.Fatalf("the member holds %d of the writer's 3 rows after the raise", n)
	}
}
