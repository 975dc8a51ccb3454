// Package storetest is the conformance suite every blobstore.Store
// implementation runs.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/syncnode/syncnode"
	"github.com/syncnode/syncnode/blobstore"
	"github.com/syncnode/syncnode/blobstore/baotree"
	"github.com/syncnode/syncnode/internal/testkit"
)

// RefOf returns the blob ref of data, computed independently of any store.
func RefOf(data []byte) (syncnode.BlobRef, []byte) {
	var h baotree.Hasher
	h.Write(data)
	root, ob := h.Sum()
	return syncnode.RefFromHash(root), ob
}

// Run runs the conformance suite; newStore returns an empty store that
// lives until the test ends.
func Run(t *testing.T, newStore func(t *testing.T) blobstore.Store) {
	t.Run("PutReadStatList", func(t *testing.T) { testPutReadStatList(t, newStore) })
	t.Run("PutTwiceKeepsOne", func(t *testing.T) { testPutTwiceKeepsOne(t, newStore) })
	t.Run("WrongHashStoresNothing", func(t *testing.T) { testWrongHashStoresNothing(t, newStore) })
	t.Run("FailedInputStoresNothing", func(t *testing.T) { testFailedInputStoresNothing(t, newStore) })
	t.Run("MissingAndDelete", func(t *testing.T) { testMissingAndDelete(t, newStore) })
	t.Run("PartialVerifiesAndCommits", func(t *testing.T) { testPartialVerifiesAndCommits(t, newStore) })
	t.Run("PartialResumes", func(t *testing.T) { testPartialResumes(t, newStore) })
	t.Run("PartialRejectsWrongTree", func(t *testing.T) { testPartialRejectsWrongTree(t, newStore) })
}

func testPutReadStatList(t *testing.T, newStore func(t *testing.T) blobstore.Store) {
	ctx := t.Context()
	s := newStore(t)
	sizes := []int{0, 1, baotree.GroupSize, 3*baotree.GroupSize + 5, 1 << 20}
	want := map[syncnode.BlobRef][]byte{}
	for i, n := range sizes {
		data := testkit.RandomBytes(n, uint64(i))
		info, err := s.Put(ctx, bytes.NewReader(data), syncnode.BlobRef{})
		if err != nil {
			t.Fatal(err)
		}
		ref, ob := RefOf(data)
		if info.Ref != ref || info.Size != int64(n) {
			t.Fatalf("Put = %+v, want %s size %d", info, ref, n)
		}
		want[ref] = data
		got, err := s.Outboard(ref)
		if err != nil || !bytes.Equal(got, ob) {
			t.Fatalf("Outboard: %v (equal=%v)", err, bytes.Equal(got, ob))
		}
		checkContent(t, s, ref, data)
	}
	listed := map[syncnode.BlobRef]int64{}
	if err := s.List(func(i blobstore.Info) error { listed[i.Ref] = i.Size; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(listed) != len(want) {
		t.Fatalf("List gave %d blobs, want %d", len(listed), len(want))
	}
	for ref, data := range want {
		if listed[ref] != int64(len(data)) {
			t.Fatalf("List size of %s = %d, want %d", ref, listed[ref], len(data))
		}
	}
}

func testPutTwiceKeepsOne(t *testing.T, newStore func(t *testing.T) blobstore.Store) {
	ctx := t.Context()
	s := newStore(t)
	data := testkit.RandomBytes(5000, 7)
	a, err := s.Put(ctx, bytes.NewReader(data), syncnode.BlobRef{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Put(ctx, bytes.NewReader(data), a.Ref)
	if err != nil || a != b {
		t.Fatalf("second Put = %+v, %v; want %+v", b, err, a)
	}
	if n := count(t, s); n != 1 {
		t.Fatalf("%d blobs listed, want 1", n)
	}
}

func testWrongHashStoresNothing(t *testing.T, newStore func(t *testing.T) blobstore.Store) {
	ctx := t.Context()
	s := newStore(t)
	data := testkit.RandomBytes(70000, 8)
	other, _ := RefOf([]byte("other"))
	_, err := s.Put(ctx, bytes.NewReader(data), other)
	if !errors.Is(err, syncnode.ErrHashMismatch) {
		t.Fatalf("Put with wrong ref: %v, want ErrHashMismatch", err)
	}
	if n := count(t, s); n != 0 {
		t.Fatalf("%d blobs after a rejected put", n)
	}
	ref, _ := RefOf(data)
	if _, err := s.Stat(ref); !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatalf("Stat after rejected put: %v", err)
	}
}

func testFailedInputStoresNothing(t *testing.T, newStore func(t *testing.T) blobstore.Store) {
	ctx := t.Context()
	s := newStore(t)
	boom := errors.New("boom")
	r := io.MultiReader(bytes.NewReader(testkit.RandomBytes(3<<20, 9)), errReader{boom})
	if _, err := s.Put(ctx, r, syncnode.BlobRef{}); !errors.Is(err, boom) {
		t.Fatalf("Put of a failing reader: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Put(cctx, bytes.NewReader(testkit.RandomBytes(100, 9)), syncnode.BlobRef{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a cancelled context: %v", err)
	}
	if n := count(t, s); n != 0 {
		t.Fatalf("%d blobs after failed puts", n)
	}
}

func testMissingAndDelete(t *testing.T, newStore func(t *testing.T) blobstore.Store) {
	ctx := t.Context()
	s := newStore(t)
	ref, _ := RefOf([]byte("absent"))
	if _, err := s.Open(ref); !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatalf("Open missing: %v", err)
	}
	if _, err := s.Outboard(ref); !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatalf("Outboard missing: %v", err)
	}
	if err := s.Delete(ref); !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatalf("Delete missing: %v", err)
	}
	info, err := s.Put(ctx, bytes.NewReader([]byte("present")), syncnode.BlobRef{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(info.Ref); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(info.Ref); !errors.Is(err, syncnode.ErrNotFound) {
		t.Fatalf("Stat after Delete: %v", err)
	}
}

func testPartialVerifiesAndCommits(t *testing.T, newStore func(t *testing.T) blobstore.Store) {
	s := newStore(t)
	data := testkit.RandomBytes(10*baotree.GroupSize+123, 10)
	ref, ob := RefOf(data)
	p, err := s.OpenPartial(ref, ob)
	if err != nil {
		t.Fatal(err)
	}
	if p.Size() != int64(len(data)) {
		t.Fatalf("Size = %d", p.Size())
	}
	// Groups arrive out of order, two at a time.
	order := []int64{4, 0, 8, 2, 10, 6}
	for i, g := range order {
		off := g * baotree.GroupSize
		end := min(off+2*baotree.GroupSize, int64(len(data)))
		if i == 1 {
			bad := bytes.Clone(data[off:end])
			bad[len(bad)/2] ^= 0x40
			if err := p.WriteAt(bad, off); !errors.Is(err, syncnode.ErrHashMismatch) {
				t.Fatalf("WriteAt flipped bytes: %v, want ErrHashMismatch", err)
			}
		}
		if i < len(order)-1 {
			if _, err := s.Stat(ref); !errors.Is(err, syncnode.ErrNotFound) {
				t.Fatal("partial blob visible before commit")
			}
			if _, err := p.Commit(); !errors.Is(err, blobstore.ErrIncomplete) {
				t.Fatalf("Commit of incomplete partial: %v", err)
			}
		}
		if err := p.WriteAt(data[off:end], off); err != nil {
			t.Fatalf("WriteAt(%d): %v", off, err)
		}
	}
	if m := p.Missing(); len(m) != 0 {
		t.Fatalf("Missing = %v after all groups", m)
	}
	if _, err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	checkContent(t, s, ref, data)
}

func testPartialResumes(t *testing.T, newStore func(t *testing.T) blobstore.Store) {
	s := newStore(t)
	data := testkit.RandomBytes(6*baotree.GroupSize, 11)
	ref, ob := RefOf(data)
	p, err := s.OpenPartial(ref, ob)
	if err != nil {
		t.Fatal(err)
	}
	half := int64(3 * baotree.GroupSize)
	if err := p.WriteAt(data[:half], 0); err != nil {
		t.Fatal(err)
	}
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p, err = s.OpenPartial(ref, ob)
	if err != nil {
		t.Fatal(err)
	}
	if m := p.Missing(); !slices.Equal(m, []blobstore.Range{{Off: half, Len: half}}) {
		t.Fatalf("Missing after resume = %v", m)
	}
	if err := p.WriteAt(data[half:], half); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	checkContent(t, s, ref, data)
}

func testPartialRejectsWrongTree(t *testing.T, newStore func(t *testing.T) blobstore.Store) {
	s := newStore(t)
	data := testkit.RandomBytes(4*baotree.GroupSize, 12)
	ref, _ := RefOf(data)
	_, otherOB := RefOf(testkit.RandomBytes(4*baotree.GroupSize, 13))
	p, err := s.OpenPartial(ref, otherOB)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WriteAt(data[:baotree.GroupSize], 0); !errors.Is(err, syncnode.ErrHashMismatch) {
		t.Fatalf("WriteAt under a wrong tree: %v", err)
	}
	if err := p.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenPartial(ref, []byte{1, 2, 3}); err == nil {
		t.Fatal("OpenPartial accepted a garbage tree")
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func count(t *testing.T, s blobstore.Store) int {
	t.Helper()
	n := 0
	if err := s.List(func(blobstore.Info) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func checkContent(t *testing.T, s blobstore.Store, ref syncnode.BlobRef, data []byte) {
	t.Helper()
	info, err := s.Stat(ref)
	if err != nil || info.Size != int64(len(data)) {
		t.Fatalf("Stat(%s) = %+v, %v", ref, info, err)
	}
	r, err := s.Open(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Size() != int64(len(data)) {
		t.Fatalf("Reader.Size = %d, want %d", r.Size(), len(data))
	}
	got, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("content of %s differs (%v)", ref, err)
	}
	if len(data) > 10 {
		off := len(data) / 3
		buf := make([]byte, len(data)/3)
		if _, err := r.ReadAt(buf, int64(off)); err != nil || !bytes.Equal(buf, data[off:off+len(buf)]) {
			t.Fatalf("ranged read at %d differs (%v)", off, err)
		}
	}
}
