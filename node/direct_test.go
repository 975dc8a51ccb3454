package node

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/internal/retrieval"
	"github.com/syncnode/syncnode/internal/testkit"
	"github.com/syncnode/syncnode/p2p"
)

// A fetch asks its likely holder for the blob whole with no question
// first. A likely holder that does not hold it costs one answer: the
// holders a locate finds serve the blob.
func TestLikelyHolderWithoutTheBlob(t *testing.T) {
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Normal, syncnode.Normal)
	a, b, c := nodes[0], nodes[1], nodes[2]
	ref := putBlobRow(t, a, g, "photos/one", 200<<10, 1)
	testkit.WaitFor(t, 10*time.Second, "the signpost at c", func() bool { _, err := c.Signpost(ref); return err == nil })
	tr, err := c.retr.Fetch(t.Context(), ref, retrieval.Request{Urgency: UrgencyNormal, Hints: []peer.ID{b.ID()}})
	info := tr.Info
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != 200<<10 {
		t.Fatalf("fetched %+v", info)
	}
	if !slices.Contains(tr.Tried, b.ID()) || !slices.Equal(tr.Holders, []peer.ID{a.ID()}) {
		t.Fatalf("tried %v, holders %v: want b tried and a the holder", tr.Tried, tr.Holders)
	}
}

// A likely holder that holds the blob serves it with no HaveBlob question
// asked, and the journal names it as the one holder tried.
func TestLikelyHolderServesAtOnce(t *testing.T) {
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Normal)
	a, c := nodes[0], nodes[1]
	ref := putBlobRow(t, a, g, "photos/one", 300<<10, 2)
	haves := a.service.Stats().Haves
	tr, err := c.retr.Fetch(t.Context(), ref, retrieval.Request{Urgency: UrgencyNormal, Hints: []peer.ID{a.ID()}})
	if err != nil {
		t.Fatal(err)
	}
	if asked := a.service.Stats().Haves - haves; asked != 0 {
		t.Errorf("the holder was asked %d HaveBlob questions, want none", asked)
	}
	if !slices.Equal(tr.Tried, []peer.ID{a.ID()}) || !slices.Equal(tr.Holders, []peer.ID{a.ID()}) {
		t.Fatalf("tried %v, holders %v: want a alone", tr.Tried, tr.Holders)
	}
	if got := c.retr.Stats().BytesIn; got != 300<<10 {
		t.Fatalf("%d bytes in, want %d", got, 300<<10)
	}
}

// A blob too large to come whole goes on from the likely holder's tree to
// the holders a locate finds, and no byte of it comes twice.
func TestLikelyHolderOfALargeBlob(t *testing.T) {
	nodes, g := mesh(t, true, syncnode.Normal, syncnode.Normal, syncnode.Normal)
	a, b, c := nodes[0], nodes[1], nodes[2]
	const size = 6 << 20
	ref := putBlobRow(t, a, g, "photos/one", size, 3)
	if _, err := b.retr.Fetch(t.Context(), ref, retrieval.Request{Urgency: UrgencyNormal, Hints: []peer.ID{a.ID()}}); err != nil {
		t.Fatal(err)
	}
	tr, err := c.retr.Fetch(t.Context(), ref, retrieval.Request{Urgency: UrgencyNormal, Hints: []peer.ID{b.ID()}})
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Holders) != 2 {
		t.Fatalf("holders %v, want a and b", tr.Holders)
	}
	if got := c.retr.Stats().BytesIn; got != size {
		t.Fatalf("%d bytes in, want %d", got, size)
	}
}

// TestSlowShareHolderHoldsUpOnlyItsOwnBlobs: a member that serves its
// blobs but never answers a share request (a hostile one, or one
// overloaded) must not hold the server's fetch places while the server
// waits for it. With 2 places, a server that waited out each take would
// have 2 of the member's 8 blobs for the first IOTimeout (10 s here); it
// has all 8 at once, and keeps asking for the shares.
func TestSlowShareHolderHoldsUpOnlyItsOwnBlobs(t *testing.T) {
	nodes, g := meshWith(t, true, func(c *Config) {
		c.Fetcher.Concurrency, c.IOTimeout = 2, 10*time.Second
	}, syncnode.Normal, syncnode.Server)
	dev, server := nodes[0], nodes[1]
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var asked atomic.Int64
	dev.h.SetStreamHandler(p2p.ProtoShares, func(s network.Stream) {
		asked.Add(1)
		select { // read nothing, answer nothing
		case <-release:
		case <-time.After(time.Minute):
		}
		s.Reset()
	})
	var refs []syncnode.BlobRef
	for i := range 8 {
		refs = append(refs, putBlobRow(t, dev, g, fmt.Sprintf("photos/slow%d.jpg", i), 64<<10, uint64(100+i)))
	}
	testkit.WaitFor(t, 8*time.Second, "every blob on the server while the shares stall", func() bool {
		for _, ref := range refs {
			if !server.HasBlob(ref) {
				return false
			}
		}
		return true
	})
	if asked.Load() == 0 {
		t.Fatal("the server never asked the member for shares")
	}
	for _, ref := range refs {
		if sh := sharesIn(t, server, ref, g); sh != 0 {
			t.Fatalf("server holds %d shares of %s though the member answered nothing", sh, ref)
		}
	}
}
