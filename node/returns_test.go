package node

import (
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/p2p"
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

// TestFlappingMemberCannotForceRetries: a member names itself the holder
// of 6 blobs it does not serve, then drops and redials its connection to
// the server 8 times. Each return of a holder retries the fetches waiting
// on it, but the first brought nothing, so the next returns within the
// pause retry nothing: the server makes no more than a round of attempts
// more, instead of a round for each connection (48 attempts).
func TestFlappingMemberCannotForceRetries(t *testing.T) {
	const blobs, flaps = 6, 8
	nodes, g := meshWith(t, true, func(c *Config) {
		// No retry of the fetcher's own within the test.
		c.Fetcher.BaseDelay, c.Fetcher.Jitter = time.Minute, time.Second
	}, syncnode.Normal, syncnode.Server)
	member, server := nodes[0], nodes[1]
	member.Host().SetStreamHandler(p2p.ProtoGetBlob, func(s network.Stream) { s.Reset() })
	var refs []syncnode.BlobRef
	for i := range blobs {
		refs = append(refs, putBlobRow(t, member, g, fmt.Sprintf("photos/flap%d.jpg", i), 16<<10, uint64(200+i)))
	}
	testkit.WaitFor(t, 20*time.Second, "every blob failed once and queued", func() bool {
		for _, ref := range refs {
			if w, err := server.Why(ref); err != nil || w.Attempts < 1 || !w.Queued {
				return false
			}
		}
		return true
	})
	before := server.stats.attempts.Load()
	info := peer.AddrInfo{ID: server.ID(), Addrs: server.Host().Addrs()}
	for range flaps {
		member.Host().Network().ClosePeer(server.ID())
		testkit.WaitFor(t, 5*time.Second, "disconnected", func() bool {
			return server.Host().Network().Connectedness(member.ID()) != network.Connected
		})
		if err := member.Host().Connect(t.Context(), info); err != nil {
			t.Fatal(err)
		}
		// The retries a return starts run before the next flap.
		testkit.WaitFor(t, 5*time.Second, "no fetch running", func() bool {
			for _, ref := range refs {
				if w, err := server.Why(ref); err != nil || w.Running {
					return false
				}
			}
			return true
		})
		time.Sleep(50 * time.Millisecond)
	}
	if got := server.stats.attempts.Load() - before; got > 2*blobs {
		t.Fatalf("%d attempts over %d returns of a member that served nothing, want at most %d", got, flaps, 2*blobs)
	}
}
