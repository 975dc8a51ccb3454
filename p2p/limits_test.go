package p2p

import (
	"errors"
	"testing"

	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
)

// A burst of streams that the per-protocol limits admit is not refused
// before that, while its protocols are negotiated: the host's transient
// (not yet negotiated) inbound streams allow at least what one syncnode
// protocol allows inbound. libp2p's default of 128 reset 267 of 1000
// concurrent fetches on a busy CI machine.
func TestTransientStreamsAdmitAProtocolsBurst(t *testing.T) {
	transient := limits().ToPartialLimitConfig().Transient
	for _, p := range Protocols() {
		if got := int(transient.StreamsInbound); got < p.Total {
			t.Fatalf("transient inbound streams %d, under %s's %d", got, p.ID, p.Total)
		}
	}
	if int(transient.Streams) < int(transient.StreamsInbound) {
		t.Fatalf("transient streams %d under its inbound %d", transient.Streams, transient.StreamsInbound)
	}
}

// Every protocol of the table has the limits the table gives it, per peer
// and in all, and the peer default leaves room for them.
func TestEveryProtocolHasItsLimits(t *testing.T) {
	lim := limits().ToPartialLimitConfig()
	if len(Protocols()) == 0 {
		t.Fatal("empty protocol table")
	}
	for _, p := range Protocols() {
		all, ok := lim.Protocol[p.ID]
		if !ok || all.StreamsInbound != rcmgr.LimitVal(p.Total) || all.Streams != rcmgr.LimitVal(2*p.Total) {
			t.Errorf("%s: protocol limit %+v, want %d inbound", p.ID, all, p.Total)
		}
		peer, ok := lim.ProtocolPeer[p.ID]
		if !ok || peer.StreamsInbound != rcmgr.LimitVal(p.PerPeer) || peer.Streams != rcmgr.LimitVal(2*p.PerPeer) {
			t.Errorf("%s: per-peer limit %+v, want %d inbound", p.ID, peer, p.PerPeer)
		}
		if p.PerPeer < 1 || p.Total < p.PerPeer {
			t.Errorf("%s: limits %d per peer, %d in all", p.ID, p.PerPeer, p.Total)
		}
		if int(lim.PeerDefault.StreamsInbound) < p.PerPeer {
			t.Errorf("%s: peer default %d inbound, under the protocol's %d", p.ID, lim.PeerDefault.StreamsInbound, p.PerPeer)
		}
	}
}

// A zero HostConfig is the defaults; nonsense is refused.
func TestHostConfigZeroIsDefault(t *testing.T) {
	got, want := (HostConfig{}).withDefaults(), DefaultHostConfig()
	if got.Security != want.Security || got.ConnLow != want.ConnLow || got.ConnHigh != want.ConnHigh || len(got.ListenAddrs) != len(want.ListenAddrs) {
		t.Fatalf("zero host config = %+v, want %+v", got, want)
	}
	for _, c := range []HostConfig{{Security: "rot13"}, {ConnLow: -1}, {ConnLow: 10, ConnHigh: 5}} {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("Validate(%+v) = %v, want ErrConfig", c, err)
		}
	}
}
