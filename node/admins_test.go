package node

import (
	"bufio"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/p2p"
	"github.com/syncnode/syncnode/syncgroup"
)

// TestJoinWhileTheCreatorIsAway: the creator names a second admin and
// goes away for good. A joiner with the creator's invitation is let in
// by the second admin; the second admin invites and admits on its own,
// ejects the lost creator, and, as the last admin, may neither leave nor
// stop being one.
func TestJoinWhileTheCreatorIsAway(t *testing.T) {
	t.Parallel()
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Normal)
	a, b := nodes[0], nodes[1]
	if err := b.SetAdmin(g, b.ID(), true); !errors.Is(err, syncgroup.ErrNotAllowed) {
		t.Fatalf("a member named itself admin: %v", err)
	}
	if err := a.SetAdmin(g, b.ID(), true); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "b to see itself an admin", func() bool {
		spec, err := b.GroupSpec(g)
		return err == nil && slices.Contains(spec.Admins, b.ID())
	})
	c, d := openNode(t, t.TempDir()), openNode(t, t.TempDir())
	t.Cleanup(func() { c.Close(); d.Close() })
	inv, err := a.Invite(g, c.ID(), syncnode.Normal, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(inv.Peers(), b.ID()) {
		t.Fatalf("the invitation does not name the other admin: %v", inv.Peers())
	}
	a.Close() // lost

	if _, err := c.JoinGroup(t.Context(), inv); err != nil {
		t.Fatalf("join with the creator away and another admin online: %v", err)
	}
	// The other admin invites and admits on its own.
	inv, err = b.Invite(g, d.ID(), syncnode.Normal, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.JoinGroup(t.Context(), inv); err != nil {
		t.Fatalf("join with the second admin's invitation: %v", err)
	}
	testkit.WaitFor(t, 10*time.Second, "every member to know c and d", func() bool {
		for _, n := range []*Node{b, c, d} {
			if len(n.Members(g)) != 4 {
				return false
			}
		}
		return true
	})
	// The lost creator is ejected; b is the last admin then.
	if _, err := b.EjectMemberWith(t.Context(), g, a.ID(), EjectOptions{Force: true}); err != nil {
		t.Fatalf("ejecting the lost creator: %v", err)
	}
	testkit.WaitFor(t, 10*time.Second, "c to see b as the only admin", func() bool {
		spec, err := c.GroupSpec(g)
		return err == nil && slices.Equal(spec.Admins, []peer.ID{b.ID()})
	})
	if err := b.LeaveGroup(t.Context(), g); !errors.Is(err, syncgroup.ErrNotAllowed) {
		t.Fatalf("the last admin left: %v", err)
	}
	if err := b.SetAdmin(g, b.ID(), false); !errors.Is(err, syncgroup.ErrNotAllowed) {
		t.Fatalf("the last admin stopped being one: %v", err)
	}
	// With another admin named, it may.
	if err := b.SetAdmin(g, c.ID(), true); err != nil {
		t.Fatal(err)
	}
	if err := b.SetAdmin(g, b.ID(), false); err != nil {
		t.Fatalf("an admin with another one beside it stepped down: %v", err)
	}
	testkit.WaitFor(t, 10*time.Second, "d to see c as the only admin", func() bool {
		spec, err := d.GroupSpec(g)
		return err == nil && slices.Equal(spec.Admins, []peer.ID{c.ID()})
	})
}

// TestJoinAnsweredByAMemberThatIsNoAdmin: with the issuer away, a peer the
// invitation names answers the join itself, speaking the wire format: with
// a spec that names it the admin, or with the true spec and no admin role.
// Neither makes the joiner a member of a group it would then trust.
func TestJoinAnsweredByAMemberThatIsNoAdmin(t *testing.T) {
	t.Parallel()
	admin := openNode(t, t.TempDir())
	joiner := openNode(t, t.TempDir())
	t.Cleanup(func() { joiner.Close() })
	spec, err := admin.CreateGroup("photos", []string{"photos/"}, true, syncnode.Normal)
	if err != nil {
		admin.Close()
		t.Fatal(err)
	}
	liar, err := p2p.NewHost(p2p.DefaultHostConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { liar.Close() })
	var forge atomic.Bool // forge the admins, or tell the truth
	liar.SetStreamHandler(p2p.ProtoJoin, func(st network.Stream) {
		defer st.Close()
		var req struct {
			Invitation syncgroup.Invitation `msgpack:"i"`
		}
		if p2p.ReadMsg(bufio.NewReader(st), st, &req, p2p.MaxFrame, time.Second) != nil {
			return
		}
		s := spec
		if forge.Load() {
			s.Admins = []peer.ID{liar.ID()}
		}
		p2p.WriteMsg(st, struct {
			Spec syncgroup.Spec `msgpack:"s"`
		}{s}, time.Second)
	})
	var addrs []string
	for _, a := range admin.Addrs() {
		addrs = append(addrs, a.String())
	}
	for _, a := range liar.Addrs() {
		addrs = append(addrs, a.String()+"/p2p/"+liar.ID().String())
	}
	key := admin.h.Peerstore().PrivKey(admin.ID())
	admin.Close() // away
	for _, forged := range []bool{true, false} {
		forge.Store(forged)
		inv, err := syncgroup.Invite(key, spec.ID, joiner.ID(), syncnode.Normal, time.Now().Add(time.Hour), addrs...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := joiner.JoinGroup(t.Context(), inv); err == nil {
			t.Fatalf("forged admins %v: joined through a peer that is no admin", forged)
		} else {
			t.Logf("forged admins %v: %v", forged, err)
		}
		if len(joiner.Groups()) != 0 {
			t.Fatalf("forged admins %v: the joiner keeps a replica of the group", forged)
		}
	}
}
