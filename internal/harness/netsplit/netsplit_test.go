package netsplit

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestAllowedFollowsTheCut(t *testing.T) {
	var p Partition
	a, b, c := peer.ID("a"), peer.ID("b"), peer.ID("c")
	if !p.Allowed(a, b) {
		t.Fatal("a healed partition refuses")
	}
	p.Split([]peer.ID{a, b, c}, nil, []int{0, 0, 1})
	if !p.Allowed(a, b) || p.Allowed(a, c) || p.Allowed(c, b) {
		t.Fatal("the cut is not where it was put")
	}
	g := p.Gater()
	if !g.InterceptPeerDial(c) {
		t.Fatal("a gater that does not know its node refused")
	}
	g.SetSelf(a)
	if g.InterceptPeerDial(c) || !g.InterceptPeerDial(b) {
		t.Fatal("the gater ignores the cut")
	}
	p.Heal()
	if !g.InterceptPeerDial(c) {
		t.Fatal("healed, still refused")
	}
}
