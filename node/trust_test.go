package node

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/syncer"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/signpost"
)

// TestFakeServerLocationNotCounted: a member's signposts name, as server
// copies of a blob only the writer holds, an invented peer and the
// group's real server (which does not hold it). Neither counts: the blob
// stays at risk until the server itself says it holds it.
func TestFakeServerLocationNotCounted(t *testing.T) {
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Normal, syncnode.Server)
	writer, liar, server := nodes[0], nodes[1], nodes[2]
	server.Close() // away: it fetches nothing
	ref := putBlobRow(t, writer, g, "photos/at-risk.jpg", 32<<10, 12)
	atRisk := func() int {
		d, err := writer.Durability()
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range d {
			if x.Group == g {
				return x.AtRisk
			}
		}
		return -1
	}
	if got := atRisk(); got != 1 {
		t.Fatalf("at risk before the lie: %d", got)
	}
	_, k, _ := crypto.GenerateEd25519Key(nil)
	invented, _ := peer.IDFromPublicKey(k)
	now := time.Now()
	var sp signpost.Signpost
	sp.AddGroup(g)
	sp.AddLocation(invented, signpost.Location{WhenSeen: now, IsServer: true, Addrs: []string{"/ip4/127.0.0.1/tcp/9"}})
	sp.AddLocation(server.ID(), signpost.Location{WhenSeen: now, IsServer: true})
	sp.AddLocation(liar.ID(), signpost.Location{WhenSeen: now, IsServer: true})
	// As the syncer hands over the signposts a member sent with its rows.
	hooks{writer}.Learn(liar.ID(), g, []syncer.SignpostEntry{{Ref: ref, Signpost: sp.ToWire()}})
	if got := atRisk(); got != 1 {
		got, _ := writer.Signpost(ref)
		t.Fatalf("a member's word made the blob safe: locations %+v", got.Locations)
	}
	// The server's own word counts.
	var own signpost.Signpost
	own.AddGroup(g)
	own.AddLocation(server.ID(), signpost.Location{WhenSeen: now.Add(time.Second)})
	hooks{writer}.Learn(server.ID(), g, []syncer.SignpostEntry{{Ref: ref, Signpost: own.ToWire()}})
	if got := atRisk(); got != 0 {
		t.Fatalf("the server's own signpost did not count: at risk %d", got)
	}
}

// TestAskForUnreferencedBlobRefused: a member asks the group's server to
// take over, in group g, a blob that no row of g references (a row of
// another group the two share does). The server refuses: it takes no
// share in g, where nothing would ever let them go.
func TestAskForUnreferencedBlobRefused(t *testing.T) {
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Server)
	member, server := nodes[0], nodes[1]
	spec, err := member.CreateGroup("notes", []string{"notes/"}, true, syncnode.Normal)
	if err != nil {
		t.Fatal(err)
	}
	join(t, member, server, spec.ID, syncnode.Server)
	ref := putBlobRow(t, member, spec.ID, "notes/elsewhere", 64<<10, 41)
	testkit.WaitFor(t, 20*time.Second, "the server's copy of the blob", func() bool { return server.HasBlob(ref) })
	if _, err := member.handoffs.Shares().Ask(t.Context(), server.ID(), ref, g); err == nil {
		t.Fatal("the server took shares in a group no row of which references the blob")
	}
	if sh, _ := server.ledger.Shares(ref); sh[g] > 0 {
		t.Fatalf("the server holds shares of it in %s: %v", g, sh)
	}
}

// TestSurplusSharesDropped: the server holds a phone's blob with the
// group's two shares, and the phone holds two more, as a member that
// offered shares it never had can make it. When the phone hands them to
// the server, the server says it holds two already: the phone's are
// surplus and go, and the group counts two again.
func TestSurplusSharesDropped(t *testing.T) {
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Server)
	phone, server := nodes[0], nodes[1]
	ref := putBlobRow(t, phone, g, "photos/minted.jpg", 64<<10, 43)
	testkit.WaitFor(t, 20*time.Second, "the server's copy with both shares", func() bool {
		sh, _ := server.ledger.Shares(ref)
		ph, _ := phone.ledger.Shares(ref)
		return server.HasBlob(ref) && sh[g] == 2 && ph[g] == 0
	})
	if err := phone.ledger.Grant(ref, g, 2); err != nil {
		t.Fatal(err)
	}
	res, err := phone.handoffs.Shares().Ask(t.Context(), server.ID(), ref, g)
	if err != nil || !res.Surplus {
		t.Fatalf("the hand-off of surplus shares: %+v, %v", res, err)
	}
	ph, _ := phone.ledger.Shares(ref)
	sh, _ := server.ledger.Shares(ref)
	if ph[g] != 0 || sh[g] != 2 {
		t.Fatalf("after the hand-off the phone holds %d shares, the server %d", ph[g], sh[g])
	}
}
