package node

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/syncgroup"
)

// startNode opens a node for the test, closed when it ends.
func startNode(t *testing.T) *Node {
	t.Helper()
	n := openNode(t, t.TempDir())
	t.Cleanup(func() { n.Close() })
	return n
}

// invitationFor has admin invite n to g as dev, and returns the
// invitation as the joiner reads it: marshalled and decoded again.
func invitationFor(t *testing.T, admin, n *Node, g syncnode.GroupID, dev syncnode.DevType) syncgroup.Invitation {
	t.Helper()
	inv, err := admin.Invite(g, n.ID(), dev, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := inv.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if inv, err = syncgroup.UnmarshalInvitation(b); err != nil {
		t.Fatal(err)
	}
	return inv
}

// names returns the peers an invitation's addresses name.
func names(t *testing.T, inv syncgroup.Invitation) map[peer.ID]bool {
	t.Helper()
	infos, err := inv.AddrInfos()
	if err != nil {
		t.Fatal(err)
	}
	out := map[peer.ID]bool{}
	for _, ai := range infos {
		out[ai.ID] = len(ai.Addrs) > 0
	}
	return out
}

// TestJoinWithTheInvitationAlone: the marshalled invitation is all a
// joiner that knows nothing of the admin needs; it names the admin and
// the group's server, and the joiner's membership row keeps it without
// them.
func TestJoinWithTheInvitationAlone(t *testing.T) {
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Server)
	admin, server := nodes[0], nodes[1]
	joiner := startNode(t)
	inv := invitationFor(t, admin, joiner, g, syncnode.Normal)
	if got := names(t, inv); !got[admin.ID()] || !got[server.ID()] {
		t.Fatalf("the invitation names %v, want the admin %s and the server %s", got, admin.ID(), server.ID())
	}
	if known := joiner.h.Peerstore().Addrs(admin.ID()); len(known) != 0 {
		t.Fatalf("the joiner knows the admin's addresses already: %v", known)
	}
	if _, err := joiner.JoinGroup(t.Context(), inv); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "three members at the joiner", func() bool { return len(joiner.Members(g)) == 3 })
	for _, m := range admin.Members(g) {
		if m.Peer == joiner.ID() && (m.Invitation == nil || len(m.Invitation.Addrs) != 0 || len(m.Invitation.AddrsSig) != 0) {
			t.Fatalf("the joiner's membership row keeps %+v", m.Invitation)
		}
	}
}

// TestJoinNeedsTheAdmin: only the admin that issued an invitation admits
// with it. With the admin offline, the join fails at once with
// ErrAdminUnreachable, though the server the invitation names is online
// and reachable at the addresses it gives.
func TestJoinNeedsTheAdmin(t *testing.T) {
	admin := openNode(t, t.TempDir())
	server, joiner := startNode(t), startNode(t)
	spec, err := admin.CreateGroup("photos", []string{"photos/"}, true, syncnode.Normal)
	if err != nil {
		admin.Close()
		t.Fatal(err)
	}
	join(t, admin, server, spec.ID, syncnode.Server)
	inv := invitationFor(t, admin, joiner, spec.ID, syncnode.Normal)
	if got := names(t, inv); !got[server.ID()] {
		t.Fatalf("the invitation names %v, not the server %s", got, server.ID())
	}
	if err := admin.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = joiner.JoinGroup(t.Context(), inv)
	if !errors.Is(err, ErrAdminUnreachable) || !strings.Contains(err.Error(), "not the group's servers") {
		t.Fatalf("join with the admin offline: %v, want ErrAdminUnreachable saying the servers cannot admit", err)
	}
	if took := time.Since(start); took > testConfig("").IOTimeout+2*time.Second {
		t.Fatalf("the join took %v to fail", took)
	}
	if len(joiner.Groups()) != 0 {
		t.Fatal("the joiner syncs the group")
	}
	if err := joiner.Connect(t.Context(), peer.AddrInfo{ID: server.ID()}); err != nil {
		t.Fatalf("the server named in the invitation is unreachable at its addresses there: %v", err)
	}
	t.Logf("join refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
}

// TestJoinRefusesTamperedAddrs: an invitation whose addresses were
// altered in transit is refused before anything is dialled, and the
// invitation as issued still admits.
func TestJoinRefusesTamperedAddrs(t *testing.T) {
	admin, joiner, attacker := startNode(t), startNode(t), startNode(t)
	spec, err := admin.CreateGroup("photos", []string{"photos/"}, true, syncnode.Normal)
	if err != nil {
		t.Fatal(err)
	}
	inv := invitationFor(t, admin, joiner, spec.ID, syncnode.Normal)
	tampered := inv
	tampered.Addrs = nil
	for _, a := range attacker.AddrInfo().Addrs {
		tampered.Addrs = append(tampered.Addrs, a.String()+"/p2p/"+admin.ID().String())
	}
	if _, err := joiner.JoinGroup(t.Context(), tampered); !errors.Is(err, syncgroup.ErrInvitation) {
		t.Fatalf("join with altered addresses: %v, want ErrInvitation", err)
	}
	if conns := joiner.h.Network().Conns(); len(conns) != 0 {
		t.Fatalf("the joiner dialled %s", conns[0].RemoteMultiaddr())
	}
	if _, err := joiner.JoinGroup(t.Context(), inv); err != nil {
		t.Fatalf("the invitation as issued: %v", err)
	}
}

// TestJoinWithAnInvitationWithoutAddrs: an invitation that carries no
// addresses (an older node issued it) joins with the admin's addresses
// given beside it, bare as the older nodes gave them; with none, a node
// without LAN discovery fails at once and says why.
func TestJoinWithAnInvitationWithoutAddrs(t *testing.T) {
	admin, joiner := startNode(t), startNode(t)
	spec, err := admin.CreateGroup("photos", []string{"photos/"}, true, syncnode.Normal)
	if err != nil {
		t.Fatal(err)
	}
	bare := invitationFor(t, admin, joiner, spec.ID, syncnode.Normal).WithoutAddrs()
	_, err = joiner.JoinGroup(t.Context(), bare)
	if !errors.Is(err, ErrAdminUnreachable) || !strings.Contains(err.Error(), "carries none") {
		t.Fatalf("join with no address: %v", err)
	}
	if _, err := joiner.JoinGroup(t.Context(), bare, admin.AddrInfo().Addrs...); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "two members at the joiner", func() bool { return len(joiner.Members(spec.ID)) == 2 })
}
