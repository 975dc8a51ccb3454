package syncgroup

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// TestOffPathBoundNeverSplitsAdmins: an admin with many lost races still
// has every change taken, in whatever order they arrive: the bound binds
// only writers that are no admins, and two replicas never split on it.
func TestOffPathBoundNeverSplitsAdmins(t *testing.T) {
	w := newWorld(t, 4)
	s := w.devs[0]
	w.must(s.ChangeSpec(Change{Op: AddAdmin, Peer: w.ids[1]}, w.tick())) // W, rank 1
	w.must(s.ChangeSpec(Change{Op: AddAdmin, Peer: w.ids[2]}, w.tick())) // J, rank 2
	w.all()
	c2 := s.gov().path[len(s.gov().path)-1]
	c3 := w.forge(0, Change{Parent: c2, Op: SetCopies, N: 2}, 900)
	var ws []Row // W's losing branch from c2: 256 changes
	p := c2
	for i := range maxOffPath {
		r := w.forge(1, Change{Parent: p, Op: SetCopies, N: 3}, uint64(1000+i))
		ws, p = append(ws, r), r.Key
	}
	y := w.forge(1, Change{Parent: c3.Key, Op: AddPrefix, Prefix: "y/"}, 2000) // W, senior to J
	j1 := w.forge(2, Change{Parent: c3.Key, Op: AddPrefix, Prefix: "j/"}, 900) // J

	x := w.fresh(3)
	yy := w.fresh(3)
	for _, g := range []*Group{x, yy} {
		if errs := deliver(t, s, g, w.tick()); len(errs) > 0 {
			t.Fatal(errs)
		}
	}
	apply := func(g *Group, rows ...Row) (errs []error) {
		for _, r := range rows {
			if _, err := g.Apply(r, w.tick()); err != nil {
				errs = append(errs, err)
			}
		}
		return errs
	}
	ex := apply(x, append(append(append([]Row{c3}, ws...), j1), y)...)
	ey := apply(yy, append(append([]Row{c3, y}, ws...), j1)...)
	t.Logf("X refused %v; Y refused %v", ex, ey)
	// Both now hold what the other holds, as a sync would offer it.
	ex2 := apply(x, c3, y, j1)
	for _, err := range ex2 {
		if errors.Is(err, ErrUndecided) {
			t.Logf("refusal is undecided: %v", err)
		}
	}
	px, py := x.Spec().Prefixes, yy.Spec().Prefixes
	if !slices.Equal(px, py) {
		t.Fatalf("replicas holding the same offered rows disagree for good: X prefixes %v, Y prefixes %v (X's refusal of y: %v)", px, py, ex2)
	}
}

// TestRebaseLeavesASupersededChange: two admins add the same prefix
// at once; the junior's add loses and cannot be made again (the prefix is
// there). Later the senior removes the prefix on purpose: the junior's
// next Rebase leaves the stale add alone, as a later change on the path
// decided the same prefix.
func TestRebaseLeavesASupersededChange(t *testing.T) {
	w := newWorld(t, 3)
	s, j := w.devs[0], w.devs[1]
	w.must(s.ChangeSpec(Change{Op: AddAdmin, Peer: w.ids[1]}, w.tick()))
	w.all()
	w.must(j.ChangeSpec(Change{Op: AddPrefix, Prefix: "b/"}, w.tick()))
	w.must(s.ChangeSpec(Change{Op: AddPrefix, Prefix: "b/"}, w.tick())) // concurrent; senior wins
	w.all()
	if rows := j.Rebase(w.tick()); len(rows) != 0 {
		t.Fatalf("setup: rebase wrote %d", len(rows))
	}
	w.must(s.ChangeSpec(Change{Op: RemovePrefix, Prefix: "b/"}, w.tick())) // deliberate, later
	w.all()
	rows := j.Rebase(w.tick())
	w.all()
	if slices.Contains(s.Spec().Prefixes, "b/") {
		t.Fatalf("a prefix the senior admin removed on purpose is back: the junior's stale, lost add was made again (%d rows); prefixes %v", len(rows), s.Spec().Prefixes)
	}
}

// TestNoRowComesAgainForever: a former admin writes another member's
// membership row (never valid for anyone): the refusal is final, the
// vectors move past it, and no honest pair sends that writer's later rows
// again round after round.
func TestNoRowComesAgainForever(t *testing.T) {
	w := newWorld(t, 4)
	s, d, m := w.devs[0], w.devs[1], w.devs[2]
	w.must(s.ChangeSpec(Change{Op: AddAdmin, Peer: w.ids[1]}, w.tick()))
	w.all()
	w.must(s.ChangeSpec(Change{Op: RemoveAdmin, Peer: w.ids[1]}, w.tick()))
	w.all()
	bogus := d.Rows().Put(MemberKey(w.ids[3]), []byte{0x80}, w.tick())
	if _, err := s.Apply(bogus, w.tick()); !errors.Is(err, ErrUndecided) {
		t.Logf("bogus member row: %v", err)
	} else {
		t.Logf("a row no chain can ever make valid is undecided: %v", err)
	}
	v, _ := msgpack.Marshal("x")
	for i := range 100 {
		w.must(d.Put(fmt.Sprintf("photos/%d", i), v, w.tick()))
	}
	syncerDeliver(d, s, w.tick())
	syncerDeliver(d, m, w.tick())
	var resent []int
	for range 3 {
		resent = append(resent, len(missing(t, s.Rows(), m.Rows().VV(), []string{memberPrefix, "photos/"})))
		syncerDeliver(s, m, w.tick())
		syncerDeliver(m, s, w.tick())
	}
	if resent[len(resent)-1] > 0 {
		t.Fatalf("honest s resends %v rows to honest m round after round (vv[d]: s %d, m %d; d wrote up to %d)", resent, s.Rows().VV()[w.ids[1]], m.Rows().VV()[w.ids[1]], d.Rows().VV()[w.ids[1]])
	}
}
