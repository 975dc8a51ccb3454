package custody

import (
	"bytes"
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/testkit"
)

type keepAll struct{}

func (keepAll) MayEvict(syncnode.BlobRef) (bool, error) { return false, nil }
func (keepAll) KeepsAll() bool                          { return true }
func (keepAll) Busy(syncnode.BlobRef) bool              { return false }
func (keepAll) Wanted(syncnode.BlobRef) bool            { return true }

type noPeers struct{}

func (noPeers) Unclaim(syncnode.BlobRef)                        {}
func (noPeers) Refetch(context.Context, syncnode.BlobRef) error { return nil }

// TestScrubPacedByTheWholeStoreAfterARestart: the first pass after an
// open starts before the walk of the store has filled the LRU table; it
// still covers the store in about the scrub period, not at the slowest
// pace the empty table gave at its start.
func TestScrubPacedByTheWholeStoreAfterARestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const blobs, size, period = 64, 1 << 20, 64 * time.Second
		store := blobstore.NewMem()
		var infos []blobstore.Info
		for i := range blobs {
			info, err := store.Put(t.Context(), bytes.NewReader(testkit.RandomBytes(size, uint64(i))), syncnode.BlobRef{})
			if err != nil {
				t.Fatal(err)
			}
			infos = append(infos, info)
		}
		c, err := New(Config{ScrubPeriod: period, ScrubMaxRate: 1 << 30}, store, nil, keepAll{}, noPeers{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Start()
		// The walk after the open enters the blobs a little later.
		time.Sleep(time.Second)
		for _, i := range infos {
			c.Know(i.Ref, time.Now(), i.Size)
		}
		time.Sleep(3 * period / 2)
		if p := c.Stats().ScrubPasses; p < 1 {
			t.Fatalf("%d passes after 1.5 periods; scrubbed %d of %d bytes", p, c.Stats().Scrubbed, blobs*size)
		}
	})
}
