package featuretests

import (
	"slices"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/harness/nodetest"
	"github.com/syncnode/syncnode/syncgroup"
)

// Addresses travel with membership: when a member's listen addresses
// change, it writes them into its membership, and the other members read
// them there and dial it at them.
func TestAddressesTravelWithMembership(t *testing.T) {
	t.Parallel()
	phone, laptop := start(t), start(t)
	g := createGroup(t, phone, "photos", syncnode.Normal)
	join(t, phone, laptop, g, syncnode.Normal)
	before := nodetest.Host(laptop).Network().ListenAddresses()
	if err := nodetest.Host(laptop).Network().Listen(ma.StringCast("/ip4/127.0.0.1/tcp/0")); err != nil {
		t.Fatal(err)
	}
	var added string
	for _, a := range nodetest.Host(laptop).Network().ListenAddresses() {
		if !slices.ContainsFunc(before, a.Equal) {
			added = a.String()
		}
	}
	if added == "" {
		t.Fatal("no new listen address")
	}
	waitFor(t, 10*time.Second, "the laptop's new address "+added+" in the phone's membership and peerstore", func() bool {
		in := slices.ContainsFunc(phone.Members(g), func(m syncgroup.Member) bool {
			return m.Peer == laptop.ID() && slices.Contains(m.Addrs, added)
		})
		known := slices.ContainsFunc(nodetest.Host(phone).Peerstore().Addrs(laptop.ID()), func(a ma.Multiaddr) bool { return a.String() == added })
		return in && known
	})
}
