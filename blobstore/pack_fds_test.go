package blobstore_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/testkit"
)

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// A scrub reading every blob of 200 packs leaves a bounded number of pack
// files open, not one per pack.
func TestPackFilesOpenBounded(t *testing.T) {
	dir := t.TempDir()
	s := openPacked(t, dir)
	blobstore.SetPackLimit(s.Disk, 8<<10) // two 4 KiB blobs a pack
	var refs []syncnode.BlobRef
	for i := range 200 {
		info, err := s.Put(t.Context(), bytes.NewReader(testkit.RandomBytes(4<<10, uint64(i)+6100)), syncnode.BlobRef{})
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, info.Ref)
	}
	s.close(t)
	s = openPacked(t, dir)
	before := openFDs(t)
	for _, ref := range refs {
		if _, err := readAll(t, s, ref); err != nil {
			t.Fatal(err)
		}
	}
	after := openFDs(t)
	_, packs := storeFiles(t, dir)
	t.Logf("%d packs; descriptors open before reading every blob %d, after %d", len(packs), before, after)
	if after-before >= len(packs)/2 {
		t.Errorf("reading every blob once left %d more descriptors open (%d packs): unbounded in the number of packs", after-before, len(packs))
	}
}
