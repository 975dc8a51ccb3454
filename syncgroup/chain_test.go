package syncgroup

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
)

// world is a group's devices, each with its replica, for the tests of the
// chain: its creator is devs[0].
type world struct {
	t    *testing.T
	keys []crypto.PrivKey
	ids  []peer.ID
	devs []*Group
	now  time.Time
}

// newWorld creates a group on device 0 and has n-1 more devices join it
// as normal members, each admitted by device 0.
func newWorld(t *testing.T, n int) *world {
	t.Helper()
	w := &world{t: t, now: t0}
	for range n {
		k, id := key(t)
		w.keys, w.ids = append(w.keys, k), append(w.ids, id)
	}
	g, err := Create("photos", []string{"photos/"}, false, w.keys[0], syncnode.Normal, nil, w.tick())
	if err != nil {
		t.Fatal(err)
	}
	w.devs = append(w.devs, g)
	for i := 1; i < n; i++ {
		w.devs = append(w.devs, w.fresh(i))
		w.join(i, 0)
	}
	return w
}

func (w *world) tick() time.Time { w.now = w.now.Add(time.Millisecond); return w.now }

// fresh returns an empty replica of the group for device i.
func (w *world) fresh(i int) *Group {
	w.t.Helper()
	g, err := NewGroup(w.devs[0].Genesis(), w.ids[i], time.Minute)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := g.SetKey(w.keys[i]); err != nil {
		w.t.Fatal(err)
	}
	return g
}

// join has device i join through admin a's invitation and admission.
func (w *world) join(i, a int) {
	w.t.Helper()
	inv, err := Invite(w.keys[a], w.devs[a].Spec().ID, w.ids[i], syncnode.Normal, w.now.Add(time.Hour))
	if err != nil {
		w.t.Fatal(err)
	}
	if _, _, err := w.devs[a].Admit(inv, w.tick()); err != nil {
		w.t.Fatal(err)
	}
	w.sync(a, i)
	if _, err := w.devs[i].Join(inv, nil, w.tick()); err != nil {
		w.t.Fatal(err)
	}
	w.sync(i, a)
}

// sync sends device to what device from has that it lacks, as one round
// would; every row must apply.
func (w *world) sync(from, to int) {
	w.t.Helper()
	if errs := deliver(w.t, w.devs[from], w.devs[to], w.tick()); len(errs) > 0 {
		w.t.Fatalf("%d → %d: %v", from, to, errs)
	}
}

// all syncs every pair twice over.
func (w *world) all() {
	w.t.Helper()
	for range 2 {
		for a := range w.devs {
			for b := range w.devs {
				if a != b {
					w.sync(a, b)
				}
			}
		}
	}
}

func (w *world) must(row Row, err error) Row {
	w.t.Helper()
	if err != nil {
		w.t.Fatal(err)
	}
	return row
}

// agree checks that every replica has the same admins, prefixes and
// members, and returns them as device 0 has them.
func (w *world) agree() Spec {
	w.t.Helper()
	want, wantM := w.devs[0].Spec(), memberIDs(w.devs[0])
	for i, g := range w.devs[1:] {
		if got := g.Spec(); !slices.Equal(got.Admins, want.Admins) || !slices.Equal(got.Prefixes, want.Prefixes) || got.Copies != want.Copies {
			w.t.Fatalf("device %d: spec %+v, device 0: %+v", i+1, got, want)
		}
		if got := memberIDs(g); !slices.Equal(got, wantM) {
			w.t.Fatalf("device %d: members %v, device 0: %v", i+1, got, wantM)
		}
	}
	return want
}

func memberIDs(g *Group) []peer.ID {
	var out []peer.ID
	for _, m := range g.Members() {
		out = append(out, m.Peer)
	}
	return out
}

// TestAdminsAddedAndRemoved: an admin adds another, who then admits a
// member on its own, and any admin's invitation is taken by any admin;
// an admin removes only a junior one (or itself), never the last.
func TestAdminsAddedAndRemoved(t *testing.T) {
	w := newWorld(t, 3)
	a, b := w.devs[0], w.devs[1]
	w.must(a.ChangeSpec(Change{Op: AddAdmin, Peer: w.ids[1]}, w.tick()))
	w.all()
	if got := b.Spec().Admins; !slices.Equal(got, []peer.ID{w.ids[0], w.ids[1]}) {
		t.Fatalf("admins on the new admin's replica: %v", got)
	}
	// A new device joins through the new admin with an invitation that
	// the creator issued.
	k, id := key(t)
	w.keys, w.ids = append(w.keys, k), append(w.ids, id)
	w.devs = append(w.devs, w.fresh(3))
	inv, _ := Invite(w.keys[0], a.Spec().ID, id, syncnode.Normal, w.now.Add(time.Hour))
	if err := inv.Verify(id, b.Spec().Admins, w.now); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Admit(inv, w.tick()); err != nil {
		t.Fatal(err)
	}
	w.sync(1, 3)
	w.must(w.devs[3].Join(inv, nil, w.tick()))
	w.all()
	if !a.IsMember(id) {
		t.Fatal("a member the second admin admitted is none on the creator's replica")
	}
	// The junior admin may not remove the creator; the creator may
	// remove it; it stays a member, writing as before.
	if _, err := b.ChangeSpec(Change{Op: RemoveAdmin, Peer: w.ids[0]}, w.tick()); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("a junior admin removing the creator: %v", err)
	}
	w.must(a.ChangeSpec(Change{Op: RemoveAdmin, Peer: w.ids[1]}, w.tick()))
	w.all()
	if b.IsMember(w.ids[1]) != true || slices.Contains(b.Spec().Admins, w.ids[1]) {
		t.Fatalf("the removed admin: member %v, admins %v", b.IsMember(w.ids[1]), b.Spec().Admins)
	}
	v, _ := msgpack.Marshal("still here")
	w.must(b.Put("photos/b", v, w.tick()))
	w.all()
	if _, ok := a.Rows().Get("photos/b"); !ok {
		t.Fatal("the former admin's row did not reach the creator")
	}
	if _, err := b.Eject(w.ids[2], w.tick()); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("a former admin ejecting: %v", err)
	}
	if _, err := a.ChangeSpec(Change{Op: RemoveAdmin, Peer: w.ids[0]}, w.tick()); !errors.Is(err, ErrLastAdmin) {
		t.Fatalf("the last admin removing itself: %v", err)
	}
	if err := a.CheckLeave(); !errors.Is(err, ErrLastAdmin) {
		t.Fatalf("the last admin leaving a group with members: %v", err)
	}
	w.agree()
}

// TestRemovedAdminCannotForkBackIn: an admin that a senior one removed
// writes changes on the chain as it stood before (an admission of a peer
// of its own, a removal of the one that removed it): every replica, in
// either order of arrival, keeps the removal, and nobody it admitted
// after is a member.
func TestRemovedAdminCannotForkBackIn(t *testing.T) {
	for _, late := range []bool{false, true} {
		w := newWorld(t, 4)
		a := w.devs[0]
		w.must(a.ChangeSpec(Change{Op: AddAdmin, Peer: w.ids[1]}, w.tick()))
		w.must(a.ChangeSpec(Change{Op: AddAdmin, Peer: w.ids[2]}, w.tick()))
		w.all()
		// Device 1's replica as it stands, before its removal.
		stale := w.fresh(1)
		if errs := deliver(t, w.devs[1], stale, w.tick()); len(errs) > 0 {
			t.Fatal(errs)
		}
		w.must(a.ChangeSpec(Change{Op: RemoveAdmin, Peer: w.ids[1]}, w.tick()))
		if !late {
			w.all()
		}
		// The removed admin forks from before its removal: it admits a
		// stranger and takes the role of the other junior admin away.
		_, stranger := key(t)
		inv, _ := Invite(w.keys[1], a.Spec().ID, stranger, syncnode.Normal, w.now.Add(time.Hour))
		w.must(func() (Row, error) { r, _, err := stale.Admit(inv, w.tick()); return r, err }())
		w.must(stale.ChangeSpec(Change{Op: RemoveAdmin, Peer: w.ids[2]}, w.tick()))
		w.devs[1] = stale
		w.all()
		spec := w.agree()
		if !slices.Equal(spec.Admins, []peer.ID{w.ids[0], w.ids[2]}) {
			t.Fatalf("late %v: admins %v, want the creator and device 2", late, spec.Admins)
		}
		if _, ok := a.admission(stranger); ok {
			t.Fatalf("late %v: the removed admin's admission counts", late)
		}
	}
}

// TestConcurrentChangesResolveAlike: admins change the spec at the same
// time (admissions, prefixes, a removal and the removed admin's own
// change); every replica picks the same outcome, the lost changes of
// admins still allowed to make them are made again, and the group never
// loses its last admin.
func TestConcurrentChangesResolveAlike(t *testing.T) {
	w := newWorld(t, 4)
	a, b, c := w.devs[0], w.devs[1], w.devs[2]
	w.must(a.ChangeSpec(Change{Op: AddAdmin, Peer: w.ids[1]}, w.tick()))
	w.must(a.ChangeSpec(Change{Op: AddAdmin, Peer: w.ids[2]}, w.tick()))
	w.all()
	// All at once, none having heard of the others: b adds a prefix, c
	// removes itself as admin... and a removes b.
	w.must(b.ChangeSpec(Change{Op: AddPrefix, Prefix: "docs/"}, w.tick()))
	w.must(c.ChangeSpec(Change{Op: SetCopies, N: 2}, w.tick()))
	w.must(a.ChangeSpec(Change{Op: RemoveAdmin, Peer: w.ids[1]}, w.tick()))
	w.all()
	w.agree()
	// c's change lost to a's, and c is still an admin: it makes it again.
	for _, g := range w.devs {
		for _, row := range g.Rebase(w.tick()) {
			_ = row
		}
	}
	w.all()
	spec := w.agree()
	switch {
	case !slices.Equal(spec.Admins, []peer.ID{w.ids[0], w.ids[2]}):
		t.Fatalf("admins %v", spec.Admins)
	case spec.Copies != 2:
		t.Fatalf("the lost change of an admin still allowed to make it was not made again: copies %d", spec.Copies)
	case slices.Contains(spec.Prefixes, "docs/"):
		t.Fatalf("the change of an admin removed concurrently was made again: prefixes %v", spec.Prefixes)
	}
	if len(a.Rebase(w.tick())) != 0 || len(c.Rebase(w.tick())) != 0 {
		t.Fatal("a change made again twice")
	}
}

// TestChainInAnyOrder: the rows of a group whose admins changed hands,
// admitted and ejected, delivered to a fresh replica in random orders
// (each refused row offered again later, as anti-entropy would), always
// give the same spec and members; and in the order Missing sends them,
// no row is refused at all.
func TestChainInAnyOrder(t *testing.T) {
	w := newWorld(t, 4)
	a := w.devs[0]
	w.must(a.ChangeSpec(Change{Op: AddAdmin, Peer: w.ids[1]}, w.tick()))
	w.all()
	k, id := key(t)
	w.keys, w.ids = append(w.keys, k), append(w.ids, id)
	w.devs = append(w.devs, w.fresh(4))
	w.join(4, 1)
	w.all()
	w.must(w.devs[1].ChangeSpec(Change{Op: AddPrefix, Prefix: "docs/"}, w.tick()))
	v, _ := msgpack.Marshal("doc")
	w.all()
	w.must(w.devs[4].Put("docs/1", v, w.tick()))
	w.must(w.devs[1].Eject(w.ids[3], w.tick()))
	w.all()
	w.must(a.ChangeSpec(Change{Op: RemoveAdmin, Peer: w.ids[1]}, w.tick()))
	w.all()
	want := w.agree()
	wantM := memberIDs(a)
	if !slices.Contains(wantM, id) || slices.Contains(wantM, w.ids[3]) {
		t.Fatalf("members %v", wantM)
	}
	rows := missing(t, a.Rows(), VersionVector{}, []string{""})
	fresh := w.fresh(2)
	for _, r := range rows {
		if _, err := fresh.Apply(r, w.tick()); err != nil {
			t.Fatalf("in the order Missing sends them, %q refused: %v", r.Key, err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 30 {
		g := w.fresh(2)
		pending := slices.Clone(rows)
		rng.Shuffle(len(pending), func(i, j int) { pending[i], pending[j] = pending[j], pending[i] })
		for progress := true; progress && len(pending) > 0; {
			progress = false
			var again []Row
			for _, r := range pending {
				if _, err := g.Apply(r, w.tick()); err != nil {
					again = append(again, r)
				} else {
					progress = true
				}
			}
			pending = again
		}
		if len(pending) > 0 {
			t.Fatalf("order %d: %d rows never apply", round, len(pending))
		}
		got := g.Spec()
		if !slices.Equal(got.Admins, want.Admins) || !slices.Equal(got.Prefixes, want.Prefixes) || !slices.Equal(memberIDs(g), wantM) {
			t.Fatalf("order %d: %v %v %v, want %v %v %v", round, got.Admins, got.Prefixes, memberIDs(g), want.Admins, want.Prefixes, wantM)
		}
		if _, ok := g.Rows().Get("docs/1"); !ok {
			t.Fatalf("order %d: the row under the added prefix is lost", round)
		}
	}
}

// TestPrefixesChange: a prefix added takes writes from then on, on every
// replica; one removed takes none, and the last is never removed.
func TestPrefixesChange(t *testing.T) {
	w := newWorld(t, 2)
	a, p := w.devs[0], w.devs[1]
	v, _ := msgpack.Marshal("x")
	if _, err := p.Put("docs/1", v, w.tick()); !errors.Is(err, ErrOutsideGroup) {
		t.Fatalf("a write outside the prefixes: %v", err)
	}
	if _, err := p.ChangeSpec(Change{Op: AddPrefix, Prefix: "docs/"}, w.tick()); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("a member changing the spec: %v", err)
	}
	w.must(a.ChangeSpec(Change{Op: AddPrefix, Prefix: "docs/"}, w.tick()))
	w.all()
	w.must(p.Put("docs/1", v, w.tick()))
	w.must(a.ChangeSpec(Change{Op: RemovePrefix, Prefix: "photos/"}, w.tick()))
	w.all()
	if _, err := p.Put("photos/2", v, w.tick()); !errors.Is(err, ErrOutsideGroup) {
		t.Fatalf("a write under a removed prefix: %v", err)
	}
	if _, err := a.ChangeSpec(Change{Op: RemovePrefix, Prefix: "docs/"}, w.tick()); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("removing the last prefix: %v", err)
	}
	for _, bad := range []Change{{Op: AddPrefix, Prefix: "\x00m/"}, {Op: AddPrefix, Prefix: ""}, {Op: SetCopies, N: MaxCopies + 1}, {Op: "admit", Peer: w.ids[1]}} {
		if _, err := a.ChangeSpec(bad, w.tick()); err == nil {
			t.Fatalf("change %+v made", bad)
		}
	}
	if got := w.agree(); !slices.Equal(got.Prefixes, []string{"docs/"}) {
		t.Fatalf("prefixes %v", got.Prefixes)
	}
}

// TestForgedChangesRefused: changes from a member that is no admin, with
// a key that is not their hash, deleted, or following a change nobody
// holds, are refused, and change nothing.
func TestForgedChangesRefused(t *testing.T) {
	w := newWorld(t, 2)
	a, p := w.devs[0], w.devs[1]
	gid := a.Spec().ID
	mk := func(c Change, writer int, depth uint64) Row {
		b, _ := msgpack.Marshal(c)
		r := Row{Key: chainKey(depth, w.ids[writer], b), Value: b, TS: Timestamp{Wall: w.tick().UnixNano()}, Writer: w.ids[writer], Seq: 50 + depth}
		if err := SignRow(w.keys[writer], gid, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	cases := map[string]Row{
		"by a member":        mk(Change{Op: AddAdmin, Peer: w.ids[1]}, 1, 1),
		"following nothing":  mk(Change{Parent: chainPrefix + "0000000000000001/" + "00112233445566778899aabbccddeeff", Op: AddPrefix, Prefix: "x/"}, 0, 2),
		"at the wrong depth": mk(Change{Op: AddPrefix, Prefix: "x/"}, 0, 3),
		"unknown op":         mk(Change{Op: "everything"}, 0, 1),
	}
	rehashed := mk(Change{Op: AddPrefix, Prefix: "x/"}, 0, 1)
	rehashed.Key = chainPrefix + "0000000000000001/ffffffffffffffffffffffffffffffff"
	SignRow(w.keys[0], gid, &rehashed)
	cases["under another key"] = rehashed
	deleted := mk(Change{Op: AddPrefix, Prefix: "x/"}, 0, 1)
	deleted.Deleted, deleted.Value = true, nil
	SignRow(w.keys[0], gid, &deleted)
	cases["deleted"] = deleted
	for name, r := range cases {
		if _, err := p.Apply(r, w.tick()); err == nil {
			t.Errorf("change %s applied", name)
		}
	}
	if got := p.Spec(); len(got.Admins) != 1 || len(got.Prefixes) != 1 {
		t.Fatalf("spec after forged changes: %+v", got)
	}
}

// TestGroupsBeforeTheChainCarryOver: a group made before groups had a
// chain keeps its members, admitted by rows of the creator's own; the
// creator's first change carries them over, and rows of that kind count
// no more once the chain has begun.
func TestGroupsBeforeTheChainCarryOver(t *testing.T) {
	w := newWorld(t, 1)
	a := w.devs[0]
	pk, pid := key(t)
	inv, _ := Invite(w.keys[0], a.Spec().ID, pid, syncnode.Normal, w.now.Add(time.Hour))
	legacy := func(p peer.ID, adm admission) Row {
		b, _ := msgpack.Marshal(adm)
		return a.rows.Put(admissionKey(p), b, w.tick())
	}
	legacy(pid, admission{Nonce: inv.Nonce, DevType: syncnode.Normal})
	w.keys, w.ids = append(w.keys, pk), append(w.ids, pid)
	w.devs = append(w.devs, w.fresh(1))
	w.sync(0, 1)
	w.must(w.devs[1].Join(inv, nil, w.tick()))
	w.sync(1, 0)
	if !a.IsMember(pid) || !w.devs[1].IsMember(pid) {
		t.Fatal("a member admitted by a row of the creator's is none")
	}
	rows, err := a.Migrate(w.tick())
	if err != nil || len(rows) != 1 {
		t.Fatalf("migrate: %d rows, %v", len(rows), err)
	}
	if again, _ := a.Migrate(w.tick()); len(again) != 0 {
		t.Fatal("migrated twice")
	}
	_, other := key(t)
	legacy(other, admission{Nonce: []byte("n"), DevType: syncnode.Normal})
	w.all()
	if !a.IsMember(pid) || !w.devs[1].IsMember(pid) {
		t.Fatal("the member is lost with the carry-over")
	}
	if _, ok := w.devs[1].admission(other); ok {
		t.Fatal("an admission row written after the chain began counts")
	}
}

// TestLeaveArrivingAfterARejoin: a member leaves, and joins again through
// the admin before its leave reached the admin. The old tombstone then
// arrives: it revokes nothing (it is older than the new admission), and
// the member, with its new membership row, is one.
func TestLeaveArrivingAfterARejoin(t *testing.T) {
	w := newWorld(t, 2)
	a, old := w.devs[0], w.devs[1]
	left, err := old.Leave(w.tick())
	if err != nil {
		t.Fatal(err)
	}
	// The new replica of the same device, as a join makes it.
	again := w.fresh(1)
	again.ResumeFrom(old.Resume())
	inv, _ := Invite(w.keys[0], a.Spec().ID, w.ids[1], syncnode.Normal, w.now.Add(time.Hour))
	a.ObserveJoiner(old.Resume().TS, w.tick())
	if _, ok, err := a.Admit(inv, w.tick()); err != nil || !ok {
		t.Fatalf("admit: %v %v", ok, err)
	}
	// The leave arrives late, before the new membership row.
	for _, r := range left {
		if _, err := a.Apply(r, w.tick()); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, err := a.RevokeLeaver(w.ids[1], w.tick()); err != nil || ok {
		t.Fatalf("the late leave of an earlier membership revoked the new admission: %v %v", ok, err)
	}
	w.devs[1] = again
	w.sync(0, 1)
	w.must(again.Join(inv, nil, w.tick()))
	w.all()
	if !a.IsMember(w.ids[1]) || !again.IsMember(w.ids[1]) {
		t.Fatal("the member that joined again is none")
	}
}
