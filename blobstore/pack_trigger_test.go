package blobstore_test

import (
	"bytes"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/testkit"
)

// A healthy index that is empty, with no dead bytes counted, while a pack
// holds a record no entry names (its put's batch failed): the next open
// does not take the index for lost, and the blob whose put failed stays
// unstored.
func TestRebuildOnlyForALostIndex(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	x := testkit.RandomBytes(3<<10, 7700)
	s := openHooked(t, dir, nil, func(blobstore.PackBatch) error { return errInjected })
	_, perr := s.Put(t.Context(), bytes.NewReader(x), syncnode.BlobRef{})
	s.idx.set(nil, nil)
	info, _ := blobstore.NewMem().Put(t.Context(), bytes.NewReader(x), syncnode.BlobRef{})
	xr := info.Ref
	derr := s.Delete(xr)
	s.close()
	s = openHooked(t, dir, nil, nil)
	defer s.close()
	_, serr := s.Stat(xr)
	t.Logf("put: %v; delete after it: %v; Stat after a reopen: %v", perr, derr, serr)
	if perr != nil && derr != nil && serr == nil {
		t.Errorf("a blob whose put failed and whose delete came last is stored after a reopen (the healthy, empty index was rebuilt)")
	}
}
