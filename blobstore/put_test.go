package blobstore_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/internal/testkit"
)

// failing is a reader that fails with err.
type failing struct{ err error }

func (f failing) Read([]byte) (int, error) { return 0, f.err }

// TestCutShortInputStoresNothing puts bytes from readers that end with
// io.ErrUnexpectedEOF, as an HTTP body shorter than its Content-Length or
// a multipart part cut off do: the put fails, and nothing is stored or
// left behind, whatever the size (below, at and above the size a put
// reads in memory).
func TestCutShortInputStoresNothing(t *testing.T) {
	dir := t.TempDir()
	d, err := blobstore.OpenDisk(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, s := range []struct {
		name  string
		store blobstore.Store
	}{{"disk", d}, {"memory", blobstore.NewMem()}} {
		for _, size := range []int{0, 5000, 1<<20 - 1, 1 << 20, 3 << 20} {
			r := io.MultiReader(bytes.NewReader(testkit.RandomBytes(size, uint64(size)+3)), failing{io.ErrUnexpectedEOF})
			info, err := s.store.Put(t.Context(), r, syncnode.BlobRef{})
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("%s, %d bytes then cut off: stored %+v, err %v", s.name, size, info, err)
			}
			n := 0
			if err := s.store.List(func(blobstore.Info) error { n++; return nil }); err != nil || n != 0 {
				t.Fatalf("%s, %d bytes then cut off: %d blobs listed, %v", s.name, size, n, err)
			}
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, "blobs", "*", ".put-*"))
	tmp, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	if len(left)+len(tmp) != 0 {
		t.Fatalf("files left by the failed puts: %v, %v", left, tmp)
	}
}

// TestPutsAroundTheMemoryBuffer puts blobs of sizes around the size a put
// reads in memory before it writes (1 MiB) and reads each back whole.
func TestPutsAroundTheMemoryBuffer(t *testing.T) {
	d, err := blobstore.OpenDisk(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, size := range []int{1<<20 - 1, 1 << 20, 1<<20 + 1, 2 << 20} {
		data := testkit.RandomBytes(size, uint64(size))
		// One byte a read, then the rest: the reads that fill the buffer
		// and the one that finds the end are not the same.
		r := io.MultiReader(bytes.NewReader(data[:1]), bytes.NewReader(data[1:]))
		info, err := d.Put(t.Context(), r, syncnode.BlobRef{})
		if err != nil || info.Size != int64(size) {
			t.Fatalf("%d bytes: %+v, %v", size, info, err)
		}
		rd, err := d.Open(info.Ref)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(io.NewSectionReader(rd, 0, rd.Size()))
		rd.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes read back: %v", size, err)
		}
	}
}

// TestBlobDirectoryMadeDurableBeforeAPut checks that a put into one of the
// 256 blob directories that exists but whose entry this opening has not
// synced (made by a process that crashed before syncing it, or by a put
// still syncing it) syncs blobs/ before it returns, and does so once.
func TestBlobDirectoryMadeDurableBeforeAPut(t *testing.T) {
	dir := t.TempDir()
	for i := range 256 {
		if err := os.MkdirAll(filepath.Join(dir, "blobs", fmt.Sprintf("%02x", i)), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	d, err := blobstore.OpenDisk(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var parentSyncs atomic.Int32
	blobs := filepath.Join(dir, "blobs")
	blobstore.OnDirSync(d, func(synced string) {
		if synced == blobs {
			parentSyncs.Add(1)
		}
	})
	data := testkit.RandomBytes(100<<10, 8)
	for range 3 {
		if _, err := d.Put(t.Context(), bytes.NewReader(data), syncnode.BlobRef{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := parentSyncs.Load(); n != 1 {
		t.Fatalf("blobs/ synced %d times by three puts into one existing directory, want 1", n)
	}
}
