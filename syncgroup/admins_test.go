package syncgroup

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
)

// replica is one member's replica of a group.
type replica struct {
	g   *Group
	id  peer.ID
	key crypto.PrivKey
}

func newReplica(t *testing.T, spec Spec) replica {
	t.Helper()
	key, _, _ := crypto.GenerateEd25519Key(nil)
	id, _ := peer.IDFromPrivateKey(key)
	g, err := NewGroup(spec, id, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.SetKey(key); err != nil {
		t.Fatal(err)
	}
	return replica{g, id, key}
}

// copyRows applies every row of from to to, in key order (or reversed),
// as often as it takes for rows refused for a missing row to land.
func copyRows(t *testing.T, from, to *Group, reverse bool) {
	t.Helper()
	rows := from.rows.List("")
	if reverse {
		slices.Reverse(rows)
	}
	for range 3 {
		for _, r := range rows {
			to.Apply(r, time.Now())
		}
	}
}

// TestAdminsResolveAlikeInAnyOrder: admins named by an admin the creator
// named, and one removed, come out the same on replicas that receive the
// rows in opposite orders; a member that is no admin names none.
func TestAdminsResolveAlikeInAnyOrder(t *testing.T) {
	akey, _, _ := crypto.GenerateEd25519Key(nil)
	a, err := Create("photos", []string{"photos/"}, true, akey, syncnode.Normal, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	aid, _ := peer.IDFromPrivateKey(akey)
	members := map[string]replica{}
	for _, name := range []string{"b", "c", "d"} {
		r := newReplica(t, a.Spec())
		inv, err := Invite(akey, a.Spec().ID, r.id, syncnode.Normal, time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.Admit(inv, time.Now()); err != nil {
			t.Fatal(err)
		}
		row, err := r.g.Join(inv, nil, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Apply(row, time.Now()); err != nil {
			t.Fatal(err)
		}
		members[name] = r
	}
	b, c, d := members["b"], members["c"], members["d"]
	copyRows(t, a, b.g, false)
	copyRows(t, a, c.g, false)
	if _, err := c.g.SetAdmin(d.id, true, time.Now()); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("a member that is no admin named one: %v", err)
	}
	// a names b; b, having learned it, names c; a then removes itself.
	if _, err := a.SetAdmin(b.id, true, time.Now()); err != nil {
		t.Fatal(err)
	}
	copyRows(t, a, b.g, false)
	if !b.g.IsAdmin(b.id) {
		t.Fatal("b does not see itself an admin")
	}
	if _, err := b.g.SetAdmin(c.id, true, time.Now()); err != nil {
		t.Fatal(err)
	}
	copyRows(t, b.g, a, false)
	if _, err := a.SetAdmin(aid, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	// A forged grant: d names itself, as if an admin.
	forged, err := d.g.rows.Put(GrantKey(d.id), []byte{0x81, 0xa1, 'a', 0xc3}, time.Now()), nil
	if err != nil {
		t.Fatal(err)
	}
	want := []peer.ID{b.id, c.id}
	slices.Sort(want)
	for _, reverse := range []bool{false, true} {
		r := newReplica(t, a.Spec())
		copyRows(t, a, r.g, reverse)
		if _, err := r.g.Apply(forged, time.Now()); !errors.Is(err, ErrNotAllowed) {
			t.Errorf("a grant by a member that is no admin was applied: %v", err)
		}
		if got := r.g.Admins(); !slices.Equal(got, want) {
			t.Errorf("reverse %v: admins %v, want %v", reverse, got, want)
		}
	}
	// The last admin may not step down.
	copyRows(t, a, b.g, false)
	if _, err := b.g.SetAdmin(c.id, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.g.SetAdmin(b.id, false, time.Now()); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("the last admin stepped down: %v", err)
	}
}
