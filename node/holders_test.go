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
	member.h.SetStreamHandler(p2p.ProtoGetBlob, func(s network.Stream) { s.Reset() })
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
	before := server.Stats().FetchAttempts
	info := peer.AddrInfo{ID: server.ID(), Addrs: server.h.Addrs()}
	for range flaps {
		member.h.Network().ClosePeer(server.ID())
		testkit.WaitFor(t, 5*time.Second, "disconnected", func() bool {
			return server.h.Network().Connectedness(member.ID()) != network.Connected
		})
		if err := member.h.Connect(t.Context(), info); err != nil {
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
	if got := server.Stats().FetchAttempts - before; got > 2*blobs {
		t.Fatalf("%d attempts over %d returns of a member that served nothing, want at most %d", got, flaps, 2*blobs)
	}
}
