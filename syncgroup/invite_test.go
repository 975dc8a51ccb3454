package syncgroup

import (
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
)

func key(t testing.TB) (crypto.PrivKey, peer.ID) {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return k, id
}

func TestInvitation(t *testing.T) {
	adminKey, admin := key(t)
	otherKey, _ := key(t)
	_, joiner := key(t)
	_, stranger := key(t)
	admins := []peer.ID{admin}
	exp := t0.Add(time.Hour)
	inv, err := Invite(adminKey, "photos", joiner, syncnode.Server, exp)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := inv.Marshal()
	inv, err = UnmarshalInvitation(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := inv.Verify(joiner, admins, t0); err != nil {
		t.Fatalf("valid invitation refused: %v", err)
	}
	forged := inv
	forged.DevType = syncnode.Leaf // changed after signing
	notAdmin, _ := Invite(otherKey, "photos", joiner, syncnode.Normal, exp)
	impersonated := notAdmin
	impersonated.Admin = admin // claims the admin signed it
	cases := map[string]error{
		"expired":      inv.Verify(joiner, admins, exp),
		"wrong joiner": inv.Verify(stranger, admins, t0),
		"forged field": forged.Verify(joiner, admins, t0),
		"not an admin": notAdmin.Verify(joiner, admins, t0),
		"impersonated": impersonated.Verify(joiner, admins, t0),
	}
	for name, err := range cases {
		if !errors.Is(err, ErrInvitation) {
			t.Errorf("%s: %v, want ErrInvitation", name, err)
		}
	}
	if _, err := UnmarshalInvitation([]byte{0xde, 0xff, 0xff}); !errors.Is(err, ErrInvitation) {
		t.Fatalf("garbage invitation: %v", err)
	}
}

func FuzzUnmarshalInvitation(f *testing.F) {
	k, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	id, _ := peer.IDFromPrivateKey(k)
	inv, _ := Invite(k, "g", id, syncnode.Normal, t0)
	b, _ := inv.Marshal()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		inv, err := UnmarshalInvitation(b)
		if err != nil {
			return
		}
		inv.Verify(id, []peer.ID{id}, t0) // must not panic
	})
}
