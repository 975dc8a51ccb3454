package blobstore_test

import (
	"bytes"
	"encoding/binary"
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

// TestDamagedCopyIsNeverRead damages a stored blob on disk — a flipped bit
// in its bytes or its tree, a truncated file — and checks that no read
// returns other bytes than the blob's: reads over a damaged group fail with
// ErrDamaged, reads elsewhere still verify, and putting the bytes again
// repairs the copy. It does so for the blob in one file (bytes, then
// tree) and in the two files of earlier versions (bytes, tree beside).
func TestDamagedCopyIsNeverRead(t *testing.T) {
	data := testkit.RandomBytes(300<<10, 11)
	for _, twoFiles := range []bool{false, true} {
		t.Run(fmt.Sprintf("two files=%v", twoFiles), func(t *testing.T) {
			dir := t.TempDir()
			d, err := blobstore.OpenDisk(dir, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			put := func() syncnode.BlobRef {
				info, err := d.Put(t.Context(), bytes.NewReader(data), syncnode.BlobRef{})
				if err != nil {
					t.Fatal(err)
				}
				return info.Ref
			}
			ref := put()
			path := filepath.Join(dir, "blobs", ref.Hex()[:2], ref.Hex())
			tree, treeOff := path, len(data) // where the tree is, and from where
			if twoFiles {
				tree, treeOff = path+".obao", 0
			}
			damage := func(p string, fn func([]byte) []byte) {
				if twoFiles {
					splitTree(t, path, len(data))
				}
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, fn(b), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			readAll := func() ([]byte, error) {
				r, err := d.Open(ref)
				if err != nil {
					return nil, err
				}
				defer r.Close()
				return io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
			}
			const at = 200<<10 + 77 // in the 13th group
			for _, c := range []struct {
				name string
				path string
				fn   func([]byte) []byte
			}{
				{"flipped bit in the bytes", path, func(b []byte) []byte { b[at] ^= 4; return b }},
				{"flipped bit in the last byte", path, func(b []byte) []byte { b[len(data)-1] ^= 1; return b }},
				{"truncated bytes", path, func(b []byte) []byte { return b[:len(data)-100] }},
				{"bytes grown", path, func(b []byte) []byte { return append(b, make([]byte, 16<<10)...) }},
				{"flipped bit in the tree", tree, func(b []byte) []byte { b[len(b)-5] ^= 0x80; return b }},
				{"tree of another length", tree, func(b []byte) []byte { b[treeOff]++; return b }},
				{"tree cut short", tree, func(b []byte) []byte { return b[:len(b)-64] }},
			} {
				damage(c.path, c.fn)
				got, err := readAll()
				if !errors.Is(err, blobstore.ErrDamaged) {
					t.Fatalf("%s: whole read: %d bytes, err %v; want ErrDamaged", c.name, len(got), err)
				}
				if len(got) > 0 && !bytes.Equal(got, data[:len(got)]) {
					t.Fatalf("%s: read returned bytes that are not the blob's", c.name)
				}
				// Small unaligned reads all over the blob: each is the blob's bytes
				// or an ErrDamaged, never other bytes.
				if r, err := d.Open(ref); err == nil {
					buf := make([]byte, 1000)
					for off := int64(0); off < int64(len(data)); off += 7777 {
						n, err := r.ReadAt(buf, off)
						if err != nil && !errors.Is(err, blobstore.ErrDamaged) && err != io.EOF {
							t.Fatalf("%s: read at %d: %v", c.name, off, err)
						}
						if !bytes.Equal(buf[:n], data[off:off+int64(n)]) {
							t.Fatalf("%s: read at %d returned other bytes", c.name, off)
						}
					}
					r.Close()
				} else if !errors.Is(err, blobstore.ErrDamaged) {
					t.Fatalf("%s: open: %v", c.name, err)
				}
				if put() != ref {
					t.Fatal("put again returned another ref")
				}
				if got, err := readAll(); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("%s: after putting the bytes again: %v", c.name, err)
				}
				if files := blobFiles(dir, ref); len(files) != 1 {
					t.Fatalf("%s: after putting the bytes again: files %v, want the one", c.name, files)
				}
			}
		})
	}
}

// TestBlobIsOneFile checks the layout of blobs: one file, its bytes then
// its tree (none for a blob of one group), no tree beside it, for a put
// and a fetch alike, read back verified from the store and after a
// reopen; a damaged or truncated one is ErrDamaged, and a tree an older
// version left beside one is harmless.
func TestBlobIsOneFile(t *testing.T) {
	dir := t.TempDir()
	d, err := blobstore.OpenDisk(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { d.Close() }()
	files := func(ref syncnode.BlobRef) []string { return blobFiles(dir, ref) }
	read := func(ref syncnode.BlobRef) ([]byte, error) {
		r, err := d.Open(ref)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	}
	for _, size := range []int{0, 1, 4096, 16 << 10, 16<<10 + 1, 100 << 10, 1<<20 + 3} {
		data := testkit.RandomBytes(size, uint64(size)+1)
		info, err := d.Put(t.Context(), bytes.NewReader(data), syncnode.BlobRef{})
		if err != nil {
			t.Fatal(err)
		}
		const want = 1
		if got := files(info.Ref); len(got) != want {
			t.Fatalf("%d bytes: files %v, want %d", size, got, want)
		}
		if got, err := read(info.Ref); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: read back: %v", size, err)
		}
		ob, err := d.Outboard(info.Ref)
		if err != nil {
			t.Fatalf("%d bytes: outboard: %v", size, err)
		}
		// The same blob fetched: its partial leaves one file too.
		if err := d.Delete(info.Ref); err != nil {
			t.Fatal(err)
		}
		{ // a fetch an older version began wrote a tree beside it
			if err := os.WriteFile(filepath.Join(dir, "partial", info.Ref.Hex()+".obao"), ob, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		p, err := d.OpenPartial(info.Ref, ob)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.WriteAt(data, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Commit(); err != nil {
			t.Fatal(err)
		}
		if got := files(info.Ref); len(got) != want {
			t.Fatalf("%d bytes fetched: files %v, want %d", size, got, want)
		}
		if left, _ := os.ReadDir(filepath.Join(dir, "partial")); len(left) != 0 {
			t.Fatalf("%d bytes fetched: partial files left: %v", size, left)
		}
	}
	data := testkit.RandomBytes(4096, 3)
	info, err := d.Put(t.Context(), bytes.NewReader(data), syncnode.BlobRef{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "blobs", info.Ref.Hex()[:2], info.Ref.Hex())
	// A tree an older version wrote beside a small blob is read as such.
	if err := os.WriteFile(path+".obao", sizeTreeOf(len(data)), 0o600); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if d, err = blobstore.OpenDisk(dir, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if got, err := read(info.Ref); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("beside an old tree: %v", err)
	}
	// A damaged one is damage.
	if err := os.WriteFile(path+".obao", []byte("not a tree"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := read(info.Ref); !errors.Is(err, blobstore.ErrDamaged) {
		t.Fatalf("beside a damaged old tree: %v, want ErrDamaged", err)
	}
	if err := os.Remove(path + ".obao"); err != nil {
		t.Fatal(err)
	}
	for name, damaged := range map[string][]byte{
		"flipped bit": append(append([]byte{}, data[:100]...), append([]byte{data[100] ^ 1}, data[101:]...)...),
		"truncated":   data[:4000],
		// Grown past one group: it has no tree to match, and is damaged,
		// not gone (a listing still shows it, for a scrub to find).
		"grown": append(append([]byte{}, data...), make([]byte, 20<<10)...),
	} {
		if err := os.WriteFile(path, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := read(info.Ref); !errors.Is(err, blobstore.ErrDamaged) {
			t.Fatalf("%s: %v, want ErrDamaged", name, err)
		}
		listed := false
		if err := d.List(func(i blobstore.Info) error { listed = listed || i.Ref == info.Ref; return nil }); err != nil || !listed {
			t.Fatalf("%s: listed %v, %v", name, listed, err)
		}
	}
	// A blob of many groups cut short to one group's length is damaged,
	// not a small blob; in the two files of earlier versions, its tree
	// says so and is still its own.
	big := testkit.RandomBytes(100<<10, 5)
	bi, err := d.Put(t.Context(), bytes.NewReader(big), syncnode.BlobRef{})
	if err != nil {
		t.Fatal(err)
	}
	bpath := filepath.Join(dir, "blobs", bi.Ref.Hex()[:2], bi.Ref.Hex())
	for _, twoFiles := range []bool{false, true} {
		if twoFiles {
			if _, err := d.Put(t.Context(), bytes.NewReader(big), syncnode.BlobRef{}); err != nil {
				t.Fatal(err)
			}
			splitTree(t, bpath, len(big))
		}
		if err := os.Truncate(bpath, 1000); err != nil {
			t.Fatal(err)
		}
		if _, err := read(bi.Ref); !errors.Is(err, blobstore.ErrDamaged) {
			t.Fatalf("two files %v: a large blob cut to 1000 bytes: %v, want ErrDamaged", twoFiles, err)
		}
		ob, err := d.Outboard(bi.Ref)
		if !twoFiles && !errors.Is(err, blobstore.ErrDamaged) {
			t.Fatalf("the tree of a large blob cut short: %v, want ErrDamaged", err)
		}
		if twoFiles && (err != nil || binary.LittleEndian.Uint64(ob) != uint64(len(big))) {
			t.Fatalf("the tree beside a large blob cut short: %v; want its own, of %d bytes", err, len(big))
		}
	}
	if err := d.Delete(info.Ref); err != nil {
		t.Fatal(err)
	}
	if got := files(info.Ref); len(got) != 0 {
		t.Fatalf("after delete: %v", got)
	}
}

// sizeTreeOf is the tree of a blob of one group of n bytes.
func sizeTreeOf(n int) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(n)) }
