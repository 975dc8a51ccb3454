package connectivity

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestPunchesBackOffPerPeer(t *testing.T) {
	var ps punches
	p, q := peer.ID("p"), peer.ID("q")
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	steps := []struct {
		at     time.Duration
		who    peer.ID
		direct bool // a direct connection was seen before this check
		due    bool
	}{
		{0, p, false, true},                 // relay-only when first checked: punch again
		{10 * time.Second, p, false, false}, // within 15 s
		{10 * time.Second, q, false, true},  // another peer has its own pace
		{15 * time.Second, p, false, true},  // then 30 s
		{40 * time.Second, p, false, false}, //
		{45 * time.Second, p, false, true},  // then 60 s
		{50 * time.Second, p, true, true},   // direct since: the pace starts over
		{60 * time.Second, p, false, false}, // 15 s again
		{65 * time.Second, p, false, true},
	}
	for i, s := range steps {
		if s.direct {
			ps.direct(s.who)
		}
		if got := ps.due(s.who, at(s.at)); got != s.due {
			t.Fatalf("step %d (%v, %s): due %v, want %v", i, s.at, s.who, got, s.due)
		}
	}
	// The wait is capped.
	now := at(time.Hour)
	for range 20 {
		for !ps.due(p, now) {
			now = now.Add(time.Second)
		}
	}
	if w := ps.m[p].wait; w != punchMax {
		t.Fatalf("wait %v after many punches, want %v", w, punchMax)
	}
}
