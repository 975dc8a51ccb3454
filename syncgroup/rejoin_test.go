package syncgroup

import (
	"errors"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/syncnode/syncnode"
)

// deliverFinal sends to what from has that it lacks, as a round does,
// returns the refusals, and moves to's vector past every row it refused,
// so that a refused row is never sent again: a replica left out of step
// by a refusal stays so.
func deliverFinal(t *testing.T, from, to *Group, now time.Time) []error {
	t.Helper()
	errs, remote := sendMissing(t, from, to, now)
	to.Rows().Learned(remote)
	return errs
}

// invitationOf returns the invitation g's own membership row carries.
func invitationOf(t *testing.T, g *Group) Invitation {
	row, ok := g.rows.Get(MemberKey(g.self))
	if !ok || row.Deleted {
		t.Fatal("no membership row")
	}
	var m Member
	if err := msgpack.Unmarshal(row.Value, &m); err != nil || m.Invitation == nil {
		t.Fatal("no invitation", err)
	}
	return *m.Invitation
}

// TestRejoinWithTheSameInvitationRefused: the user leaves on a device
// and joins again with the same invitation, still unexpired, before the
// admin heard of the leave (only another member holds it). The admin
// refuses the join (the device wrote since its admission: it left), so
// no replica takes the device back on its old invitation and none is
// left disagreeing; a new invitation brings it back on every replica.
func TestRejoinWithTheSameInvitationRefused(t *testing.T) {
	w := newWorld(t, 3)
	admin, m, server := w.devs[0], w.devs[1], w.devs[2]
	id := w.ids[1]
	w.all()
	inv := invitationOf(t, m)
	left, err := m.Leave(w.tick())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range left { // the leave reaches the server only
		if _, err := server.Apply(r, w.tick()); err != nil {
			t.Fatal(err)
		}
	}
	// handleJoin on the admin, with the device's last timestamp.
	if _, _, err := admin.AdmitJoiner(inv, m.Resume().TS, w.tick()); !errors.Is(err, ErrUsed) {
		t.Fatalf("the admin took the leaver back on its used invitation: %v", err)
	}
	inv2, err := Invite(w.keys[0], admin.Spec().ID, id, syncnode.Normal, w.now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := admin.AdmitJoiner(inv2, m.Resume().TS, w.tick()); err != nil || !ok {
		t.Fatalf("a new invitation: %v %v", ok, err)
	}
	again := w.fresh(1)
	again.ResumeFrom(m.Resume())
	w.devs[1] = again
	w.sync(0, 1)
	w.must(again.Join(inv2, nil, w.tick()))
	w.must(again.Put("photos/x", []byte{0xc0}, w.tick()))
	for range 3 {
		for a := range w.devs {
			for b := range w.devs {
				if a != b {
					for _, e := range deliverFinal(t, w.devs[a], w.devs[b], w.tick()) {
						t.Errorf("%d → %d: %v", a, b, e)
					}
				}
			}
		}
		if _, ok, _ := admin.RevokeLeaver(id, w.tick()); ok {
			t.Error("the admin revoked the member that joined again")
		}
	}
	for i, d := range w.devs {
		if !d.IsMember(id) {
			t.Errorf("device %d: the member invited again is none", i)
		}
		if _, ok := d.Rows().Get("photos/x"); !ok {
			t.Errorf("device %d: the member's row after joining again is missing", i)
		}
	}
}

// TestLegacyReadmissionAfterALeave: in a group from before the chain, an
// older version's admin admits a leaver again with a new invitation by an
// admission row, which carries no time to order the leave by; a replica
// holding the leave takes the re-joiner's row.
func TestLegacyReadmissionAfterALeave(t *testing.T) {
	w := newWorld(t, 1)
	a := w.devs[0]
	legacy := func(i int, nonce []byte) {
		b, _ := msgpack.Marshal(admission{Nonce: nonce, DevType: syncnode.Normal})
		a.rows.Put(admissionKey(w.ids[i]), b, w.tick())
	}
	add := func() int {
		k, id := key(t)
		w.keys, w.ids = append(w.keys, k), append(w.ids, id)
		i := len(w.ids) - 1
		inv, _ := Invite(w.keys[0], a.Spec().ID, id, syncnode.Normal, w.now.Add(time.Hour))
		legacy(i, inv.Nonce)
		w.devs = append(w.devs, w.fresh(i))
		w.sync(0, i)
		w.must(w.devs[i].Join(inv, nil, w.tick()))
		w.sync(i, 0)
		return i
	}
	mi := add()
	si := add()
	w.all()
	if len(a.gov().path) != 0 {
		t.Fatal("chain began")
	}
	m, server := w.devs[mi], w.devs[si]
	left, err := m.Leave(w.tick())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range left {
		w.must(r, nil)
		if _, err := server.Apply(r, w.tick()); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Apply(r, w.tick()); err != nil {
			t.Fatal(err)
		}
	}
	inv2, _ := Invite(w.keys[0], a.Spec().ID, w.ids[mi], syncnode.Normal, w.now.Add(time.Hour))
	legacy(mi, inv2.Nonce) // the old admin's new admission row, after the leave
	again := w.fresh(mi)
	again.ResumeFrom(m.Resume())
	w.devs[mi] = again
	w.sync(0, mi)
	w.sync(0, si)
	row := w.must(again.Join(inv2, nil, w.tick()))
	if _, err := server.Apply(row, w.tick()); err != nil {
		t.Fatalf("server refused the re-joiner's row with a NEW invitation: %v", err)
	}
}

// leaveAndRewrite has device i leave, applies its leave at device to
// (which must then count it no member), and returns the membership row i
// held before, signed again as i would write it next: newer than its
// tombstone, carrying what it carried.
func (w *world) leaveAndRewrite(i, to int) Row {
	w.t.Helper()
	m, id := w.devs[i], w.ids[i]
	self, ok := m.rows.Get(MemberKey(id))
	if !ok || self.Deleted {
		w.t.Fatal("no membership row")
	}
	left, err := m.Leave(w.tick())
	if err != nil {
		w.t.Fatal(err)
	}
	for _, r := range ApplyOrder(left) {
		if _, err := w.devs[to].Apply(r, w.tick()); err != nil {
			w.t.Fatal(err)
		}
	}
	if w.devs[to].IsMember(id) {
		w.t.Fatal("a member that left is one still")
	}
	rejoin := self
	rejoin.TS = Timestamp{Wall: w.tick().UnixNano()}
	rejoin.Seq = left[len(left)-1].Seq + 1
	rejoin.Sig = nil
	if err := SignRow(w.keys[i], m.Spec().ID, &rejoin); err != nil {
		w.t.Fatal(err)
	}
	return rejoin
}

// TestLeaverCannotRejoinOnItsOwn: a member leaves, and before any admin
// has revoked its admission writes its membership row again, newer than
// its tombstone, with the invitation it joined by. A replica that holds
// the tombstone refuses the row (ErrUsed) and counts it no member; a new
// invitation, admitted by an admin, brings it back everywhere.
func TestLeaverCannotRejoinOnItsOwn(t *testing.T) {
	w := newWorld(t, 3)
	m, other := w.devs[1], w.devs[2]
	id := w.ids[1]
	rejoin := w.leaveAndRewrite(1, 2)
	if _, err := other.Apply(rejoin, w.tick()); !errors.Is(err, ErrUsed) {
		t.Fatalf("the leaver's own row again, same invitation: %v, want ErrUsed", err)
	}
	if other.IsMember(id) {
		t.Fatal("the leaver let itself back in with its old invitation")
	}
	// The way back: an admin's new invitation.
	w.sync(1, 0)
	if _, _, err := w.devs[0].RevokeLeaver(id, w.tick()); err != nil {
		t.Fatal(err)
	}
	again := w.fresh(1)
	again.ResumeFrom(m.Resume())
	inv, err := Invite(w.keys[0], m.Spec().ID, id, syncnode.Normal, w.now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	w.devs[0].ObserveJoiner(m.Resume().TS, w.tick())
	if _, ok, err := w.devs[0].Admit(inv, w.tick()); err != nil || !ok {
		t.Fatalf("admit: %v %v", ok, err)
	}
	w.devs[1] = again
	w.sync(0, 1)
	w.must(again.Join(inv, nil, w.tick()))
	w.all()
	for i, d := range w.devs {
		if !d.IsMember(id) {
			t.Fatalf("device %d: the member invited again is none", i)
		}
	}
}

// TestFormerAdminCannotRejoinOnItsOwn: a member made admin leaves (it
// gives its role up, then writes its tombstone) and, before any admin
// revokes it, writes its membership row again: a replica holding its
// tombstone refuses the row, though a former admin needs no invitation.
func TestFormerAdminCannotRejoinOnItsOwn(t *testing.T) {
	w := newWorld(t, 3)
	a, server := w.devs[0], w.devs[2]
	id := w.ids[1]
	w.must(a.ChangeSpec(Change{Op: AddAdmin, Peer: id}, w.tick()))
	w.all()
	rejoin := w.leaveAndRewrite(1, 2)
	if _, err := server.Apply(rejoin, w.tick()); !errors.Is(err, ErrUsed) {
		t.Fatalf("a former admin's own row after its leave: %v, want ErrUsed", err)
	}
	if server.IsMember(id) {
		t.Fatal("a former admin that left let itself back in")
	}
}
