package retrieval

import (
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestReputationRanksOutBadHolders(t *testing.T) {
	var r reputation
	t0 := time.Unix(1_000_000, 0)
	a, b, c := peer.ID("a"), peer.ID("b"), peer.ID("c")
	r.lied(a, t0)
	r.faulted(b, t0)
	if got, _ := r.rank([]peer.ID{a, b, c}, t0); !slices.Equal(got, []peer.ID{c}) {
		t.Fatalf("rank with a good holder = %v, want [c]", got)
	}
	if got, good := r.rank([]peer.ID{a, b}, t0); !slices.Equal(got, []peer.ID{b}) || good {
		t.Fatalf("rank without a good holder = %v, want the demoted [b], never the liar", got)
	}
	if got, _ := r.rank([]peer.ID{a}, t0); len(got) != 0 {
		t.Fatalf("a banned liar is still ranked: %v", got)
	}
	if got := r.demoted(t0); !slices.Equal(got, []peer.ID{a, b}) {
		t.Fatalf("demoted = %v", got)
	}
	// The fault demotion ends after faultBase; a second fault doubles it.
	if got, _ := r.rank([]peer.ID{b, c}, t0.Add(faultBase)); !slices.Equal(got, []peer.ID{b, c}) {
		t.Fatalf("after %v: %v", faultBase, got)
	}
	r.faulted(b, t0.Add(faultBase))
	if got, _ := r.rank([]peer.ID{b, c}, t0.Add(faultBase+3*faultBase/2)); !slices.Equal(got, []peer.ID{c}) {
		t.Fatalf("second fault not doubled: %v", got)
	}
	r.served(b)
	r.served(a)
	if got, _ := r.rank([]peer.ID{a, b, c}, t0.Add(faultBase)); !slices.Equal(got, []peer.ID{b, c}) {
		t.Fatalf("after serving: %v (a liar's ban outlasts a served blob)", got)
	}
	if got, _ := r.rank([]peer.ID{a, c}, t0.Add(liarBan)); !slices.Equal(got, []peer.ID{a, c}) {
		t.Fatalf("the ban never ends: %v", got)
	}
}
