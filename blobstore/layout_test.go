package blobstore_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/testkit"
)

// TestEarlierBlobsAreRead stores blobs in the two files of earlier
// versions (bytes, tree beside them) and checks that they are stated,
// listed, read and served as before; that a put of one again leaves it in
// one file; and that a tree left beside a one-file blob, as a crash right
// after such a put leaves it, changes nothing.
func TestEarlierBlobsAreRead(t *testing.T) {
	dir := t.TempDir()
	d, err := blobstore.OpenDisk(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	sizes := []int{100, 16<<10 + 1, 300 << 10, 1<<20 + 5}
	blobs := map[syncnode.BlobRef][]byte{}
	for i, size := range sizes {
		data := testkit.RandomBytes(size, uint64(40+i))
		info, err := d.Put(t.Context(), bytes.NewReader(data), syncnode.BlobRef{})
		if err != nil {
			t.Fatal(err)
		}
		blobs[info.Ref] = data
	}
	check := func(when string) {
		t.Helper()
		listed := 0
		if err := d.List(func(i blobstore.Info) error {
			if want := int64(len(blobs[i.Ref])); i.Size != want {
				t.Errorf("%s: listed %s at %d bytes, want %d", when, i.Ref, i.Size, want)
			}
			listed++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if listed != len(blobs) {
			t.Fatalf("%s: %d listed, want %d", when, listed, len(blobs))
		}
		for ref, data := range blobs {
			if info, err := d.Stat(ref); err != nil || info.Size != int64(len(data)) {
				t.Fatalf("%s: stat %d bytes: %+v, %v", when, len(data), info, err)
			}
			r, err := d.Open(ref)
			if err != nil {
				t.Fatalf("%s: open %d bytes: %v", when, len(data), err)
			}
			got, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
			r.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: read %d bytes: %v", when, len(data), err)
			}
			if _, err := d.Outboard(ref); err != nil {
				t.Fatalf("%s: tree of %d bytes: %v", when, len(data), err)
			}
		}
	}
	path := func(ref syncnode.BlobRef) string { return filepath.Join(dir, "blobs", ref.Hex()[:2], ref.Hex()) }
	for ref, data := range blobs {
		splitTree(t, path(ref), len(data))
	}
	check("two files")
	for ref, data := range blobs {
		if _, err := d.Put(t.Context(), bytes.NewReader(data), syncnode.BlobRef{}); err != nil {
			t.Fatal(err)
		}
		if files := blobFiles(dir, ref); len(files) != 1 {
			t.Fatalf("%d bytes put again: files %v, want one", len(data), files)
		}
	}
	check("put again")
	// A crash between the rename of a blob put again and the removal of
	// the tree beside it.
	for ref, data := range blobs {
		if len(data) <= 16<<10 {
			continue
		}
		whole, err := os.ReadFile(path(ref))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path(ref)+".obao", whole[len(data):], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	check("a stale tree beside")
	for ref := range blobs {
		if err := d.Delete(ref); err != nil {
			t.Fatal(err)
		}
		if files := blobFiles(dir, ref); len(files) != 0 {
			t.Fatalf("after delete: %v", files)
		}
	}
}

// splitTree rewrites the one-file blob at path, of size bytes, in the
// two-file form of earlier versions: its bytes at path, its tree beside it.
func splitTree(t *testing.T, path string, size int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == size {
		return // one group, or split already
	}
	if err := os.WriteFile(path+".obao", b[size:], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, int64(size)); err != nil {
		t.Fatal(err)
	}
}

// blobFiles lists the files of ref's blob in the store in dir.
func blobFiles(dir string, ref syncnode.BlobRef) []string {
	m, _ := filepath.Glob(filepath.Join(dir, "blobs", ref.Hex()[:2], ref.Hex()+"*"))
	return m
}

// TestEarlierBlobPutAgainWhileRead puts a blob of the two-file form again
// while readers open, stat and serve it: the put replaces its bytes and
// then removes the tree beside them, and no reader may find a healthy
// copy damaged or of another length in between.
func TestEarlierBlobPutAgainWhileRead(t *testing.T) {
	dir := t.TempDir()
	d, err := blobstore.OpenDisk(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	data := testkit.RandomBytes(300<<10, 61)
	info, err := d.Put(t.Context(), bytes.NewReader(data), syncnode.BlobRef{})
	if err != nil {
		t.Fatal(err)
	}
	ref, path := info.Ref, filepath.Join(dir, "blobs", info.Ref.Hex()[:2], info.Ref.Hex())
	whole, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// toTwoFiles turns the blob into the two-file form without a moment
	// a reader could see it otherwise: the tree beside first, then the
	// bytes alone renamed over the file, each whole as it appears.
	toTwoFiles := func() {
		if err := os.WriteFile(path+".otmp", whole[len(data):], 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".otmp", path+".obao"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				if r, err := d.Open(ref); err != nil {
					errs <- fmt.Errorf("open: %w", err)
					return
				} else {
					r.Close()
				}
				if _, err := d.Outboard(ref); err != nil {
					errs <- fmt.Errorf("outboard: %w", err)
					return
				}
				if info, err := d.Stat(ref); err != nil || info.Size != int64(len(data)) {
					errs <- fmt.Errorf("stat: %d bytes, %v", info.Size, err)
					return
				}
			}
		}()
	}
	for range 60 {
		toTwoFiles()
		if _, err := d.Put(t.Context(), bytes.NewReader(data), syncnode.BlobRef{}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("a reader, while the blob was put again: %v", err)
		}
	}
}

// TestEarlierBlobsDamaged checks the damage only the two-file form can
// have: a blob whose tree beside it is gone or unreadable is listed and
// stated as damaged, never as a blob of another length, and the listing
// goes on past it; a stale tree, damaged, beside a one-file blob changes
// nothing; a tree of one group beside a larger file is no tree of it.
func TestEarlierBlobsDamaged(t *testing.T) {
	dir := t.TempDir()
	d, err := blobstore.OpenDisk(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	put := func(seed uint64, size int) (syncnode.BlobRef, []byte, string) {
		data := testkit.RandomBytes(size, seed)
		info, err := d.Put(t.Context(), bytes.NewReader(data), syncnode.BlobRef{})
		if err != nil {
			t.Fatal(err)
		}
		return info.Ref, data, filepath.Join(dir, "blobs", info.Ref.Hex()[:2], info.Ref.Hex())
	}
	lost, lostData, lostPath := put(71, 300<<10)
	splitTree(t, lostPath, len(lostData))
	if err := os.Remove(lostPath + ".obao"); err != nil {
		t.Fatal(err)
	}
	unreadable, unreadableData, unreadablePath := put(72, 100<<10)
	splitTree(t, unreadablePath, len(unreadableData))
	if err := os.Remove(unreadablePath + ".obao"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(unreadablePath+".obao", 0o700); err != nil { // stats, but reads fail
		t.Fatal(err)
	}
	stale, staleData, stalePath := put(73, 200<<10)
	if err := os.WriteFile(stalePath+".obao", []byte("a torn tree"), 0o600); err != nil {
		t.Fatal(err)
	}
	small, _, _ := put(74, 4<<10)
	wrong, wrongData, wrongPath := put(75, 100<<10)
	splitTree(t, wrongPath, len(wrongData))
	if err := os.WriteFile(wrongPath+".obao", sizeTreeOf(100), 0o600); err != nil {
		t.Fatal(err)
	}

	for ref, name := range map[syncnode.BlobRef]string{lost: "tree gone", unreadable: "tree unreadable"} {
		if info, err := d.Stat(ref); !errors.Is(err, blobstore.ErrDamaged) {
			t.Errorf("%s: stat %d bytes, %v; want ErrDamaged", name, info.Size, err)
		}
	}
	listed := map[syncnode.BlobRef]bool{}
	if err := d.List(func(i blobstore.Info) error { listed[i.Ref] = true; return nil }); err != nil {
		t.Fatalf("list: %v", err)
	}
	for _, ref := range []syncnode.BlobRef{lost, unreadable, stale, small, wrong} {
		if !listed[ref] {
			t.Errorf("%s not listed", ref)
		}
	}
	if _, err := d.Open(lost); !errors.Is(err, blobstore.ErrDamaged) {
		t.Errorf("tree gone: open %v, want ErrDamaged", err)
	}
	if info, err := d.Stat(stale); err != nil || info.Size != int64(len(staleData)) {
		t.Errorf("stale torn tree beside: stat %+v, %v", info, err)
	}
	r, err := d.Open(stale)
	if err != nil {
		t.Fatalf("stale torn tree beside: open %v", err)
	}
	got, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	r.Close()
	if err != nil || !bytes.Equal(got, staleData) {
		t.Errorf("stale torn tree beside: read %v", err)
	}
	if _, err := d.Outboard(wrong); !errors.Is(err, blobstore.ErrDamaged) {
		t.Errorf("a tree of one group beside a larger file: outboard %v, want ErrDamaged", err)
	}
}
