package retrieval

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestReturnsPaceAPeerThatServesNothing(t *testing.T) {
	var r returns
	p, q := peer.ID("p"), peer.ID("q")
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	steps := []struct {
		at      time.Duration
		who     peer.ID
		served  bool // p serves a blob before this return
		may     bool
		retried bool // the return retried fetches
	}{
		{0, p, false, true, true},                  // first return: acted on
		{time.Second, p, false, false, false},      // within the pause: nothing
		{time.Second, q, false, true, true},        // another peer is not paced by p
		{10 * time.Second, p, false, true, true},   // pause over; p served none: next pause 20 s
		{25 * time.Second, p, false, false, false}, //
		{30 * time.Second, p, false, true, true},   // next pause 40 s
		{31 * time.Second, p, true, true, true},    // p served: its return is acted on at once
		{32 * time.Second, p, false, false, false}, // and the pause starts over at 10 s
		{42 * time.Second, p, false, true, false},  // a return with nothing to retry records nothing
		{43 * time.Second, p, false, true, true},
	}
	for i, s := range steps {
		if s.served {
			r.servedBy(s.who)
		}
		if got := r.may(s.who, at(s.at)); got != s.may {
			t.Fatalf("step %d (%v, %s): may %v, want %v", i, s.at, s.who, got, s.may)
		}
		if s.retried {
			r.retried(s.who, at(s.at))
		}
	}
	// The pause doubles up to an hour.
	for i := range 30 {
		now := at(time.Duration(i+100) * 2 * time.Hour)
		if !r.may(p, now) {
			t.Fatalf("return %d, an hour after the last: paced still", i)
		}
		r.retried(p, now)
	}
	if s := r.m[p]; s.next.Sub(at(129*2*time.Hour)) != returnMax {
		t.Fatalf("pause %v after many returns, want %v", s.next.Sub(at(129*2*time.Hour)), returnMax)
	}
}
