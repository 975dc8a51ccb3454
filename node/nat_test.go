package node

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/p2p"
)

// A server relays for the members of its groups and no one else: a
// stranger gets no reservation and no circuit to a member, a member of a
// group where the node is not a server gets none either, and a member of
// a group where it is gets both.
func TestRelayOnlyForTheServersMembers(t *testing.T) {
	nodes, g := mesh(t, true, syncnode.Server, syncnode.Normal)
	server, member := nodes[0], nodes[1]
	// A group of the member's where the server is a normal device.
	other := openNode(t, t.TempDir())
	t.Cleanup(func() { other.Close() })
	spec, err := other.CreateGroup("elsewhere", []string{"x/"}, true, syncnode.Server)
	if err != nil {
		t.Fatal(err)
	}
	join(t, other, server, spec.ID, syncnode.Normal)
	stranger, err := p2p.NewHost(p2p.DefaultHostConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stranger.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	relay := peer.AddrInfo{ID: server.ID(), Addrs: server.h.Addrs()}
	if _, err := client.Reserve(ctx, stranger, relay); err == nil {
		t.Fatal("a stranger got a reservation with the server's relay")
	}
	if _, err := client.Reserve(ctx, other.h, relay); err == nil {
		t.Fatal("a member of a group where the server is a normal device got a reservation")
	}
	if _, err := client.Reserve(ctx, member.h, relay); err != nil {
		t.Fatalf("a member of the server's group got no reservation: %v", err)
	}
	if !server.conn.RelaysFor(member.ID()) || server.conn.RelaysFor(stranger.ID()) || server.conn.RelaysFor(other.ID()) {
		t.Fatal("RelaysFor disagrees with the reservations")
	}

	// A circuit to the member: refused to the stranger.
	circuit := ma.StringCast(server.h.Addrs()[0].String() + "/p2p/" + server.ID().String() + "/p2p-circuit")
	stranger.Peerstore().AddAddr(member.ID(), circuit, peerstore.PermanentAddrTTL)
	if err := stranger.Connect(ctx, peer.AddrInfo{ID: member.ID()}); err == nil {
		t.Fatal("a stranger reached a member through the server's relay")
	}
	// Between two members of the server's group, a circuit is allowed.
	third := openNode(t, t.TempDir())
	t.Cleanup(func() { third.Close() })
	join(t, server, third, g, syncnode.Normal)
	allow := func(src, dst peer.ID) bool { return server.conn.RelaysFor(src) && server.conn.RelaysFor(dst) }
	if !allow(third.ID(), member.ID()) {
		t.Fatal("a circuit between two members of the server's group refused")
	}
	if allow(third.ID(), stranger.ID()) || allow(other.ID(), member.ID()) {
		t.Fatal("a circuit with a peer outside the server's groups allowed")
	}
}
