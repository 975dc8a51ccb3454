package syncgroup

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
)

// TestChangeOfAReadmission: an admission that readmits an ejected peer is
// no ejection, and the ejection before it is.
func TestChangeOfAReadmission(t *testing.T) {
	key, _, _ := crypto.GenerateEd25519Key(nil)
	g, err := Create("photos", []string{"photos/"}, true, key, syncnode.Normal, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _, _ := crypto.GenerateEd25519Key(nil)
	p, _ := peer.IDFromPrivateKey(otherKey)
	row, err := g.Eject(p, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if who, ch := ChangeOf(row); ch != MemberEjected || who != p {
		t.Fatalf("ejection: %v %s", ch, who)
	}
	row, _, err = g.Readmit(p, []byte("nonce"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, ch := ChangeOf(row); ch != NoMemberChange {
		t.Fatalf("readmission read as change %v", ch)
	}
}

// TestSpecCopiesBounded: a spec that asks for more server copies than
// MaxCopies, or fewer than none, is refused, as a joiner refuses it from
// an admin's answer.
func TestSpecCopiesBounded(t *testing.T) {
	key, _, _ := crypto.GenerateEd25519Key(nil)
	self, _ := peer.IDFromPrivateKey(key)
	spec := Spec{ID: "g", Name: "g", Prefixes: []string{"p/"}, Admins: []peer.ID{self}}
	for _, k := range []int{-1, MaxCopies + 1, 1 << 30} {
		spec.Copies = k
		if _, err := NewGroup(spec, self, time.Minute); err == nil {
			t.Errorf("a spec asking for %d copies was accepted", k)
		}
	}
	spec.Copies = 0
	g, err := NewGroup(spec, self, time.Minute)
	if err != nil || g.Spec().ServerCopies() != 1 {
		t.Fatalf("zero copies: %v, wants %d; want 1", err, g.Spec().ServerCopies())
	}
}
