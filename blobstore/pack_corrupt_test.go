package blobstore_test

import (
	"bytes"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/kv"
	"github.com/syncnode/syncnode/internal/packindex"
	"github.com/syncnode/syncnode/internal/testkit"
)

// flipEntry flips one bit of ref's pack index record, as bit rot in
// badger's tables would (kv turns it into ErrCorruptRecord).
func flipEntry(t *testing.T, dir string, ref syncnode.BlobRef) {
	t.Helper()
	db, err := kv.Open(filepath.Join(dir, "db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	h := ref.Hash()
	key := kv.Key(kv.Packed, h[:])
	err = db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		v[len(v)-1] ^= 1
		return txn.Set(key, v)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func putSome(t *testing.T, s blobstore.Store, n int, seed uint64) (refs []syncnode.BlobRef, data map[syncnode.BlobRef][]byte) {
	t.Helper()
	data = map[syncnode.BlobRef][]byte{}
	for i := range n {
		b := testkit.RandomBytes(4<<10, seed+uint64(i))
		info, err := s.Put(t.Context(), bytes.NewReader(b), syncnode.BlobRef{})
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, info.Ref)
		data[info.Ref] = b
	}
	return refs, data
}

// One damaged pack index record, with no pack's dead bytes counted (no
// blob deleted yet): the store opens all the same.
func TestDamagedIndexEntryOpens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openHooked(t, dir, nil, nil)
	refs, _ := putSome(t, s, 3, 5100)
	s.close()
	flipEntry(t, dir, refs[0])
	db, err := kv.Open(filepath.Join(dir, "db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d, err := blobstore.OpenDisk(filepath.Join(dir, "blobs"), slog.New(slog.DiscardHandler), blobstore.WithPacks(packindex.New(db)))
	if err != nil {
		t.Errorf("one damaged pack index record: the whole store does not open: %v", err)
		return
	}
	d.Close()
}

// One damaged pack index record: List lists every blob (scrub, eviction
// and take-up all list), the blob reads as damaged, and a put again
// repairs it, or a delete removes it.
func TestDamagedIndexEntryReadsAsDamage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openHooked(t, dir, nil, nil)
	refs, data := putSome(t, s, 3, 5200)
	if err := s.Delete(refs[2]); err != nil { // a dead count: the open does not probe the index
		t.Fatal(err)
	}
	s.close()
	flipEntry(t, dir, refs[0])
	s = openHooked(t, dir, nil, nil)
	defer s.close()
	listed := 0
	lerr := s.List(func(blobstore.Info) error { listed++; return nil })
	_, rerr := readAll(t, s, refs[0])
	_, serr := s.Stat(refs[0])
	perr := func() error {
		_, err := s.Put(t.Context(), bytes.NewReader(data[refs[0]]), syncnode.BlobRef{})
		return err
	}()
	derr := s.Delete(refs[0])
	_, oerr := readAll(t, s, refs[1])
	t.Logf("List: %v after %d; read: %v; Stat: %v; put again: %v; delete: %v; another blob: %v", lerr, listed, rerr, serr, perr, derr, oerr)
	if lerr != nil {
		t.Errorf("one damaged index record fails the whole listing: %v", lerr)
	}
	if rerr != nil && !errors.Is(rerr, blobstore.ErrDamaged) && !errors.Is(rerr, syncnode.ErrNotFound) {
		t.Errorf("read of the blob whose record is damaged: %v, want ErrDamaged (restored) or ErrNotFound", rerr)
	}
	if perr != nil {
		t.Errorf("putting the blob again does not repair it: %v", perr)
	}
}

// One damaged dead-bytes count: the store opens, its count started
// again.
func TestDamagedDeadCountOpens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openHooked(t, dir, nil, nil)
	refs, _ := putSome(t, s, 3, 5300)
	if err := s.Delete(refs[2]); err != nil {
		t.Fatal(err)
	}
	s.close()
	db, err := kv.Open(filepath.Join(dir, "db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: kv.PackDead, PrefetchValues: true})
		var keys, vals [][]byte
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				it.Close()
				return err
			}
			v[len(v)-1] ^= 1
			keys, vals = append(keys, it.Item().KeyCopy(nil)), append(vals, v)
		}
		it.Close()
		if len(keys) == 0 {
			return errors.New("no dead count")
		}
		for i := range keys {
			if err := txn.Set(keys[i], vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	db, err = kv.Open(filepath.Join(dir, "db"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d, err := blobstore.OpenDisk(filepath.Join(dir, "blobs"), slog.New(slog.DiscardHandler), blobstore.WithPacks(packindex.New(db)))
	if err != nil {
		t.Errorf("one damaged dead-bytes count: the whole store does not open: %v", err)
		return
	}
	d.Close()
}
