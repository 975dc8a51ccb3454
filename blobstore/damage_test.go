package blobstore_test

import (
	"bytes"
	"encoding/binary"
	"errors"
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
// repairs the copy.
func TestDamagedCopyIsNeverRead(t *testing.T) {
	data := testkit.RandomBytes(300<<10, 11)
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
	damage := func(p string, fn func([]byte) []byte) {
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
		{"flipped bit in the last byte", path, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }},
		{"truncated bytes", path, func(b []byte) []byte { return b[:len(b)-100] }},
		{"flipped bit in the tree", path + ".obao", func(b []byte) []byte { b[len(b)-5] ^= 0x80; return b }},
		{"tree of another length", path + ".obao", func(b []byte) []byte { b[0]++; return b }},
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
	}
}

// TestSmallBlobIsOneFile checks the layout of blobs of one group: one file,
// no tree beside it, for a put and a fetch alike, read back verified from
// the store and after a reopen; a damaged or truncated one is ErrDamaged,
// and a tree an older version left beside one is harmless.
func TestSmallBlobIsOneFile(t *testing.T) {
	dir := t.TempDir()
	d, err := blobstore.OpenDisk(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { d.Close() }()
	files := func(ref syncnode.BlobRef) []string {
		m, _ := filepath.Glob(filepath.Join(dir, "blobs", ref.Hex()[:2], ref.Hex()+"*"))
		return m
	}
	read := func(ref syncnode.BlobRef) ([]byte, error) {
		r, err := d.Open(ref)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	}
	for _, size := range []int{0, 1, 4096, 16 << 10, 16<<10 + 1} {
		data := testkit.RandomBytes(size, uint64(size)+1)
		info, err := d.Put(t.Context(), bytes.NewReader(data), syncnode.BlobRef{})
		if err != nil {
			t.Fatal(err)
		}
		want := 1
		if size > 16<<10 {
			want = 2
		}
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
		if size <= 16<<10 { // a fetch an older version began wrote a tree for it
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
	// not a small blob: its tree says so.
	big := testkit.RandomBytes(100<<10, 5)
	bi, err := d.Put(t.Context(), bytes.NewReader(big), syncnode.BlobRef{})
	if err != nil {
		t.Fatal(err)
	}
	bpath := filepath.Join(dir, "blobs", bi.Ref.Hex()[:2], bi.Ref.Hex())
	if err := os.Truncate(bpath, 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := read(bi.Ref); !errors.Is(err, blobstore.ErrDamaged) {
		t.Fatalf("a large blob cut to 1000 bytes: %v, want ErrDamaged", err)
	}
	if ob, err := d.Outboard(bi.Ref); err != nil || binary.LittleEndian.Uint64(ob) != uint64(len(big)) {
		t.Fatalf("the tree of a large blob cut short: %v; want its own, of %d bytes", err, len(big))
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
