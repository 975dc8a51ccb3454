package blobstore_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/internal/packindex"
	"github.com/syncnode/syncnode/internal/testkit"
)

// The open that rebuilds a lost index fails part way through its batch,
// keeping a prefix of the changes (as PackIndex.Apply allows: a crash or an
// error in a later chunk). The next open rebuilds again: every blob is
// back.
func TestRebuildCutShortIsDoneAgain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openHooked(t, dir, nil, nil)
	var refs []syncnode.BlobRef
	data := map[syncnode.BlobRef][]byte{}
	for i := range 10 {
		b := testkit.RandomBytes(3<<10, uint64(i)+9100)
		info, err := s.Put(t.Context(), bytes.NewReader(b), syncnode.BlobRef{})
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, info.Ref)
		data[info.Ref] = b
	}
	s.close()
	if err := os.RemoveAll(filepath.Join(dir, "db")); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	db, err := kv.Open(filepath.Join(dir, "db"), log)
	if err != nil {
		t.Fatal(err)
	}
	idx := &hookIndex{Index: packindex.New(db)}
	idx.set(nil, func(b blobstore.PackBatch) error {
		if len(b.Changes) > 1 {
			// A prefix kept, then the failure.
			if err := idx.Index.Apply(blobstore.PackBatch{Changes: b.Changes[:1]}); err != nil {
				return err
			}
			return errInjected
		}
		return nil
	})
	d, err := blobstore.OpenDisk(filepath.Join(dir, "blobs"), log, blobstore.WithPacks(idx))
	t.Logf("the open whose rebuild failed part way: %v", err)
	if err == nil {
		d.Close()
	}
	db.Close()

	s = openHooked(t, dir, nil, nil)
	defer s.close()
	lost := 0
	for _, ref := range refs {
		got, err := readAll(t, s, ref)
		if err != nil || !bytes.Equal(got, data[ref]) {
			lost++
		}
	}
	listed := 0
	s.List(func(blobstore.Info) error { listed++; return nil })
	_, packs := storeFiles(t, dir)
	if lost > 0 {
		t.Errorf("after a rebuild cut short, the next open rebuilds nothing: %d of %d packed blobs unreadable, %d listed (their records are still in %v)", lost, len(refs), listed, packs)
	}
}
