package syncgroup

import (
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/vmihailenco/msgpack/v5"

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

// addrsOf returns n loopback addresses of p, as an invitation carries them.
func addrsOf(p peer.ID, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", 4000+i, p))
	}
	return out
}

// An invitation carries the addresses of the admin and of the group's
// servers, signed by the admin apart from the rest: altered, added,
// dropped or moved to another invitation, they are refused on decode;
// stripped together with their signature, the invitation is valid as
// one from an older node is.
func TestInvitationAddrs(t *testing.T) {
	adminKey, admin := key(t)
	_, joiner := key(t)
	_, server := key(t)
	_, attacker := key(t)
	addrs := append(addrsOf(admin, 2), addrsOf(server, 1)...)
	addrs = append(addrs, "/ip4/192.0.2.1/tcp/4001/p2p/"+server.String()+"/p2p-circuit/p2p/"+admin.String())
	inv, err := Invite(adminKey, "photos", joiner, syncnode.Normal, t0.Add(time.Hour), addrs...)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := inv.Marshal()
	got, err := UnmarshalInvitation(b)
	if err != nil {
		t.Fatal(err)
	}
	infos, err := got.AddrInfos()
	if err != nil {
		t.Fatal(err)
	}
	byPeer := map[peer.ID]int{}
	for _, ai := range infos {
		byPeer[ai.ID] += len(ai.Addrs)
	}
	if byPeer[admin] != 3 || byPeer[server] != 1 || len(byPeer) != 2 {
		t.Fatalf("addresses by peer: %v", byPeer)
	}
	if err := got.Verify(joiner, []peer.ID{admin}, t0); err != nil {
		t.Fatal(err)
	}
	// What the joiner shows the admin and keeps in its membership row.
	bare := got.WithoutAddrs()
	if err := bare.Verify(joiner, []peer.ID{admin}, t0); err != nil {
		t.Fatalf("the invitation without its addresses: %v", err)
	}
	if err := bare.CheckAddrs(); err != nil {
		t.Fatalf("no addresses at all: %v", err)
	}

	other, _ := Invite(adminKey, "photos", joiner, syncnode.Normal, t0.Add(time.Hour), addrsOf(attacker, 1)...)
	tamper := map[string]func(inv *Invitation){
		"an address changed": func(inv *Invitation) { inv.Addrs[0] = addrsOf(attacker, 1)[0] },
		"an address added":   func(inv *Invitation) { inv.Addrs = append(inv.Addrs, addrsOf(attacker, 1)...) },
		"an address dropped": func(inv *Invitation) { inv.Addrs = inv.Addrs[1:] },
		"the order changed":  func(inv *Invitation) { inv.Addrs[0], inv.Addrs[1] = inv.Addrs[1], inv.Addrs[0] },
		"signature dropped":  func(inv *Invitation) { inv.AddrsSig = nil },
		"addresses dropped":  func(inv *Invitation) { inv.Addrs = nil },
		"another invitation's addresses": func(inv *Invitation) {
			inv.Addrs, inv.AddrsSig = other.Addrs, other.AddrsSig
		},
		"addresses added to a bare one": func(inv *Invitation) {
			*inv = inv.WithoutAddrs()
			inv.Addrs = addrsOf(attacker, 1)
		},
	}
	for name, change := range tamper {
		c := got
		c.Addrs = slices.Clone(got.Addrs)
		change(&c)
		b, _ := c.Marshal()
		if _, err := UnmarshalInvitation(b); !errors.Is(err, ErrInvitation) {
			t.Errorf("%s: decoded (%v), want ErrInvitation", name, err)
		}
		if _, err := c.AddrInfos(); !errors.Is(err, ErrInvitation) {
			t.Errorf("%s: AddrInfos %v, want ErrInvitation", name, err)
		}
		// The admin judges the rest, which still holds.
		if err := c.Verify(joiner, []peer.ID{admin}, t0); err != nil {
			t.Errorf("%s: the signed fields no longer verify: %v", name, err)
		}
	}
}

// An invitation's addresses are bounded on decode, each a multiaddr that
// names its peer; an admin cannot sign one beyond the bounds either.
func TestInvitationAddrBounds(t *testing.T) {
	adminKey, admin := key(t)
	_, joiner := key(t)
	if _, err := Invite(adminKey, "g", joiner, syncnode.Normal, t0, addrsOf(admin, MaxInvitationAddrs+1)...); !errors.Is(err, ErrInvitation) {
		t.Fatalf("signed %d addresses: %v", MaxInvitationAddrs+1, err)
	}
	if _, err := Invite(adminKey, "g", joiner, syncnode.Normal, t0, addrsOf(admin, MaxInvitationAddrs)...); err != nil {
		t.Fatalf("%d addresses refused: %v", MaxInvitationAddrs, err)
	}
	inv, _ := Invite(adminKey, "g", joiner, syncnode.Normal, t0, addrsOf(admin, 1)...)
	long := "/dns4/" + strings.Repeat("a", 1<<20) + "/tcp/1/p2p/" + admin.String()
	cases := map[string]struct {
		addrs []string
		want  string
	}{
		"10,000 addresses":  {addrsOf(admin, 10_000), "10000 addresses, at most 32"},
		"a 1 MiB address":   {[]string{long}, fmt.Sprintf("is %d bytes, at most %d", len(long), MaxInvitationAddrLen)},
		"not a multiaddr":   {[]string{"http://example.com/p2p/" + admin.String()}, "address 0"},
		"no peer ID in one": {[]string{"/ip4/127.0.0.1/tcp/1"}, "names no peer"},
	}
	for name, c := range cases {
		bad := inv
		bad.Addrs = c.addrs
		b, err := bad.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		_, err = UnmarshalInvitation(b)
		if !errors.Is(err, ErrInvitation) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvitation saying %q", name, err, c.want)
		}
	}
}

// oldInvitation is an invitation as nodes that knew no addresses in
// invitations encoded and signed it.
type oldInvitation struct {
	Group    syncnode.GroupID `msgpack:"g"`
	Joiner   peer.ID          `msgpack:"j"`
	DevType  syncnode.DevType `msgpack:"t"`
	Expires  int64            `msgpack:"e"`
	Admin    peer.ID          `msgpack:"a"`
	AdminKey []byte           `msgpack:"k,omitempty"`
	Sig      []byte           `msgpack:"s"`
	Nonce    []byte           `msgpack:"n,omitempty"`
}

// Invitations from older nodes decode and verify; an invitation stripped
// of its addresses is what an older admin or member reads and verifies.
func TestInvitationFromAnOlderNode(t *testing.T) {
	adminKey, admin := key(t)
	_, joiner := key(t)
	old := oldInvitation{Group: "g", Joiner: joiner, DevType: syncnode.Server, Expires: t0.Add(time.Hour).Unix(), Admin: admin, Nonce: []byte("0123456789abcdef")}
	body, _ := msgpack.Marshal(old)
	var err error
	if old.Sig, err = adminKey.Sign(append([]byte("syncnode invitation v1\x00"), body...)); err != nil {
		t.Fatal(err)
	}
	b, _ := msgpack.Marshal(old)
	inv, err := UnmarshalInvitation(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := inv.Verify(joiner, []peer.ID{admin}, t0); err != nil {
		t.Fatalf("an older node's invitation: %v", err)
	}
	if infos, err := inv.AddrInfos(); err != nil || len(infos) != 0 {
		t.Fatalf("an older node's invitation has addresses %v (%v)", infos, err)
	}

	signed, _ := Invite(adminKey, "g", joiner, syncnode.Server, t0.Add(time.Hour), addrsOf(admin, 3)...)
	b, _ = signed.Marshal()
	var seen oldInvitation
	if err := msgpack.Unmarshal(b, &seen); err != nil {
		t.Fatal(err)
	}
	back, _ := msgpack.Marshal(seen)
	if inv, err := UnmarshalInvitation(back); err != nil || inv.Verify(joiner, []peer.ID{admin}, t0) != nil {
		t.Fatalf("an invitation with addresses, read as an older node reads it, no longer verifies (%v)", err)
	}
}

func FuzzUnmarshalInvitation(f *testing.F) {
	k, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	id, _ := peer.IDFromPrivateKey(k)
	inv, _ := Invite(k, "g", id, syncnode.Normal, t0)
	b, _ := inv.Marshal()
	f.Add(b)
	inv, _ = Invite(k, "g", id, syncnode.Normal, t0, addrsOf(id, 2)...)
	b, _ = inv.Marshal()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		inv, err := UnmarshalInvitation(b)
		if err != nil {
			return
		}
		if len(inv.Addrs) > MaxInvitationAddrs {
			t.Fatalf("%d addresses decoded", len(inv.Addrs))
		}
		for _, a := range inv.Addrs {
			if len(a) > MaxInvitationAddrLen {
				t.Fatalf("a %d-byte address decoded", len(a))
			}
		}
		if _, err := inv.AddrInfos(); err != nil {
			t.Fatalf("decoded, but its addresses do not check: %v", err)
		}
		inv.Verify(id, []peer.ID{id}, t0) // must not panic
	})
}
