package blobstore_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"runtime"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/blobstore/storetest"
)

func TestDiskConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) blobstore.Store { return openDisk(t) })
}

func TestMemConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) blobstore.Store { return blobstore.NewMem() })
}

// A put reuses its copy buffers: small puts one after another allocate
// far less than the four megabytes of buffers a put copies through (the
// bound leaves room for the race detector, whose pools drop a quarter of
// what they are given).
func TestPutsReuseBuffers(t *testing.T) {
	for name, s := range map[string]blobstore.Store{"mem": blobstore.NewMem(), "disk": openDisk(t)} {
		t.Run(name, func(t *testing.T) {
			put := func(i int) {
				data := []byte(fmt.Sprintf("small blob %d", i))
				if _, err := s.Put(t.Context(), bytes.NewReader(data), syncnode.BlobRef{}); err != nil {
					t.Fatal(err)
				}
			}
			put(-1)
			const puts = 50
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for i := range puts {
				put(i)
			}
			runtime.ReadMemStats(&after)
			if per := (after.TotalAlloc - before.TotalAlloc) / puts; per > 2<<20 {
				t.Fatalf("%d bytes allocated per small put, want under 2 MiB", per)
			}
		})
	}
}

func openDisk(t *testing.T) *blobstore.Disk {
	d, err := blobstore.OpenDisk(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}
