package syncgroup

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"
)

// answerVouch is answer with an explicit vouch and an explicit claim
// (vv, x) from the sender, as the syncer does for a non-server peer.
func (w *world) answerVouch(from, to int, asked Asked, vv VersionVector, x Exceptions, vouch func(peer.ID) bool) int {
	w.t.Helper()
	src, dst := w.devs[from], w.devs[to]
	rows, err := src.Rows().whole(src.Rows().MissingKeys(asked.VV, asked.Exc, []string{""}))
	if err != nil {
		w.t.Fatal(err)
	}
	for _, row := range rows {
		if dst.Rows().Known(row) {
			continue
		}
		if _, err := dst.Apply(row, w.tick()); err != nil && !errors.Is(err, ErrOverBudget) {
			w.t.Fatalf("%d → %d: %v", from, to, err)
		}
	}
	dst.Rows().LearnedFrom(vv, x, &asked, vouch)
	return len(rows)
}

// A hostile writer's exceptions for its own rows that an honest member
// HOLDS (a gap left by push order) are adopted; the read-ahead Known
// filter then drops every copy before Apply, so nothing unexcepts them,
// and every honest peer resends them every round.
func TestZZReviewHeldRowsExcepted(t *testing.T) {
	w := newWorld(t, 4)
	w.all()
	const H, A, B = 1, 2, 3
	hid := w.ids[H]
	v, _ := msgpack.Marshal("x")
	gapRow := w.must(w.devs[H].Put("photos/gap", v, w.tick()))
	var later []Row
	var seqs []uint64
	for i := range 5 {
		r := w.must(w.devs[H].Put(fmt.Sprintf("photos/h%d", i), v, w.tick()))
		later = append(later, r)
		seqs = append(seqs, r.Seq)
	}
	// Pushes bring the later rows before the gap row (ordinary reordering).
	for _, m := range []int{A, B} {
		for _, r := range later {
			w.devs[m].Apply(r, w.tick())
		}
	}
	// Rounds with H: H sends everything honestly, but lists its rows as
	// exceptions.
	for _, m := range []int{A, B} {
		asked := w.devs[m].Rows().Ask()
		w.answerVouch(H, m, asked, w.devs[H].Rows().VV(), Exceptions{hid: seqs}, func(p peer.ID) bool { return p == hid })
		if _, ok := w.devs[m].Rows().Get(gapRow.Key); !ok {
			t.Fatalf("member %d lacks the gap row", m)
		}
		for _, s := range seqs {
			if !w.devs[m].Rows().Excepted(hid, s) {
				t.Fatalf("member %d: seq %d not excepted", m, s)
			}
		}
	}
	// Honest A and B now round with each other (B as a server even).
	for round := range 5 {
		asked := w.devs[A].Rows().Ask()
		n := w.answerVouch(B, A, asked, w.devs[B].Rows().VV(), w.devs[B].Rows().Exceptions(), nil)
		asked = w.devs[B].Rows().Ask()
		m := w.answerVouch(A, B, asked, w.devs[A].Rows().VV(), w.devs[A].Rows().Exceptions(), nil)
		t.Logf("round %d: B sent A %d rows, A sent B %d rows; A still excepts %v", round, n, m, w.devs[A].Rows().Exceptions()[hid])
		if n == 0 {
			t.Fatalf("no resend")
		}
	}
	for _, s := range seqs {
		if !w.devs[A].Rows().Excepted(hid, s) {
			t.Fatalf("cleared")
		}
	}
}

// Past MaxExceptions a writer's refused rows are lost for good even once
// the budget is raised far enough to hold them.
func TestZZReviewCapLosesRowsAfterRaise(t *testing.T) {
	w := newWorld(t, 3)
	admin, writer := w.devs[0], w.ids[1]
	w.all()
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 2}}, w.tick()))
	w.roundTo(0, 2)
	const n = 2 + MaxExceptions + 100
	w.writeAll(1, n)
	w.roundTo(1, 2)
	w.must(admin.ChangeSpec(Change{Op: SetBudget, Budget: &Budget{Rows: 10 * n}}, w.tick()))
	w.roundTo(0, 2)
	w.roundTo(0, 1)
	for range 3 {
		w.roundTo(1, 2)
	}
	got := heldOf(w.devs[2], writer)
	keys := w.devs[1].Rows().MissingKeys(w.devs[2].Rows().VV(), w.devs[2].Rows().Exceptions(), []string{""})
	t.Logf("member holds %d of %d rows after the raise; writer would send %d more", got, n, len(keys))
	if got == n {
		t.Fatal("no loss")
	}
}

// The replica-wide bound: once full, a refusal is not kept while the
// vector moves past it; a member that did keep the exception drops it on
// such a peer's (server's) answer, which never sent the row.
func TestZZReviewGlobalCapPropagates(t *testing.T) {
	srv := NewRows(testPeer(100), time.Minute)
	srv.SetBudget(Budget{Rows: 1})
	for wi := range 8 {
		src := NewRows(testPeer(wi), time.Minute)
		for i := range MaxExceptions + 1 {
			srv.Apply(src.Put(fmt.Sprintf("k/%d", i), []byte{1}, t0), t0)
		}
	}
	if srv.excN != MaxExceptionsAll {
		t.Fatalf("excN %d", srv.excN)
	}
	w9 := NewRows(testPeer(9), time.Minute)
	r1 := w9.Put("k/a", []byte{1}, t0)
	r2 := w9.Put("k/b", []byte{1}, t0)
	mem := NewRows(testPeer(101), time.Minute)
	mem.SetBudget(Budget{Rows: 1})
	for _, r := range []*Rows{srv, mem} {
		r.Apply(r1, t0)
		if _, err := r.Apply(r2, t0); !errors.Is(err, ErrOverBudget) {
			t.Fatal(err)
		}
	}
	t.Logf("server excepts r2: %v, vv %d; member excepts r2: %v", srv.Excepted(r2.Writer, r2.Seq), srv.vv[r2.Writer], mem.Excepted(r2.Writer, r2.Seq))
	asked := mem.Ask()
	k := srv.MissingKeys(asked.VV, asked.Exc, []string{""})
	rows, _ := srv.whole(k)
	for _, r := range rows {
		if r.Writer == r2.Writer {
			t.Fatalf("server sends w9's %d", r.Seq)
		}
		mem.Apply(r, t0)
	}
	mem.LearnedFrom(srv.VV(), srv.Exceptions(), &asked, nil)
	mem.SetBudget(Budget{Rows: 100}) // raise
	asked = mem.Ask()
	keys := w9.MissingKeys(asked.VV, asked.Exc, []string{""})
	t.Logf("member still excepts r2: %v; writer would send %v", mem.Excepted(r2.Writer, r2.Seq), keys)
	if len(keys) == 0 {
		t.Log("LOST for good at member")
	}
}

// Cost of a hostile own-writer exceptions list under the group's lock.
func TestZZReviewHugeExceptionList(t *testing.T) {
	h := NewRows(testPeer(1), time.Minute)
	h.resumeFrom(Resume{Seq: 1 << 20})
	row := h.Put("k/a", []byte{1}, t0)
	r := NewRows(testPeer(2), time.Minute)
	r.Apply(row, t0)
	var seqs []uint64
	for i := range 200_000 {
		seqs = append(seqs, uint64(i+1))
	}
	b, _ := msgpack.Marshal(Exceptions{h.self: seqs})
	asked := r.Ask()
	start := time.Now()
	r.LearnedFrom(VersionVector{h.self: row.Seq}, Exceptions{h.self: seqs}, &asked, func(p peer.ID) bool { return p == h.self })
	t.Logf("%d entries, %d bytes on the wire, LearnedFrom took %v, kept %d", len(seqs), len(b), time.Since(start), len(r.exc[h.self]))
}
