package blobstore_test

import (
	"bytes"
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
